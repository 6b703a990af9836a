"""Cost of one call from its usage records: total, per operation and per audio minute."""
from __future__ import annotations

import json

import pytest

from shared.ai.usage import Usage, price_table, priced
from shared.calls.cost import call_cost, transcription_estimate


def _records() -> list:
    table = price_table()
    transcribe = [priced(Usage(model="whisper-1", operation="transcribe", audio_seconds=600.0), table)
                  for _ in range(2)]
    extract = priced(Usage(model="gpt-4o-mini", operation="extract", input_tokens=10_000, output_tokens=2_000), table)
    return [*transcribe, extract.model_dump()]  # records arrive as models or as the JSON a job stored


def test_call_cost_sums_every_model_call_and_divides_by_audio_minutes():
    cost = call_cost(_records(), audio_seconds=1200.0)
    assert cost.cost_usd == pytest.approx(0.12 + 0.0015 + 0.0012)
    assert cost.by_operation == {"transcribe": pytest.approx(0.12), "extract": pytest.approx(0.0027)}
    assert cost.cost_per_audio_minute_usd == pytest.approx(cost.cost_usd / 20, abs=1e-6)
    assert cost.usage["audio_seconds"] == 1200.0 and len(cost.usage["calls"]) == 3


def test_call_cost_can_reprice_records_with_another_price_table():
    table = price_table(json.dumps({"whisper-1": {"audio_per_minute": 0.01}}))
    cost = call_cost(_records(), audio_seconds=1200.0, prices=table)
    assert cost.by_operation["transcribe"] == pytest.approx(0.2)


def test_recording_of_no_length_has_no_cost_per_minute():
    assert call_cost([], audio_seconds=0).cost_per_audio_minute_usd is None
    assert call_cost([], audio_seconds=0).cost_usd == 0


def test_transcription_estimate_uses_the_price_per_audio_minute():
    assert transcription_estimate(3600, "whisper-1") == pytest.approx(0.36)
    assert transcription_estimate(3600, "gpt-4o-mini-transcribe") == pytest.approx(0.18)
