"""Event rules: conditions over an event's JSON, evaluated in priority order, and the actions they fire."""
from __future__ import annotations

import re
import uuid
from typing import Annotated, Any, Literal, Union

import re2
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from ..errors import AppError, NotFound, Unprocessable, invalid_body, schema_error
from ..storage.tables import Tables
from ..webhooks import validate_target
from .events import MAX_PATTERN_CHARS, Event, matches, validate_pattern
from .notifications import Channel
from .snapshot import Snapshot
from .templates import compile_part, render_string

Op = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "contains", "matches", "exists"]
_MAX_INDEX_DIGITS = 9
_PATH_WITH_INDEXES = r"^(\$\.)?[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+|\[\d{1,%s}\])*$"
_PATH = re.compile(_PATH_WITH_INDEXES % _MAX_INDEX_DIGITS)
_STORED_PATH = re.compile(_PATH_WITH_INDEXES % "")  # as once checked: indexes of any length
_MAX_PATH_CHARS = 500
MAX_RULE_CHARS = 100_000  # of a rule as JSON: far more than rules need, far less than a table row holds
_MISSING = object()
_MAX_CONDITIONS, _MAX_DEPTH = 100, 5
# `matches` runs RE2, whose time is linear in pattern and text (no backtracking), on at most this much of a
# value: so that no pattern and no event can hold the host for more than milliseconds.
_MATCH_CHARS = 10_000
_RE2 = re2.Options()
_RE2.log_errors = False  # a pattern RE2 refuses is the caller's 422, not a line on stderr


def _regex(pattern: str) -> Any:
    """The pattern compiled by RE2 (which caches it); RE2 has no backreferences and no lookaround."""
    try:
        return re2.compile(pattern, _RE2)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise Unprocessable(f"'{pattern}' is not a regular expression RE2 can run ({reason}); backreferences and "
                            "lookaround are not supported", code="rule_pattern_unsupported") from None


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str = Field(description="JSON path into the event: data.total_gross, $.data.items[0].name, subject")
    op: Op
    value: Any = Field(None, validate_default=True, description=(
        "The operand. For `matches`, an RE2 regular expression (no backreferences or lookaround) searched in "
        f"the first {_MATCH_CHARS:,} characters of the field"))

    @field_validator("field")
    @classmethod
    def _path(cls, value: str, info: ValidationInfo) -> str:
        if (info.context or {}).get("stored"):  # saved under older checks: it loads (see `lookup`)
            valid = bool(_STORED_PATH.match(value))
        else:
            valid = len(value) <= _MAX_PATH_CHARS and bool(_PATH.match(value))
        if not valid:
            raise ValueError(f"'{value[:100]}' is not a JSON path like data.total_gross or data.items[0].name (of at "
                             f"most {_MAX_PATH_CHARS} characters, indexes of at most {_MAX_INDEX_DIGITS} digits)")
        return value

    @field_validator("value")
    @classmethod
    def _pattern(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data.get("op") != "matches":
            return value
        if not isinstance(value, str) or len(value) > 200:
            raise ValueError("matches needs a regular expression of at most 200 characters")
        # Rules stored before patterns ran on RE2 still load; one RE2 refuses fails when evaluated (see plan).
        if not (info.context or {}).get("stored"):
            try:
                _regex(value)
            except Unprocessable as error:
                raise ValueError(str(error)) from None
        return value

    @model_validator(mode="after")
    def _operand(self) -> "Condition":
        if self.op == "in" and not isinstance(self.value, list):
            raise ValueError("in needs a list of values")
        if self.op == "exists" and not isinstance(self.value, (bool, type(None))):
            raise ValueError("exists takes true, false or nothing")
        return self


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid")

    all: list["Node"] | None = Field(None, min_length=1)
    any: list["Node"] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one(self) -> "Group":
        if (self.all is None) == (self.any is None):
            raise ValueError("a group has either `all` or `any`")
        return self


def _node_kind(value: Any) -> str:
    return "group" if isinstance(value, (dict, Group)) and ({"all", "any"} & set(
        value if isinstance(value, dict) else {k for k in ("all", "any") if getattr(value, k) is not None})) \
        else "condition"


Node = Annotated[Union[Annotated[Condition, Tag("condition")], Annotated[Group, Tag("group")]],
                 Discriminator(_node_kind)]
Group.model_rebuild()


class NotifyAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["notify"]
    channel: Channel
    to: str = Field(description="Jinja2, e.g. {{ data.metadata.buyer_email }}")
    template: str | None = None
    subject: str | None = None
    body: str | None = None
    html: str | None = None

    @model_validator(mode="after")
    def _content(self) -> "NotifyAction":
        if (self.template is None) == (self.body is None and self.html is None):
            raise ValueError("name a template, or give a body (not both)")
        if self.template is not None and self.subject is not None:
            raise ValueError("a template brings its own subject")
        return self


class WebhookAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["webhook"]
    url: str = Field(description="https URL; receives the event signed with CALLBACK_SIGNING_SECRET")


class StartJobAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["start_job"]
    capability: Literal["offer"] = Field(description="offer: read `text` as an offer")
    text: str = Field(description="Jinja2: the text the job reads")


class PauseChatAction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["pause_chat"]
    chat_id: str = Field("{{ data.chat_id }}", description="Jinja2: the WhatsApp chat to hand to a person")


Action = Annotated[Union[NotifyAction, WebhookAction, StartJobAction, PauseChatAction], Field(discriminator="type")]
# Fields filled from the event when the rule fires. A notification's subject and bodies are not: they are
# rendered once, when the notification is made, with the event as data (escaped in HTML), so that event
# text is never read as template code.
_TEMPLATED = {"notify": ("to",), "webhook": ("url",), "start_job": ("text",), "pause_chat": ("chat_id",)}
_CHECKED = {**_TEMPLATED, "notify": ("to", "subject", "body", "html")}


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    event: str = Field(description="Event type the rule listens to; * wildcards allowed")
    conditions: Node | None = Field(None, description="all/any tree of conditions; none: always")
    actions: list[Action] = Field(min_length=1, max_length=20)
    priority: int = Field(100, ge=0, le=1_000_000, strict=True, description="Lower runs first")
    enabled: bool = True
    stop_processing: bool = Field(False, description="When this rule fires, rules after it are skipped")

    @field_validator("event")
    @classmethod
    def _event(cls, value: str, info: ValidationInfo) -> str:
        if (info.context or {}).get("stored"):  # saved under older checks (`custom.Foo` was taken): it loads
            return value
        if len(value) > MAX_PATTERN_CHARS:
            raise ValueError(f"an event pattern has at most {MAX_PATTERN_CHARS} characters")
        return validate_pattern(value)

    @model_validator(mode="after")
    def _bounded(self, info: ValidationInfo) -> "RuleIn":
        if not (info.context or {}).get("stored") and len(self.model_dump_json()) > MAX_RULE_CHARS:
            raise ValueError(f"a rule holds at most {MAX_RULE_CHARS:,} characters as JSON")
        return self

    @field_validator("actions")
    @classmethod
    def _templates_compile(cls, actions: list[Any]) -> list[Any]:
        for action in actions:
            for name in _CHECKED[action.type]:
                compile_part(getattr(action, name) or "", html=name == "html", name=name)
        return actions


class Rule(RuleIn):
    id: str
    created_at: str


def _outgrown(conditions: Any) -> dict | None:
    """Where a condition tree passes the limits, found in the raw JSON before a huge or deep tree is validated."""
    count, pending = 0, [(conditions, "conditions", 1)]
    while pending:
        node, path, depth = pending.pop()
        groups = [(k, node[k]) for k in ("all", "any") if isinstance(node, dict) and isinstance(node.get(k), list)]
        if not groups:
            count += 1
            if count > _MAX_CONDITIONS:
                return {"field": "conditions", "message": f"a rule has at most {_MAX_CONDITIONS} conditions"}
        elif depth > _MAX_DEPTH:
            return {"field": path, "message": f"groups nest at most {_MAX_DEPTH} deep"}
        for key, children in groups:
            pending.extend((child, f"{path}.{key}.{i}", depth + 1) for i, child in reversed(list(enumerate(children))))
    return None


def check_targets(rule: RuleIn, allowed_hosts: str) -> RuleIn:
    """Webhook actions whose URL is fixed (no template) must name a public https target, as subscriptions do:
    refused now with the action's path, rather than at every event."""
    for index, action in enumerate(rule.actions):
        if isinstance(action, WebhookAction) and "{" not in action.url:
            try:
                validate_target(action.url, allowed_hosts)
            except Unprocessable as error:
                raise schema_error([{"field": f"actions.{index}.url", "message": error.message}]) from None
    return rule


def parse_rule(raw: Any) -> RuleIn:
    """A rule from JSON: errors name their path (`conditions.all.1.op`), without pydantic's union tags."""
    if isinstance(raw, dict) and raw.get("conditions") is not None and (problem := _outgrown(raw["conditions"])):
        raise schema_error([problem])
    try:
        return RuleIn.model_validate(raw)
    except ValidationError as exc:
        error = invalid_body(exc)
        for detail in error.details:
            detail["field"] = ".".join(p for p in detail["field"].split(".") if p not in ("condition", "group"))
        raise error from None


def lookup(document: Any, path: str) -> Any:
    current = document
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path.removeprefix("$.")):
        if part.startswith("["):
            if len(part) > _MAX_INDEX_DIGITS + 2:  # an index no list reaches (a rule saved before paths were bounded)
                return _MISSING
            index = int(part[1:-1])
            if not isinstance(current, list) or index >= len(current):
                return _MISSING
            current = current[index]
        elif isinstance(current, dict) and part in current:
            current = current[part]
        else:
            return _MISSING
    return current


# A number written as text: "1250", "-3.5", "1,250.00" (thousands grouped with commas). Not "01234" (a postcode),
# "1,5" (a German decimal, which would read as 15), "NaN", "inf" or "1_000", which Python's float() would all take.
_NUMERIC_TEXT = re.compile(r"-?(?:0|[1-9]\d*|[1-9]\d{0,2}(?:,\d{3})+)(?:\.\d+)?")


def _number(value: Any) -> int | float | None:
    """The number a value is or writes; ints stay ints (Python compares them with floats exactly, so 10**400 needs
    no float that would overflow); booleans are no numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str) and _NUMERIC_TEXT.fullmatch(value.strip()):
        text = value.strip().replace(",", "")
        return float(text) if "." in text else int(text)
    return None


def _compare(op: str, left: Any, right: Any) -> bool:
    a, b = _number(left), _number(right)
    if a is None or b is None:
        if not (isinstance(left, str) and isinstance(right, str)):
            return False
        a, b = left, right  # ISO dates and other strings compare as text
    return {"gt": a > b, "gte": a >= b, "lt": a < b, "lte": a <= b}[op]


def _equal(left: Any, right: Any) -> bool:
    """Texts equal as texts ("01234" is not "1234"), a number and a number or its text as numbers, a boolean only
    a boolean (true is not 1)."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, str) and isinstance(right, str):
        return left == right
    a, b = _number(left), _number(right)
    return a == b if a is not None and b is not None else left == right


def holds(condition: Condition, event: dict) -> bool:
    value = lookup(event, condition.field)
    if condition.op == "exists":
        return (value is not _MISSING and value is not None) == (condition.value is not False)
    if value is _MISSING:
        return condition.op == "ne"
    if condition.op == "eq":
        return _equal(value, condition.value)
    if condition.op == "ne":
        return not _equal(value, condition.value)
    if condition.op == "in":
        return any(_equal(value, v) for v in condition.value)
    if condition.op == "contains":
        if isinstance(value, str):
            return isinstance(condition.value, str) and condition.value.lower() in value.lower()
        return isinstance(value, list) and any(_equal(v, condition.value) for v in value)
    if condition.op == "matches":
        return isinstance(value, str) and _regex(condition.value).search(value[:_MATCH_CHARS]) is not None
    return _compare(condition.op, value, condition.value)


def evaluate(node: Condition | Group | None, event: dict) -> bool:
    if node is None:
        return True
    if isinstance(node, Condition):
        return holds(node, event)
    if node.all is not None:
        return all(evaluate(child, event) for child in node.all)
    return any(evaluate(child, event) for child in node.any or [])


def render_action(action: Any, event: Event) -> dict:
    """The action with its templated fields filled from the event (`data`, `subject`, `type`, `id`, `event`)."""
    context = {**event.model_dump(), "event": event.model_dump()}
    rendered = action.model_dump()
    for name in _TEMPLATED[action.type]:
        if rendered.get(name):
            rendered[name] = render_string(rendered[name], context, name=name).strip()
    return rendered


def plan(rules: list[Rule], event: Event) -> list[dict]:
    """Which rules fire for the event, in priority order, and their actions filled in.

    A rule with `stop_processing` that fires ends the run; rules that do not fire never stop it. A rule
    whose templates fail on this event, or whose stored pattern RE2 cannot run, is listed with its error and
    no actions, and does not stop the run. A failure that may pass (the template workers busy) is raised: the
    caller plans again later rather than record the rule as fired with nothing to do.
    """
    fired = []
    document = event.model_dump()
    for rule in sorted(rules, key=lambda r: (r.priority, r.created_at)):
        if not rule.enabled or not matches([rule.event], event.type):
            continue
        try:
            if not evaluate(rule.conditions, document):
                continue
            actions = [render_action(a, event) for a in rule.actions]
        except AppError as error:  # e.g. a template names a field this event lacks: this rule cannot act
            if error.transient:  # the template workers are busy: the whole plan is made again, not this rule lost
                raise
            fired.append({"rule_id": rule.id, "rule": rule.name, "actions": [], "error": error.to_body()["error"]})
            continue
        fired.append({"rule_id": rule.id, "rule": rule.name, "actions": actions})
        if rule.stop_processing:
            break
    return fired


def started_by_a_rule(event: Event) -> bool:
    """Whether the event comes from a job a rule's `start_job` started (its metadata names the rule): such an event
    starts no other job, or a rule on the events of the jobs it starts would loop, a paid model call each time."""
    metadata = event.data.get("metadata") if isinstance(event.data, dict) else None
    return isinstance(metadata, dict) and bool(metadata.get("rule"))


RULES = "rules"
_ALL = "all"


_snapshot: Snapshot[list[Rule]] = Snapshot()  # read for every event
_STORED = {"stored": True}  # rules saved under older checks must still load: see Condition._pattern


class RuleStore:
    def __init__(self, tables: Tables) -> None:
        self.tables = tables

    async def all(self, *, fresh: bool = True) -> list[Rule]:
        async def load() -> list[Rule]:
            return [Rule.model_validate(row, context=_STORED) async for _, row in self.tables.partition(RULES, _ALL)]

        return await _snapshot.get(load, fresh=fresh)

    async def matching(self, event_type: str) -> list[Rule]:
        """The enabled rules for this type, from a snapshot at most a few seconds old."""
        return [r for r in await self.all(fresh=False) if r.enabled and matches([r.event], event_type)]

    async def get(self, rule_id: str) -> Rule:
        row = await self.tables.get(RULES, _ALL, rule_id)
        if row is None:
            raise NotFound(f"No rule '{rule_id}'.", code="rule_not_found")
        return Rule.model_validate(row, context=_STORED)

    async def save(self, rule: Rule) -> None:
        await self.tables.upsert(RULES, _ALL, rule.id, rule.model_dump(mode="json"))
        _snapshot.clear()

    async def delete(self, rule_id: str) -> None:
        await self.get(rule_id)
        await self.tables.delete(RULES, _ALL, rule_id)
        _snapshot.clear()


def new_rule(body: RuleIn, created_at: str, rule_id: str | None = None) -> Rule:
    return Rule(**body.model_dump(), id=rule_id or f"rule_{uuid.uuid4().hex[:16]}", created_at=created_at)
