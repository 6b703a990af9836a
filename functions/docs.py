"""API description: GET /api/openapi.json and the Swagger UI at /api/docs (files from swagger-ui-bundle)."""
from __future__ import annotations

import json
import mimetypes
from functools import lru_cache
from urllib.parse import quote

import azure.durable_functions as df
import azure.functions as func
from swagger_ui_bundle import swagger_ui_path

from shared.openapi import build_spec

from ._http import handles_errors, json_response

bp = df.Blueprint()
_ASSETS = {"swagger-ui.css", "index.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
           "favicon-32x32.png", "favicon-16x16.png"}


@lru_cache(maxsize=1)
def _spec() -> dict:
    return build_spec()


@bp.route(route="openapi.json", methods=["GET"])
@handles_errors
async def openapi(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(_spec())


def _with_code(path: str, code: str | None) -> str:
    """The page's own requests carry the key it was opened with, since browsers send no x-functions-key."""
    return f"{path}?code={quote(code)}" if code else path


@bp.route(route="docs/{*asset}", methods=["GET"])
@handles_errors
async def docs(req: func.HttpRequest) -> func.HttpResponse:
    asset = req.route_params.get("asset") or ""
    code = req.params.get("code")
    if asset in _ASSETS:
        data = (swagger_ui_path / asset).read_bytes()
        return func.HttpResponse(data, mimetype=mimetypes.guess_type(asset)[0] or "application/octet-stream",
                                 headers={"Cache-Control": "public, max-age=86400"})
    if asset not in ("", "index.html"):
        return json_response({"error": {"code": "not_found", "message": f"No docs asset '{asset}'."}}, 404)
    html = (swagger_ui_path / "index.html").read_text()
    for name in _ASSETS:
        html = html.replace(f'href="./{name}"', f'href="docs/{_with_code(name, code)}"')
        html = html.replace(f'href="{name}"', f'href="docs/{_with_code(name, code)}"')
        html = html.replace(f'src="./{name}"', f'src="docs/{_with_code(name, code)}"')
    init = ("<script>window.onload = function () { window.ui = SwaggerUIBundle({"
            f"url: {json.dumps(_with_code('openapi.json', code))}, dom_id: '#swagger-ui', deepLinking: true, "
            "presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: 'StandaloneLayout'}); };"
            "</script>")
    html = html.replace('<script src="./swagger-initializer.js" charset="UTF-8"> </script>', init)
    return func.HttpResponse(html, mimetype="text/html", charset="utf-8")
