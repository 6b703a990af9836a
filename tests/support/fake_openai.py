"""A fake OpenAI-compatible server on loopback: scripted answers and faults, every request recorded."""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from typing import Any, Callable

Behaviour = dict[str, Any]

from tests.support.loopback import JsonHandler, LoopbackServer


def completion(content: str | None, *, model: str, refusal: str | None = None, prompt_tokens: int = 120,
               completion_tokens: int = 40) -> dict:
    return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content, "refusal": refusal}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class FakeOpenAI(LoopbackServer):
    """Behaviours: {"json": obj}, {"content": text} (either with "prompt_tokens"/"completion_tokens" to report),
    {"refusal": text}, {"status": 429, "headers": {...}}, {"hang": seconds}, or a callable(request_body) ->
    behaviour. Scripted ones are used first, in order."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.script: deque[Behaviour | Callable[[dict], Behaviour]] = deque()
        self.default: Behaviour | Callable[[dict], Behaviour] = {"json": {}}
        self.latency = 0.0
        # /audio/transcriptions answers: a list of {"start", "end", "text"}, or a callable(form) -> list / behaviour;
        # `verbose_json` gets them as segments, `json` (the gpt-4o models) their text, with the usage in tokens
        # that `transcription_usage(form)` -> (input, output) reports, if set
        self.transcription: Any = []
        self.transcription_usage: Callable[[dict], tuple[int, int]] | None = None
        self._lock = threading.Lock()
        super().__init__(self._handler())

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def _next(self, body: dict) -> Behaviour:
        with self._lock:
            behaviour = self.script.popleft() if self.script else self.default
        return behaviour(body) if callable(behaviour) else behaviour

    def _handler(self):
        fake = self

        class Handler(JsonHandler):

            def _transcription(self, raw: bytes) -> None:
                import re as _re

                form = {m.group(1).decode(): m.group(2).decode(errors="replace")
                        for m in _re.finditer(rb'name="(\w+)"\r\n\r\n([^\r]*)\r\n', raw)}
                form["audio_bytes"] = len(raw)
                boundary = self.headers.get("Content-Type", "").partition("boundary=")[2].strip('"').encode()
                # which audio this was tells a repeated chunk from a new one; found with find(), as a regex
                # spends 0.3 s on a 14 MB chunk while holding the GIL
                start = raw.find(b'filename="')
                start = raw.find(b"\r\n\r\n", start) + 4 if start >= 0 and boundary else -1
                end = raw.find(b"\r\n--" + boundary, start) if start >= 4 else -1
                if end >= 0:
                    form["audio_sha1"] = hashlib.sha1(raw[start:end]).hexdigest()
                with fake._lock:
                    fake.requests.append({"path": self.path, "body": form, "headers": dict(self.headers)})
                if fake.latency:
                    time.sleep(fake.latency)
                answer = fake.transcription(form) if callable(fake.transcription) else fake.transcription
                if isinstance(answer, dict) and "status" in answer:
                    return self._send(answer["status"], {"error": {"message": "fake failure"}}, answer.get("headers"))
                segments = [{"id": i, "start": s["start"], "end": s["end"], "text": s["text"]}
                            for i, s in enumerate(answer)]
                if form.get("response_format") == "json":
                    text = {"text": " ".join(s["text"] for s in segments)}
                    if fake.transcription_usage:
                        tokens_in, tokens_out = fake.transcription_usage(form)
                        text["usage"] = {"type": "tokens", "input_tokens": tokens_in, "output_tokens": tokens_out,
                                         "total_tokens": tokens_in + tokens_out,
                                         "input_token_details": {"audio_tokens": tokens_in, "text_tokens": 0}}
                    return self._send(200, text)
                return self._send(200, {"task": "transcribe", "language": "english",
                                        "duration": segments[-1]["end"] if segments else 0.0,
                                        "text": " ".join(s["text"] for s in segments), "segments": segments})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                if len(raw) < length or not raw:  # the client died while sending (a kill -9): no request at all
                    self.close_connection = True
                    return None
                if self.path.endswith("/audio/transcriptions"):
                    return self._transcription(raw)
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {"_raw": raw[:200].decode(errors="replace")}
                with fake._lock:
                    fake.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                if fake.latency:
                    time.sleep(fake.latency)
                if self.path.endswith("/embeddings"):
                    inputs = body.get("input") or []
                    inputs = [inputs] if isinstance(inputs, str) else inputs
                    data = [{"object": "embedding", "index": i, "embedding": [float(len(t) % 7), 1.0, 0.5]}
                            for i, t in enumerate(inputs)]
                    return self._send(200, {"object": "list", "data": data, "model": body.get("model"),
                                            "usage": {"prompt_tokens": 8 * len(inputs), "total_tokens": 8}})
                behaviour = fake._next(body)
                if "hang" in behaviour:
                    time.sleep(behaviour["hang"])
                    return self._send(200, completion("{}", model=body.get("model", "fake")))
                if "status" in behaviour:
                    return self._send(behaviour["status"], {"error": {"message": "fake failure",
                                                                      "type": "server_error"}},
                                      behaviour.get("headers"))
                model = body.get("model", "fake")
                if "refusal" in behaviour:
                    return self._send(200, completion(None, model=model, refusal=behaviour["refusal"]))
                content = behaviour["content"] if "content" in behaviour else json.dumps(behaviour["json"])
                tokens = {k: behaviour[k] for k in ("prompt_tokens", "completion_tokens") if k in behaviour}
                return self._send(200, completion(content, model=model, **tokens))

        return Handler
