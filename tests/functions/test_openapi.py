"""GET /api/openapi.json describes every HTTP route of the app; /api/docs serves Swagger UI from its package."""
from __future__ import annotations

import re

import pytest

from devhost.app_index import AppIndex
from helpers import FUNCTION_KEY
from tests.support.http import Http

KEY = FUNCTION_KEY


@pytest.fixture(scope="module")
def api(app_http):
    return app_http


def _routes() -> set[tuple[str, str]]:
    import function_app

    index = AppIndex.build(function_app.app)
    routes = set()
    for http in index.http:
        path = "/" + re.sub(r"\{\*?(\w+)(:\w+)?\??\}", r"{\1}", http.route.template)
        path = path.replace("/{asset}", "")  # docs/{*asset} is the docs page and its files
        for method in sorted(http.methods or {"GET"}):
            routes.add((method.lower(), path))
    return routes


def test_spec_lists_every_http_route_of_the_app(api):
    status, _, spec = api.request("GET", "/api/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    documented = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert _routes() <= documented, _routes() - documented
    assert documented <= _routes(), documented - _routes()


def test_spec_schemas_come_from_the_models(api):
    spec = api.request("GET", "/api/openapi.json")[2]
    offer = spec["components"]["schemas"]["Offer"]
    assert {"is_offer", "supplier", "currency", "items", "total_gross", "warnings"} <= set(offer["properties"])
    assert spec["components"]["securitySchemes"]["functionKeyHeader"]["name"] == "x-functions-key"
    assert "callbacks" in spec["paths"]["/api/ingest"]["post"]


def test_docs_page_and_its_assets_are_served_with_the_key(api):
    status, headers, html = api.request("GET", f"/api/docs?code={KEY}")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = html.decode() if isinstance(html, bytes) else html
    assert f'url: "openapi.json?code={KEY}"' in page
    assert f"docs/swagger-ui-bundle.js?code={KEY}" in page
    anonymous = Http(api.base_url, None)
    status, headers, script = anonymous.request("GET", f"/api/docs/swagger-ui-bundle.js?code={KEY}")
    assert status == 200 and "javascript" in headers["Content-Type"] and len(script) > 100_000
    assert api.request("GET", "/api/docs/../../etc/passwd")[0] in (400, 404)
    assert anonymous.request("GET", "/api/openapi.json")[0] == 401
