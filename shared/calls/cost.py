"""What analysing one call cost, in total, per operation and per minute of audio, from its usage records."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..ai.usage import Usage, price_table, priced, summarize


class CallCost(BaseModel):
    model_config = ConfigDict(extra="forbid")

    usage: dict[str, Any]  # `shared.ai.usage.summarize` of every model call: totals plus one line per call
    audio_seconds: float  # length of the recording (not the sum of transcribed chunks, which may be retried)
    cost_usd: float
    cost_per_audio_minute_usd: float | None  # None for a recording of no length
    by_operation: dict[str, float]  # transcribe, extract, chat ... -> USD


def call_cost(records: Iterable[Usage | dict[str, Any]], audio_seconds: float, *,
              prices: dict[str, dict[str, float]] | None = None) -> CallCost:
    """The call's cost from the usage its model calls recorded.

    With `prices` (from `shared.ai.usage.price_table`), every record is priced again from its tokens and audio
    seconds, e.g. after the price table changed; without, the recorded `cost_usd` counts.
    """
    usages = [r if isinstance(r, Usage) else Usage.model_validate(r) for r in records]
    if prices is not None:
        usages = [priced(u, prices) for u in usages]
    summary = summarize([u.model_dump() for u in usages])
    by_operation: dict[str, float] = {}
    for u in usages:
        by_operation[u.operation] = round(by_operation.get(u.operation, 0.0) + u.cost_usd, 6)
    minutes = audio_seconds / 60
    return CallCost(usage=summary, audio_seconds=round(audio_seconds, 3), cost_usd=summary["cost_usd"],
                    cost_per_audio_minute_usd=round(summary["cost_usd"] / minutes, 6) if minutes > 0 else None,
                    by_operation=by_operation)


def transcription_estimate(audio_seconds: float, model: str, *, override: str = "") -> float:
    """USD that transcribing `audio_seconds` with `model` should cost, before any call is made."""
    usage = priced(Usage(model=model, operation="transcribe", audio_seconds=audio_seconds), price_table(override))
    return usage.cost_usd
