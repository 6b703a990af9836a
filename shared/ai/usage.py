"""What each model call cost: tokens, audio seconds and an estimate in USD from a price table."""
from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

# USD list prices; AI_PRICE_TABLE (JSON) overrides or extends them per model.
DEFAULT_PRICES: dict[str, dict[str, float]] = {
    "gpt-4o-mini": {"input_per_1m": 0.15, "output_per_1m": 0.60},
    "gpt-4o": {"input_per_1m": 2.50, "output_per_1m": 10.00},
    "gpt-4.1-mini": {"input_per_1m": 0.40, "output_per_1m": 1.60},
    "text-embedding-3-small": {"input_per_1m": 0.02},
    "text-embedding-3-large": {"input_per_1m": 0.13},
    "whisper-1": {"audio_per_minute": 0.006},
    "gpt-4o-transcribe": {"audio_per_minute": 0.006},
    "gpt-4o-mini-transcribe": {"audio_per_minute": 0.003},
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


def priced(usage: Usage, table: dict[str, dict[str, float]]) -> Usage:
    prices = table.get(usage.model) or next((p for m, p in table.items() if usage.model.startswith(m + "-")), {})
    cost = (usage.input_tokens * prices.get("input_per_1m", 0) + usage.output_tokens * prices.get("output_per_1m", 0)
            ) / 1_000_000 + usage.audio_seconds / 60 * prices.get("audio_per_minute", 0)
    return usage.model_copy(update={"cost_usd": round(cost, 6)})


def summarize(usages: list[dict[str, Any]]) -> dict[str, Any]:
    """The job's usage: totals plus one line per call."""
    return {"calls": usages,
            "input_tokens": sum(u.get("input_tokens", 0) for u in usages),
            "output_tokens": sum(u.get("output_tokens", 0) for u in usages),
            "audio_seconds": round(sum(u.get("audio_seconds", 0.0) for u in usages), 3),
            "cost_usd": round(sum(u.get("cost_usd", 0.0) for u in usages), 6)}
