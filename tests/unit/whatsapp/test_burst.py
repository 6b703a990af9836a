"""Burst coalescing: lines typed within 3 s of each other become one turn, a pause starts the next."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from shared.whatsapp.burst import plan_turn, turn_text


@dataclass
class Msg:
    text: str
    timestamp: float


def texts(messages) -> list[str]:
    return [m.text for m in messages]


FOUR = [Msg("Hi", 100.0), Msg("I saw your offer", 100.6), Msg("for the 2-bedroom", 101.3), Msg("is it free?", 102.0)]


def test_four_messages_within_two_seconds_form_one_turn_in_order():
    turn = plan_turn(FOUR, now=105.0)
    assert turn.ready and turn.rest == []
    assert texts(turn.messages) == ["Hi", "I saw your offer", "for the 2-bedroom", "is it free?"]
    assert turn_text(texts(turn.messages)) == "Hi\nI saw your offer\nfor the 2-bedroom\nis it free?"


def test_turn_is_not_ready_while_the_user_may_still_be_typing():
    turn = plan_turn(FOUR, now=103.0)
    assert not turn.ready and turn.messages == []
    assert turn.rest == FOUR and turn.wake_at == pytest.approx(105.0)


def test_message_after_a_pause_starts_a_new_turn():
    pending = FOUR + [Msg("hello again", 110.0)]
    first = plan_turn(pending, now=110.5)
    assert first.ready and texts(first.messages) == texts(FOUR)
    assert texts(first.rest) == ["hello again"]
    second = plan_turn(first.rest, now=110.5)
    assert not second.ready
    assert texts(plan_turn(first.rest, now=113.0).messages) == ["hello again"]


def test_out_of_order_delivery_is_put_back_in_time_order_and_ties_keep_arrival_order():
    pending = [Msg("b", 1.0), Msg("a", 0.5), Msg("c", 1.0)]
    assert texts(plan_turn(pending, now=10.0).messages) == ["a", "b", "c"]


def test_someone_typing_without_pause_is_answered_after_the_max_wait():
    pending = [Msg(str(i), float(i * 2)) for i in range(12)]  # every 2 s for 22 s
    turn = plan_turn(pending, now=22.0, max_wait_s=15.0)
    assert turn.ready
    assert texts(turn.messages) == [str(i) for i in range(8)]  # 0..14 s
    assert texts(turn.rest) == [str(i) for i in range(8, 12)]


def test_waiting_turn_wakes_at_the_max_wait_when_that_comes_first():
    pending = [Msg(str(i), float(i * 2)) for i in range(7)]  # 0..12 s
    turn = plan_turn(pending, now=12.5, max_wait_s=14.0)
    assert not turn.ready and turn.wake_at == pytest.approx(14.0)


def test_nothing_pending_is_never_ready():
    assert plan_turn([], now=0.0).ready is False


def test_custom_window_and_time_accessor():
    pending = [("a", 0.0), ("b", 4.0)]
    turn = plan_turn(pending, now=20.0, window_s=5.0, at=lambda m: m[1])
    assert turn.messages == pending


def test_blank_lines_are_left_out_of_the_turn_text():
    assert turn_text(["  hi ", "", "  ", "there"]) == "hi\nthere"


def test_nonsense_windows_are_refused():
    with pytest.raises(ValueError):
        plan_turn(FOUR, now=0.0, window_s=0)
    with pytest.raises(ValueError):
        plan_turn(FOUR, now=0.0, window_s=5, max_wait_s=1)
