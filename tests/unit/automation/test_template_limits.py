"""Costly templates (endless loops, huge values, deep recursion) are a quick 422, and rendering goes on after them."""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from shared.automation.notifications import NotificationIn
from shared.automation.outbox import Outbox
from shared.automation.templates import TemplateIn, render, render_string
from shared.errors import Unprocessable

# The 2 s render budget, plus starting a fresh worker after a killed one, on a busy two-core machine.
BOUND_SECONDS = 15.0


def within_bound(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, failing (not hanging) the test when it does not return within BOUND_SECONDS."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - raised again in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)  # daemon: a render that never ends cannot hold the suite
    started = time.monotonic()
    thread.start()
    thread.join(BOUND_SECONDS)
    assert not thread.is_alive(), f"the render still runs after {BOUND_SECONDS} s"
    assert time.monotonic() - started < BOUND_SECONDS
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.mark.parametrize("source,code", [
    ("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}", "template_too_costly"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "template_too_costly"),
    ("{{ 'x'|center(1000000000) }}", "template_too_costly"),
    ("{{ '%999999999d'|format(1) }}", "template_too_costly"),
    ("{{ ('a'|replace('a','a'*100000))|replace('a','a'*100000) }}", "template_too_costly"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "template_too_costly"),
    ("{% for i in [1] recursive %}{{ loop([1]) }}{% endfor %}", "template_too_costly"),
    ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "template_too_costly"),
    ("{% for i in x %}" * 30 + "{% endfor %}" * 30, "template_too_costly"),
    ("{{ 'abc'|truncate(-1) }}", "template_render_failed"),
])
def test_costly_or_broken_templates_are_a_quick_422(source, code):
    with pytest.raises(Unprocessable) as caught:
        within_bound(render_string, source, {"x": [1]})
    assert caught.value.code == code


def test_a_normal_template_renders_right_after_a_render_was_killed():
    with pytest.raises(Unprocessable) as caught:
        within_bound(render_string, "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                     {})
    assert "longer than" in caught.value.message
    out = within_bound(render, TemplateIn(subject="Hi {{ who }}", text="{{ n * 2 }}", html="<b>{{ who }}</b>"),
                       {"who": "<Ana>", "n": 21})
    assert (out.subject, out.text, out.html) == ("Hi <Ana>", "42", "<b>&lt;Ana&gt;</b>")


def test_output_up_to_the_cap_renders_and_past_it_is_refused():
    assert len(within_bound(render_string, "{% for i in range(1000) %}{{ 'x' * 900 }}{% endfor %}", {})) == 900_000
    with pytest.raises(Unprocessable) as caught:
        within_bound(render_string, "{% for i in range(2000) %}{{ 'x' * 900 }}{% endfor %}", {})
    assert caught.value.code == "template_too_costly"


def test_data_nested_deeper_than_a_worker_can_receive_is_a_422():
    deep: Any = []
    for _ in range(990):  # as deep as a JSON body may nest
        deep = [deep]
    with pytest.raises(Unprocessable) as caught:
        within_bound(render_string, "{{ x }}", {"x": deep})
    assert caught.value.code == "template_too_costly"


def test_a_template_nested_too_deeply_is_refused_when_saved():
    with pytest.raises(Unprocessable) as caught:
        TemplateIn(text="{% if 1 %}" * 300 + "{% endif %}" * 300)
    assert caught.value.code == "template_too_costly"


def test_a_costly_notification_body_is_a_422_and_the_event_loop_keeps_running():
    request = NotificationIn(channel="sms", to="+4915112345678",
                             body="{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")

    async def scenario() -> tuple[int, Unprocessable]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        ticker = asyncio.create_task(tick())
        try:
            await Outbox(tables=None).content(request)  # type: ignore[arg-type]  # no template: no table read
        except Unprocessable as error:
            return ticks, error
        finally:
            ticker.cancel()
        raise AssertionError("the body rendered")

    ticks, error = within_bound(asyncio.run, scenario())
    assert error.code == "template_too_costly" and error.message.startswith("body:")
    assert ticks >= 10  # the loop ran (every 50 ms) while the worker spun for the 2 s budget
