"""Event rules: CRUD, a dry run, and the orchestration that evaluates them for every event and acts."""
from __future__ import annotations

from typing import Any

import azure.durable_functions as df
import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field

from shared.automation.events import Event, new_event
from shared.automation.notifications import NotificationIn
from shared.automation.outbox import Outbox
from shared.automation.rules import RuleIn, RuleStore, check_targets, new_rule, parse_rule, plan, started_by_a_rule
from shared.blocking import in_thread
from shared.clock import iso_utc
from shared.config import get_settings
from shared.jobs import parse_date
from shared.errors import AppError, DeliveryError, Unprocessable, decode_json, parse_json_body
from shared.outcomes import failed, succeeded
from shared.storage.tables import Tables
from shared.webhooks import post_signed, validate_target
from shared.whatsapp.events import checked_chat_id

from ._http import handles_errors, json_response
from ._retry import CRASH_RETRY

bp = df.Blueprint()


def _rules() -> RuleStore:
    return RuleStore(Tables(get_settings()))


def _rule_in(req: func.HttpRequest) -> RuleIn:
    """The rule a create or replace sends, its fixed webhook targets checked."""
    return check_targets(parse_rule(decode_json(req.get_body())), get_settings().callback_allowed_hosts)


@bp.route(route="rules", methods=["POST"])
@handles_errors
async def create_rule(req: func.HttpRequest) -> func.HttpResponse:
    rule = new_rule(_rule_in(req), iso_utc())
    await _rules().save(rule)
    return json_response(rule.model_dump(mode="json"), 201, {"Location": f"/api/rules/{rule.id}"})


@bp.route(route="rules", methods=["GET"])
@handles_errors
async def list_rules(req: func.HttpRequest) -> func.HttpResponse:
    rules = sorted(await _rules().all(), key=lambda r: (r.priority, r.created_at))
    return json_response({"rules": [r.model_dump(mode="json") for r in rules]})


class _SampleEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    subject: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None
    occurred_at: str | None = None


class _DryRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: _SampleEvent
    rule: dict[str, Any] | None = Field(None, description="An unsaved rule to try")
    rule_id: str | None = Field(None, description="A saved rule to try; neither: every saved rule")


@bp.route(route="rules/test", methods=["POST"])
@handles_errors
async def test_rules(req: func.HttpRequest) -> func.HttpResponse:
    """Dry run: which rules would fire for the sample event and what their actions would do. Nothing is sent."""
    body = parse_json_body(req.get_body(), _DryRun)
    if body.rule is not None:
        rules = [new_rule(parse_rule(body.rule), iso_utc(), rule_id="rule_dry_run")]
    elif body.rule_id is not None:
        rules = [await _rules().get(body.rule_id)]
    else:
        rules = await _rules().all()
    occurred_at = parse_date(body.event.occurred_at, "event.occurred_at")
    event = new_event(body.event.type, body.event.subject, body.event.data, event_id=body.event.id or "evt_dry_run",
                      occurred_at=occurred_at)
    fired = await in_thread(plan, rules, event)  # its templates render in worker processes: not on the event loop
    for rule in fired:
        rule["actions"] = [await _dry_action(action, event, rule["rule_id"]) for action in rule["actions"]]
    return json_response({"event": event.model_dump(), "fires": bool(fired), "fired": fired,
                          "evaluated": len(rules)})


async def _dry_action(action: dict, event: Event, rule_id: str) -> dict:
    """The action as the dry run shows it: with `error` when running it on this event would fail at once (before
    anything is sent), and for a notification the `message` it would send."""
    settings = get_settings()
    try:
        if action["type"] == "notify":
            request = _notification_request(action, event, f"rule:{rule_id}:{event.id}:dry")
            content = await Outbox(Tables(settings)).content(request)
            return {**action, "message": content.model_dump()}
        if action["type"] == "webhook":
            validate_target(action["url"], settings.callback_allowed_hosts)
        elif action["type"] == "start_job":
            _refuse_a_chain(event)
        elif action["type"] == "pause_chat":
            checked_chat_id(action["chat_id"])
    except AppError as error:
        return {**action, "error": error.to_body()["error"]}
    return action


def _notification_request(action: dict, event: Event, key: str) -> NotificationIn:
    """The notification a `notify` action asks for, with the event as its template data."""
    from pydantic import ValidationError

    fields = {k: action.get(k) for k in ("channel", "to", "template", "subject", "body", "html")}
    try:
        return NotificationIn.model_validate({**{k: v for k, v in fields.items() if v is not None},
                                             "data": {**event.model_dump(), "event": event.model_dump()},
                                             "idempotency_key": key})
    except ValidationError as exc:
        raise Unprocessable(f"The rule's notification is invalid: {exc.errors()[0]['msg']}",
                            code="invalid_rule_action") from None


def _refuse_a_chain(event: Event) -> None:
    if started_by_a_rule(event):
        raise Unprocessable("The event comes from a job a rule started, which starts no other: a rule on "
                            "offer.* (or *) would otherwise start jobs for ever.", code="rule_chain_refused")


@bp.route(route="rules/{rule_id}", methods=["GET"])
@handles_errors
async def get_rule(req: func.HttpRequest) -> func.HttpResponse:
    return json_response((await _rules().get(req.route_params["rule_id"])).model_dump(mode="json"))


@bp.route(route="rules/{rule_id}", methods=["PUT"])
@handles_errors
async def replace_rule(req: func.HttpRequest) -> func.HttpResponse:
    store = _rules()
    existing = await store.get(req.route_params["rule_id"])
    rule = new_rule(_rule_in(req), existing.created_at, rule_id=existing.id)
    await store.save(rule)
    return json_response(rule.model_dump(mode="json"))


@bp.route(route="rules/{rule_id}", methods=["DELETE"])
@handles_errors
async def delete_rule(req: func.HttpRequest) -> func.HttpResponse:
    await _rules().delete(req.route_params["rule_id"])
    return func.HttpResponse(status_code=204)


@bp.orchestration_trigger(context_name="context")
def rules_evaluation(context: df.DurableOrchestrationContext):
    """The rules that fire for one event, in priority order; their actions run side by side, each retried."""
    event = context.get_input()
    fired = yield context.call_activity_with_retry("plan_rules", CRASH_RETRY, event)
    tasks, labels = [], []
    for rule in fired:
        for number, action in enumerate(rule["actions"], start=1):
            step = {"activity": "run_rule_action",
                    "input": {"action": action, "event": event, "rule_id": rule["rule_id"], "number": number}}
            tasks.append(context.call_sub_orchestrator("retried_activity", step,
                                                       f"{context.instance_id}:{rule['rule_id']}:{number}"))
            labels.append({"rule_id": rule["rule_id"], "action": action["type"]})
    outcomes = (yield context.task_all(tasks)) if tasks else []
    return {"fired": [r["rule_id"] for r in fired],
            "actions": [{**label, "ok": o["ok"], "error": o.get("error")} for label, o in zip(labels, outcomes)],
            "errors": [{"rule_id": r["rule_id"], "error": r["error"]} for r in fired if r.get("error")]}


@bp.activity_trigger(input_name="event")
async def plan_rules(event: dict) -> list[dict]:
    """Rules are read when the event is evaluated, so an edit applies to the next event."""
    return await in_thread(plan, await _rules().matching(event["type"]), Event.model_validate(event))


@bp.activity_trigger(input_name="task")
@bp.durable_client_input(client_name="client")
async def run_rule_action(task: dict, client: df.DurableOrchestrationClient) -> dict:
    action, event = task["action"], Event.model_validate(task["event"])
    settings = get_settings()
    key = f"rule:{task['rule_id']}:{event.id}:{task['number']}"
    try:
        return succeeded(await _act(client, action, event, key))
    except AppError as error:
        return failed(error, attempt=task.get("attempt", 1), max_attempts=settings.callback_max_attempts,
                      base_delay=settings.ai_retry_base_seconds)


async def _act(client: df.DurableOrchestrationClient, action: dict, event: Event, key: str) -> dict:
    settings = get_settings()
    kind = action["type"]
    if kind == "notify":
        from .notifications import queue_notification

        notification, _ = await queue_notification(client, _notification_request(action, event, key),
                                                   source=key.split(":")[1])
        return {"notification_id": notification.id}
    if kind == "webhook":
        url = validate_target(action["url"], settings.callback_allowed_hosts)
        attempt = await post_signed(url, event.model_dump(), secrets=[settings.callback_signing_secret.get_secret_value()],
                                    message_id=event.id, timeout=settings.callback_timeout_seconds,
                                    allowed_hosts=settings.callback_allowed_hosts)
        if not attempt.ok:
            raise DeliveryError(attempt.error or "webhook failed", code="rule_webhook_failed",
                                transient=not attempt.permanent)
        return {"status_code": attempt.status_code}
    if kind == "start_job":
        from .offers import start_offer_from_text

        _refuse_a_chain(event)
        job_id = await start_offer_from_text(client, action["text"], key, {"rule": key, "event_id": event.id})
        return {"job_id": job_id}
    if kind == "pause_chat":
        from shared.whatsapp import assistant

        chat_id = checked_chat_id(action["chat_id"])  # as the route to pause a chat checks it (400 invalid_chat_id)
        conversation = await assistant.set_paused(Tables(settings), chat_id, True)
        return {"chat_id": conversation["chat_id"], "paused": True}
    raise Unprocessable(f"Unknown action '{kind}'.", code="invalid_rule_action")
