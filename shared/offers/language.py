"""Guesses the language (en, de, fr, es, it) of a business message by scoring common words."""
from __future__ import annotations

import re

# Function words plus the vocabulary of offers and business mail, because supplier messages are short and
# terse: "500 Stk à 0,38 € netto" says more through its trade words than through its grammar.
_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset("""
        the and of to for with we our your you is are be been will would can could do does this that these
        those as by on at from it its an if please find attached as regards dear thanks thank hi hello kind
        best price prices quotation quote offer total net subtotal delivery delivered lead time valid until
        till month months week weeks day days payment terms discount item items qty quantity unit amount
        each per boxes pallet pallets pieces us now join register here there which what when who about have
        has had not all any more other than also just let know holds can't don't we're i'm
        """.split()),
    "de": frozenset("""
        der die das und ist sind wir unser unsere unseren ihr ihre ihnen sie mit für von zu bis bei auf den
        dem des ein eine einen einem nicht wie gerne anbei angebot angebote grüße gruß grüßen hallo sehr
        geehrte geehrter geehrten herr frau netto brutto gesamt zzgl inkl mwst lieferung lieferzeit gültig
        stk stück werktage tage wochen versand pauschal besprochen preis preise im auch oder noch nach
        über unter freundlichen vielen dank bitte menge einzelpreis summe rabatt zahlung zahlbar ab werk
        """.split()),
    "fr": frozenset("""
        le la les de des du et en un une pour vous nous votre vos notre nos est sont avec sur au aux par
        ce cette ces qui que dans à bonjour madame monsieur cordialement offre prix livraison jours jusqu
        jusqu'au suite demande plaisir proposer unités unité ht ttc tva délai paiement mois valable soit après
        sommes restons disposition devis remise quantité montant rouleaux ouvrés fin merci bien
        """.split()),
    "it": frozenset("""
        il lo la le gli di da del della dei delle dello e è con per su un una uno che non al alla dalla dal
        nel nella sono siamo vostra vostro nostra nostro offerta offerte prezzo prezzi consegna giorni entro
        totale imponibile iva esclusa inclusa validità spett sig ra quantità articolo importo unitario data
        cordiali saluti gentile distinti pagamento sconto franco destino commerciale pezzi ci ti grazie
        """.split()),
    "es": frozenset("""
        el la los las de del y en un una unos unas por para con su sus es son al que nuestro nuestra
        nuestros presupuesto precio precios días desde hasta entrega total iva validez atentamente saludos
        estimado estimada estimados cantidad descripción unidad unidades oferta pago plazo importe
        gracias usted ustedes muy le les lo se como cotización descuento envío portes incluido fecha
        imponible uds ud base
        """.split()),
}

_TOKEN = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_MIN_SCORE = 2.0
_MIN_LEAD = 1.25


def detect_language(text: str | None) -> str | None:
    """ISO 639-1 code of the most likely language, or None when the text gives too little to tell."""
    if not text:
        return None
    scores = dict.fromkeys(_WORDS, 0.0)
    for token in _TOKEN.findall(text.lower()):
        languages = [code for code, words in _WORDS.items() if token in words]
        for code in languages:
            # Words several languages share ("la", "de", "total") count for each only in part.
            scores[code] += 1.0 / len(languages)
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    (best, top), (_, second) = ranked[0], ranked[1]
    if top < _MIN_SCORE or top < second * _MIN_LEAD:
        return None
    return best
