"""Call analysis without a network: pocketsphinx speech recognition and rule-based findings with quotes."""
from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..ai.port import Segment
from .audio import to_pcm16
from .models import (CallAnalysis, Competitor, Entities, Insight, Mention, NextStep, Participant, Price, Question,
                     Sentiment)
from .transcript import normalise_words

RATE = 16_000
# Pruning that halves pocketsphinx's time (8 s instead of 18 s for the 44 s fixture on 2 cores) for a few points of
# word error rate (0.75 instead of 0.70 there); `fast=False` keeps its defaults.
_FAST = {"fwdflat": False, "maxhmmpf": 3000}


def transcribe_offline(samples: np.ndarray, rate: int = RATE, *, fast: bool = True) -> list[Segment]:
    """Segments of speech with the words pocketsphinx hears in them (lower case, no punctuation).

    Its voice activity detector splits the audio into utterances; each becomes one segment, timed from its first
    to its last recognised word. The bundled US English model is small: expect many wrong words.
    """
    if rate != RATE:
        raise ValueError("pocketsphinx's bundled model takes 16 kHz audio")
    from pocketsphinx import Decoder, Segmenter  # loads its model; only offline transcription needs it

    pcm = to_pcm16(samples)
    decoder = Decoder(samprate=rate, **(_FAST if fast else {}))
    frame_rate = float(decoder.config["frate"])
    segments = []
    for utterance in Segmenter(sample_rate=rate).segment(io.BytesIO(pcm)):
        decoder.start_utt()
        decoder.process_raw(utterance.pcm, full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        words = [w for w in decoder.seg() if not (w.word.startswith(("<", "[")) or w.word == "</s>")]
        if hypothesis is None or not hypothesis.hypstr.strip() or not words:
            continue
        start = utterance.start_time + words[0].start_frame / frame_rate
        end = utterance.start_time + (words[-1].end_frame + 1) / frame_rate
        segments.append(Segment(round(start, 2), round(min(end, utterance.end_time), 2), hypothesis.hypstr.strip()))
    return segments


# --- rule-based analysis -------------------------------------------------------------------------------------

_UNITS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                     "fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_SCALES = {"hundred": 100, "thousand": 1_000, "k": 1_000, "million": 1_000_000}
_NUMBER_WORD = "|".join(sorted([*_UNITS, *_TENS, "hundred", "thousand", "million"], key=len, reverse=True))
_NUMBER = (rf"(?:\d[\d,]*(?:\.\d+)?(?:\s?(?:k|thousand|million)\b)?"
           rf"|(?:{_NUMBER_WORD})(?:(?:[\s-]+|\s+and\s+)(?:{_NUMBER_WORD}))*)")
_CURRENCY_WORDS = {"dollar": "USD", "dollars": "USD", "usd": "USD", "bucks": "USD", "euro": "EUR", "euros": "EUR",
                   "eur": "EUR", "pound": "GBP", "pounds": "GBP", "gbp": "GBP", "$": "USD", "€": "EUR", "£": "GBP"}
_UNIT = r"(?P<unit{n}>(?:\s+(?:per|a|an|each)\s+(?:user|seat|agent|license|licence|month|year|week|day|hour|"\
        r"person|head|employee|team|location|site|piece|unit|minute|call|ticket|member|account))*)"
_PRICE = re.compile(
    rf"(?P<symbol>[$€£])\s?(?P<num1>{_NUMBER}){_UNIT.format(n=1)}"
    rf"|\b(?P<num2>{_NUMBER})\s?(?P<word>dollars?|usd|bucks|euros?|eur|pounds?|gbp|€|£)(?!\w){_UNIT.format(n=2)}",
    re.IGNORECASE)
_WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_MONTHS = ("January February March April May June July August September October November December").split()
_CLOCK = rf"(?:\d{{1,2}}(?::\d{{2}})?\s?(?:am|pm|a\.m\.|p\.m\.)?|(?:{_NUMBER_WORD})(?:\s+(?:o'clock|thirty))?)"
_DATE = re.compile(
    rf"\b(?:(?:next|this|last|on|by|until|before)\s+)?(?:{'|'.join(_WEEKDAYS)})(?:\s+(?:morning|afternoon))?"
    rf"(?:\s+at\s+{_CLOCK})?\b"
    rf"|\b(?:{'|'.join(_MONTHS)})(?:\s+\d{{1,2}}(?:st|nd|rd|th)?)?(?:,?\s+\d{{4}})?\b"
    rf"|\b(?:today|tomorrow|tonight|end of (?:the )?(?:week|month|quarter|year))\b"
    rf"|\b(?:next|this|last)\s+(?:week|month|quarter|year)\b"
    rf"|\b\d{{4}}-\d{{2}}-\d{{2}}\b")
_NAME = r"[A-Z][\w&'.-]*[\w&](?:\s+[A-Z][\w&'.-]*[\w&])*"
_NOT_NAMES = {*_WEEKDAYS, *_MONTHS, "I", "We", "You", "The", "A", "An", "Mr", "Mrs", "Ms", "Dr", "Hi", "Hello",
              "Thanks", "Yes", "No", "OK", "Okay"}
_INTRO = re.compile(rf"\b(?:this is|I'm|I am|my name is|it's)\s+(?P<person>{_NAME})\s+(?:from|at|with|of)\s+"
                    rf"(?P<company>{_NAME})")
_OWN = re.compile(rf"\b(?:calling from|here at|we at|here from)\s+(?P<company>{_NAME})")
_ROLE = (r"(?:(?:finance|financial|sales|marketing|IT|operations|purchasing|procurement|support|technical|"
         r"managing|account|product|general|office)\s+)?(?:director|manager|lead|head|CEO|CFO|CTO|COO|owner|founder|"
         r"VP|president|buyer|boss)")
_ROLE_THEN_NAME = re.compile(rf"\b(?P<role>{_ROLE}),?\s+(?P<name>{_NAME})")
_NAME_THEN_ROLE = re.compile(rf"\b(?P<name>{_NAME}),?\s+(?:our|my|the|their)\s+(?P<role>{_ROLE})\b")
_MEET_WITH = re.compile(rf"\b(?:demo|meeting|call|chat|talk|speak|meet|session|follow up|follow-up|check|catch up|"
                        rf"touch base|sync|speaking|talking|meeting up)\s+with\s+(?P<name>{_NAME})")
_COMPETITOR = re.compile(rf"\b(?:using|use|uses|used|with|from|switch(?:ed|ing)? (?:to|from)|moved? to|"
                         rf"looking at)\s+(?P<name>{_NAME})")
_COMPANY_SUFFIX = re.compile(r"\b(?P<name>(?:[A-Z][\w&-]*\s+){1,3}(?:Inc|Ltd|LLC|GmbH|AG|Corp|Corporation|plc|SA|BV)"
                             r")\b\.?")
_PRODUCT = re.compile(rf"\b(?P<name>{_NAME}\s+(?:Pro|Plus|Enterprise|Suite|Cloud|CRM|Platform|Premium|Basic|"
                      rf"Starter))\b")
_NEXT_STEP = re.compile(r"\b(?:will|'ll|shall|next|follow[- ]?up|send|schedule|book|set up|get back|call you|"
                        r"arrange|share)\b", re.IGNORECASE)
_PAIN = re.compile(r"\b(?:problems?|issues?|slow|slower|expensive|struggl\w*|frustrat\w*|difficult|hard to|wait\w*|"
                   r"went up|increase[sd]?|pain|broken|bugs?|crash\w*|complain\w*|manual(?:ly)?|annoy\w*|"
                   r"time-consuming|outage\w*|down time|downtime)\b", re.IGNORECASE)
_OBJECTION = re.compile(r"\b(?:too expensive|too much|concerns?|concerned|not sure|budget|contract|approval|approve|"
                        r"sign[- ]off|locked in|already (?:use|have|using)|not interested|can't afford|"
                        r"cannot afford|no time|think about it|hesitant|risk\w*)\b", re.IGNORECASE)
_POSITIVE = re.compile(r"\b(?:good|great|better|best|love|like|happy|glad|thanks|thank|works|work for|sounds good|"
                       r"sounds better|yes|perfect|excellent|interested|fair|fine|sure|helpful|nice|excited|agree)\b",
                       re.IGNORECASE)
_NEGATIVE = re.compile(r"\b(?:bad|worse|worst|slow|expensive|problem|issue|hate|frustrat\w*|annoy\w*|wait|"
                       r"went up|concern\w*|difficult|not sure|not interested|disappoint\w*|unhappy|complain\w*|"
                       r"no)\b", re.IGNORECASE)
_SENTENCE = re.compile(r"[^.!?]+(?:[.!?]+|$)")


@dataclass(frozen=True)
class _Sentence:
    text: str
    timestamp: float
    speaker: str | None
    position: float  # 0..1 through the call
    segment: Segment
    offset: int  # where the sentence starts in its segment's text


def _time_at(segment: Segment, offset: int) -> float:
    """When the word at `offset` in the segment's text is said, by its place among the segment's words."""
    words = len(normalise_words(segment.text)) or 1
    before = len(normalise_words(segment.text[:offset]))
    return round(segment.start + max(0.0, segment.end - segment.start) * before / words, 2)


def _sentences(segments: Sequence[Segment]) -> list[_Sentence]:
    end = max((s.end for s in segments), default=0.0) or 1.0
    found = []
    for segment in segments:
        for match in _SENTENCE.finditer(segment.text):
            text = match.group().strip()
            if not re.search(r"\w", text):
                continue
            offset = match.start() + len(match.group()) - len(match.group().lstrip())
            at = _time_at(segment, offset)
            found.append(_Sentence(text, at, segment.speaker, min(1.0, at / end), segment, offset))
    return found


def words_to_number(text: str) -> float | None:
    """49 from '49', '49.0', '1,200', 'forty nine' or 'forty-nine', 2000 from 'two thousand' or '2k'."""
    text = text.strip().lower().replace(",", "")
    digits = re.fullmatch(r"(\d+(?:\.\d+)?)\s?(k|thousand|million)?", text)
    if digits:
        return float(digits.group(1)) * _SCALES.get(digits.group(2) or "", 1)
    total = current = 0
    seen = False
    for word in re.split(r"[\s-]+", text):
        if word == "and":
            continue
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = max(1, current) * 100
        elif word in ("thousand", "million"):
            total += max(1, current) * _SCALES[word]
            current = 0
        else:
            return None
        seen = True
    return float(total + current) if seen else None


def _prices(sentence: _Sentence) -> Iterable[Price]:
    for match in _PRICE.finditer(sentence.text):
        amount = words_to_number(match.group("num1") or match.group("num2"))
        if amount is None:
            continue
        currency = _CURRENCY_WORDS[(match.group("symbol") or match.group("word")).lower()]
        unit = " ".join((match.group("unit1") or match.group("unit2") or "").split()) or None
        text = " ".join(x for x in (f"{amount:g}", currency, unit) if x)
        yield Price(text=text, amount=amount, currency=currency, unit=unit, quote=match.group().strip(),
                    timestamp=_time_at(sentence.segment, sentence.offset + match.start()), speaker=sentence.speaker)


def _sentiment(sentences: Sequence[_Sentence], speaker: str | None = None) -> Sentiment | None:
    """Counts positive and negative words; later sentences weigh more, since how a call ends is what counts."""
    positive = negative = 0.0
    scored = []
    for s in sentences:
        weight = 0.5 + s.position
        pos, neg = len(_POSITIVE.findall(s.text)), len(_NEGATIVE.findall(s.text))
        positive, negative = positive + weight * pos, negative + weight * neg
        if pos or neg:
            scored.append((pos - neg, s))
    if not scored:
        return None
    score = (positive - negative) / (positive + negative)
    mixed = min(positive, negative) >= 0.6 * max(positive, negative)
    label = "mixed" if mixed and positive and negative else "positive" if score > 0.2 else \
        "negative" if score < -0.2 else "neutral"
    description = {"positive": "cautiously positive" if negative else "positive",
                   "negative": "negative" if not positive else "somewhat negative"}.get(label, label)
    strongest = max(scored, key=lambda x: x[0]) if score >= 0 else min(scored, key=lambda x: x[0])
    evidence = strongest[1]
    return Sentiment(label=label, score=round(max(-1.0, min(1.0, score)), 2), description=description,
                     quote=evidence.text, timestamp=evidence.timestamp, speaker=speaker or evidence.speaker)


def _unique(items: list, key) -> list:
    seen, kept = set(), []
    for item in items:
        if key(item) not in seen:
            seen.add(key(item))
            kept.append(item)
    return kept


def analyse_rules(segments: Sequence[Segment]) -> CallAnalysis:
    """The analysis from patterns in a punctuated, capitalised transcript (as Whisper writes, not pocketsphinx).

    Every finding quotes the sentence (or words) it comes from, so `drop_unsupported` keeps all of them.
    """
    sentences = _sentences(segments)
    speakers = list(dict.fromkeys(s.speaker for s in segments if s.speaker))
    own_companies: set[str] = set()
    people: dict[str, tuple[str | None, _Sentence]] = {}  # name -> (role, where)
    speaker_names: dict[str, tuple[str, str | None]] = {}  # speaker -> (name, company)
    for s in sentences:
        for match in _INTRO.finditer(s.text):
            own_companies.add(match.group("company"))
            if match.group("person") and match.group("person") not in _NOT_NAMES:
                people.setdefault(match.group("person"), (None, s))
                if s.speaker:
                    speaker_names.setdefault(s.speaker, (match.group("person"), match.group("company")))
        own_companies.update(m.group("company") for m in _OWN.finditer(s.text))
        for pattern in (_ROLE_THEN_NAME, _NAME_THEN_ROLE):
            for match in pattern.finditer(s.text):
                if match.group("name") not in _NOT_NAMES:
                    people[match.group("name")] = (match.group("role"), s)
        for match in _MEET_WITH.finditer(s.text):
            if match.group("name") not in _NOT_NAMES:
                people.setdefault(match.group("name"), (None, s))

    competitors, companies, products, prices, dates = [], [], [], [], []
    pain_points, objections, next_steps, questions = [], [], [], []
    for s in sentences:
        for match in _COMPETITOR.finditer(s.text):
            name = match.group("name")
            if name in people or name in own_companies or name.split()[0] in _NOT_NAMES:
                continue
            competitors.append(Competitor(name=name, quote=s.text, timestamp=s.timestamp, speaker=s.speaker))
        for match in _COMPANY_SUFFIX.finditer(s.text):
            companies.append(Mention(text=match.group("name"), quote=s.text, timestamp=s.timestamp,
                                     speaker=s.speaker))
        for match in _PRODUCT.finditer(s.text):
            products.append(Mention(text=match.group("name"), quote=s.text, timestamp=s.timestamp, speaker=s.speaker))
        prices.extend(_prices(s))
        for match in _DATE.finditer(s.text):
            dates.append(Mention(text=match.group(), quote=s.text, timestamp=s.timestamp, speaker=s.speaker))
        if _PAIN.search(s.text):
            pain_points.append(Insight(text=s.text, quote=s.text, timestamp=s.timestamp, speaker=s.speaker))
        if _OBJECTION.search(s.text):
            objections.append(Insight(text=s.text, quote=s.text, timestamp=s.timestamp, speaker=s.speaker))
        if _NEXT_STEP.search(s.text):
            due = _DATE.search(s.text)
            first_person = re.search(r"\b(?:I|we|I'll|we'll)\b", s.text, re.IGNORECASE)
            next_steps.append(NextStep(text=s.text, quote=s.text, timestamp=s.timestamp, speaker=s.speaker,
                                       owner=s.speaker if first_person else None,
                                       due=due.group() if due else None))
        if s.text.endswith("?"):
            questions.append(Question(text=s.text, quote=s.text, timestamp=s.timestamp, speaker=s.speaker))

    for name in sorted(own_companies):
        where = next(s for s in sentences if name in s.text)
        companies.append(Mention(text=name, quote=where.text, timestamp=where.timestamp, speaker=where.speaker))
    companies.extend(Mention(text=c.name, quote=c.quote, timestamp=c.timestamp, speaker=c.speaker) for c in competitors)
    participants = [Participant(speaker=label, role=label if label.lower() in _ROLES_BY_LABEL else None,
                                name=speaker_names.get(label, (None, None))[0],
                                company=speaker_names.get(label, (None, None))[1]) for label in speakers]
    named = {p.name for p in participants if p.name}
    participants.extend(Participant(name=name, role=role) for name, (role, _) in people.items() if name not in named)
    competitors = _unique(competitors, lambda c: c.name)
    analysis = CallAnalysis(
        summary="",
        participants=participants,
        entities=Entities(
            companies=_unique(companies, lambda m: m.text),
            people=[Mention(text=name, quote=s.text, timestamp=s.timestamp, speaker=s.speaker)
                    for name, (_, s) in people.items()],
            products=_unique(products, lambda m: m.text), prices=_unique(prices, lambda p: p.text),
            dates=_unique(dates, lambda m: m.text.lower())),
        sentiment=_sentiment(sentences),
        speaker_sentiment=[x for x in (_sentiment([s for s in sentences if s.speaker == label], label)
                                       for label in speakers) if x],
        pain_points=pain_points, objections=objections, competitors=competitors,
        next_steps=next_steps, questions=questions)
    analysis.summary = _summary(analysis, speakers)
    return analysis


_ROLES_BY_LABEL = {"agent", "customer", "rep", "sales", "seller", "buyer", "prospect", "client", "caller"}


def _summary(analysis: CallAnalysis, speakers: Sequence[str]) -> str:
    parts = [f"Call with {len(speakers)} speakers ({', '.join(speakers)})." if speakers else "Call."]
    if analysis.competitors:
        parts.append("Competitors: " + ", ".join(c.name for c in analysis.competitors) + ".")
    if analysis.entities.prices:
        parts.append("Prices: " + "; ".join(p.text for p in analysis.entities.prices) + ".")
    for label, items in (("Pain points", analysis.pain_points), ("Objections", analysis.objections),
                         ("Next steps", analysis.next_steps)):
        if items:
            parts.append(f"{label}: " + " ".join(i.text for i in items))
    if analysis.sentiment:
        parts.append(f"Sentiment: {analysis.sentiment.description or analysis.sentiment.label}.")
    return " ".join(parts)
