"""The local Functions host: serves HTTP triggers and the Durable API, runs timers, owns the engine."""
from __future__ import annotations

import asyncio
import functools
import hmac
import inspect
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiohttp import web

from shared.storage import close_clients

from .app_index import AppIndex, FunctionInfo, HttpFunction
from .engine import Engine
from .management import ManagementApi
from .store import Store

log = logging.getLogger("devhost")

MAX_BODY = 100 * 1024 * 1024  # the Functions host's default maxRequestBodySize
STOP_GRACE_SECONDS = 5.0  # at a stop, requests and activities under way get this long to finish


@dataclass
class HostConfig:
    host: str = "127.0.0.1"
    port: int = 7071
    rpc_port: int = 0
    function_key: str = ""
    master_key: str = ""
    hub: str = "TestHubName"
    route_prefix: str = "api"
    max_activities: int = 10
    max_orchestrators: int = 8
    hub_wait: float = 30.0  # how long to wait for another host's lease on the hub to lapse
    max_body: int = MAX_BODY

    @classmethod
    def from_host_json(cls, path: Path, **overrides: Any) -> "HostConfig":
        data = json.loads(path.read_text()) if path.exists() else {}
        durable = data.get("extensions", {}).get("durableTask", {})
        http = data.get("extensions", {}).get("http", {})
        hub = re.sub(r"%(\w+)%", lambda m: os.environ.get(m.group(1), ""), durable.get("hubName", cls.hub))
        config = cls(hub=hub or cls.hub,  # "%Setting%" names an app setting, as in the Functions host
                     route_prefix=http.get("routePrefix", cls.route_prefix),
                     max_activities=int(durable.get("maxConcurrentActivityFunctions", cls.max_activities)),
                     max_orchestrators=int(durable.get("maxConcurrentOrchestratorFunctions", cls.max_orchestrators)))
        for key, value in overrides.items():
            setattr(config, key, value)
        return config


def _json_error(status: int, code: str, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


async def release_sdk_session() -> None:
    """The Durable SDK keeps one module-global aiohttp session (and lock) bound to the loop that made them.

    Close them with the host, so that a later host on another loop in this process (tests, benchmarks)
    starts fresh instead of reusing a session whose loop is gone.
    """
    try:
        from azure.durable_functions.models.utils import http_utils
    except ImportError:
        return
    await http_utils._close_session()
    http_utils._session_lock = asyncio.Lock()


class InvocationContext:
    """The parts of `func.Context` that app code reads."""

    def __init__(self, name: str) -> None:
        self.invocation_id = str(uuid.uuid4())
        self.function_name = name
        self.function_directory = os.getcwd()
        self.trace_context = None
        self.retry_context = None


class DevHost:
    def __init__(self, app: Any, store: Store, config: HostConfig) -> None:
        self.config = config
        self.index = AppIndex.build(app, config.route_prefix)
        self.store = store
        self.engine: Engine | None = None
        self.management: ManagementApi | None = None
        self._public_runner: web.AppRunner | None = None
        self._rpc_runner: web.AppRunner | None = None
        self._pool = ThreadPoolExecutor(max_workers=32, thread_name_prefix="http")
        self._timer_tasks: set[asyncio.Task] = set()
        self.port = config.port
        self.rpc_port = config.rpc_port

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def start(self) -> None:
        self.engine = Engine(self.index, self.store, hub=self.config.hub, max_activities=self.config.max_activities,
                             max_episodes=self.config.max_orchestrators, hub_wait=self.config.hub_wait)
        public = web.Application(client_max_size=self.config.max_body)
        public.router.add_route("*", "/runtime/webhooks/durabletask/{tail:[\\s\\S]*}", self._public_management)
        public.router.add_route("*", "/admin/host/status", self._host_status)
        public.router.add_route("POST", "/admin/functions/{name}", self._run_by_hand)
        public.router.add_route("*", "/{tail:[\\s\\S]*}", self._http_trigger)  # any path, line breaks included
        rpc = web.Application(client_max_size=self.config.max_body)
        rpc.router.add_route("*", "/durabletask/{tail:[\\s\\S]*}", self._rpc_management)
        # Bind first (the binding data needs the ports), recover the hub, and only then serve: a request
        # must never race the recovery of work the hub already holds.
        public_socket, rpc_socket = self._bind(self.config.port), self._bind(self.config.rpc_port)
        self.port, self.rpc_port = public_socket.getsockname()[1], rpc_socket.getsockname()[1]
        self.management = ManagementApi(self.engine, f"{self.base_url}/runtime/webhooks/durabletask",
                                        f"http://{self.config.host}:{self.rpc_port}/durabletask",
                                        self.config.master_key)
        self.engine.client_binding = self.management.binding
        # only the app's own functions call the RPC server, and none runs before recovery
        self._rpc_runner = await self._serve(rpc, rpc_socket)
        await self.engine.start()
        self._public_runner = await self._serve(public, public_socket)
        for info in self.index.timers:
            self._timer_tasks.add(asyncio.get_running_loop().create_task(self._run_timer(info)))
        log.info("devhost listening on %s (%d functions, task hub %s on %s)", self.base_url,
                 len(self.index.functions), self.config.hub, self.store.name)

    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.host, port))
        sock.listen(1024)
        sock.setblocking(False)
        return sock

    async def _serve(self, app: web.Application, sock: socket.socket) -> web.AppRunner:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=STOP_GRACE_SECONDS)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        return runner

    async def stop(self) -> None:
        for task in list(self._timer_tasks):
            task.cancel()
        if self._public_runner is not None:  # no new requests; those under way get the grace period
            await self._public_runner.cleanup()
        if self.engine is not None:  # then activities, which may still call the RPC server
            await self.engine.drain(STOP_GRACE_SECONDS)
        if self._rpc_runner is not None:
            await self._rpc_runner.cleanup()
        if self.engine is not None:
            await self.engine.stop()
        await release_sdk_session()
        await close_clients()  # the app's storage clients on this loop
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ auth

    def _key_of(self, request: web.Request) -> str:
        return request.headers.get("x-functions-key") or request.query.get("code", "")

    def _authorized(self, request: web.Request, level: str) -> bool:
        if level == "ANONYMOUS":
            return True
        given = self._key_of(request).encode()
        keys = [self.config.master_key] + ([self.config.function_key] if level == "FUNCTION" else [])
        # compare against every key so timing does not tell which one came close
        return any([hmac.compare_digest(given, k.encode()) for k in keys if k])

    # ------------------------------------------------------------------ management

    async def _public_management(self, request: web.Request) -> web.Response:
        if not self._authorized(request, "ADMIN"):
            return _json_error(401, "unauthorized", "The Durable management API needs the master key.")
        return await self.management.handle(request, request.match_info["tail"])

    async def _rpc_management(self, request: web.Request) -> web.Response:
        return await self.management.handle(request, request.match_info["tail"])

    async def _host_status(self, request: web.Request) -> web.Response:
        if not self._authorized(request, "ADMIN"):
            return _json_error(401, "unauthorized", "The host status needs the master key.")
        return web.json_response({"state": "Running", "functions": [f.name for f in self.index.functions]})

    async def _run_by_hand(self, request: web.Request) -> web.Response:
        """Azure's manual run of a function HTTP does not trigger (here: a timer), with the master key: 202, and
        the function runs as if its schedule were due (the body, `{"input": ...}`, means nothing to a timer)."""
        from azure.functions.timer import TimerRequest

        if not self._authorized(request, "ADMIN"):
            return _json_error(401, "unauthorized", "Running a function by hand needs the master key.")
        name = request.match_info["name"].lower()
        info = next((t for t in self.index.timers if t.name.lower() == name), None)
        if info is None:
            return _json_error(404, "not_found", "No timer-triggered function has this name.")
        task = asyncio.get_running_loop().create_task(self._fire_timer(info, TimerRequest(past_due=False)))
        self._timer_tasks.add(task)
        task.add_done_callback(self._timer_tasks.discard)
        return web.Response(status=202)

    # ------------------------------------------------------------------ HTTP triggers

    async def _http_trigger(self, request: web.Request) -> web.StreamResponse:
        matches = self.index.find_http(request.path)
        if not matches:
            return _json_error(404, "not_found", f"No function serves {request.path}.")
        allowed = [(h, p) for h, p in matches if h.methods is None or request.method in h.methods]
        if not allowed:
            methods = sorted({m for h, _ in matches for m in (h.methods or ())})
            return _json_error(405, "method_not_allowed",
                               f"{request.method} is not allowed on {request.path}; use {', '.join(methods)}.",
                               {"Allow": ", ".join(methods)})
        function, route_params = allowed[0]
        if not self._authorized(request, function.auth_level):
            return _json_error(401, "unauthorized",
                               "A valid function key is required (x-functions-key header or ?code=).")
        return await self._invoke_http(function, route_params, request)

    async def _invoke_http(self, function: HttpFunction, route_params: dict, request: web.Request) -> web.Response:
        import azure.functions as func

        info = function.info
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:  # the host's body limit, before any function sees the request
            return _json_error(413, "payload_too_large",
                               f"The body is larger than the host takes ({self.config.max_body:,} bytes).")
        params = {k: v for k, v in request.query.items()}
        url = f"{self.base_url}{request.path_qs}"
        req = func.HttpRequest(request.method, url, headers=dict(request.headers), params=params,
                               route_params=route_params, body=body)
        kwargs: dict[str, Any] = {info.trigger["name"]: req}
        client = info.binding_of("durableClient")
        if client is not None:
            kwargs[client["name"]] = self.management.binding()
        if "context" in info.params and "context" not in kwargs:
            kwargs["context"] = InvocationContext(info.name)
        started = time.perf_counter()
        outcome = "Succeeded"
        try:
            result = await self._call(info, kwargs)
            response = self._to_response(result)
        except Exception:  # noqa: BLE001 - an unhandled exception is a 500, as in the Functions host
            log.exception("function=%s kind=http failed", info.name)
            outcome = "Failed"
            response = _json_error(500, "internal_error", "The function failed; see the host log.")
        # instance=- : every invocation line carries the same fields, whether or not a Durable instance is involved
        log.info("function=%s kind=http instance=- method=%s status=%d duration_ms=%.1f outcome=%s", info.name,
                 request.method, response.status, (time.perf_counter() - started) * 1000, outcome)
        return response

    async def _call(self, info: FunctionInfo, kwargs: dict) -> Any:
        if inspect.iscoroutinefunction(info.func):
            return await info.func(**kwargs)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._pool, functools.partial(info.func, **kwargs))
        return await result if inspect.isawaitable(result) else result

    @staticmethod
    def _to_response(result: Any) -> web.Response:
        if result is None:
            return web.Response(status=204)
        if isinstance(result, (str, bytes)):
            return web.Response(body=result if isinstance(result, bytes) else result.encode(),
                                content_type="text/plain")
        headers = {k: v for k, v in result.headers.items() if k.lower() != "content-length"}
        if "content-type" not in {k.lower() for k in headers}:
            # as the worker's HttpResponseConverter: only text/* types get the charset (which defaults to utf-8)
            mimetype = result.mimetype or "text/plain"
            headers["Content-Type"] = (f"{mimetype}; charset={result.charset}"
                                       if mimetype.startswith("text/") and result.charset else mimetype)
        return web.Response(status=result.status_code, body=result.get_body(), headers=headers)

    # ------------------------------------------------------------------ timers

    async def _run_timer(self, info: FunctionInfo) -> None:
        from azure.functions.timer import TimerRequest  # the concrete class: `func.TimerRequest` is abstract
        from croniter import croniter

        schedule = info.trigger["schedule"]
        cron = croniter(schedule, datetime.now(timezone.utc), second_at_beginning=len(schedule.split()) == 6)
        if info.trigger.get("runOnStartup"):
            await self._fire_timer(info, TimerRequest(past_due=False))
        while True:
            due = cron.get_next(datetime)
            await asyncio.sleep(max(0.0, (due - datetime.now(timezone.utc)).total_seconds()))
            past_due = (datetime.now(timezone.utc) - due).total_seconds() > 1
            await self._fire_timer(info, TimerRequest(past_due=past_due))

    async def _fire_timer(self, info: FunctionInfo, request: Any) -> None:
        started = time.perf_counter()
        kwargs: dict[str, Any] = {info.trigger["name"]: request}
        client = info.binding_of("durableClient")
        if client is not None:
            kwargs[client["name"]] = self.management.binding()
        try:
            await self._call(info, kwargs)
            outcome = "Succeeded"
        except Exception:  # noqa: BLE001
            log.exception("function=%s kind=timer failed", info.name)
            outcome = "Failed"
        log.info("function=%s kind=timer instance=- duration_ms=%.1f outcome=%s", info.name,
                 (time.perf_counter() - started) * 1000, outcome)


class HostThread:
    """Runs a DevHost on its own event loop in a background thread: for tests and benchmarks."""

    def __init__(self, host: DevHost) -> None:
        self.host = host
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="devhost", daemon=True)

    def __enter__(self) -> "HostThread":
        self._thread.start()
        self.run(self.host.start())
        return self

    def __exit__(self, *exc: Any) -> None:
        self.run(self.host.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)

    def run(self, coro: Any, timeout: float = 60) -> Any:
        """Runs a coroutine on the host's loop, where the SDK's shared aiohttp session lives."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def base_url(self) -> str:
        return self.host.base_url
