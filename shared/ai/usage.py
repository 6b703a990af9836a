"""What each model call cost: tokens, audio seconds and an estimate in USD from a price table."""
from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

# USD list prices; AI_PRICE_TABLE (JSON) overrides or extends them per model. The gpt-4o transcription models are
# billed by tokens (audio in, text out) with a published estimate per minute: a call is priced by its tokens when
# the service reported them, else by the estimate (prices unverified against OpenAI's own page, see the notes).
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "gpt-4o-mini": {"input_per_1m": 0.15, "output_per_1m": 0.60},
    "gpt-4o": {"input_per_1m": 2.50, "output_per_1m": 10.00},
    "gpt-4.1-mini": {"input_per_1m": 0.40, "output_per_1m": 1.60},
    "text-embedding-3-small": {"input_per_1m": 0.02},
    "text-embedding-3-large": {"input_per_1m": 0.13},
    "whisper-1": {"audio_per_minute": 0.006},
    "gpt-4o-transcribe": {"audio_per_minute": 0.006, "input_per_1m": 6.00, "output_per_1m": 10.00},
    "gpt-4o-mini-transcribe": {"audio_per_minute": 0.003, "input_per_1m": 3.00, "output_per_1m": 5.00},
}


class Usage(BaseModel):
    model: str
    operation: str
    input_tokens: int = 0
    output_tokens: int = 0
    audio_seconds: float = 0.0
    cost_usd: float = 0.0


def price_table(override: str = "") -> dict[str, dict[str, float]]:
    table = {k: dict(v) for k, v in DEFAULT_PRICES.items()}
    if override.strip():
        for model, prices in json.loads(override).items():
            table.setdefault(model, {}).update(prices)
    return table


def _snapshot_prices(model: str, table: dict[str, dict[str, float]]) -> dict[str, float]:
    """The prices of the longest listed name that `model` is a snapshot of (gpt-4o-mini-transcribe-2025-12-15 is
    gpt-4o-mini-transcribe, not gpt-4o-mini)."""
    names = [name for name in table if model.startswith(name + "-")]
    return table[max(names, key=len)] if names else {}


def priced(usage: Usage, table: dict[str, dict[str, float]]) -> Usage:
    """`usage` with its cost: tokens at the model's token prices, audio at its price per minute, except that audio
    billed by tokens (a model with both prices that reported tokens) is not counted again by the minute."""
    prices = table.get(usage.model) or _snapshot_prices(usage.model, table)
    tokens = (usage.input_tokens * prices.get("input_per_1m", 0) + usage.output_tokens * prices.get("output_per_1m", 0)
              ) / 1_000_000
    billed_by_tokens = tokens > 0 and "audio_per_minute" in prices
    cost = tokens + (0.0 if billed_by_tokens else usage.audio_seconds / 60 * prices.get("audio_per_minute", 0))
    return usage.model_copy(update={"cost_usd": round(cost, 6)})


def combined(usages: list[Usage]) -> list[Usage]:
    """One record per model and operation, its tokens, seconds and cost added up: a chunk heard in pieces is one
    line of a job's usage, not one per piece."""
    totals: dict[tuple[str, str], Usage] = {}
    for u in usages:
        seen = totals.get((u.model, u.operation))
        totals[(u.model, u.operation)] = u if seen is None else seen.model_copy(update={
            "input_tokens": seen.input_tokens + u.input_tokens, "output_tokens": seen.output_tokens + u.output_tokens,
            "audio_seconds": round(seen.audio_seconds + u.audio_seconds, 3),
            "cost_usd": round(seen.cost_usd + u.cost_usd, 6)})
    return list(totals.values())


def summarize(usages: list[dict[str, Any]]) -> dict[str, Any]:
    """The job's usage: totals plus one line per call."""
    return {"calls": usages,
            "input_tokens": sum(u.get("input_tokens", 0) for u in usages),
            "output_tokens": sum(u.get("output_tokens", 0) for u in usages),
            "audio_seconds": round(sum(u.get("audio_seconds", 0.0) for u in usages), 3),
            "cost_usd": round(sum(u.get("cost_usd", 0.0) for u in usages), 6)}
