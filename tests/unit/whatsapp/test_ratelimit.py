"""Per-user sliding window: 10 messages a minute, one notice per overflow, room again as the window slides."""
from __future__ import annotations

import pytest

from shared.whatsapp.ratelimit import RateDecision, RateState, admit


def run(times: list[float], state: RateState | None = None, **limits) -> tuple[list[RateDecision], RateState]:
    decisions = []
    for now in times:
        decision = admit(state, now, **limits)
        decisions.append(decision)
        state = decision.state
    return decisions, state


def test_fifteen_messages_in_a_minute_let_ten_through_with_exactly_one_notice():
    decisions, _ = run([1000 + i * 3 for i in range(15)])
    assert [d.allowed for d in decisions] == [True] * 10 + [False] * 5
    assert [d.notify for d in decisions] == [False] * 10 + [True] + [False] * 4


def test_window_frees_up_after_sixty_seconds_and_a_new_overflow_gets_a_new_notice():
    decisions, state = run([float(i) for i in range(11)])  # 0..9 allowed, 10 refused with notice
    assert decisions[-1].notify is True
    later, state = run([60.0], state)  # the message of t=0 left the window
    assert later[0].allowed is True and state.notified is False
    again, _ = run([60.5], state)  # 1..9 and 60 fill the window again
    assert (again[0].allowed, again[0].notify) == (False, True)


def test_message_just_before_the_window_slides_is_still_refused_without_notice():
    decisions, state = run([float(i) for i in range(12)])
    edge, _ = run([59.999], state)
    assert (edge[0].allowed, edge[0].notify) == (False, False)


def test_refused_messages_do_not_extend_the_block():
    _, state = run([float(i) for i in range(10)] + [30.0 + i for i in range(20)])
    assert state.accepted == [float(i) for i in range(10)]
    freed, _ = run([60.0], state)
    assert freed[0].allowed is True


def test_retry_after_says_when_the_oldest_counted_message_leaves_the_window():
    decisions, _ = run([float(i) for i in range(10)] + [15.0])
    assert decisions[-1].retry_after_s == pytest.approx(45.0)


def test_state_stays_small_and_round_trips_through_json():
    _, state = run([float(i) for i in range(200)])
    assert len(state.accepted) == 10
    assert RateState.model_validate_json(state.model_dump_json()) == state


def test_custom_limit_and_window():
    decisions, _ = run([0.0, 1.0, 2.0, 5.1], limit=2, window_s=5)
    assert [d.allowed for d in decisions] == [True, True, False, True]


def test_no_state_means_a_new_user():
    decision = admit(None, 0.0)
    assert decision.allowed and decision.state.accepted == [0.0]


@pytest.mark.parametrize("limits", [{"limit": 0}, {"window_s": 0}])
def test_nonsense_limits_are_refused(limits):
    with pytest.raises(ValueError):
        admit(None, 0.0, **limits)
