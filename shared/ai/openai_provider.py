"""OpenAI, Azure OpenAI and any OpenAI-compatible server, through the openai SDK."""
from __future__ import annotations

import base64
import io
import json
from typing import Any, Sequence

from pydantic import ValidationError

from ..errors import AIError
from .port import ExtractionHints, Image, M, Result, Segment
from .usage import Usage, priced


def _retry_after(headers: Any) -> float | None:
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                return None
    return None


def _without_defaults(node: Any, names: bool = False) -> Any:
    """Strict structured outputs refuse the `default` keyword; pydantic writes one per defaulted field.

    `names`: the keys of this mapping are field or definition names (a field may well be called `default`).
    """
    if isinstance(node, dict):
        return {k: _without_defaults(v, not names and k in ("properties", "$defs")) for k, v in node.items()
                if names or k != "default"}
    if isinstance(node, list):
        return [_without_defaults(v) for v in node]
    return node


def response_format(schema: type) -> dict:
    """The strict json_schema response format of a pydantic model, as the SDK's `parse` would send it, minus
    the `default` keywords the API rejects (the model answers every field; pydantic fills nothing in)."""
    from openai.lib._pydantic import to_strict_json_schema

    return {"type": "json_schema", "json_schema": {"name": schema.__name__, "strict": True,
                                                    "schema": _without_defaults(to_strict_json_schema(schema))}}


def translate_error(exc: Exception) -> AIError:
    """SDK exceptions to our tree: 429, 5xx, timeouts and connection errors are transient, other 4xx are not."""
    import openai

    if isinstance(exc, AIError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return AIError("The model did not answer in time.", code="ai_timeout", transient=True)
    if isinstance(exc, openai.APIConnectionError):
        return AIError("The model service could not be reached.", code="ai_unreachable", transient=True)
    if isinstance(exc, openai.RateLimitError):
        return AIError("The model service is rate limiting us.", code="ai_rate_limited", transient=True,
                       retry_after=_retry_after(exc.response.headers))
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status >= 500:
            return AIError(f"The model service failed ({status}).", code="ai_server_error", transient=True,
                           retry_after=_retry_after(exc.response.headers))
        codes = {400: "ai_bad_request", 401: "ai_auth_failed", 403: "ai_forbidden", 404: "ai_model_not_found",
                 413: "ai_input_too_large"}
        return AIError(f"The model service rejected the request ({status}): {exc.message}"[:500],
                       code=codes.get(status, "ai_request_rejected"))
    if isinstance(exc, (ValidationError, json.JSONDecodeError, openai.LengthFinishReasonError)):
        return AIError("The model's answer did not match the schema.", code="model_output_invalid", transient=True)
    if isinstance(exc, openai.ContentFilterFinishReasonError):
        return AIError("The model's content filter stopped the answer.", code="model_refused")
    return AIError(f"The model call failed: {type(exc).__name__}", code="ai_error", transient=True)


class OpenAIProvider:
    """`models` maps operation to model (or Azure deployment) name: extract, embed, transcribe, chat."""

    def __init__(self, client: Any, models: dict[str, str], prices: dict[str, dict[str, float]],
                 name: str = "openai", timed_transcripts: bool | None = None) -> None:
        """`timed_transcripts`: whether the transcription model answers `verbose_json` with timed segments; by
        default, when its name says whisper (the gpt-4o transcription models answer text alone)."""
        self.client = client
        self.models = models
        self.prices = prices
        self.name = name
        self.timed_transcripts = ("whisper" in models.get("transcribe", "").lower() if timed_transcripts is None
                                  else timed_transcripts)

    def _usage(self, operation: str, model: str, response_usage: Any, audio_seconds: float = 0.0) -> Usage:
        usage = Usage(model=model, operation=operation,
                      input_tokens=getattr(response_usage, "prompt_tokens", 0) or 0,
                      output_tokens=getattr(response_usage, "completion_tokens", 0) or 0,
                      audio_seconds=audio_seconds)
        return priced(usage, self.prices)

    def extract(self, schema: type[M], *, instructions: str, text: str | None = None,
                images: Sequence[Image] = (), hints: ExtractionHints | None = None) -> Result[M]:
        content: list[dict[str, Any]] = []
        context = _hint_text(hints)
        if text or context:
            content.append({"type": "text", "text": (context + "\n\n" + (text or "")).strip()})
        for image in images:
            encoded = base64.b64encode(image.data).decode()
            content.append({"type": "image_url",
                            "image_url": {"url": f"data:{image.mime_type};base64,{encoded}", "detail": "high"}})
        model = self.models["extract"]
        try:
            completion = self.client.chat.completions.create(
                model=model, response_format=response_format(schema), temperature=0,
                messages=[{"role": "system", "content": instructions}, {"role": "user", "content": content}])
        except Exception as exc:  # noqa: BLE001 - every SDK failure becomes one of ours
            raise translate_error(exc) from None
        choice = completion.choices[0]
        if getattr(choice.message, "refusal", None):
            raise AIError(f"The model refused: {choice.message.refusal}"[:300], code="model_refused")
        if choice.finish_reason == "content_filter":
            raise AIError("The model's content filter stopped the answer.", code="model_refused")
        if choice.finish_reason == "length" or not choice.message.content:
            raise AIError("The model returned no complete structured answer.", code="model_output_invalid",
                          transient=True)
        try:
            value = schema.model_validate_json(choice.message.content)
        except ValidationError as exc:
            raise translate_error(exc) from None
        return Result(value, [self._usage("extract", completion.model or model, completion.usage)])

    def read_image_text(self, image: Image) -> Result[str]:
        from pydantic import BaseModel

        class PageText(BaseModel):
            text: str

        result = self.extract(PageText, instructions="Transcribe all text in the image, in reading order.",
                              images=[image])
        return Result(result.value.text, result.usage)

    def transcribe(self, audio: bytes, *, filename: str, language: str | None = None,
                   seconds: float | None = None) -> Result[list[Segment]]:
        model = self.models["transcribe"]
        timed = self.timed_transcripts
        try:
            response = self.client.audio.transcriptions.create(
                model=model, file=(filename, io.BytesIO(audio)), response_format="verbose_json" if timed else "json",
                **({"language": language} if language else {}))
        except Exception as exc:  # noqa: BLE001
            raise translate_error(exc) from None
        text = (getattr(response, "text", "") or "").strip()
        duration = float(getattr(response, "duration", 0) or seconds or 0)
        segments = [Segment(float(s.start), float(s.end), s.text.strip())
                    for s in (getattr(response, "segments", None) or [])] if timed else []
        if not segments and text:
            segments = [Segment(0.0, duration, text)]
        billed = getattr(response, "usage", None)  # tokens (gpt-4o models) or seconds (whisper), when reported
        kind = getattr(billed, "type", None)
        by_tokens = kind == "tokens"
        if not duration and kind == "duration":
            duration = float(billed.seconds or 0)
        usage = Usage(model=model, operation="transcribe", input_tokens=billed.input_tokens if by_tokens else 0,
                      output_tokens=billed.output_tokens if by_tokens else 0,
                      audio_seconds=duration or (segments[-1].end if segments else 0.0))
        return Result(segments, [priced(usage, self.prices)])

    def embed(self, texts: Sequence[str]) -> Result[list[list[float]]]:
        model = self.models["embed"]
        try:
            response = self.client.embeddings.create(model=model, input=list(texts))
        except Exception as exc:  # noqa: BLE001
            raise translate_error(exc) from None
        vectors = [item.embedding for item in sorted(response.data, key=lambda d: d.index)]
        usage = Usage(model=model, operation="embed", input_tokens=response.usage.prompt_tokens)
        return Result(vectors, [priced(usage, self.prices)])

    def chat(self, messages: Sequence[dict[str, str]]) -> Result[str]:
        model = self.models["chat"]
        try:
            completion = self.client.chat.completions.create(model=model, messages=list(messages), temperature=0.2)
        except Exception as exc:  # noqa: BLE001
            raise translate_error(exc) from None
        return Result(completion.choices[0].message.content or "",
                      [self._usage("chat", completion.model or model, completion.usage)])


def _hint_text(hints: ExtractionHints | None) -> str:
    if hints is None:
        return ""
    parts = [f"{label}: {value}" for label, value in (
        ("Channel", hints.source), ("Subject", hints.subject), ("From", hints.sender),
        ("Sent on", hints.sent_at), ("Language", hints.language)) if value]
    return "\n".join(parts)
