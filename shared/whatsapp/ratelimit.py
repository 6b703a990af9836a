"""Per-user sliding-window rate limit as a pure function: state in, decision and new state out."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_LIMIT = 10
DEFAULT_WINDOW_S = 60.0


class RateState(BaseModel):
    """What one user's limiter remembers; small and JSON, so a Durable entity or a table row can hold it."""

    model_config = ConfigDict(extra="forbid")

    accepted: list[float] = Field(default_factory=list, description="Times (s) of the messages let through")
    notified: bool = Field(False, description="The user was told they are over the limit in this spell")


class RateDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allowed: bool
    notify: bool = Field(False, description="Tell the user once that they are sending too fast")
    retry_after_s: float = 0.0
    state: RateState


def admit(state: RateState | None, now: float, *, limit: int = DEFAULT_LIMIT,
          window_s: float = DEFAULT_WINDOW_S) -> RateDecision:
    """Let a message through when fewer than `limit` were let through in the last `window_s` seconds.

    Only accepted messages count: a user who keeps sending while blocked is not locked out for
    longer, the window frees up `window_s` after the messages that filled it.
    """
    if limit < 1 or window_s <= 0:
        raise ValueError("limit must be at least 1 and window_s positive")
    state = state or RateState()
    recent = sorted(t for t in state.accepted if now - t < window_s)
    if len(recent) < limit:
        # Room again: a later overflow deserves a new notice.
        return RateDecision(allowed=True, state=RateState(accepted=recent + [now], notified=False))
    retry_after = max(0.0, recent[-limit] + window_s - now)
    return RateDecision(allowed=False, notify=not state.notified, retry_after_s=retry_after,
                        state=RateState(accepted=recent, notified=True))
