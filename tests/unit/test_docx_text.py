"""DOCX text keeps the order of the document: a table stays under the heading that names it."""
from __future__ import annotations

import io

import docx

from shared.offers.normalize import docx_text


def _document() -> bytes:
    document = docx.Document()
    for season, price in (("Summer prices:", "30 EUR"), ("Winter prices:", "45 EUR")):
        document.add_paragraph(season)
        table = document.add_table(rows=2, cols=2)
        for row, cells in zip(table.rows, (("Item", "Price per day"), ("Kayak", price))):
            for cell, text in zip(row.cells, cells):
                cell.text = text
    document.add_paragraph("All prices include VAT.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_each_table_follows_its_heading():
    assert docx_text(_document()).splitlines() == [
        "Summer prices:", "Item | Price per day", "Kayak | 30 EUR",
        "Winter prices:", "Item | Price per day", "Kayak | 45 EUR", "All prices include VAT."]
