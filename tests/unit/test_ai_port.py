"""The AI port's edges: SDK errors to our codes, retry timing, prices, offline embeddings and chat."""
from __future__ import annotations

import httpx2 as httpx
import openai
import pytest

from shared.ai.offline import OfflineProvider, hashed_embedding
from shared.ai.openai_provider import translate_error
from shared.ai.usage import Usage, price_table, priced, summarize
from shared.errors import AIError, Unprocessable
from shared.outcomes import backoff, run


def _status_error(cls, status: int, headers: dict | None = None):
    request = httpx.Request("POST", "https://api.example/v1/chat/completions")
    response = httpx.Response(status, headers=headers or {}, request=request, json={"error": {"message": "x"}})
    return cls("x", response=response, body=None)


def test_rate_limit_is_transient_and_keeps_retry_after():
    error = translate_error(_status_error(openai.RateLimitError, 429, {"retry-after": "7"}))
    assert (error.code, error.transient, error.retry_after) == ("ai_rate_limited", True, 7.0)


def test_server_errors_and_timeouts_are_transient():
    assert translate_error(_status_error(openai.InternalServerError, 503)).transient
    timeout = translate_error(openai.APITimeoutError(request=httpx.Request("POST", "https://x")))
    assert (timeout.code, timeout.transient) == ("ai_timeout", True)


@pytest.mark.parametrize("status,code", [(400, "ai_bad_request"), (401, "ai_auth_failed"),
                                         (404, "ai_model_not_found"), (422, "ai_request_rejected")])
def test_other_4xx_fail_at_once(status, code):
    error = translate_error(_status_error(openai.APIStatusError, status))
    assert (error.code, error.transient) == (code, False)


def test_backoff_doubles_and_retry_after_wins():
    assert [backoff(n, 2.0) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert backoff(3, 2.0, retry_after=1.5) == 1.5
    assert backoff(20, 2.0) == 300.0


def test_outcome_of_transient_failure_asks_for_a_retry_until_the_budget_ends():
    def flaky():
        raise AIError("busy", code="ai_rate_limited", transient=True, retry_after=3)

    assert run(flaky, attempt=1, max_attempts=3, base_delay=2)["retry_in"] == 3
    last = run(flaky, attempt=3, max_attempts=3, base_delay=2)
    assert last["retry_in"] is None and last["error"] == {"code": "ai_rate_limited", "message": "busy"}


def test_outcome_of_bad_input_is_final():
    def bad():
        raise Unprocessable("no", code="pdf_corrupt")

    assert run(bad, attempt=1, max_attempts=3, base_delay=2)["retry_in"] is None


def test_bugs_propagate_to_durable_retries():
    with pytest.raises(ZeroDivisionError):
        run(lambda: 1 / 0, attempt=1, max_attempts=3, base_delay=2)


def test_cost_from_the_price_table_and_dated_model_names():
    usage = priced(Usage(model="gpt-4o-mini-2024-07-18", operation="extract", input_tokens=1_000_000,
                         output_tokens=1_000_000), price_table())
    assert usage.cost_usd == pytest.approx(0.75)
    audio = priced(Usage(model="whisper-1", operation="transcribe", audio_seconds=600), price_table())
    assert audio.cost_usd == pytest.approx(0.06)
    custom = price_table('{"my-model": {"input_per_1m": 1.0}}')
    assert priced(Usage(model="my-model", operation="chat", input_tokens=500_000), custom).cost_usd == 0.5
    total = summarize([usage.model_dump(), audio.model_dump()])
    assert total["cost_usd"] == pytest.approx(0.81) and total["input_tokens"] == 1_000_000


def test_token_billed_transcription_is_priced_by_tokens_else_by_the_minute_estimate():
    table = price_table()
    by_tokens = Usage(model="gpt-4o-mini-transcribe-2025-12-15", operation="transcribe", input_tokens=1_000_000,
                      output_tokens=100_000, audio_seconds=600)
    assert priced(by_tokens, table).cost_usd == pytest.approx(3.0 + 0.5)  # a snapshot is not gpt-4o-mini
    unreported = Usage(model="gpt-4o-mini-transcribe", operation="transcribe", audio_seconds=600)
    assert priced(unreported, table).cost_usd == pytest.approx(0.03)


def test_offline_embeddings_are_normalised_and_similar_for_similar_text():
    a, b, c = (hashed_embedding(t) for t in ("monthly rent is 950 euros", "the rent per month: 950 EUR",
                                              "pallets of copy paper"))
    dot = lambda x, y: sum(i * j for i, j in zip(x, y))  # noqa: E731
    assert dot(a, a) == pytest.approx(1.0)
    assert dot(a, b) > dot(a, c)


def test_offline_chat_answers_from_context_or_says_it_does_not_know():
    provider = OfflineProvider()
    context = {"role": "system", "content": "The monthly rent is 950 EUR. Parking costs 40 EUR."}
    answer = provider.chat([context, {"role": "user", "content": "How much is the monthly rent?"}]).value
    assert "950" in answer
    assert provider.chat([context, {"role": "user", "content": "Who won the football match?"}]).value == \
        "I don't know."


def test_the_strict_response_format_has_no_default_keywords_but_keeps_fields_named_default():
    import json

    from pydantic import BaseModel, Field

    from shared.ai.openai_provider import response_format
    from shared.calls.models import CallAnalysis

    class Settings(BaseModel):
        default: str = "x"
        tags: list[str] = Field(default_factory=list)
        level: int = 3

    for model in (CallAnalysis, Settings):
        body = response_format(model)
        assert body["type"] == "json_schema" and body["json_schema"]["strict"] is True

        def keywords(node):
            if isinstance(node, dict):
                for key, value in node.items():
                    if key == "properties":
                        for child in value.values():
                            yield from keywords(child)
                    else:
                        yield key
                        yield from keywords(value)
            elif isinstance(node, list):
                for child in node:
                    yield from keywords(child)

        assert "default" not in set(keywords(body["json_schema"]["schema"])), json.dumps(body)[:300]
    schema = response_format(Settings)["json_schema"]["schema"]
    assert set(schema["properties"]) == {"default", "tags", "level"} and schema["additionalProperties"] is False
    assert sorted(schema["required"]) == ["default", "level", "tags"]
