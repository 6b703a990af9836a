"""The Durable extension's HTTP management API (`/runtime/webhooks/durabletask/...`) over the engine."""
from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any
from urllib.parse import quote

from aiohttp import web

from .engine import TERMINAL, Engine, HubError
from .events import EventType, parse_iso
from .store import HubLost


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"Message": message, "ExceptionMessage": message}, status=status)


def _client_input(body: bytes) -> str | None:
    """The SDK posts `json.dumps(df_dumps(value))`; curl users post plain JSON. Both become the input's JSON text."""
    if not body.strip():
        return None
    value = json.loads(body)
    return value if isinstance(value, str) else json.dumps(value)


def _short_time(text: str) -> str:
    return parse_iso(text).strftime("%Y-%m-%dT%H:%M:%SZ")


_PUBLIC_FIELDS = ("EventId", "Name", "Reason", "Details", "FireAt", "InstanceId", "TaskScheduledId", "TimerId")
# The history JSON names event types as DTFx's EventType enum does; only these differ from our member names.
_DTFX_NAMES = {EventType.SUB_ORCHESTRATION_CREATED: "SubOrchestrationInstanceCreated",
               EventType.SUB_ORCHESTRATION_COMPLETED: "SubOrchestrationInstanceCompleted",
               EventType.SUB_ORCHESTRATION_FAILED: "SubOrchestrationInstanceFailed"}


def _type_name(type_: EventType) -> str:
    return _DTFX_NAMES.get(type_) or "".join(w.title() for w in type_.name.split("_"))


def _public_history(history: list[dict], with_output: bool) -> list[dict]:
    events = []
    for e in history:
        type_ = EventType(e["EventType"]) if e["EventType"] in EventType._value2member_map_ else None
        if type_ in (EventType.ORCHESTRATOR_STARTED, EventType.ORCHESTRATOR_COMPLETED):
            continue
        # `is not None`: ExecutionStarted is EventType 0, which is falsy
        item: dict[str, Any] = {"EventType": _type_name(type_) if type_ is not None else str(e["EventType"]),
                                "Timestamp": e["Timestamp"]}
        item.update({k: e[k] for k in _PUBLIC_FIELDS if k in e and not k.startswith("_")})
        if "Name" in e:
            item["FunctionName"] = e["Name"]
        if with_output and e.get("Result") is not None:
            item["Result"] = json.loads(e["Result"]) if e["Result"] else None
        events.append(item)
    return events


def status_json(meta: dict, history: list[dict] | None, *, show_input: bool = True,
                show_history_output: bool = False) -> dict:
    body = {"name": meta["name"], "instanceId": meta["id"], "runtimeStatus": meta["status"],
            "createdTime": _short_time(meta["created"]), "lastUpdatedTime": _short_time(meta["updated"]),
            "input": meta.get("input") if show_input else None, "output": meta.get("output"),
            "customStatus": meta.get("custom_status")}
    if history is not None:
        body["historyEvents"] = _public_history(history, show_history_output)
    return body


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() == "true"


class ManagementApi:
    def __init__(self, engine: Engine, public_base: str, rpc_base: str, master_key: str) -> None:
        self.engine = engine
        self.public_base = public_base.rstrip("/")
        self.rpc_base = rpc_base.rstrip("/")
        self.master_key = master_key

    def binding(self) -> str:
        """The durableClient binding data the extension hands to a function."""
        hub = self.engine.hub
        query = f"taskHub={hub}&connection=Storage&code={self.master_key}"
        base = self.public_base
        instance = f"{base}/instances/INSTANCEID"
        return json.dumps({
            "taskHubName": hub,
            "creationUrls": {
                "createNewInstancePostUri": f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]?{query}",
                "createAndWaitOnNewInstancePostUri": f"{base}/orchestrators/{{functionName}}[/{{instanceId}}]"
                                                     f"?timeout={{timeoutInSeconds}}&pollingInterval="
                                                     f"{{intervalInSeconds}}&{query}"},
            "managementUrls": {
                "id": "INSTANCEID", "statusQueryGetUri": f"{instance}?{query}",
                "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}?{query}",
                "terminatePostUri": f"{instance}/terminate?reason={{text}}&{query}",
                "rewindPostUri": f"{instance}/rewind?reason={{text}}&{query}",
                "purgeHistoryDeleteUri": f"{instance}?{query}",
                "restartPostUri": f"{instance}/restart?{query}",
                "suspendPostUri": f"{instance}/suspend?reason={{text}}&{query}",
                "resumePostUri": f"{instance}/resume?reason={{text}}&{query}"},
            "baseUrl": base, "requiredQueryStringParameters": query, "rpcBaseUrl": self.rpc_base + "/"})

    def management_payload(self, instance_id: str) -> dict:
        urls = json.loads(self.binding())["managementUrls"]
        return {k: v.replace("INSTANCEID", quote(instance_id, safe="")) for k, v in urls.items()}

    async def handle(self, request: web.Request, tail: str) -> web.Response:
        parts = [p for p in tail.split("/") if p]
        try:
            return await self._route(request, parts)
        except HubError as exc:
            return _error(exc.status, str(exc))
        except HubLost as exc:  # another host took the hub: this one answers nothing it cannot write
            return _error(503, str(exc))
        except (ValueError, KeyError) as exc:
            return _error(400, f"Malformed management request: {exc}")

    async def _route(self, request: web.Request, parts: list[str]) -> web.Response:
        method = request.method
        if parts[:1] == ["orchestrators"] and method == "POST" and len(parts) in (2, 3):
            return await self._start(request, parts[1], parts[2] if len(parts) == 3 else None)
        if parts[:1] == ["instances"]:
            if len(parts) == 1:
                if method == "GET":
                    return await self._list(request)
                if method == "DELETE":
                    return await self._purge_by(request)
            elif len(parts) == 2:
                if method == "GET":
                    return await self._status(request, parts[1])
                if method == "DELETE":
                    deleted = await self.engine.purge(parts[1])
                    return (web.json_response({"instancesDeleted": deleted}) if deleted
                            else web.Response(status=404))
            elif method == "POST":
                return await self._operation(request, parts[1], parts[2:])
        if parts[:1] == ["entities"] and len(parts) == 3:
            if method == "POST":
                body = await request.read()
                await self.engine.signal_entity(parts[1], parts[2], request.query.get("op", ""),
                                                _client_input(body))
                return web.Response(status=202)
            if method == "GET":
                exists, state = await self.engine.read_entity(parts[1], parts[2])
                return web.json_response(state) if exists else web.Response(status=404)
        return _error(404 if method in ("GET", "POST", "DELETE") else 405,
                      f"No management operation at {request.path} for {method}")

    async def _start(self, request: web.Request, name: str, instance_id: str | None) -> web.Response:
        body = await request.read()
        instance_id = await self.engine.start_new(name, instance_id, _client_input(body),
                                                  request.query.get("version"))
        payload = self.management_payload(instance_id)
        return web.json_response(payload, status=202, headers={"Location": payload["statusQueryGetUri"]})

    async def _status(self, request: web.Request, instance_id: str) -> web.Response:
        found = await self.engine.get_status(instance_id, with_history=_flag(request, "showHistory"))
        if found is None:
            return web.Response(status=404)
        meta, history = found
        body = status_json(meta, history if _flag(request, "showHistory") else None,
                           show_input=request.query.get("showInput", "true").lower() != "false",
                           show_history_output=_flag(request, "showHistoryOutput"))
        return web.json_response(body, status=200 if meta["status"] in TERMINAL else 202)

    def _filtered(self, request: web.Request, rows: list[dict]) -> list[dict]:
        query = request.query
        created_from = parse_iso(query["createdTimeFrom"]) if query.get("createdTimeFrom") else None
        created_to = parse_iso(query["createdTimeTo"]) if query.get("createdTimeTo") else None
        statuses = {s for s in query.get("runtimeStatus", "").split(",") if s}
        prefix = query.get("instanceIdPrefix", "")
        out = []
        for row in rows:
            created: datetime = parse_iso(row["created"])
            if created_from and created < created_from or created_to and created > created_to:
                continue
            if statuses and row["status"] not in statuses or not row["id"].startswith(prefix):
                continue
            out.append(row)
        return sorted(out, key=lambda r: (r["created"], r["id"]))

    async def _list(self, request: web.Request) -> web.Response:
        rows = self._filtered(request, await self.engine.list_instances())
        token = request.headers.get("x-ms-continuation-token") or request.query.get("continuationToken")
        offset = int(base64.urlsafe_b64decode(token.encode()).decode()) if token and token != "null" else 0
        top = int(request.query.get("top", "0") or 0) or len(rows)
        page = rows[offset:offset + top]
        headers = {}
        if offset + top < len(rows):
            headers["x-ms-continuation-token"] = base64.urlsafe_b64encode(str(offset + top).encode()).decode()
        show_input = request.query.get("showInput", "false").lower() == "true"
        return web.json_response([status_json(r, None, show_input=show_input) for r in page], headers=headers)

    async def _purge_by(self, request: web.Request) -> web.Response:
        rows = [r for r in self._filtered(request, await self.engine.list_instances()) if r["status"] in TERMINAL]
        deleted = 0
        for row in rows:
            try:
                deleted += await self.engine.purge(row["id"])
            except HubError as exc:  # one still delivering its outcome (or started again) stays for the next purge
                if exc.status != 409:
                    raise
        return web.json_response({"instancesDeleted": deleted}) if deleted else web.Response(status=404)

    async def _operation(self, request: web.Request, instance_id: str, rest: list[str]) -> web.Response:
        reason = request.query.get("reason", "")
        action = rest[0] if rest else ""
        if action == "raiseEvent" and len(rest) == 2:
            if request.content_type != "application/json":
                return _error(400, "Only application/json request content is supported")
            body = await request.read()
            data = json.dumps(json.loads(body)) if body.strip() else None
            await self.engine.raise_event(instance_id, rest[1], data)
        elif action == "terminate":
            await self.engine.terminate(instance_id, reason)
        elif action == "suspend":
            await self.engine.suspend(instance_id, reason)
        elif action == "resume":
            await self.engine.resume(instance_id, reason)
        elif action == "rewind":
            await self.engine.rewind(instance_id, reason)
        elif action == "restart":
            found = await self.engine.get_status(instance_id)
            if found is None:
                return web.Response(status=404)
            meta = found[0]
            new_id = None if request.query.get("restartWithNewInstanceId", "true").lower() == "true" else instance_id
            if new_id == instance_id and meta["status"] not in TERMINAL:
                await self.engine.terminate(instance_id, "restarted")
            started = await self.engine.start_new(meta["name"], new_id, meta.get("input"))
            payload = self.management_payload(started)
            return web.json_response(payload, status=202, headers={"Location": payload["statusQueryGetUri"]})
        else:
            return _error(404, f"Unknown instance operation '{action}'")
        return web.Response(status=202)
