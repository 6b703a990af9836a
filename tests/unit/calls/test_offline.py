"""Offline call analysis: pocketsphinx hears the fixture call, and the rules find its competitor, price and steps."""
from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest

from shared.ai.port import Segment
from shared.calls.audio import decode_mono_16k
from shared.calls.offline import analyse_rules, transcribe_offline, words_to_number
from shared.calls.transcript import from_txt, plain_text, wer
from shared.calls.validate import drop_unsupported

CALL = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "calls" / "sales_call_en"
EXPECTED = json.loads((CALL / "expected.json").read_text())


@pytest.fixture(scope="module")
def reference() -> list[Segment]:
    return from_txt((CALL / "transcript.txt").read_text(), duration=43.54)


@pytest.fixture(scope="module")
def recognised() -> list[Segment]:
    return transcribe_offline(decode_mono_16k((CALL / "call.wav").read_bytes()))


def test_pocketsphinx_transcribes_the_call_with_wer_under_0_9(recognised, reference):
    error = wer(plain_text(reference), plain_text(recognised))
    print(f"pocketsphinx WER on call.wav: {error:.3f}")
    assert error < 0.9


def test_recognised_segments_are_timed_in_order_within_the_call(recognised):
    assert len(recognised) >= 3  # one per pause between turns, roughly
    assert all(0 <= s.start < s.end <= 43.6 for s in recognised)
    assert all(a.end <= b.start for a, b in pairwise(recognised))
    assert all(s.text == s.text.lower() and s.text.strip() for s in recognised)


def test_rules_find_the_competitor_and_the_price_of_the_fixture(reference):
    analysis = analyse_rules(reference)
    assert [c.name for c in analysis.competitors] == [EXPECTED["competitor"]]
    assert [p.text for p in analysis.entities.prices] == [EXPECTED["price_quoted"]]
    price = analysis.entities.prices[0]
    assert (price.amount, price.currency, price.speaker) == (49, "USD", "agent")


def test_rules_find_as_many_pain_points_objections_and_next_steps_as_expected(reference):
    analysis = analyse_rules(reference)
    assert len(analysis.pain_points) == len(EXPECTED["pain_points"])
    assert any("contract with Zendesk until March" in o.quote for o in analysis.objections)
    assert any("approval" in o.quote for o in analysis.objections)
    assert len(analysis.objections) == len(EXPECTED["objections"])
    assert len(analysis.next_steps) == len(EXPECTED["next_steps"])
    assert analysis.next_steps[0].due == "next Tuesday" and analysis.next_steps[0].owner == "agent"
    assert [q.speaker for q in analysis.questions] == ["agent", "agent"]
    assert analysis.sentiment.label == "positive" and analysis.sentiment.description == EXPECTED["sentiment"]


def test_rules_tell_the_sellers_company_and_people_from_competitors(reference):
    analysis = analyse_rules(reference)
    names = {c.name for c in analysis.competitors}
    assert "Brightdesk" not in names and "Laura" not in names
    assert {m.text for m in analysis.entities.companies} == {"Brightdesk", "Zendesk"}
    agent = next(p for p in analysis.participants if p.speaker == "agent")
    assert (agent.name, agent.company) == ("Tom", "Brightdesk")
    assert any(p.name == "Laura" and p.role == "finance director" for p in analysis.participants)
    assert len({p.speaker for p in analysis.participants if p.speaker}) == EXPECTED["speakers"]


def test_every_rule_finding_quotes_the_transcript(reference):
    analysis = analyse_rules(reference)
    kept, dropped = drop_unsupported(analysis, reference)
    assert dropped == []
    assert kept.model_dump() == analysis.model_dump()  # the rules already time quotes where they are said


def test_rules_read_other_calls_too():
    segments = [Segment(0, 5, "We're using HubSpot and we moved from Pipedrive last year.", "customer"),
                Segment(5, 9, "It costs $1,200 per year, and the add-on is 15 euros a month.", "customer"),
                Segment(9, 12, "I'll follow up with Anna on Monday.", "agent")]
    analysis = analyse_rules(segments)
    assert [c.name for c in analysis.competitors] == ["HubSpot", "Pipedrive"]
    assert [p.text for p in analysis.entities.prices] == ["1200 USD per year", "15 EUR a month"]
    assert analysis.next_steps[0].due == "on Monday" and analysis.next_steps[0].owner == "agent"


@pytest.mark.parametrize("text, number", [("49", 49), ("1,200", 1200), ("forty nine", 49), ("forty-nine", 49),
                                          ("two thousand five hundred", 2500), ("2k", 2000), ("banana", None)])
def test_numbers_in_words_or_digits_are_read(text, number):
    assert words_to_number(text) == number
