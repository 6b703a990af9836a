"""Stitching chunk transcripts, the text/SRT/VTT/JSON forms, speaker labels and word error rate."""
from __future__ import annotations

from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import numpy as np

from shared.ai.port import Segment
from shared.calls.transcript import (SpeakerAssignment, SpeakerTurn, apply_speakers, from_json, from_txt,
                                     label_by_channel, numbered_lines, plain_text, stitch, to_json, to_srt, to_txt,
                                     to_vtt, wer)

CALL = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "calls" / "sales_call_en"


def test_stitch_adds_each_chunks_offset_and_keeps_time_order():
    first = [Segment(0.0, 4.0, "Hello there."), Segment(4.5, 9.0, "How are you?")]
    second = [Segment(0.2, 3.0, "Fine, thanks."), Segment(3.0, 7.5, "Good to hear.")]
    stitched = stitch([((600.0, 1200.0), second), ((0.0, 600.0), first)])  # chunks may arrive in any order
    assert [(s.start, s.end, s.text) for s in stitched] == [
        (0.0, 4.0, "Hello there."), (4.5, 9.0, "How are you?"), (600.2, 603.0, "Fine, thanks."),
        (603.0, 607.5, "Good to hear.")]


def test_stitch_never_lets_segments_overlap_or_run_past_their_chunk():
    first = [Segment(0.0, 5.0, "one"), Segment(4.0, 12.0, "two runs past the chunk")]
    second = [Segment(0.0, 2.0, "three"), Segment(1.5, 3.0, "four")]
    stitched = stitch([((0.0, 10.0), first), ((10.0, 20.0), second)])
    assert [(s.start, s.end) for s in stitched] == [(0.0, 5.0), (5.0, 10.0), (10.0, 12.0), (12.0, 13.0)]
    assert all(a.end <= b.start for a, b in pairwise(stitched))


def test_stitch_drops_empty_segments_and_takes_a_bare_offset():
    stitched = stitch([(30.0, [Segment(0.0, 1.0, "  "), Segment(1.0, 2.5, " hi\n there ", "agent")])])
    assert stitched == [Segment(31.0, 32.5, "hi there", "agent")]


def test_plain_transcript_lines_become_speaker_segments_spread_over_the_call():
    segments = from_txt((CALL / "transcript.txt").read_text(), duration=43.54)
    assert [s.speaker for s in segments] == ["agent", "customer"] * 3
    assert segments[0].text.startswith("Hi, this is Tom from Brightdesk.")
    assert segments[0].start == 0.0 and segments[-1].end == 43.54
    assert all(a.end == b.start for a, b in pairwise(segments))


SEGMENTS = [Segment(1.0, 4.25, "Hi, this is Tom.", "agent"), Segment(3725.5, 3727.0, "Is <this> & that ok?", None)]


def test_srt_numbers_cues_with_comma_milliseconds_and_hours():
    assert to_srt(SEGMENTS) == ("1\n00:00:01,000 --> 00:00:04,250\nagent: Hi, this is Tom.\n\n"
                                "2\n01:02:05,500 --> 01:02:07,000\nIs <this> & that ok?\n")


def test_vtt_has_a_header_dot_milliseconds_voice_tags_and_escaped_text():
    assert to_vtt(SEGMENTS) == ("WEBVTT\n\n00:00:01.000 --> 00:00:04.250\n<v agent>Hi, this is Tom.\n\n"
                                "01:02:05.500 --> 01:02:07.000\nIs &lt;this&gt; &amp; that ok?\n")


def test_txt_has_one_line_per_segment_with_optional_minutes():
    assert to_txt(SEGMENTS) == "agent: Hi, this is Tom.\nIs <this> & that ok?\n"
    assert to_txt(SEGMENTS, timestamps=True).splitlines()[1] == "[62:05] Is <this> & that ok?"
    assert plain_text(SEGMENTS) == "Hi, this is Tom. Is <this> & that ok?"


def test_json_round_trips_segments():
    assert from_json(to_json(SEGMENTS)) == SEGMENTS


def test_stereo_labels_each_segment_with_its_louder_channel():
    rate = 1000
    channels = np.zeros((2, 3 * rate), np.float32)
    channels[0, :rate] = 0.5  # agent talks first on the left
    channels[1, rate:2 * rate] = 0.5  # customer answers on the right
    channels[:, 2 * rate:] = 0.3  # the same on both: no way to tell
    segments = [Segment(0.0, 1.0, "a"), Segment(1.0, 2.0, "b"), Segment(2.0, 3.0, "c", "speaker_9")]
    labelled = label_by_channel(segments, channels, rate, ("agent", "customer"))
    assert [s.speaker for s in labelled] == ["agent", "customer", "speaker_9"]


def test_mono_audio_leaves_speakers_as_they_were():
    segments = [Segment(0.0, 1.0, "a")]
    assert label_by_channel(segments, np.zeros((1, 100), np.float32), 100) == segments


def test_model_speaker_answer_applies_by_index_and_ignores_made_up_indexes():
    segments = [Segment(0, 1, "Hi"), Segment(1, 2, "Hello"), Segment(2, 3, "Bye", "agent")]
    assert numbered_lines(segments) == "[0] Hi\n[1] Hello\n[2] Bye"
    answer = SpeakerAssignment(turns=[SpeakerTurn(index=0, speaker="agent"), SpeakerTurn(index=1, speaker="customer"),
                                      SpeakerTurn(index=7, speaker="ghost")])
    assert [s.speaker for s in apply_speakers(segments, answer)] == ["agent", "customer", "agent"]
    assert [s.speaker for s in apply_speakers(segments, {"1": "customer", "x": "bad", 2: ""})] == \
        [None, "customer", "agent"]


def test_a_speaker_label_with_line_breaks_cannot_forge_a_cue():
    segments = [Segment(0, 1, "Hi"), Segment(1, 2, "Hello")]
    forged = "agent\n\n7\n00:00:00,000 --> 00:09:00,000\nINJECTED"
    labelled = apply_speakers(segments, {0: forged, 1: "x" * 500})
    assert labelled[0].speaker == "agent 7 00:00:00,000 --> 00:09:00,000 INJECTED"[:40]
    assert len(labelled[1].speaker) == 40
    srt = to_srt(labelled)
    assert [len(cue.splitlines()) for cue in srt.strip().split("\n\n")] == [3, 3]  # number, times, one text line
    assert len(to_txt(labelled, timestamps=True).splitlines()) == 2
    assert all("\n" not in line.split(">", 1)[0] for line in to_vtt(labelled).split("\n\n")[1:])


def test_a_turn_runs_over_the_unlabelled_lines_up_to_the_next_one():
    segments = [Segment(i, i + 1, f"line {i}") for i in range(6)]
    segments[4] = replace(segments[4], speaker="agent")  # e.g. from its stereo channel
    answer = SpeakerAssignment(turns=[SpeakerTurn(index=1, speaker="agent"), SpeakerTurn(index=3, speaker="customer")])
    assert [s.speaker for s in apply_speakers(segments, answer)] == \
        [None, "agent", "agent", "customer", "agent", "agent"]


def test_wer_counts_word_edits_over_reference_length_after_normalising():
    assert wer("Hello, World!", "hello world") == 0.0
    assert wer("the price went up", "the prize went up") == 0.25
    assert wer("send the proposal", "send proposal") == 1 / 3
    assert wer("yes", "yes yes yes") == 2.0
    assert wer("", "") == 0.0 and wer("", "words") == 1.0
    assert wer("We’re fine", "we're fine") == 0.0
