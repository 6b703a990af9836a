"""Offer ingestion: normalise what Make.com sends, extract the offer, check its arithmetic."""
