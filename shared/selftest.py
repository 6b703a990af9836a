"""The operator self-test: small, deterministic steps that exercise chaining, fan-out and timers."""
from __future__ import annotations

from datetime import datetime

CHAIN_LENGTH = 3
FAN_OUT = 10
TIMER_SECONDS = 1.0


def chain_step(value: int) -> int:
    return value * 2 + 1


def square(value: int) -> int:
    return value * value


def expected_fan_out_sum() -> int:
    return sum(square(i) for i in range(FAN_OUT))


def report(chain_value: int, squares: list[int], started: datetime, timer_fired: datetime,
           finished: datetime) -> dict:
    expected_chain = 0
    for _ in range(CHAIN_LENGTH):
        expected_chain = chain_step(expected_chain)
    checks = {
        "chain": chain_value == expected_chain,
        "fan_out": sum(squares) == expected_fan_out_sum() and len(squares) == FAN_OUT,
        "timer": (timer_fired - started).total_seconds() >= TIMER_SECONDS,
    }
    return {"ok": all(checks.values()), "checks": checks, "chain_value": chain_value,
            "fan_out_sum": sum(squares), "activities": CHAIN_LENGTH + FAN_OUT,
            "seconds": round((finished - started).total_seconds(), 3)}
