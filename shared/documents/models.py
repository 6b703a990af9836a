"""What a page reading returns and what the merged document result holds."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Block(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["heading", "paragraph", "list", "table", "signature", "other"]
    text: str


class KeyField(BaseModel):
    """A named value on the page; names are snake_case (monthly_rent, start_date, invoice_number...)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    value: str = Field(..., description="As a plain value: amounts without currency (2350.00), ISO dates")
    kind: Literal["amount", "date", "number", "text", "boolean", "currency"]


class Signature(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signer: str | None = None
    signed: bool
    date: str | None = Field(None, description="ISO date")


class PageExtraction(BaseModel):
    """One page: its text in reading order, layout blocks, and the key fields it shows."""

    model_config = ConfigDict(extra="forbid")

    text: str
    blocks: list[Block] = Field(default_factory=list)
    document_type: str | None = Field(None, description="e.g. rental agreement, invoice, delivery note")
    parties: list[str] = Field(default_factory=list, description="People or organisations bound by the document")
    fields: list[KeyField] = Field(default_factory=list)
    signatures: list[Signature] = Field(default_factory=list)
