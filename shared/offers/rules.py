"""Rule-based offer extraction for the offline provider: numbers, dates, items, totals and parties in five languages."""
from __future__ import annotations

import calendar
import datetime
import re
from dataclasses import dataclass, field
from email.utils import parseaddr

from .arithmetic import check_offer
from .language import detect_language
from .models import Contact, Offer, OfferItem

# --------------------------------------------------------------------------------------------------- numbers

_CURRENCY_CODES = ("EUR", "USD", "GBP", "CHF", "JPY", "CAD", "AUD", "NZD", "SEK", "NOK", "DKK", "PLN", "CZK",
                   "HUF", "RON", "BGN", "TRY", "CNY", "INR", "ZAR", "MXN", "BRL")
_CURRENCY = (r"(?:US\$|€|\$|£|¥|(?<![A-Za-z])(?:" + "|".join(_CURRENCY_CODES) + r")(?![A-Za-z])"
             r"|(?<![\w])(?i:euros?|dollars?)(?![\w]))")
_CURRENCY_RE = re.compile(_CURRENCY)
_SYMBOLS = {"€": "EUR", "$": "USD", "US$": "USD", "£": "GBP", "¥": "JPY"}

# Space-grouped thousands ("6 110,00") only count when decimals or a currency follow; otherwise
# "EC-2 240 pcs" would read as 2240.
_NUM_PLAIN = r"\d{1,3}(?:[.,']\d{3})+(?:[.,]\d+)?(?![\d])|\d+(?:[.,]\d+)?"
_NUM_MONEY = rf"(?:\d{{1,3}}(?: \d{{3}})+(?=[.,]\d|\s?{_CURRENCY})(?:[.,]\d{{1,4}})?|{_NUM_PLAIN})"
_PRICE = rf"(?:{_CURRENCY}\s?-?\s?{_NUM_MONEY}(?![\w])|-?{_NUM_MONEY}\s?{_CURRENCY}|{_NUM_MONEY})"
_MONEY_RE = re.compile(rf"(?<![\w.,])(?:{_CURRENCY}\s?-?\s?(?P<a>{_NUM_MONEY})(?![\w])(?!\s?%)"
                       rf"|-?(?P<b>{_NUM_MONEY})\s?(?P<c>{_CURRENCY}))")
_QTY = r"\d{1,3}(?:[.,']\d{3})+(?![\d])|\d+(?:[.,]\d+)?"


def _to_float(raw: str, decimal_comma: bool) -> float:
    """A number as written in any of the five languages; the text's convention settles "1,234" vs "1.234"."""
    s = raw.replace(" ", "").replace("'", "").replace("-", "")
    if "," in s and "." in s:
        cut = max(s.rfind(","), s.rfind("."))
        return float(re.sub(r"[.,]", "", s[:cut]) + "." + s[cut + 1:])
    for sep in ",.":
        if sep in s:
            parts = s.split(sep)
            if len(parts) > 2:
                return float("".join(parts))
            head, tail = parts
            is_grouping = len(tail) == 3 and head not in ("", "0") and len(head) <= 3
            if is_grouping and (sep == ",") != decimal_comma:
                return float(head + tail)
            return float((head or "0") + "." + tail)
    return float(s)


def _currency_code(token: str) -> str:
    token = token.strip()
    if token in _SYMBOLS:
        return _SYMBOLS[token]
    if token.lower().startswith("euro"):
        return "EUR"
    if token.lower().startswith("dollar"):
        return "USD"
    return token.upper()


@dataclass
class _Money:
    value: float
    currency: str | None
    start: int
    end: int


class _Numbers:
    def __init__(self, decimal_comma: bool):
        self.decimal_comma = decimal_comma

    def num(self, raw: str) -> float:
        return _to_float(raw, self.decimal_comma)

    def price(self, raw: str) -> tuple[float, str | None] | None:
        """Value and currency of a price token such as "€ 2,40", "GBP 5,130.00" or "31.50"."""
        currency = _CURRENCY_RE.search(raw)
        digits = re.search(_NUM_MONEY, raw)
        if not digits:
            return None
        return self.num(digits.group(0)), _currency_code(currency.group(0)) if currency else None

    def monies(self, text: str) -> list[_Money]:
        found = []
        for m in _MONEY_RE.finditer(text):
            raw = m.group("a") or m.group("b")
            currency = _CURRENCY_RE.search(m.group(0))
            found.append(_Money(self.num(raw), _currency_code(currency.group(0)), m.start(), m.end()))
        return found


def _decimal_comma(text: str, language: str | None) -> bool:
    commas = len(re.findall(r"\d,\d{2}(?!\d)", text))
    points = len(re.findall(r"\d\.\d{2}(?!\d)", text))
    if commas != points:
        return commas > points
    return language not in ("en", None)


# ----------------------------------------------------------------------------------------------------- units

_UNIT_VARIANTS = {
    "pcs": "pcs pc pce pces piece pieces stk stk. stck st. stück stueck pz pz. pzs pezzi pezzo pièce pièces ea"
           " ud uds ud. uds.",
    "unit": "unit units unité unités unidad unidades unità einheit einheiten",
    "box": "box boxes carton cartons karton kartons boîte boîtes caja cajas scatola scatole schachtel schachteln",
    "roll": "roll rolls rouleau rouleaux rolle rollen rollo rollos rotolo rotoli",
    "pallet": "pallet pallets palette paletten palettes palé palés bancale bancali",
    "pack": "pack packs package packages pkt paket pakete paquet paquets paquete paquetes confezione confezioni",
    "set": "set sets satz sätze juego juegos",
    "pair": "pair pairs paar paire paires par pares paio paia",
    "bag": "bag bags sack säcke sac sacs sacco sacchi saco sacos",
    "kg": "kg kilo kilos kilogram kilograms kilogramm",
    "t": "t tonne tonnes ton tons",
    "m": "m meter meters metre metres mètre mètres metri metro metros lfm",
    "m2": "m2 m² qm",
    "m3": "m3 m³",
    "l": "l liter liters litre litres litro litri litros",
    "h": "h hr hrs hour hours std std. stunde stunden heure heures ora ore hora horas",
}
_UNITS = {variant: unit for unit, variants in _UNIT_VARIANTS.items() for variant in variants.split()}
# A unit may run into a multiplication sign, as OCR gives "6udsx 89,00".
_UNIT = (r"(?i:" + "|".join(re.escape(v) for v in sorted(_UNITS, key=len, reverse=True)) + r")"
         r"(?:(?![\w²³])|(?=[x×]\s*\d))")


def _unit(raw: str | None) -> str | None:
    return _UNITS.get(raw.lower()) if raw else None


# ----------------------------------------------------------------------------------------------------- dates

_MONTH_NAMES = {
    1: "january jan januar jänner janvier janv gennaio gen enero ene",
    2: "february feb februar février févr fevrier febbraio febrero",
    3: "march mar märz maerz mars marzo",
    4: "april apr avril aprile abril",
    5: "may mai maggio mag mayo",
    6: "june jun juni juin giugno giu junio",
    7: "july jul juli juillet juil luglio lug julio",
    8: "august aug août aout agosto ago",
    9: "september sep sept septembre settembre set septiembre setiembre",
    10: "october oct oktober okt octobre ottobre ott octubre",
    11: "november nov novembre noviembre",
    12: "december dec dezember dez décembre déc decembre dicembre dic diciembre",
}
_MONTHS = {name: number for number, names in _MONTH_NAMES.items() for name in names.split()}
_MONTH = r"(?i:" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")"
_DATE_PATTERNS = [
    ("ymd", re.compile(r"(?<!\d)(\d{4})-(\d{1,2})-(\d{1,2})(?!\d)")),
    ("dmy", re.compile(r"(?<![\d.,/])(\d{1,2})([./-])(\d{1,2})\2(\d{4}|\d{2})(?!\d)")),
    ("d_month", re.compile(rf"(?<!\d)(\d{{1,2}})(?:\.|er|st|nd|rd|th|º)?\s+(?:de\s+)?({_MONTH})\.?"
                           rf"(?:,?\s+(?:de\s+)?(\d{{4}}))?(?![\w])")),
    ("month_d", re.compile(rf"(?<![\w])({_MONTH})\.?\s+(\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(\d{{4}}))?(?!\d)")),
    ("dm", re.compile(r"(?<![\d.,/])(\d{1,2})\.(\d{1,2})\.(?!\d)")),
]


def _implied_year(day: int, month: int, ref: datetime.date | None) -> datetime.date | None:
    """A day and month without a year: the next such date on or after the reference, never a guess without one."""
    if ref is None:
        return None
    try:
        candidate = datetime.date(ref.year, month, day)
        return candidate if candidate >= ref else datetime.date(ref.year + 1, month, day)
    except ValueError:
        return None


def _find_dates(text: str, ref: datetime.date | None,
                month_first: bool = False) -> list[tuple[int, int, datetime.date]]:
    found: list[tuple[int, int, datetime.date]] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            if any(m.start() < end and start < m.end() for start, end in taken):
                continue
            try:
                if kind == "ymd":
                    date = datetime.date(int(m[1]), int(m[2]), int(m[3]))
                elif kind == "dmy":
                    first, second, year = int(m[1]), int(m[3]), int(m[4])
                    year += 2000 if year < 100 else 0
                    day, month = (second, first) if (month_first and first <= 12) or second > 12 else (first, second)
                    date = datetime.date(year, month, day)
                elif kind == "d_month":
                    day, month = int(m[1]), _MONTHS[m[2].lower()]
                    date = datetime.date(int(m[3]), month, day) if m[3] else _implied_year(day, month, ref)
                elif kind == "month_d":
                    day, month = int(m[2]), _MONTHS[m[1].lower()]
                    date = datetime.date(int(m[3]), month, day) if m[3] else _implied_year(day, month, ref)
                else:
                    date = _implied_year(int(m[1]), int(m[2]), ref)
            except ValueError:
                continue
            taken.append((m.start(), m.end()))
            if date is not None:
                found.append((m.start(), m.end(), date))
    return sorted(found)


def _add_months(date: datetime.date, months: int) -> datetime.date:
    month_index = date.month - 1 + months
    year, month = date.year + month_index // 12, month_index % 12 + 1
    return datetime.date(year, month, min(date.day, calendar.monthrange(year, month)[1]))


# -------------------------------------------------------------------------------------------------- keywords

def _kw(pattern: str, prefix: bool = False) -> re.Pattern[str]:
    # Digits may follow a keyword directly ("IVA21%", "Total:773"); OCR glues words that way.
    end = "" if prefix else r"(?![^\W\d_])"
    return re.compile(rf"(?<![^\W\d_])(?:{pattern}){end}", re.IGNORECASE)


_TAX = r"(?:VAT|tax|MwSt\.?|MWST|USt\.?|TVA|IVA)"
_GROSS_KW = _kw(r"total\s+TTC|montant\s+TTC|TTC|gesamt\s*brutto|brutto\s*gesamt|bruttobetrag|gesamtbetrag\s+brutto"
                r"|summe\s+brutto|endbetrag|brutto|total\s+gross|gross\s+total|grand\s+total"
                rf"|total\s+(?:incl\.?|inkl\.?|inclusive|including|inc\.?|avec|con)\s+{_TAX}"
                r"|total\s+due|amount\s+due"
                r"|totale\s+(?:iva\s+inclusa|ivato|lordo|complessivo|documento|generale|da\s+pagare)"
                r"|total\s+(?:con\s+)?IVA\s+incluid[oa]|total\s+a\s+pagar|importe\s+total|total\s+general")
_NET_KW = _kw(r"total\s+(?:HT|H\.T\.|hors\s+taxes?|net|netto|neto|nett)|net\s+total"
              rf"|total\s+(?:excl\.?|exkl\.?|exclusive|excluding|ohne|hors|sin|senza)\s+{_TAX}"
              r"|netto\s*gesamt|gesamt\s*netto|gesamtsumme\s+netto|gesamtbetrag\s+netto|summe\s+netto|nettosumme"
              r"|nettobetrag|montant\s+(?:HT|net)|totale\s+(?:imponibile|netto|merce)|imponibile"
              r"|base\s+imponible|total\s+neto|importe\s+neto|subtotal\s+neto")
_SUBTOTAL_KW = _kw(r"sub-?\s?total|zwischensumme|sous-total|subtotale|warenwert")
_VAT_KW = _kw(r"VAT|MwSt\.?|MWST|Mwst\.?|USt\.?|Mehrwertsteuer|Umsatzsteuer|TVA|T\.V\.A\.|IVA|I\.V\.A\.|GST"
              r"|sales\s+tax")
_DISCOUNT_KW = _kw(r"discount|rabatt|nachlass|remise|rabais|sconto|descuento|dto\.?")
_TOTAL_KW = _kw(r"total|totale|gesamt|gesamtsumme|gesamtbetrag|summe|montant\s+total|importe")
_TOTAL_KINDS = [("gross", _GROSS_KW), ("net", _NET_KW), ("subtotal", _SUBTOTAL_KW), ("vat", _VAT_KW),
                ("discount", _DISCOUNT_KW), ("total", _TOTAL_KW)]
_RATE = r"(\d{1,2}(?:[.,]\d{1,2})?)\s*%"
_VAT_RATE_RE = re.compile(rf"{_VAT_KW.pattern}\s*(?:de\s+|à\s+|al\s+|del\s+|zu\s+|@\s*)?\(?\s*{_RATE}"
                          rf"|{_RATE}\s*\)?\s*(?:de\s+|d'\s*)?{_VAT_KW.pattern}", re.IGNORECASE)
_DISCOUNT_RATE_RE = re.compile(rf"{_DISCOUNT_KW.pattern}\s*(?:de\s+|of\s+|von\s+|del\s+)?:?\s*\(?\s*{_RATE}"
                               rf"|{_RATE}\s*(?:de\s+|di\s+)?{_DISCOUNT_KW.pattern}", re.IGNORECASE)

_CHARGE_KW = _kw(r"shipping|delivery|freight|carriage|postage|transport|handling|packaging|packing|installation"
                 r"|set-?up|versand(?:kosten)?|lieferung|anlieferung|fracht(?:kosten)?|porto|verpackung|montage"
                 r"|livraison|port|frais\s+de\s+port|emballage|envío|envio|porte|portes|transporte|embalaje"
                 r"|instalación|spedizione|trasporto|consegna|imballo|imballaggio|installazione")
_DESTINATION = re.compile(r"\s+(?:sur|to|nach|an|auf|à|au|a|al|alla|presso|hasta|en|into|zu|zum|zur|vers|jusqu)"
                          r"(?![\w]).*$", re.IGNORECASE)
_NET_MARKERS = rf"(?:\s*(?:HT|H\.T\.|netto|net|nett|neto|(?:excl\.?|exkl\.?|zzgl\.?|\+)\s*{_TAX}))*"
_CONNECT = r"(?:à|a|@|at|for|je|zu|per|por|al|ad|x|×|each|à\s+raison\s+de|zum\s+preis\s+von|at\s+a\s+price\s+of)"
_PER = rf"(?:{_NET_MARKERS}\s*(?:/|per|pro|je|par|l'|the|la|al|a|each)\s*(?P<per>{_UNIT}))?"
_BULLET = r"^[\s\-–—•*·◦▪]*+(?:(?:pos\.?\s*)?\d{1,3}[.)]\s+)?"
_AMOUNT = rf"(?:{_NET_MARKERS}\s*=\s*(?P<amount>{_PRICE}))?"

_ITEM_DESC_FIRST = re.compile(
    rf"{_BULLET}(?P<desc>[^:\n]{{1,200}}?)(?:\s*:|\s+[-–—])\s*(?P<qty>{_QTY})\s*(?P<unit>{_UNIT})?\.?\s+"
    rf"{_CONNECT}\s+(?P<price>{_PRICE}){_PER}{_AMOUNT}", re.IGNORECASE)
_ITEM_QTY_FIRST = re.compile(
    rf"(?<![\w.,/-])(?P<qty>{_QTY})\s*(?:x|×)?\s*(?P<unit>{_UNIT})?\.?\s+(?:(?:of|de|di|von)\s+)?"
    rf"(?P<desc>[^\W_][^\n]{{0,120}}?)\s+{_CONNECT}\s+(?P<price>{_PRICE}){_PER}{_AMOUNT}", re.IGNORECASE)
_ITEM_ROW = re.compile(
    rf"{_BULLET}(?P<desc>[^\n]{{1,200}}?)\s+(?<![\w.,/-])(?P<qty>{_QTY})\s*(?P<unit>{_UNIT})?\s+(?P<price>{_PRICE})"
    rf"\s+(?P<amount>{_PRICE})\s*$")
_ITEM_TIMES = re.compile(
    rf"{_BULLET}(?P<desc>[^\n]{{1,200}}?)(?:\s*[.…·_]{{2,}}\s*|\s+)(?<![\w,/-])(?P<qty>{_QTY})\s*(?P<unit>{_UNIT})?"
    rf"\s*[x×*]\s*(?P<price>{_PRICE}){_PER}(?:\s*=\s*(?P<amount>{_PRICE}))?{_NET_MARKERS}\s*$", re.IGNORECASE)
_ITEM_ROW_NO_AMOUNT = re.compile(
    rf"{_BULLET}(?P<desc>[^\n]{{1,200}}?)\s+(?<![\w.,/-])(?P<qty>{_QTY})\s*(?P<unit>{_UNIT})\s+(?:{_CONNECT}\s+)?"
    rf"(?P<price>{_CURRENCY}\s?{_NUM_MONEY}|{_NUM_MONEY}\s?{_CURRENCY}){_PER}\s*$")
_ITEM_LUMP = re.compile(
    rf"{_BULLET}(?P<desc>[^\W\d_][^\n]{{0,80}}?)\s*:?\s*"
    rf"(?P<price>{_CURRENCY}\s?{_NUM_MONEY}|{_NUM_MONEY}\s?{_CURRENCY}){_NET_MARKERS}\s*[.;]?\s*$", re.IGNORECASE)
_PACK = re.compile(rf"\(?\s*(?P<n>\d+)\s*(?P<inner>{_UNIT})\s*(?:/|per|pro|par|je|por|each|a|al|à)\s*"
                   rf"(?P<outer>{_UNIT})\s*\)?", re.IGNORECASE)
_REF = re.compile(r"\(?\s*(?<![\w])(?:réf|ref|rif|art\.?\s*-?\s*nr|artikel-?nr|sku|code|cod|codice|item\s*(?:no|#)"
                  r"|part\s*(?:no|#)|referencia)\.?\s*:?\s*(?P<sku>[A-Z0-9][\w\-/.]*[A-Z0-9])\s*\)?", re.IGNORECASE)
_CODE = re.compile(r"(?<![\w-])[A-Z]{1,4}-\d{1,6}[A-Z0-9]*(?![\w-])")


# ----------------------------------------------------------------------------------------------------- items

@dataclass
class _Draft:
    description: str
    quantity: float | None = None
    unit: str | None = None
    unit_price: float | None = None
    line_total: float | None = None
    sku: str | None = None
    price_per: str | None = None
    currencies: list[str] = field(default_factory=list)

    def item(self) -> OfferItem:
        return OfferItem(sku=self.sku, description=self.description, quantity=self.quantity, unit=self.unit,
                         unit_price=self.unit_price, line_total=self.line_total)


def _clean_description(text: str) -> tuple[str, str | None]:
    """The description as written, minus an explicit reference (returned as the SKU) and stray punctuation."""
    sku = None
    ref = _REF.search(text)
    if ref:
        sku = ref.group("sku").rstrip(".")
        text = text[:ref.start()] + " " + text[ref.end():]
    text = re.sub(r"\s*[.…·_]{2,}\s*$", "", re.sub(r"\s+", " ", text)).strip(" \t-–—:,;")
    if sku is None:
        code = _CODE.search(text)
        sku = code.group(0) if code else None
    return text, sku


def _derive_packs(draft: _Draft) -> None:
    """"2 pallets of X (40 boxes/pallet) at 31.50/box" is 80 boxes: quantity in the unit the price is per."""
    pack = _PACK.search(draft.description)
    if not pack or draft.quantity is None:
        return
    inner, outer = _unit(pack.group("inner")), _unit(pack.group("outer"))
    # Without "/box" after the price it may be per pack, and multiplying would break the totals.
    if outer != draft.unit or inner == outer or draft.price_per != inner:
        return
    draft.quantity = draft.quantity * int(pack.group("n"))
    draft.unit = inner
    draft.description = re.sub(r"\s+", " ", draft.description[:pack.start()] + draft.description[pack.end():]).strip()


def _line_kinds(line: str) -> set[str]:
    return {kind for kind, pattern in _TOTAL_KINDS if pattern.search(line)}


class _ItemReader:
    def __init__(self, numbers: _Numbers):
        self.numbers = numbers

    def _draft(self, desc: str, qty: str | None, unit: str | None, price: str | None,
               amount: str | None = None, per: str | None = None) -> _Draft | None:
        description, sku = _clean_description(desc)
        if not re.search(r"[^\W\d_]{2,}", description):
            return None
        draft = _Draft(description=description, sku=sku)
        if qty is not None:
            draft.quantity = self.numbers.num(qty)
            # A counted quantity with no unit word is pieces, as the fixtures' tables show.
            draft.unit = _unit(unit) or "pcs"
        for raw, attr in ((price, "unit_price"), (amount, "line_total")):
            parsed = self.numbers.price(raw) if raw else None
            if parsed:
                setattr(draft, attr, parsed[0])
                if parsed[1]:
                    draft.currencies.append(parsed[1])
        draft.price_per = _unit(per)
        _derive_packs(draft)
        return draft

    def line(self, line: str) -> _Draft | None:
        m = _ITEM_DESC_FIRST.search(line)
        if m:
            return self._draft(m["desc"], m["qty"], m["unit"], m["price"], m["amount"], per=m["per"])
        m = _ITEM_TIMES.search(line)
        if m and (self._row_is_plausible(m) if m["amount"] else self._has_price_shape(m["price"])):
            return self._draft(m["desc"], m["qty"], m["unit"], m["price"], m["amount"], per=m["per"])
        m = _ITEM_ROW.search(line)
        if m and self._row_is_plausible(m):
            return self._draft(m["desc"], m["qty"], m["unit"], m["price"], m["amount"])
        m = _ITEM_QTY_FIRST.search(line)
        if m and self._has_price_shape(m["price"]) and not _unit(m["desc"].strip()):
            return self._draft(m["desc"], m["qty"], m["unit"], m["price"], m["amount"], per=m["per"])
        m = _ITEM_ROW_NO_AMOUNT.search(line)
        if m:
            return self._draft(m["desc"], m["qty"], m["unit"], m["price"], per=m["per"])
        if _line_kinds(line):
            return None
        m = _ITEM_LUMP.search(line)
        if m and (_CHARGE_KW.search(m["desc"]) or re.match(r"^\s*[-–—•*·◦▪]", line)):
            desc = m["desc"]
            charge = _CHARGE_KW.search(desc)
            if charge:
                # "Livraison sur votre site de Villeurbanne" names the charge, not the place.
                desc = desc[:charge.end()] + _DESTINATION.sub("", desc[charge.end():])
            draft = self._draft(desc, None, None, m["price"])
            if draft:
                draft.quantity = 1
            return draft
        return None

    def _has_price_shape(self, raw: str) -> bool:
        return bool(_CURRENCY_RE.search(raw) or re.search(r"[.,]\d{2}(?!\d)", raw))

    def _row_is_plausible(self, m: re.Match[str]) -> bool:
        """Three trailing numbers are an item row when money is marked or quantity × price gives the amount."""
        if _CURRENCY_RE.search(m["price"]) or _CURRENCY_RE.search(m["amount"]):
            return True
        qty, price, amount = self.numbers.num(m["qty"]), self.numbers.price(m["price"]), self.numbers.price(m["amount"])
        return bool(price and amount) and abs(qty * price[0] - amount[0]) <= max(0.01, amount[0] * 0.001)

    def table(self, rows: list[list[str]]) -> tuple[list[_Draft], list[str]]:
        """Items from table rows (cells already split); rows that carry totals come back as plain lines."""
        drafts: list[_Draft] = []
        rest: list[str] = []
        columns: dict[str, int] = {}
        for cells in rows:
            header = _header_columns(cells)
            if header:
                columns = header
                continue
            joined = " ".join(c for c in cells if c)
            first_text = next((c for c in cells if re.search(r"[^\W\d_]", c)), "")
            if _line_kinds(first_text):
                rest.append(" | ".join(cells))
                continue
            draft = self._row(cells, columns)
            if draft:
                drafts.append(draft)
            else:
                rest.append(joined)
        return drafts, rest

    def _row(self, cells: list[str], columns: dict[str, int]) -> _Draft | None:
        def cell(name: str) -> str | None:
            index = columns.get(name)
            return cells[index].strip() if index is not None and index < len(cells) and cells[index].strip() else None

        if columns and "qty" in columns and ("price" in columns or "amount" in columns):
            desc, qty, price, amount = cell("desc"), cell("qty"), cell("price"), cell("amount")
            unit = cell("unit")
        else:
            numeric = [c.strip() for c in cells if re.fullmatch(rf"\s*{_PRICE}\s*(?:{_UNIT})?\s*", c.strip() or "x")]
            texts = [c.strip() for c in cells if c.strip() and c.strip() not in numeric]
            if not texts or len(numeric) < 2:
                return None
            desc, unit = texts[0], None
            qty, price, amount = (numeric + [None])[:3]
        if not desc or not qty:
            return None
        qty_match = re.fullmatch(rf"\s*(?P<q>{_QTY})\s*(?P<u>{_UNIT})?\s*", qty)
        if not qty_match:
            return None
        draft = self._draft(desc, qty_match["q"], unit or qty_match["u"], price, amount)
        if draft and cell("sku"):
            draft.sku = cell("sku")
        return draft


_HEADER_WORDS = [
    ("amount", r"amount|line\s+total|total|totale|importo|gesamt(?:preis|betrag)?|betrag|summe|montant|importe"
               r"|prix\s+total|subtotal"),
    ("price", r"unit\s+price|price|prezzo(?:\s+unitario)?|einzelpreis|e-preis|stückpreis|preis|prix(?:\s+unitaire)?"
              r"|p\.\s?u\.?|pu|precio(?:\s+unitario)?|rate"),
    ("qty", r"qty|quantity|quantità|q\.tà|qtà|menge|anzahl|quantité|qté|cantidad|cant\.?"),
    ("unit", r"unit|units|unité|einheit|me|u\.m\.|um|unidad|unità"),
    ("sku", r"sku|code|codice|cod\.?|art\.?\s*-?\s*nr\.?|artikelnummer|ref\.?|réf\.?|référence|referencia"
            r"|part\s+no\.?|item\s+no\.?"),
    ("desc", r"articolo|descrizione|item|description|article|artikel|bezeichnung|beschreibung|produkt|product"
             r"|désignation|designation|libellé|descripción|concepto|producto|prodotto|leistung|position"),
]


def _header_columns(cells: list[str]) -> dict[str, int]:
    """Column roles when every non-empty cell of the row is a known heading."""
    columns: dict[str, int] = {}
    filled = [(i, c.strip()) for i, c in enumerate(cells) if c.strip()]
    if len(filled) < 2:
        return {}
    for index, text in filled:
        role = next((name for name, words in _HEADER_WORDS
                     if re.fullmatch(rf"(?:{words})\.?", text, re.IGNORECASE)), None)
        if role is None:
            return {}
        columns.setdefault(role, index)
    return columns if "qty" in columns or "price" in columns else {}


def _split_cells(line: str) -> list[str] | None:
    if line.count("|") >= 2:
        return [c.strip() for c in line.strip().strip("|").split("|")]
    if "\t" in line and line.count("\t") >= 2:
        return [c.strip() for c in line.split("\t")]
    return None


def _items(lines: list[str], numbers: _Numbers) -> tuple[list[_Draft], list[str]]:
    """Items in reading order, and the lines left for totals and terms."""
    reader = _ItemReader(numbers)
    drafts: list[_Draft] = []
    rest: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        found, leftover = reader.table(table)
        drafts.extend(found)
        rest.extend(leftover)
        table.clear()

    for line in lines:
        cells = _split_cells(line)
        if cells is not None:
            table.append(cells)
            continue
        if table:
            flush()
        rest.append(line)
        draft = reader.line(line)
        if draft:
            drafts.append(draft)
    if table:
        flush()
    unique: list[_Draft] = []
    for draft in drafts:
        key = (draft.description, draft.quantity, draft.unit_price)
        if all((d.description, d.quantity, d.unit_price) != key for d in unique):
            unique.append(draft)
    return unique, rest


# ---------------------------------------------------------------------------------------------------- totals

@dataclass
class _Totals:
    net: float | None = None
    gross: float | None = None
    subtotal: float | None = None
    vat: float | None = None
    vat_rate: float | None = None
    discount_rate: float | None = None
    plain_totals: list[tuple[int, float]] = field(default_factory=list)
    vat_line: int | None = None
    currencies: list[str] = field(default_factory=list)


def _amount_near(numbers: _Numbers, line: str, start: int, end: int, stop: int, kind: str) -> float | None:
    """The amount a total keyword labels: right after it, else a bare number right before it, else the
    first marked amount before the next keyword."""
    after = line[end:stop]
    if kind == "vat":
        after = re.sub(rf"^\s*(?:de\s+|à\s+|al\s+|zu\s+)?\(?\s*{_RATE}\s*\)?", "", after)
    m = re.match(rf"\s*(?:\([^)]*\))?\s*[:=]?\s*(?:-\s*)?(?P<p>{_PRICE})(?!\s*%|[\w])", after)
    if m and (kind != "vat" or _CURRENCY_RE.search(m["p"]) or re.search(r"[.,]\d{2}\b", m["p"])):
        parsed = numbers.price(m["p"])
        return parsed[0] if parsed else None
    if kind == "total":
        # "so 2520 total": chat style puts the figure first; only the plain word is read that way, so
        # "0,45 € brutto" on an item line does not become the gross.
        m = re.search(rf"(?<![\w.,])(?P<p>{_PRICE})\s*$", line[max(0, start - 40):start])
        if m:
            parsed = numbers.price(m["p"])
            return parsed[0] if parsed else None
    monies = numbers.monies(after)
    return monies[0].value if monies else None


def _totals(lines: list[str], numbers: _Numbers) -> _Totals:
    totals = _Totals()
    for number, line in enumerate(lines):
        rate = _VAT_RATE_RE.search(line)
        if rate and totals.vat_rate is None:
            totals.vat_rate = round(numbers.num(rate.group(rate.lastindex)) / 100, 4)
        rate = _DISCOUNT_RATE_RE.search(line)
        if rate and totals.discount_rate is None:
            totals.discount_rate = round(numbers.num(rate.group(rate.lastindex)) / 100, 4)
        hits: list[tuple[int, int, str]] = []
        for kind, pattern in _TOTAL_KINDS:
            for m in pattern.finditer(line):
                if not any(m.start() < e and s < m.end() for s, e, _ in hits):
                    hits.append((m.start(), m.end(), kind))
        hits.sort()
        for index, (start, end, kind) in enumerate(hits):
            stop = hits[index + 1][0] if index + 1 < len(hits) else len(line)
            if kind == "discount":
                continue
            amount = _amount_near(numbers, line, start, end, stop, kind)
            if amount is None:
                continue
            totals.currencies += [m.currency for m in numbers.monies(line[start:stop]) if m.currency]
            if kind == "total":
                totals.plain_totals.append((number, amount))
            elif kind == "vat":
                if totals.vat is None:
                    totals.vat, totals.vat_line = amount, number
            elif getattr(totals, kind) is None:
                setattr(totals, kind, amount)
    for number, amount in totals.plain_totals:
        # An unqualified "Total" is the net unless it comes after the VAT, where it is what is payable.
        after_vat = totals.vat_line is not None and number > totals.vat_line
        if totals.net is None and not after_vat and totals.subtotal is None:
            totals.net = amount
        elif totals.gross is None and (after_vat or totals.vat is not None) and amount != totals.net:
            totals.gross = amount
        elif totals.net is None and totals.subtotal is not None and totals.discount_rate is None:
            totals.net = amount
    if totals.net is None and totals.subtotal is not None and totals.discount_rate is None:
        totals.net = totals.subtotal
    return totals


# ----------------------------------------------------------------------------------------------------- terms

_VALID_KW = _kw(r"valid(?:ity)?|good\s+(?:until|till|through|thru|for)|expir(?:es|y|ation)|holds?"
                r"|gültig(?:keit)?|befristet|bindefrist|angebotsfrist|valable|validité|valid[oa]|validità|valevole"
                r"|válid[oa]|validez|vigencia|vigente", prefix=True)
_DURATION_DAYS = r"days?|tage?n?|kalendertage?n?|jours?|giorni|gg\.?|días|dias"
_DURATION_WEEKS = r"weeks?|wochen?|semaines?|settimane?|semanas?"
_DURATION_MONTHS = r"months?|monate?n?|mois|mesi|mese|meses?"
_RELATIVE = re.compile(rf"(?<![\w.,])(?P<n>\d{{1,3}})\s*(?P<u>{_DURATION_DAYS}|{_DURATION_WEEKS}|{_DURATION_MONTHS})"
                       rf"(?![\w])", re.IGNORECASE)
_FROM = _kw(r"from|after|since|of|ab|nach|vom|seit|à\s+compter\s+d[eu']|à\s+partir\s+d[eu']|dès|depuis|dalla|dal"
            r"|da|desde|a\s+partir\s+de|de\s+la\s+fecha|de\s+la\s+date")
_UNTIL = _kw(r"until|till|bis|jusqu|fino|hasta|soit")
_END_OF_MONTH = _kw(r"end\s+of\s+(?:the\s+)?month|month[-\s]end|fin\s+(?:de|du)\s+mois|monatsende"
                    r"|ende\s+(?:des\s+|dieses\s+)?monats|fine\s+(?:del\s+)?mese|fin(?:al)?\s+de(?:l)?\s+mes")
_SENTENCE_END = re.compile(r"\.\s+(?=[A-ZÀ-Þ][a-zà-ÿ])|\n")
_DOC_DATE = re.compile(r"(?<![\w])(?:date|datum|data|fecha|dated|du|le|vom)\s*:?\s*", re.IGNORECASE)


def _window(text: str, start: int, limit: int = 160) -> str:
    end = _SENTENCE_END.search(text, start)
    stop = min(end.start() + 1 if end else len(text), start + limit)
    return text[start:stop]


def _document_date(text: str) -> datetime.date | None:
    for m in _DOC_DATE.finditer(text):
        dates = _find_dates(text[m.end():m.end() + 30], None)
        if dates and dates[0][0] == 0:
            return dates[0][2]
    return None


def _valid_until(text: str, ref: datetime.date | None, month_first: bool) -> datetime.date | None:
    for kw in _VALID_KW.finditer(text):
        window = _window(text, kw.end())
        dates = _find_dates(window, ref, month_first)
        relative = _RELATIVE.search(window)
        base = None
        if relative:
            for start, _, date in dates:
                between = window[relative.end():start]
                if start >= relative.end() and _FROM.search(between) and not _UNTIL.search(between):
                    base = (start, date)
                    break
        targets = [d for s, _, d in dates if base is None or s != base[0]]
        if targets:
            return targets[0]
        if relative:
            start_date = base[1] if base else ref
            if start_date is None:
                continue
            n, unit = int(relative["n"]), relative["u"].lower()
            if re.fullmatch(_DURATION_MONTHS, unit, re.IGNORECASE):
                return _add_months(start_date, n)
            days = n * 7 if re.fullmatch(_DURATION_WEEKS, unit, re.IGNORECASE) else n
            return start_date + datetime.timedelta(days=days)
        if _END_OF_MONTH.search(window) and ref is not None:
            return ref.replace(day=calendar.monthrange(ref.year, ref.month)[1])
    return None


_DELIVERY_KW = _kw(r"lead\s*time|delivery\s+time|delivery|deliver(?:ed)?\s+within|shipping\s+time|dispatch"
                   r"|lieferzeit|lieferfrist|liefertermin|lieferung|versand|délai\s+de\s+livraison|délai|livraison"
                   r"|tempi\s+di\s+consegna|consegna|plazo\s+de\s+entrega|entrega|spedizione")
_DURATION = re.compile(
    r"(?<![\w.,])(?:\d+(?:[.,]\d+)?\s*(?:[-–]|to|bis|à|a)\s*)?\d+(?:[.,]\d+)?\s*"
    r"(?:(?:working|business|calendar)\s+days?|(?:werk|arbeits|kalender)tage?n?|tage?n?"
    r"|jours?(?:\s+(?:ouvrés|ouvrables|calendaires))?|giorni(?:\s+(?:lavorativi|solari))?|gg\.?"
    r"|días(?:\s+(?:hábiles|laborables|naturales))?|dias|days?|weeks?|wochen?|semaines?|settimane?|semanas?"
    r"|months?|monate?n?|mois|mesi|meses?|hours?|stunden|heures|ore|horas|KW\s*\d+)(?![\w])", re.IGNORECASE)
_FILLER = r"(?:[^\n\d.]|(?<![\w])(?:ca|env|approx|circa|max|min|ab)\.)"

_PAYMENT_KW = _kw(r"payment\s+terms|terms\s+of\s+payment|payment|conditions\s+de\s+paiement|paiement|règlement"
                  r"|zahlungsbedingungen|zahlungsziel|zahlung|zahlbar|condizioni\s+di\s+pagamento|pagamento"
                  r"|condiciones\s+de\s+pago|forma\s+de\s+pago|pago")
_PAYMENT_WORDS = re.compile(r"\d|prepay|advance|vorkasse|vorauskasse|nachnahme|lastschrift|sofort|immediate"
                            r"|réception|reception|bonifico|ricevuta|contado|transferencia|cash|invoice",
                            re.IGNORECASE)
_INCOTERMS = re.compile(r"(?<![\w])(EXW|FCA|FAS|FOB|CFR|CIF|CPT|CIP|DAP|DPU|DDP|DAT|DDU)(?![\w])"
                        r"(?:\s+(?!Incoterms)([A-ZÀ-Þ][\w'-]+(?:\s+(?!Incoterms)[A-ZÀ-Þ][\w'-]+){0,2}))?")
_INCLUDED = _kw(r"delivered(?!\s+(?:within|in|by|on|after|before|from|to\s+you))|free\s+delivery|delivery\s+(?:is\s+)?included|shipping\s+(?:is\s+)?included"
                r"|incl(?:\.|uding)?\s+(?:delivery|shipping|freight)|free\s+shipping|frei\s+haus|versandkostenfrei"
                r"|inkl\.?\s+(?:lieferung|versand|fracht)|lieferung\s+(?:inklusive|inkl\.?|frei)"
                r"|franco\s+(?:domicile|domicilio|destino|de\s+port)|livraison\s+(?:incluse|comprise|offerte|gratuite)"
                r"|port\s+(?:payé|inclus)|spedizione\s+(?:inclusa|gratuita)|trasporto\s+incluso"
                r"|consegna\s+(?:inclusa|gratuita)|envío\s+(?:incluido|gratuito)|portes\s+(?:pagados|incluidos)")
_EXCLUDED = _kw(r"(?:plus|excl\.?|excluding)\s+(?:delivery|shipping|freight)|shipping\s+extra"
                r"|zzgl\.?\s+(?:versand|fracht|lieferung)"
                r"|frais\s+de\s+port\s+en\s+sus|livraison\s+en\s+sus|spese\s+di\s+(?:trasporto|spedizione)\s+escluse"
                r"|porte[s]?\s+no\s+incluidos?|ab\s+werk|ex\s+works|franco\s+fabbrica")


def _delivery_time(text: str) -> str | None:
    for kw in _DELIVERY_KW.finditer(text):
        m = re.match(rf"\s*[:\-–]?{_FILLER}{{0,40}}?(?P<d>{_DURATION.pattern})", text[kw.end():], re.IGNORECASE)
        if m:
            return re.sub(r"\s+", " ", m["d"]).strip()
    return None


def _payment_terms(text: str) -> str | None:
    for kw in _PAYMENT_KW.finditer(text):
        m = re.match(r"\s*[:\-–]?\s*(?:(?:à|a|within|innerhalb(?:\s+von)?|entro|en|sous|binnen)\s+)?"
                     r"(?P<t>(?:[^.\n;]|\.(?=\S)|(?<=\.\w)\.)+)", text[kw.end():], re.IGNORECASE)
        if m and _PAYMENT_WORDS.search(m["t"]):
            return m["t"].strip(" ,:")[:100]
    return None


def _incoterms(text: str) -> str | None:
    m = _INCOTERMS.search(text)
    return " ".join(p for p in m.groups() if p) if m else None


def _delivery_included(text: str) -> bool | None:
    if _EXCLUDED.search(text):
        return False
    return True if _INCLUDED.search(text) else None


# --------------------------------------------------------------------------------------------------- parties

_LEGAL = (r"GmbH\s*&\s*Co\.?\s*KG|gGmbH|GmbH|KGaA|AG|KG|OHG|GbR|UG(?:\s*\(haftungsbeschränkt\))?|e\.\s?K\."
          r"|S\.A\.R\.L\.|SARL|SASU|SAS|EURL|SNC|S\.A\.S\.|S\.r\.l\.|S\.R\.L\.|Srl|SRL|S\.p\.A\.|SpA|S\.p\.a\."
          r"|S\.a\.s\."
          r"|S\.n\.c\.|S\.L\.U\.|S\.L\.|SLU|SL|S\.A\.|SA|S\.Coop\.|Ltd\.?|Limited|LLC|L\.L\.C\.|Inc\.?|Corp\.?"
          r"|Corporation|PLC|plc|LLP|B\.V\.|BV|N\.V\.|NV|Oy|AB|ApS|A/S|Pty\.?\s+Ltd\.?|Co\.,?\s*Ltd\.?")
_NAME_TOKEN = r"(?:[A-ZÀ-Þ0-9][\w&'’.\-]*|&)"
_CONNECTOR = r"(?:und|and|et|e|y|de|di|del|della|des|du|von|van|der|la|le)"
_COMPANY = re.compile(rf"(?<![\w&'.\-])(?P<name>{_NAME_TOKEN}(?:\s+(?:{_NAME_TOKEN}|{_CONNECTOR})){{0,5}}?)"
                      rf",?\s+(?P<legal>{_LEGAL})(?=$|[\s,;:)\]–—|/])")
_CUSTOMER = _kw(r"customer|client|cliente|kunde|kundin|attn\.?|attention|to|an|für|for|bill\s+to|ship\s+to"
                r"|spett\.?(?:le)?|destinatario|destinataire|z\.\s*hd\.?|messrs|c\.a\.|à\s+l'attention\s+de|para")
_LEADING_NOISE = re.compile(r"^(?:(?:wir|we|our|unser[e]?|nous|notre|noi|nostra|nosotros|nuestra|von|from|de|by"
                            r"|grüße|gruß|regards|cordialement|saluti|saludos|thanks|cheers|best)\s+)+",
                            re.IGNORECASE)
_AT_COMPANY = re.compile(r"(?P<person>[A-ZÀ-Þ][\w'’-]+(?:\s+[A-ZÀ-Þ][\w'’-]+)?)\s+@\s+"
                         r"(?P<company>[A-ZÀ-Þ][\w&'’.\-]*(?:\s+[A-ZÀ-Þ0-9&][\w&'’.\-]*){0,4})")
_CLOSING = re.compile(
    r"^\s*(?:(?:mit\s+)?(?:freundlichen|besten|vielen|viele|liebe|herzliche)\s+grüßen?|grüße|gruß|lg|vg|mfg"
    r"|(?:kind|best|warm|many)\s+regards|regards|cheers|best(?:\s+wishes)?|thanks|thank\s+you|sincerely"
    r"|yours\s+(?:sincerely|faithfully|truly)|bien\s+(?:cordialement|à\s+vous)|cordialement"
    r"|salutations(?:\s+distinguées)?"
    r"|(?:cordiali|distinti)\s+saluti|saluti|un\s+(?:caro\s+)?saluto|saludos(?:\s+cordiales)?|un\s+saludo|atentamente)"
    r"(?![\w])[\s,.!]*", re.IGNORECASE | re.MULTILINE)
_PERSON = re.compile(r"(?P<name>[A-ZÀ-Þ][a-zà-ÿß'’-]+(?:\s+(?:(?:de|van|von|der|den|di|da|del|della|du|la|le)\s+)*"
                     r"[A-ZÀ-Þ][a-zà-ÿß'’-]+){0,2})\s*(?=$|[–—\-|,@/\n(])")
_GENERIC_SENDERS = _kw(r"sales|info|news|newsletter|noreply|no-reply|team|office|service|support|vertrieb|verkauf"
                       r"|contact|kontakt|ventas|vendite|commercial|commerciale|admin|angebote|orders|einkauf"
                       r"|purchasing|achats|accounts|billing|mail|hello")
_RECIPIENT_LABEL = _kw(r"customer|client|cliente|kunde|kundin|attn\.?|attention|bill\s+to|ship\s+to|spett\.?(?:le)?"
                       r"|destinatario|destinataire|z\.\s*hd\.?|messrs|c\.a\.|(?:to|an|cc|à|para|a)\s*:")
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<![\w+/.,])(?:\+|\(?\d)[\d ()./-]{6,20}\d(?![\w/.,]\d)")
_PHONE_LABEL = _kw(r"tel\.?|phone|tél\.?|téléphone|telefon|telefono|teléfono|fon|mobile|mobil|handy|cell|móvil"
                   r"|cellulare|whatsapp")
_OFFER_KW = (r"quotation|quote|offer|offerte|proposal|angebot(?:s)?|kostenvoranschlag|offre|devis|proposition|offerta"
             r"|preventivo|proposta|oferta|presupuesto|cotizaci[oó]n")
_NUMBER_MARK = r"n[°º.]|no\.?|nr\.?|nummer|number|num\.?|numéro|numero|número|núm\.?|#|ref\.?|réf\.?"
_OFFER_NUMBER_PATTERNS = [
    re.compile(rf"(?<![\w])(?i:{_OFFER_KW})[^\n]{{0,30}}?(?<![\w])(?i:{_NUMBER_MARK})\s*:?\s*"
               rf"(?P<num>(?=[\w\-/]*\d)[A-Za-z0-9][\w\-/]*)"),
    re.compile(rf"(?<![\w])(?i:{_OFFER_KW})\s*:?\s+(?:[^\W\d_]+\s+){{0,2}}?"
               rf"(?P<num>[A-Z]{{1,5}}(?:-\d[\w\-/]*|\d{{3,}}[\w\-/]*))(?![\w])"),
    re.compile(rf"(?<![\w])(?i:{_OFFER_KW})\s*[:#]?\s*(?P<num>\d{{3,}}(?:[-/]\d+)*)"
               rf"(?![.,]\d|\s*(?:%|{_CURRENCY}|{_UNIT}|{_DURATION_DAYS}|{_DURATION_WEEKS}|{_DURATION_MONTHS})"
               rf"(?![\w]))"),
]


def _company(text: str, skip_customers: bool = True) -> str | None:
    for line in text.split("\n"):
        for m in _COMPANY.finditer(line):
            if skip_customers and _CUSTOMER.search(line[:m.start()]):
                continue
            noise = _LEADING_NOISE.match(m["name"])
            start = m.start("name") + (noise.end() if noise else 0)
            if not re.search(r"[^\W\d_]", line[start:m.start("legal")]):
                continue
            return line[start:m.end("legal")]
    return None


def _signature(lines: list[str]) -> tuple[str, str | None]:
    """The text after the last closing formula ("Kind regards,", "Grüße,") and the name that follows it."""
    for index in range(len(lines) - 1, -1, -1):
        m = _CLOSING.match(lines[index])
        if not m:
            continue
        tail = lines[index][m.end():]
        following = [tail] + lines[index + 1:index + 8]
        block = "\n".join(following)
        name = None
        for candidate in following:
            if not candidate.strip():
                continue
            person = _PERSON.match(candidate.strip())
            if person and not re.search(rf"(?<![\w]){_LEGAL}(?![\w])", person["name"]):
                name = person["name"]
            break
        return block, name
    return "", None


def _sender_parts(sender: str | None) -> tuple[str | None, str | None, str | None, str | None]:
    """Person, company, e-mail and phone from a From header or a chat sender."""
    if not sender:
        return None, None, None, None
    display, address = parseaddr(sender)
    if not address or "@" not in address:
        display, address = sender, None
    elif re.fullmatch(r"\d{7,15}@(?:c\.us|s\.whatsapp\.net)", address):
        # A chat gateway's id is the sender's phone number, not a mailbox.
        return (display or None), None, None, "+" + address.split("@")[0]
    digits = re.sub(r"\D", "", display)
    if display and len(digits) >= 7 and not re.search(r"[^\W\d_]", display):
        return None, None, address, display.strip()
    display = display.strip().strip('"')
    company = _company(display, skip_customers=False)
    person = display
    if company:
        person = display.replace(company, "")
    person = re.sub(r"[|()\-–—,@]+", " ", person).strip()
    looks_personal = re.fullmatch(r"[A-ZÀ-Þ][\w'’.-]*(?:\s+[A-ZÀ-Þ][\w'’.-]*){0,3}", person)
    if not looks_personal or _GENERIC_SENDERS.search(person):
        person = None
    return person, company, address, None


def _phone(lines: list[str], anywhere: bool = False) -> str | None:
    """A labelled phone number, else one shaped like a phone: in a signature any such, elsewhere only
    those starting with + or 0, since bare digit runs in a body are more often references."""
    labelled, plain = None, None
    for line in lines:
        if _MONEY_RE.search(line):
            continue
        for m in _PHONE.finditer(line):
            raw = m.group(0).strip()
            digits = re.sub(r"\D", "", raw)
            if not 8 <= len(digits) <= 15 or re.fullmatch(r"\d{1,2}[./-]\d{1,2}[./-]\d{2,4}", raw):
                continue
            if labelled is None and _PHONE_LABEL.search(line[:m.start()]):
                labelled = raw
            elif anywhere or raw[0] in "+0" or raw.startswith("(0"):
                plain = plain or raw
    return labelled or plain


def _offer_number(texts: list[str]) -> str | None:
    for text in texts:
        for pattern in _OFFER_NUMBER_PATTERNS:
            for m in pattern.finditer(text):
                number = m["num"].rstrip(".-/")
                if not re.fullmatch(r"\d{1,2}[./-]\d{1,2}[./-]\d{2,4}", number):
                    return number
    return None


# -------------------------------------------------------------------------------------------------- assembly

_REPLY_MARKER = re.compile(
    r"^\s*(?:-{2,}\s*(?:original\s+message|ursprüngliche\s+nachricht|message\s+d'origine|messaggio\s+originale"
    r"|mensaje\s+original|forwarded\s+message|weitergeleitete\s+nachricht|message\s+transféré)"
    r"|(?:on|am|le|il|el)\s.{5,120}(?:wrote|schrieb|a\s+écrit|ha\s+scritto|escribió)\s*:?\s*$"
    r"|(?:from|von|de|da)\s*:.*@)", re.IGNORECASE)
_ATTACHMENT_LABEL = re.compile(r"^---\s.+\s---\s*$")


def _without_quotes(lines: list[str]) -> list[str]:
    """Blanks earlier messages quoted under a reply, so the customer's own request and signature are not read
    as the offer; a quoted block ends where the next attachment's text begins."""
    own, quoting = [], False
    for line in lines:
        if _ATTACHMENT_LABEL.match(line):
            quoting = False
        elif _REPLY_MARKER.match(line):
            quoting = True
        own.append("" if quoting or line.lstrip().startswith(">") else line)
    return own


def _normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return re.sub(r"[\u00a0\u202f\u2009\u2007]", " ", text)


def _main_currency(text: str, drafts: list[_Draft], totals: _Totals) -> str | None:
    votes: dict[str, int] = {}
    for code in [c for d in drafts for c in d.currencies] + totals.currencies:
        votes[code] = votes.get(code, 0) + 2
    for m in _MONEY_RE.finditer(text):
        code = _currency_code(m["c"]) if m["c"] else _currency_code(_CURRENCY_RE.search(m.group(0)).group(0))
        votes[code] = votes.get(code, 0) + 1
    return max(votes, key=votes.get) if votes else None


def extract_offer_offline(text: str, *, source: str | None, sent_at: datetime.date | None,
                          subject: str | None = None, sender: str | None = None) -> Offer:
    """Reads an offer from plain text with rules alone; fields the text does not state stay None."""
    text = _normalise(text or "")
    subject = _normalise(subject or "")
    lines = _without_quotes(text.split("\n"))
    text = "\n".join(lines)
    language = detect_language(f"{subject}\n{text}")
    numbers = _Numbers(_decimal_comma(text, language))
    month_first = language == "en" and bool(re.search(r"\$|USD", text))

    drafts, rest = _items(lines, numbers)
    totals = _totals(rest, numbers)
    currency = _main_currency(text, drafts, totals)

    ref = sent_at or _document_date(text)
    valid = _valid_until(text, ref, month_first)

    signature, signed_name = _signature(lines)
    person, sender_company, sender_email, sender_phone = _sender_parts(sender)
    at = _AT_COMPANY.search(text)
    supplier = ((at["company"].rstrip(" .,;") if at else None) or _company(signature, skip_customers=False)
                or sender_company or _company(text))
    name = person or signed_name or (at["person"] if at else None)
    emails = [e for line in lines if not _RECIPIENT_LABEL.search(line) for e in _EMAIL.findall(line)]
    email = sender_email or (emails[0] if emails else None)
    phone = _phone(signature.split("\n"), anywhere=True) or _phone(lines) or sender_phone
    contact = Contact(name=name, email=email, phone=phone) if (name or email or phone) else None

    items = [d.item() for d in drafts]
    is_offer = bool(items) or totals.net is not None or totals.gross is not None
    if not is_offer:
        return Offer(is_offer=False, supplier=supplier, contact=contact, language=language)

    offer = Offer(
        is_offer=True,
        supplier=supplier,
        contact=contact,
        offer_number=_offer_number([subject, text]),
        language=language,
        currency=currency,
        items=items,
        discount_rate=totals.discount_rate,
        total_net=totals.net,
        vat_rate=totals.vat_rate,
        vat=totals.vat,
        total_gross=totals.gross,
        valid_until=valid.isoformat() if valid else None,
        incoterms=_incoterms(text),
        delivery_time=_delivery_time(text),
        payment_terms=_payment_terms(text),
        delivery_included=_delivery_included(text),
    )
    return check_offer(offer)
