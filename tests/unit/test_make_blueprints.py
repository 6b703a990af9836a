"""The Make.com blueprints in docs/ import as scenarios that post to /api/ingest and receive the callback."""
from __future__ import annotations

import json
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _modules(flow: list[dict]) -> list[dict]:
    found = []
    for module in flow:
        found.append(module)
        for route in module.get("routes", []):
            found += _modules(route["flow"])
    return found


def test_ingest_blueprint_posts_the_attachment_with_an_idempotency_key_and_a_callback():
    blueprint = json.loads((DOCS / "make-ingest.blueprint.json").read_text())
    assert blueprint["name"] and blueprint["metadata"]["designer"] == {"orphans": []}
    http = next(m for m in _modules(blueprint["flow"]) if m["module"].startswith("http:"))
    mapper = http["mapper"]
    assert mapper["url"].endswith("/api/ingest") and mapper["method"] == "post"
    headers = {h["name"]: h["value"] for h in mapper["headers"]}
    assert "x-functions-key" in headers and headers["Idempotency-Key"]
    fields = {f["key"]: f for f in mapper["formDataFields"]}
    assert fields["file"]["fieldType"] == "file" and "callback_url" in fields
    assert json.loads(fields["metadata"]["value"].replace("{{1.from.address}}", "a").replace(
        "{{1.messageId}}", "b")) == {"from": "a", "message_id": "b"}
    assert [m["id"] for m in blueprint["flow"]] == [1, 2, 3]


def test_callback_blueprint_starts_with_a_custom_webhook_and_routes_both_outcomes():
    blueprint = json.loads((DOCS / "make-callback.blueprint.json").read_text())
    assert blueprint["flow"][0]["module"] == "gateway:CustomWebHook" and blueprint["metadata"]["instant"] is True
    conditions = {m["filter"]["conditions"][0][0]["b"] for m in _modules(blueprint["flow"]) if m.get("filter")}
    assert conditions == {"offer.parsed", "offer.failed"}
    text = (DOCS / "make.md").read_text()
    assert "make-ingest.blueprint.json" in text and "make-callback.blueprint.json" in text
