"""Blob and Table storage adapters."""
