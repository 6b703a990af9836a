"""Document vision: multi-page documents read page by page, merged into one result."""
