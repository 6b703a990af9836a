"""The offer as structured data: what extraction returns and what callers receive."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Source = Literal["email", "whatsapp", "document", "text", "other"]


class Contact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    email: str | None = None
    phone: str | None = None


class OfferItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: str | None = Field(None, description="Supplier's article number or reference, if given")
    description: str = Field(..., description="What is offered, as the supplier wrote it")
    quantity: float | None = Field(None, description="Quantity offered; derive it when given as packs x units")
    unit: str | None = Field(None, description="Normalised unit: pcs, unit, box, roll, kg, m, l, h, pallet ...")
    unit_price: float | None = Field(None, description="Net price per unit")
    line_total: float | None = Field(None, description="Net amount of the line as stated")


class Offer(BaseModel):
    """One supplier offer. Amounts are net unless named gross; rates are fractions (0.2 = 20 %)."""

    model_config = ConfigDict(extra="forbid")

    is_offer: bool = Field(..., description="False when the message is not a price offer; then no items")
    supplier: str | None = None
    contact: Contact | None = None
    offer_number: str | None = None
    language: str | None = Field(None, description="ISO 639-1 code of the message language")
    currency: str | None = Field(None, description="ISO 4217 code")
    items: list[OfferItem] = Field(default_factory=list)
    discount_rate: float | None = None
    total_net: float | None = Field(None, description="Net total as the supplier stated it")
    vat_rate: float | None = None
    vat: float | None = None
    total_gross: float | None = None
    valid_until: str | None = Field(None, description="ISO date (YYYY-MM-DD)")
    incoterms: str | None = None
    delivery_time: str | None = None
    payment_terms: str | None = None
    delivery_included: bool | None = Field(None, description="True when delivery is included in the prices")
    warnings: list[str] = Field(default_factory=list,
                                description="Disagreements found in the offer, e.g. totals that do not add up")
