"""Coalescing of messages typed in quick succession into one turn, so the bot answers once, not per line."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")

DEFAULT_WINDOW_S = 3.0
DEFAULT_MAX_WAIT_S = 15.0


@dataclass(frozen=True)
class Turn(Generic[T]):
    """`messages` form the turn when `ready`; `rest` stay pending; `wake_at` is when to look again."""

    ready: bool
    messages: list[T] = field(default_factory=list)
    rest: list[T] = field(default_factory=list)
    wake_at: float | None = None


def _timestamp(message: object) -> float:
    return float(message.timestamp)  # type: ignore[attr-defined]


def plan_turn(pending: Sequence[T], now: float, *, window_s: float = DEFAULT_WINDOW_S,
              max_wait_s: float = DEFAULT_MAX_WAIT_S, at: Callable[[T], float] = _timestamp) -> Turn[T]:
    """The first turn among `pending` (any objects; `at` gives each one's time in seconds).

    A message joins the turn when it comes within `window_s` of the previous one. The turn is ready
    once `window_s` passed without a new message, or a pause separates it from later messages, or
    `max_wait_s` passed since its first message (someone typing on and on still gets an answer).
    Messages keep their arrival order; equal times never swap.
    """
    if window_s <= 0 or max_wait_s < window_s:
        raise ValueError("window_s must be positive and max_wait_s at least window_s")
    ordered = sorted(pending, key=at)  # stable: ties keep arrival order
    if not ordered:
        return Turn(ready=False)
    first = at(ordered[0])
    end = 1
    while end < len(ordered):
        gap = at(ordered[end]) - at(ordered[end - 1])
        if gap > window_s or at(ordered[end]) - first > max_wait_s:
            break
        end += 1
    turn, rest = ordered[:end], ordered[end:]
    last = at(turn[-1])
    if rest or now - last >= window_s or now - first >= max_wait_s:
        return Turn(ready=True, messages=turn, rest=rest)
    return Turn(ready=False, rest=ordered, wake_at=min(last + window_s, first + max_wait_s))


def turn_text(texts: Sequence[str]) -> str:
    """One question from the lines of a turn, in order, blank ones left out."""
    return "\n".join(t.strip() for t in texts if t and t.strip())
