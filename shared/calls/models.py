"""The analysis of one sales call: what a model (or the offline rules) returns and what callers receive."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SentimentLabel = Literal["negative", "mixed", "neutral", "positive"]


class Evidence(BaseModel):
    """Where in the call a finding comes from; `drop_unsupported` checks the quote and sets the timestamp."""

    model_config = ConfigDict(extra="forbid")

    quote: str = Field(min_length=1, description="The exact words from the transcript that support this, verbatim")
    timestamp: float | None = Field(None, ge=0,
                                    description="Seconds from the start of the call where the quote is said")
    speaker: str | None = Field(None, description="The speaker label of the quoted words, if known")


class Insight(Evidence):
    text: str = Field(description="The point, in a few words")


class Mention(Evidence):
    text: str = Field(description="The name or value as it should be shown, e.g. 'Zendesk' or 'next Tuesday'")


class Price(Evidence):
    text: str = Field(description="The price as shown, e.g. '49 USD per agent per month'")
    amount: float | None = None
    currency: str | None = Field(None, description="ISO 4217 code, e.g. USD")
    unit: str | None = Field(None, description="What the amount is for, e.g. 'per agent per month'")


class Competitor(Evidence):
    name: str


class NextStep(Insight):
    owner: str | None = Field(None, description="Who does it: a speaker label or a name")
    due: str | None = Field(None, description="When, as said, e.g. 'next Tuesday at ten'")


class Question(Evidence):
    text: str = Field(description="The question")
    answered: bool | None = None


class Sentiment(Evidence):
    label: SentimentLabel
    score: float = Field(ge=-1, le=1, description="-1 very negative .. 1 very positive")
    description: str | None = Field(None, description="In words, e.g. 'cautiously positive'")


class Participant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    role: str | None = Field(None, description="e.g. 'sales rep', 'customer', 'finance director'")
    company: str | None = None
    speaker: str | None = Field(None, description="The speaker label in the transcript; none if only mentioned")


class Entities(BaseModel):
    model_config = ConfigDict(extra="forbid")

    companies: list[Mention] = []
    people: list[Mention] = []
    products: list[Mention] = []
    prices: list[Price] = []
    dates: list[Mention] = []


class CallAnalysis(BaseModel):
    model_config = ConfigDict(extra="forbid")

    summary: str
    participants: list[Participant] = []
    entities: Entities = Entities()
    sentiment: Sentiment | None = None
    speaker_sentiment: list[Sentiment] = Field([], description="One per speaker; `speaker` names whose it is")
    pain_points: list[Insight] = []
    objections: list[Insight] = []
    competitors: list[Competitor] = []
    next_steps: list[NextStep] = []
    questions: list[Question] = []
