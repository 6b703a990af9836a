"""A fake Azure AI Search on loopback: index create/update, document batches and exact cosine vector queries."""
from __future__ import annotations

import json
import re
import threading

import numpy as np

from tests.support.loopback import JsonHandler, LoopbackServer

_INDEX = re.compile(r"^/indexes\('([^']+)'\)(/docs/search\.(index|post\.search))?(\?.*)?$")


class FakeSearch(LoopbackServer):
    def __init__(self, api_key: str = "search-admin-key") -> None:
        self.api_key = api_key
        self.indexes: dict[str, dict] = {}  # name -> index definition as sent
        self.documents: dict[str, dict[str, dict]] = {}  # index -> key -> document
        self.queries: list[dict] = []
        self.refuse: set[str] = set()  # keys whose indexing fails (status 400 in a 207 answer)
        self._lock = threading.Lock()
        super().__init__(self._handler())

    @property
    def endpoint(self) -> str:
        return self.root_url

    def _search(self, index: str, body: dict) -> list[dict]:
        select = (body.get("select") or "").split(",")
        if not body.get("vectorQueries"):  # search=* with a filter on doc_id: what a document has
            wanted = re.fullmatch(r"doc_id eq '((?:[^']|'')*)'", body.get("filter") or "")
            return [{k: d[k] for k in select if k in d} for d in self.documents[index].values()
                    if wanted is None or d["doc_id"] == wanted.group(1).replace("''", "'")]
        [query] = body["vectorQueries"]
        vector = np.asarray(query["vector"], dtype=np.float64)
        field = self.indexes[index]
        dims = next(f["dimensions"] for f in field["fields"] if f["name"] == query["fields"])
        if len(vector) != dims:
            raise ValueError(f"The vector has {len(vector)} dimensions, the field {dims}")
        scored = []
        for document in self.documents[index].values():
            other = np.asarray(document["vector"], dtype=np.float64)
            cos = float(vector @ other / (np.linalg.norm(vector) * np.linalg.norm(other)))
            scored.append((1.0 / (1.0 + (1.0 - cos)), document))  # the service's score for cosine
        scored.sort(key=lambda pair: -pair[0])
        return [{"@search.score": score, **{k: d[k] for k in select if k in d}}
                for score, d in scored[:min(query["k"], body.get("top") or query["k"])]]

    def _handler(self):
        fake = self

        class Handler(JsonHandler):
            content_type = "application/json; odata.metadata=minimal"

            def _route(self) -> tuple[str, str | None] | None:
                if self.headers.get("api-key") != fake.api_key:
                    self._send(403, {"error": {"code": "Forbidden", "message": "wrong api-key"}})
                    return None
                match = _INDEX.match(self.path)
                if not match:
                    self._send(404, {"error": {"code": "NotFound", "message": self.path}})
                    return None
                return match.group(1), match.group(3)

            def do_GET(self) -> None:  # noqa: N802
                route = self._route()
                if route is None:
                    return
                with fake._lock:
                    definition = fake.indexes.get(route[0])
                if definition is None:
                    return self._send(404, {"error": {"code": "ResourceNotFound", "message": "No such index."}})
                return self._send(200, definition)

            def do_PUT(self) -> None:  # noqa: N802
                route = self._route()
                if route is None:
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with fake._lock:
                    created = route[0] not in fake.indexes
                    fake.indexes[route[0]] = body
                    fake.documents.setdefault(route[0], {})
                self._send(201 if created else 200, body)

            def do_POST(self) -> None:  # noqa: N802
                route = self._route()
                if route is None:
                    return
                name, operation = route
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with fake._lock:
                    if name not in fake.indexes:
                        return self._send(404, {"error": {"code": "ResourceNotFound",
                                                          "message": f"The index '{name}' was not found."}})
                    if operation == "index":
                        results = []
                        for action in body["value"]:
                            kind = action.pop("@search.action")
                            if action["id"] in fake.refuse:
                                results.append({"key": action["id"], "status": False, "statusCode": 400,
                                                "errorMessage": "The document was refused."})
                                continue
                            if kind == "delete":
                                fake.documents[name].pop(action["id"], None)
                            else:
                                fake.documents[name][action["id"]] = {**fake.documents[name].get(action["id"], {}),
                                                                      **action}
                            results.append({"key": action["id"], "status": True, "errorMessage": None,
                                            "statusCode": 200})
                        return self._send(207 if any(not r["status"] for r in results) else 200,
                                          {"value": results})
                    fake.queries.append(body)
                    try:
                        return self._send(200, {"value": fake._search(name, body)})
                    except ValueError as error:
                        return self._send(400, {"error": {"code": "InvalidRequestParameter", "message": str(error)}})

        return Handler
