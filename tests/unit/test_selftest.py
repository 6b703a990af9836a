"""The self-test report says ok only when every step did what it should."""
from datetime import datetime, timedelta, timezone

from shared import selftest

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _chain() -> int:
    value = 0
    for _ in range(selftest.CHAIN_LENGTH):
        value = selftest.chain_step(value)
    return value


def test_report_ok_when_all_steps_right():
    squares = [selftest.square(i) for i in range(selftest.FAN_OUT)]
    report = selftest.report(_chain(), squares, T0, T0 + timedelta(seconds=1.2), T0 + timedelta(seconds=1.3))
    assert report["ok"] is True and report["fan_out_sum"] == 285 and report["seconds"] == 1.3


def test_report_flags_a_short_timer_and_a_lost_fan_out_result():
    squares = [selftest.square(i) for i in range(selftest.FAN_OUT - 1)]
    report = selftest.report(_chain(), squares, T0, T0 + timedelta(seconds=0.5), T0 + timedelta(seconds=1))
    assert report["ok"] is False
    assert report["checks"] == {"chain": True, "fan_out": False, "timer": False}
