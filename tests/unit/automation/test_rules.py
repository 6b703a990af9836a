"""Rules without Azure: conditions over event JSON, priority and stop_processing, errors with their path."""
from __future__ import annotations

import pytest

from shared.automation.events import new_event
from shared.automation.rules import (Condition, Rule, check_targets, evaluate, holds, lookup, new_rule, parse_rule,
                                     plan)
from shared.errors import Unprocessable

EVENT = new_event("offer.parsed", "offer-1", {
    "result": {"total_gross": 7544.52, "currency": "GBP", "supplier": "Kestrel Automation Ltd",
               "items": [{"description": "Servo motor SM-40", "quantity": 4}], "valid_until": "2026-12-31",
               "tags": ["urgent", "b2b"], "note": None},
    "metadata": {"buyer_email": "buyer@example.com"}}).model_dump()


def cond(field: str, op: str, value=None) -> Condition:
    return Condition(field=field, op=op, value=value)


@pytest.mark.parametrize("condition,expected", [
    (cond("data.result.total_gross", "gt", 5000), True),
    (cond("data.result.total_gross", "gt", "5,000.00"), True),
    (cond("data.result.total_gross", "lte", 7544.52), True),
    (cond("data.result.total_gross", "lt", 100), False),
    (cond("data.result.currency", "eq", "GBP"), True),
    (cond("data.result.currency", "ne", "EUR"), True),
    (cond("data.result.currency", "in", ["EUR", "GBP"]), True),
    (cond("data.result.supplier", "contains", "kestrel"), True),
    (cond("data.result.tags", "contains", "urgent"), True),
    (cond("data.result.supplier", "matches", r"^Kestrel\b"), True),
    (cond("$.data.result.items[0].description", "matches", "SM-\\d+"), True),
    (cond("data.result.items[3].description", "exists"), False),
    (cond("data.result.note", "exists"), False),
    (cond("data.result.note", "exists", False), True),
    (cond("data.metadata.buyer_email", "exists"), True),
    (cond("data.result.valid_until", "gte", "2026-12-01"), True),
    (cond("data.result.missing", "ne", 1), True),
    (cond("data.result.missing", "eq", 1), False),
    (cond("data.result.supplier", "gt", 5), False),
    (cond("type", "eq", "offer.parsed"), True),
])
def test_each_operator_on_event_json(condition, expected):
    assert holds(condition, EVENT) is expected


TEXTS = new_event("custom.order", "o-1", {"postcode": "01234", "name": "Nan", "amount": "1,5", "paid": True,
                                        "count": 1, "total": "1,250.00", "qty": "50", "huge": 10 ** 400}).model_dump()


@pytest.mark.parametrize("condition,expected", [
    (cond("data.postcode", "eq", "1234"), False),  # texts compare as texts: a postcode is no number
    (cond("data.postcode", "eq", "01234"), True),
    (cond("data.name", "eq", "Nan"), True),  # a name, not a float
    (cond("data.name", "in", ["Nan", "Bob"]), True),
    (cond("data.name", "ne", "Nan"), False),
    (cond("data.amount", "gt", 10), False),  # "1,5" is no 15 (nor a number at all)
    (cond("data.paid", "eq", 1), False),  # true is not 1
    (cond("data.paid", "eq", True), True),
    (cond("data.count", "eq", True), False),
    (cond("data.count", "in", [True]), False),
    (cond("data.total", "eq", 1250), True),  # a number written with thousands grouped
    (cond("data.qty", "eq", 50), True),
    (cond("data.qty", "gte", 50.0), True),
    (cond("data.huge", "gt", 1000), True),  # held as an int: no overflow
    (cond("data.count", "lt", 10 ** 400), True),
])
def test_texts_numbers_and_booleans_compare_as_what_they_are(condition, expected):
    assert holds(condition, TEXTS) is expected


def test_all_and_any_trees_nest():
    rule = parse_rule({"name": "n", "event": "offer.*", "actions": [{"type": "pause_chat"}],
                       "conditions": {"all": [{"field": "data.result.total_gross", "op": "gt", "value": 5000},
                                              {"any": [{"field": "data.result.currency", "op": "eq", "value": "USD"},
                                                       {"field": "data.result.tags", "op": "contains",
                                                        "value": "b2b"}]}]}})
    assert evaluate(rule.conditions, EVENT) is True
    assert lookup(EVENT, "data.result.items[0].quantity") == 4


def rule(name: str, priority: int, *, stop: bool = False, minimum: float = 0, created: str = "2026-01-01") -> object:
    body = parse_rule({"name": name, "event": "offer.parsed", "priority": priority, "stop_processing": stop,
                       "conditions": {"field": "data.result.total_gross", "op": "gt", "value": minimum},
                       "actions": [{"type": "notify", "channel": "email", "to": "{{ data.metadata.buyer_email }}",
                                    "subject": "{{ data.result.supplier }}", "body": "{{ data.result.total_gross }}"}]})
    return new_rule(body, created)


def test_rules_fire_in_priority_order_and_stop_processing_ends_the_run():
    fired = plan([rule("late", 50), rule("stopper", 20, stop=True), rule("first", 10), rule("after stop", 30)],
                 new_event("offer.parsed", "o", EVENT["data"]))
    assert [f["rule"] for f in fired] == ["first", "stopper"]
    action = fired[0]["actions"][0]
    assert action["to"] == "buyer@example.com"
    # the subject and body stay templates: the notification renders them once, with the event as its data
    assert action["subject"] == "{{ data.result.supplier }}" and action["body"] == "{{ data.result.total_gross }}"


def test_a_stop_processing_rule_that_does_not_fire_stops_nothing():
    fired = plan([rule("stopper", 1, stop=True, minimum=10_000), rule("next", 2)],
                 new_event("offer.parsed", "o", EVENT["data"]))
    assert [f["rule"] for f in fired] == ["next"]


def test_disabled_rules_and_other_event_types_do_not_fire():
    disabled = rule("off", 1).model_copy(update={"enabled": False})
    assert plan([disabled], new_event("offer.parsed", "o", EVENT["data"])) == []
    assert plan([rule("on", 1)], new_event("offer.failed", "o", EVENT["data"])) == []


def test_a_rule_whose_template_fails_on_this_event_is_reported_and_the_run_goes_on():
    broken = new_rule(parse_rule({"name": "broken", "event": "offer.parsed", "stop_processing": True,
                                  "actions": [{"type": "webhook", "url": "https://x.example.com/{{ data.nope }}"}]}),
                      "2026-01-01")
    fired = plan([broken, rule("next", 200)], new_event("offer.parsed", "o", EVENT["data"]))
    assert fired[0]["error"]["code"] == "template_undefined_variable" and fired[0]["actions"] == []
    assert fired[1]["rule"] == "next"


@pytest.mark.parametrize("body,path", [
    ({"conditions": {"all": [{"field": "data.x", "op": "gt", "value": 1}, {"field": "data.y", "op": "between"}]}},
     "conditions.all.1.op"),
    ({"conditions": {"any": [{"field": "data..x", "op": "eq", "value": 1}]}}, "conditions.any.0.field"),
    ({"conditions": {"field": "data.x", "op": "matches", "value": "("}}, "conditions"),
    ({"conditions": {"all": [], "any": []}}, "conditions.all"),
    ({"event": "offer.exploded"}, "event"),
    ({"actions": [{"type": "launch_rockets"}]}, "actions.0"),
    ({"actions": [{"type": "notify", "channel": "email"}]}, "actions.0.notify.to"),
    ({"priority": -1}, "priority"),
    ({"priority": True}, "priority"),
    ({"priority": "5"}, "priority"),
    ({"conditions": {"field": "data.x[" + "9" * 5000 + "]", "op": "exists"}}, "conditions.field"),
    ({"conditions": {"field": "data." + "x" * 600, "op": "exists"}}, "conditions.field"),
    ({"event": "custom." + "a" * 300}, "event"),
    ({"conditions": {"field": "data.x", "op": "eq", "value": "v" * 200_000}}, ""),
])
def test_invalid_rules_name_the_path_of_the_error(body, path):
    base = {"name": "r", "event": "offer.parsed", "actions": [{"type": "pause_chat"}]}
    with pytest.raises(Unprocessable) as caught:
        parse_rule({**base, **body})
    assert any(d["field"].startswith(path) for d in caught.value.details), caught.value.details


def test_a_rule_saved_before_paths_were_bounded_still_loads_and_its_huge_index_finds_nothing():
    stored = {"name": "r", "event": "offer.*", "actions": [{"type": "pause_chat"}], "id": "rule_1",
              "created_at": "2026-01-01", "conditions": {"field": "data.result.items[" + "9" * 5000 + "]",
                                                         "op": "exists", "value": False}}
    rule = Rule.model_validate(stored, context={"stored": True})
    assert evaluate(rule.conditions, EVENT) is True  # missing (no error): plan runs it and the other rules


def test_a_notify_action_needs_a_template_or_a_body():
    base = {"name": "r", "event": "offer.parsed"}
    with pytest.raises(Unprocessable):
        parse_rule({**base, "actions": [{"type": "notify", "channel": "sms", "to": "+4915112345678"}]})
    assert parse_rule({**base, "actions": [{"type": "notify", "channel": "sms", "to": "+4915112345678",
                                            "template": "offer-alert"}]})


def test_a_notify_action_with_a_template_may_not_bring_its_own_subject():
    with pytest.raises(Unprocessable):
        parse_rule({"name": "r", "event": "offer.parsed", "actions": [
            {"type": "notify", "channel": "email", "to": "a@example.com", "template": "t", "subject": "Hi"}]})


# `re` holds the GIL while it backtracks, so a thread cannot time it out: the catastrophic case runs in a child
# process that is killed if it outlives the timeout, and the child measures the evaluation itself.
_CATASTROPHIC = """
import time
from shared.automation.rules import Condition, holds
condition = Condition(field="data.s", op="matches", value="^(a+)+$")
started = time.monotonic()
assert holds(condition, {"data": {"s": "a" * 40 + "!"}}) is False
print(time.monotonic() - started)
"""


def test_a_catastrophic_pattern_on_a_long_value_is_decided_within_a_second():
    import subprocess
    import sys
    from pathlib import Path

    try:
        child = subprocess.run([sys.executable, "-c", _CATASTROPHIC], capture_output=True, text=True, timeout=20,
                               check=False, cwd=Path(__file__).resolve().parents[3])
    except subprocess.TimeoutExpired:
        pytest.fail("matching ^(a+)+$ against 40 characters did not finish within 20 s")
    assert child.returncode == 0, child.stderr
    assert float(child.stdout) < 1.0


def test_matches_reads_at_most_the_first_10000_characters_of_a_value():
    condition = cond("data.s", "matches", "needle")
    assert holds(condition, {"data": {"s": "x" * 9_000 + "needle"}}) is True
    assert holds(condition, {"data": {"s": "x" * 10_000 + "needle"}}) is False


@pytest.mark.parametrize("pattern,text,expected", [
    (r"(?i)^kestrel\s+automation", "KESTREL Automation Ltd", True),
    (r"^\d{4}-\d{2}-\d{2}$", "2026-12-31", True),
    (r"^\d{4}-\d{2}-\d{2}$", "31.12.2026", False),
    (r"caf[ée]", "Café Ltd", False),
    (r"(?i)caf[ée]", "Café Ltd", True),
])
def test_matches_keeps_working_for_ordinary_patterns(pattern, text, expected):
    assert holds(cond("data.s", "matches", pattern), {"data": {"s": text}}) is expected


BASE = {"name": "r", "event": "offer.parsed", "actions": [{"type": "pause_chat"}]}
LEAF = {"field": "data.x", "op": "eq", "value": 1}


def nested(levels: int) -> dict:
    node: dict = LEAF
    for _ in range(levels):
        node = {"all": [node]}
    return node


def rejected(body: dict) -> list[dict]:
    with pytest.raises(Unprocessable) as caught:
        parse_rule({**BASE, **body})
    return caught.value.details


@pytest.mark.parametrize("pattern,message", [
    (r"(a)\1", "backreference"),
    (r"Ltd(?!\.)", "lookaround"),
    (r"(?<=GB)\d+", "lookaround"),
])
def test_patterns_re2_cannot_run_are_rejected_with_the_path_of_the_condition(pattern, message):
    details = rejected({"conditions": {"any": [LEAF, {"field": "data.s", "op": "matches", "value": pattern}]}})
    assert [d["field"] for d in details] == ["conditions.any.1.value"], details
    assert message in details[0]["message"]


def test_a_rule_with_more_than_100_conditions_is_rejected_without_reading_them_all():
    assert parse_rule({**BASE, "conditions": {"all": [LEAF] * 100}})
    details = rejected({"conditions": {"all": [LEAF] * 100_000}})
    assert details == [{"field": "conditions", "message": "a rule has at most 100 conditions"}]
    details = rejected({"conditions": {"any": [{"all": [LEAF] * 60}, {"all": [LEAF] * 60}]}})
    assert [d["field"] for d in details] == ["conditions"]


def test_groups_nested_deeper_than_5_are_rejected_with_the_path_of_the_deepest_group():
    assert evaluate(parse_rule({**BASE, "conditions": nested(5)}).conditions, {"data": {"x": 1}}) is True
    details = rejected({"conditions": {"any": [LEAF, nested(5)]}})
    assert details == [{"field": "conditions.any.1.all.0.all.0.all.0.all.0",
                        "message": "groups nest at most 5 deep"}]
    assert [d["field"] for d in rejected({"conditions": nested(10_000)})] == [
        "conditions" + ".all.0" * 5]


def test_a_stored_rule_whose_pattern_re2_cannot_run_is_reported_and_the_run_goes_on():
    stored = {**rule("next", 200).model_dump(mode="json"), "id": "rule_old", "name": "old", "priority": 1,
              "stop_processing": True, "conditions": {"field": "data.result.supplier", "op": "matches",
                                                      "value": r"Kestrel(?= Automation)"}}
    old = Rule.model_validate(stored, context={"stored": True})
    fired = plan([old, rule("next", 200)], new_event("offer.parsed", "o", EVENT["data"]))
    assert fired[0]["rule_id"] == "rule_old" and fired[0]["actions"] == []
    assert fired[0]["error"]["code"] == "rule_pattern_unsupported"
    assert fired[1]["rule"] == "next"


def test_a_fixed_webhook_url_must_be_a_public_https_target_and_a_templated_one_is_checked_when_sent():
    def webhook(url: str) -> object:
        return parse_rule({"name": "w", "event": "offer.parsed", "actions": [
            {"type": "notify", "channel": "email", "to": "a@example.com", "body": "x"}, {"type": "webhook", "url": url}]})

    check_targets(webhook("https://hooks.example.com/x"), "")
    check_targets(webhook("https://{{ data.host }}/x"), "")
    check_targets(webhook("http://127.0.0.1:9000/x"), "127.0.0.1")  # a test setting allows loopback
    with pytest.raises(Unprocessable) as refused:
        check_targets(webhook("http://10.0.0.1/x"), "")
    assert refused.value.details == [{"field": "actions.1.url", "message": "callback_url must use https."}]


def test_letters_of_any_script_are_matched_with_unicode_classes_as_the_readme_says():
    assert holds(Condition(field="data.name", op="matches", value=r"^[\pL\pN_ ]+ GmbH$"), {"data": {"name": "Bäcker GmbH"}})
    assert not holds(Condition(field="data.name", op="matches", value=r"^\w+$"), {"data": {"name": "Müller"}})  # ASCII


def test_a_failure_that_may_pass_is_raised_not_recorded_as_a_rule_fired_with_nothing_to_do(monkeypatch):
    from shared.automation import rules as rules_module
    from shared.automation.events import Event
    from shared.errors import ServiceUnavailable

    def busy(action, event):
        raise ServiceUnavailable("The template workers are busy.", code="templates_busy", transient=True)

    monkeypatch.setattr(rules_module, "render_action", busy)
    with pytest.raises(ServiceUnavailable):
        plan([rule("busy", 1)], Event.model_validate(EVENT))


def test_an_event_of_a_job_a_rule_started_is_told_apart():
    from shared.automation.events import Event
    from shared.automation.rules import started_by_a_rule

    assert started_by_a_rule(Event.model_validate(new_event("offer.parsed", "offer-2", {
        "job_id": "offer-2", "metadata": {"rule": "rule:r1:evt_1:1", "event_id": "evt_1"}}).model_dump()))
    for data in ({"job_id": "offer-1", "metadata": {"scenario": "42"}}, {"metadata": None}, {}):
        assert not started_by_a_rule(Event.model_validate(new_event("offer.parsed", "offer-1", data).model_dump()))


@pytest.mark.parametrize("pattern", ["custom.Foo", "custom.", "custom.a b"])
def test_a_custom_pattern_no_publishable_event_could_match_is_refused_but_a_stored_one_loads(pattern):
    from pydantic import ValidationError

    from shared.automation.rules import RuleIn
    from shared.automation.subscriptions import SubscriptionIn

    body = {"name": "r", "event": pattern, "actions": [{"type": "pause_chat", "chat_id": "1@c.us"}]}
    with pytest.raises(ValidationError):
        RuleIn.model_validate(body)
    with pytest.raises(ValidationError):
        SubscriptionIn.model_validate({"url": "https://example.com/hook", "events": [pattern]})
    assert RuleIn.model_validate(body, context={"stored": True}).event == pattern
    assert RuleIn.model_validate({**body, "event": "custom.order-*"}).event == "custom.order-*"
