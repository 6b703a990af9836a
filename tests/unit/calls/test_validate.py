"""Findings of a call analysis stay only when their quotes are in the transcript, timed where they are said."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.ai.port import Segment
from shared.calls.models import (CallAnalysis, Competitor, Entities, Insight, Mention, NextStep, Participant, Price,
                                 Question, Sentiment)
from shared.calls.transcript import from_txt
from shared.calls.validate import drop_unsupported

CALL = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "calls" / "sales_call_en"
EXPECTED = json.loads((CALL / "expected.json").read_text())


@pytest.fixture(scope="module")
def segments() -> list[Segment]:
    return from_txt((CALL / "transcript.txt").read_text(), duration=43.54)


def _expected_analysis() -> CallAnalysis:
    """expected.json as a model would answer it, each finding quoting the transcript (the timestamps are guesses)."""
    pains, objections, steps = EXPECTED["pain_points"], EXPECTED["objections"], EXPECTED["next_steps"]
    return CallAnalysis(
        summary="Customer finds their help desk too slow and pricier; open to Brightdesk after the Zendesk contract.",
        participants=[Participant(name="Tom", role="sales rep", company="Brightdesk", speaker="agent"),
                      Participant(role="customer", speaker="customer"),
                      Participant(name="Laura", role="finance director")],
        entities=Entities(
            companies=[Mention(text="Brightdesk", quote="this is Tom from Brightdesk"),
                       Mention(text=EXPECTED["competitor"], quote="we signed a contract with Zendesk")],
            people=[Mention(text="Laura", quote="our finance director, Laura")],
            prices=[Price(text=EXPECTED["price_quoted"], amount=49, currency="USD", unit="per agent per month",
                          quote="forty nine dollars per agent per month", timestamp=0)],
            dates=[Mention(text="March", quote="until March"), Mention(text="Tuesday at 10",
                                                                       quote="Tuesday at ten works")]),
        sentiment=Sentiment(label="positive", score=0.3, description=EXPECTED["sentiment"],
                            quote="That sounds better"),
        speaker_sentiment=[Sentiment(label="positive", score=0.3, speaker="customer",
                                     quote="Yes, send the proposal")],
        pain_points=[Insight(text=pains[0], quote="Our agents wait ten seconds for every ticket to load"),
                     Insight(text=pains[1], quote="the price went up twenty percent this year")],
        objections=[Insight(text=objections[0], quote="we signed a contract with Zendesk until March"),
                    Insight(text=objections[1], quote="I also need approval from our finance director, Laura.")],
        competitors=[Competitor(name=EXPECTED["competitor"], quote="a contract with Zendesk until March",
                                timestamp=999)],
        next_steps=[NextStep(text=steps[0], quote="send a proposal for thirty agents", owner="agent"),
                    NextStep(text=steps[1], quote="book a demo with Laura next Tuesday", due="Tuesday at 10")],
        questions=[Question(text="How is the tool working?", quote="How is the help desk tool working for your team?",
                            answered=True)])


def test_every_expected_insight_is_supported_by_the_transcript(segments):
    analysis, dropped = drop_unsupported(_expected_analysis(), segments)
    assert dropped == []
    assert len(analysis.pain_points) == len(EXPECTED["pain_points"])
    assert len(analysis.objections) == len(EXPECTED["objections"])
    assert len(analysis.next_steps) == len(EXPECTED["next_steps"])
    assert analysis.competitors[0].name == EXPECTED["competitor"]


def test_kept_insights_get_the_time_and_speaker_of_their_quote(segments):
    analysis, _ = drop_unsupported(_expected_analysis(), segments)
    zendesk = analysis.competitors[0]
    turn = segments[3]  # customer: "That sounds better, but we signed a contract with Zendesk until March. ..."
    assert turn.start < zendesk.timestamp < turn.end  # the made-up 999 is replaced
    assert zendesk.speaker == "customer"
    assert analysis.entities.prices[0].speaker == "agent"
    assert segments[2].start < analysis.entities.prices[0].timestamp < segments[2].end
    assert analysis.speaker_sentiment[0].speaker == "customer"  # a speaker given by the model is kept
    times = [p.timestamp for p in analysis.pain_points]
    assert times == sorted(times) and all(segments[1].start <= t < segments[1].end for t in times)


def test_invented_quote_is_dropped_and_reported(segments):
    analysis = _expected_analysis()
    analysis.competitors.append(Competitor(name="Freshdesk", quote="We are also talking to Freshdesk next week"))
    analysis.objections.insert(0, Insight(text="security", quote="Our security team has concerns about the cloud"))
    kept, dropped = drop_unsupported(analysis, segments)
    assert [c.name for c in kept.competitors] == ["Zendesk"]
    assert [o.text for o in kept.objections] == EXPECTED["objections"]
    assert {d.field for d in dropped} == {"competitors[1]", "objections[0]"}
    assert all(d.best_ratio < 0.9 for d in dropped)
    assert len(analysis.objections) == 3  # the input is left as it was


def test_quote_differing_in_case_punctuation_and_a_letter_still_counts(segments):
    analysis = CallAnalysis(summary="", pain_points=[
        Insight(text="slow", quote="HONESTLY  it's is too slow!!"),  # one word mis-transcribed
        Insight(text="wait", quote="our agents wait ten secconds for every ticket to load"),
    ])
    kept, dropped = drop_unsupported(analysis, segments)
    assert dropped == [] and len(kept.pain_points) == 2


def test_paraphrase_is_not_accepted_as_a_quote(segments):
    analysis = CallAnalysis(summary="", pain_points=[Insight(text="slow", quote="the tool is much too slow for us")])
    kept, dropped = drop_unsupported(analysis, segments)
    assert kept.pain_points == [] and dropped[0].field == "pain_points[0]"


def test_unsupported_overall_sentiment_is_removed(segments):
    analysis = CallAnalysis(summary="", sentiment=Sentiment(label="negative", score=-0.8, quote="I hate this product"))
    kept, dropped = drop_unsupported(analysis, segments)
    assert kept.sentiment is None and dropped[0].field == "sentiment"


def test_entity_with_invented_quote_is_dropped_from_its_list(segments):
    analysis = CallAnalysis(summary="", entities=Entities(prices=[
        Price(text="49 USD", quote="forty nine dollars per agent"), Price(text="99 USD", quote="ninety nine dollars")]))
    kept, dropped = drop_unsupported(analysis, segments)
    assert [p.text for p in kept.entities.prices] == ["49 USD"]
    assert dropped[0].field == "entities.prices[1]"


def test_quote_inside_one_long_segment_is_timed_by_its_place_in_it():
    words = [f"word{i}" for i in range(600)]
    segments = [Segment(0.0, 600.0, " ".join(words))]  # a whole chunk as one segment
    analysis = CallAnalysis(summary="", questions=[Question(text="?", quote="word300 word301 word302")])
    kept, _ = drop_unsupported(analysis, segments)
    assert kept.questions[0].timestamp == 300.0


def test_quote_spanning_two_turns_is_found_and_timed_at_its_start(segments):
    analysis = CallAnalysis(summary="", questions=[Question(text="?", quote="working for your team? Honestly it is")])
    kept, dropped = drop_unsupported(analysis, segments)
    assert dropped == [] and kept.questions[0].timestamp < segments[1].start


def test_analysis_rejects_an_insight_without_a_quote():
    with pytest.raises(ValidationError):
        Insight(text="slow", quote="")


def test_quote_said_twice_is_placed_where_said_nearest_the_models_time():
    segments = [Segment(0.0, 2.0, "Sounds good.", "customer"), Segment(2.0, 60.0, "Long talk in between.", "agent"),
                Segment(60.0, 62.0, "Sounds good!", "customer")]
    near_end = CallAnalysis(summary="", pain_points=[Insight(text="ok", quote="sounds good", timestamp=58)])
    unknown = CallAnalysis(summary="", pain_points=[Insight(text="ok", quote="sounds good")])
    assert drop_unsupported(near_end, segments)[0].pain_points[0].timestamp == 60.0
    assert drop_unsupported(unknown, segments)[0].pain_points[0].timestamp == 0.0
