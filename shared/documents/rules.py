"""Offline page reading: OCR or text-layer text turned into blocks, parties and `label: value` fields by rules."""
from __future__ import annotations

import re
from datetime import date
from typing import Any

_TYPES = [("rental agreement", r"\b(rental|lease|tenancy)\s+agreement\b"), ("invoice", r"\binvoice\b"),
          ("delivery note", r"\bdelivery\s+note\b"), ("purchase order", r"\bpurchase\s+order\b"),
          ("contract", r"\bcontract\b|\bagreement\b"), ("quotation", r"\bquot(e|ation)\b")]
_CURRENCIES = {"USD": "USD", "$": "USD", "EUR": "EUR", "€": "EUR", "GBP": "GBP", "£": "GBP", "CHF": "CHF"}
_MONTH_NAMES = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
                "november", "december"]
_MONTHS = {**{m: i for i, m in enumerate(_MONTH_NAMES, 1)}, **{m[:3]: i for i, m in enumerate(_MONTH_NAMES, 1)},
           "sept": 9}
_NOT_FIELDS = {"between", "and"}  # the parties line, read as parties
_SYNONYMS = {"security_deposit": "deposit", "rent": "monthly_rent", "monthly_rent_amount": "monthly_rent"}
_LABEL = re.compile(r"(?P<label>[A-Za-z][A-Za-z .'/-]{1,40}?)\s*:\s*(?P<value>[^:]+?)(?=\s+[A-Z][a-z]+(?: [a-z]+)*\s*:|$)")
_AMOUNT = re.compile(r"(?P<cur>USD|EUR|GBP|CHF|[$€£])?\s*(?P<num>\d{1,3}(?:[,.\s]\d{3})*(?:[.,]\d{2})?|\d+(?:[.,]\d{2})?)"
                     r"\s*(?P<cur2>USD|EUR|GBP|CHF|[$€£])?")
_DATE = re.compile(r"\b(?P<d>\d{1,2})\s+(?P<m>[A-Za-z]+)\s+(?P<y>\d{4})\b|\b(?P<y2>\d{4})-(?P<m2>\d{2})-(?P<d2>\d{2})\b")
_TERM = re.compile(r"(?P<n>\d+)\s+months?\b(?:\s+from\s+(?P<start>.+))?", re.IGNORECASE)
_PARTIES = re.compile(r"between:?\s*(?P<a>.+?)\s*\((?:landlord|lessor|seller|supplier|employer)\)\s*"
                      r"and:?\s*(?P<b>.+?)\s*\((?:tenant|lessee|buyer|customer|employee)\)", re.IGNORECASE | re.DOTALL)


def _snake(label: str) -> str:
    name = re.sub(r"\W+", "_", label.strip().lower()).strip("_")
    return _SYNONYMS.get(name, name)


def _iso_date(text: str) -> str | None:
    match = _DATE.search(text)
    if not match:
        return None
    if match.group("y2"):
        return f"{match.group('y2')}-{match.group('m2')}-{match.group('d2')}"
    month = _MONTHS.get(match.group("m").lower())
    if not month:
        return None
    return date(int(match.group("y")), month, int(match.group("d"))).isoformat()


def _number(text: str) -> float:
    text = text.replace(" ", "")
    if re.search(r",\d{2}$", text):
        text = text.replace(".", "").replace(",", ".")
    return float(text.replace(",", ""))


def _fields(line: str) -> list[dict[str, str]]:
    found = []
    for match in _LABEL.finditer(line):
        name, value = _snake(match.group("label")), match.group("value").strip(" .;")
        if not name or len(name) > 40 or name in _NOT_FIELDS:
            continue
        if "(signed)" in value.lower() or set(value) <= set("_ .-"):
            continue  # signature lines are signatures, not fields
        term = _TERM.match(value)
        amount = _AMOUNT.search(value)
        if term:
            found.append({"name": "term_months", "value": term.group("n"), "kind": "number"})
            start = _iso_date(term.group("start") or "")
            if start:
                found.append({"name": "start_date", "value": start, "kind": "date"})
        elif _iso_date(value) and not (amount and (amount.group("cur") or amount.group("cur2"))):
            found.append({"name": name, "value": _iso_date(value), "kind": "date"})
        elif amount and (amount.group("cur") or amount.group("cur2")):
            currency = _CURRENCIES[amount.group("cur") or amount.group("cur2")]
            found.append({"name": name, "value": f"{_number(amount.group('num')):.2f}", "kind": "amount"})
            found.append({"name": "currency", "value": currency, "kind": "currency"})
        elif value:
            found.append({"name": name, "value": value[:200], "kind": "text"})
    return found


def read_page_offline(text: str) -> dict[str, Any]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lowered = text.lower()
    document_type = next((name for name, pattern in _TYPES if re.search(pattern, lowered)), None)
    blocks = [{"kind": "signature" if "signed" in line.lower() or "signature" in line.lower() else
               "heading" if line.isupper() or re.match(r"^\d+\.\s+[A-Z ]+$", line) else "paragraph", "text": line}
              for line in lines]
    parties = []
    match = _PARTIES.search(" ".join(lines))
    if match:
        parties = [match.group("a").strip(" ,"), match.group("b").strip(" ,")]
    fields, seen = [], set()
    for line in lines:
        for item in _fields(line):
            if item["name"] not in seen:
                seen.add(item["name"])
                fields.append(item)
    signatures = [{"signer": (re.match(r"(\w+)\s*:", line) or [None, None])[1], "signed": "(signed)" in line.lower(),
                   "date": _iso_date(line)} for line in lines if "signed" in line.lower()]
    return {"text": "\n".join(lines), "blocks": blocks, "document_type": document_type, "parties": parties,
            "fields": fields, "signatures": signatures}
