"""A transcription model without timestamps: each chunk heard in pieces cut at pauses, sentences timed within."""
from __future__ import annotations

import io
import wave

from pathlib import Path

import numpy as np
import pytest
from openai import OpenAI

from shared.ai.openai_provider import OpenAIProvider
from shared.ai.port import Result, Segment
from shared.ai.usage import Usage, price_table
from shared.calls.audio import RATE, decode_mono_16k, encode_chunk, is_silent, to_pcm16
from shared.calls.service import analyse, transcribe_audio
from shared.calls.transcript import SpeakerAssignment, SpeakerTurn, sentences_over
from shared.errors import AIError
from shared.outcomes import run
from tests.support.fake_openai import FakeOpenAI

CALL = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "calls" / "sales_call_en"


class Listener:
    """A provider whose model answers two sentences per piece it hears, and keeps each piece's samples."""

    name = "stub"

    def __init__(self, timed: bool) -> None:
        self.timed_transcripts = timed
        self.heard: list[np.ndarray] = []

    def transcribe(self, audio: bytes, *, filename: str, language: str | None = None,
                   seconds: float | None = None) -> Result[list[Segment]]:
        self.heard.append(decode_mono_16k(audio))
        n = len(self.heard)
        return Result([Segment(0.0, seconds or 0.0, f"Piece {n} starts here. And piece {n} ends!")],
                      [Usage(model="m", operation="transcribe", audio_seconds=seconds or 0.0)])


@pytest.fixture(scope="module")
def two_minutes() -> np.ndarray:
    samples = decode_mono_16k((CALL / "call.wav").read_bytes())
    return np.tile(samples, 3)[:120 * RATE]


def test_an_untimed_model_hears_pieces_cut_at_pauses_and_the_sentences_get_absolute_times(two_minutes):
    model = Listener(timed=False)
    result = transcribe_audio(model, encode_chunk(two_minutes), filename="chunk.wav", language="en", piece_s=30)
    lengths = [piece.shape[0] / RATE for piece in model.heard]
    assert len(lengths) == 5 and max(lengths) <= 30 and sum(lengths) == pytest.approx(120, abs=0.01)
    # each cut lies in a pause: the 0.2 s around it are far quieter than the recording on average
    loudness = float(np.mean(two_minutes ** 2))
    cuts = np.cumsum([piece.shape[0] for piece in model.heard])[:-1]
    assert all(np.mean(two_minutes[c - 1600:c + 1600] ** 2) < loudness / 10 for c in cuts)
    segments = result.value
    assert [s.text for s in segments[:3]] == ["Piece 1 starts here.", "And piece 1 ends!", "Piece 2 starts here."]
    assert segments[2].start == pytest.approx(lengths[0], abs=0.001)  # a piece's first sentence starts at its cut
    assert all(a.end <= b.start + 1e-9 and a.start <= a.end for a, b in zip(segments, segments[1:]))
    assert segments[-1].end == pytest.approx(120, abs=0.01)
    assert len(result.usage) == 1 and result.usage[0].audio_seconds == pytest.approx(120, abs=0.01)  # one line


def test_a_timed_model_hears_the_chunk_whole(two_minutes):
    model = Listener(timed=True)
    transcribe_audio(model, encode_chunk(two_minutes), filename="chunk.wav", language=None, piece_s=30)
    assert len(model.heard) == 1 and model.heard[0].shape[0] == 120 * RATE


def test_sentences_share_their_span_by_length():
    segments = sentences_over('Hello there. How are you?  I am "fine." ok', 10.0, 20.0)
    assert [s.text for s in segments] == ["Hello there.", "How are you?", 'I am "fine."', "ok"]
    assert segments[0].start == 10.0 and segments[-1].end == pytest.approx(20.0)
    lengths = [s.end - s.start for s in segments]
    assert lengths[0] == pytest.approx(10 * 12 / 38, abs=0.002) and lengths[3] == pytest.approx(10 * 2 / 38, abs=0.002)
    assert sentences_over("   ", 0.0, 5.0) == []
    assert [s.text for s in sentences_over("你好。再见！「好吧。」他说", 0.0, 4.0)] == ["你好。", "再见！", "「好吧。」", "他说"]


@pytest.fixture
def fake():
    with FakeOpenAI() as server:
        yield server


def _provider(fake: FakeOpenAI, model: str) -> OpenAIProvider:
    client = OpenAI(base_url=fake.base_url, api_key="sk-test", max_retries=0)
    return OpenAIProvider(client, {"transcribe": model}, price_table())


def test_gpt_4o_transcription_asks_for_json_and_is_priced_by_its_tokens(fake):
    fake.transcription = [{"start": 0.0, "end": 0.0, "text": "We pay forty nine dollars."}]
    fake.transcription_usage = lambda form: (300, 12)
    provider = _provider(fake, "gpt-4o-mini-transcribe")
    assert provider.timed_transcripts is False
    result = provider.transcribe(encode_chunk(np.zeros(5 * RATE, np.float32)), filename="piece.wav", seconds=5.0)
    assert fake.requests[-1]["body"]["response_format"] == "json"
    assert result.value == [Segment(0.0, 5.0, "We pay forty nine dollars.")]
    [usage] = result.usage
    assert (usage.input_tokens, usage.output_tokens, usage.audio_seconds) == (300, 12, 5.0)
    assert usage.cost_usd == pytest.approx((300 * 3.0 + 12 * 5.0) / 1e6)  # tokens, not also the minute


def test_whisper_asks_for_timed_segments(fake):
    fake.transcription = [{"start": 0.0, "end": 2.0, "text": "Hello."}, {"start": 2.0, "end": 4.5, "text": "Hi."}]
    provider = _provider(fake, "whisper-1")
    result = provider.transcribe(encode_chunk(np.zeros(5 * RATE, np.float32)), filename="chunk.wav")
    assert provider.timed_transcripts and fake.requests[-1]["body"]["response_format"] == "verbose_json"
    assert [(s.start, s.end, s.text) for s in result.value] == [(0.0, 2.0, "Hello."), (2.0, 4.5, "Hi.")]
    assert result.usage[0].cost_usd == pytest.approx(4.5 / 60 * 0.006)


class FailingOnThird(Listener):
    def transcribe(self, audio: bytes, **kwargs) -> Result[list[Segment]]:
        if len(self.heard) == 2:
            raise AIError("The model service is rate limiting us.", code="ai_rate_limited", transient=True)
        return super().transcribe(audio, **kwargs)


def test_a_failed_piece_keeps_the_usage_of_the_pieces_already_paid_for(two_minutes):
    outcome = run(lambda: (None, transcribe_audio(FailingOnThird(timed=False), encode_chunk(two_minutes),
                                                  filename="chunk.wav", language=None, piece_s=30).usage),
                  attempt=1, max_attempts=3, base_delay=2)
    assert not outcome["ok"] and outcome["retry_in"] == 2 and outcome["error"]["code"] == "ai_rate_limited"
    assert len(outcome["usage"]) == 1 and outcome["usage"][0]["audio_seconds"] > 40  # the two pieces paid for


def test_a_voice_note_in_ogg_is_decoded_and_heard_in_pieces_with_its_length():
    model = Listener(timed=False)
    result = transcribe_audio(model, (CALL / "voice-note.ogg").read_bytes(), filename="voice-note.ogg",
                              language=None, piece_s=30)
    seconds = sum(u.audio_seconds for u in result.usage)
    assert len(model.heard) >= 1 and seconds == pytest.approx(sum(p.shape[0] for p in model.heard) / RATE, abs=0.001)
    assert seconds > 1 and result.value[-1].end == pytest.approx(seconds, abs=0.01)


def test_silent_pieces_are_not_sent(two_minutes):
    quiet = np.concatenate([two_minutes[:20 * RATE], np.zeros(50 * RATE, np.float32), two_minutes[20 * RATE:40 * RATE]])
    model = Listener(timed=False)
    result = transcribe_audio(model, encode_chunk(quiet), filename="chunk.wav", language=None, piece_s=30)
    assert len(model.heard) == 2 and sum(u.audio_seconds for u in result.usage) < 50
    assert not any(20.5 < s.start and s.end < 69.5 for s in result.value)  # no words in the silence
    assert result.value[-1].end == pytest.approx(90, abs=0.01)


def test_silence_means_no_half_second_louder_than_minus_50_dbfs():
    rng = np.random.default_rng(7)
    hiss = (rng.standard_normal(30 * RATE) * 10 ** (-70 / 20)).astype(np.float32)  # a quiet line's noise
    assert is_silent(hiss) and is_silent(np.zeros(0, np.float32))
    word = hiss.copy()
    word[RATE:RATE + RATE // 2] += (np.sin(np.arange(RATE // 2) * 0.2) * 10 ** (-40 / 20) * np.sqrt(2)).astype(
        np.float32)  # half a second at -40 dBFS, quieter than most speech
    assert not is_silent(word)


class Analyst(Listener):
    """Answers the speaker pass with two turns and the analysis with a summary; embeds into one dimension."""

    def extract(self, schema, *, instructions, text=None, images=(), hints=None):
        if schema is SpeakerAssignment:
            return Result(SpeakerAssignment(turns=[SpeakerTurn(index=0, speaker="agent"),
                                                   SpeakerTurn(index=1, speaker="customer")]), [])
        return Result(schema(summary="A call."), [])

    def embed(self, texts):
        return Result([[1.0] for _ in texts], [])


def test_a_recording_of_three_channels_gets_its_speakers_from_the_model_pass(two_minutes):
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(3)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(to_pcm16(np.stack([two_minutes[:10 * RATE]] * 3).T.reshape(-1)))
    three = buffer.getvalue()
    chunks = [{"start": 0.0, "end": 10.0, "segments": [{"start": 0.0, "end": 5.0, "text": "Hello."},
                                                       {"start": 5.0, "end": 10.0, "text": "Hi."}]}]
    analysed, _ = analyse(Analyst(timed=False), three, chunks, channels=3)
    assert [s["speaker"] for s in analysed["segments"]] == ["agent", "customer"]
