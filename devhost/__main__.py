"""`python -m devhost`: serve the app in the current folder on http://127.0.0.1:7071 like `func start`."""
from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from pathlib import Path

from shared.storage.connection import expand_connection_string

from .gc_freeze import freeze_after_imports
from .host import DevHost, HostConfig
from .settings import load_local_settings
from .engine import StorageUnreachable
from .store import HubBusy, open_store


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    parser.add_argument("--port", type=int, default=_setting("DEVHOST_PORT", 7071, int))
    parser.add_argument("--rpc-port", type=int, default=_setting("DEVHOST_RPC_PORT", 0, int))
    parser.add_argument("--memory", action="store_true", help="keep the task hub in memory (lost on exit)")
    parser.add_argument("--app", default="function_app", help="module that defines `app`")
    parser.add_argument("--hub", default=os.environ.get("DEVHOST_HUB", ""),
                        help="task hub name (default: host.json's durableTask hubName)")
    args = parser.parse_args()

    root = Path.cwd()
    sys.path.insert(0, str(root))
    settings_file = load_local_settings(root)
    level = os.environ.get("DEVHOST_LOG_LEVEL", "INFO").upper()
    if not isinstance(logging.getLevelName(level), int):
        _refuse(f"DEVHOST_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {level!r}")
    logging.basicConfig(level=level,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    try:
        app = importlib.import_module(args.app).app
    except Exception as exc:  # noqa: BLE001 - say what is wrong in one line, as the Functions host log would
        print(f"devhost: the app failed to load: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    memory = args.memory or os.environ.get("DEVHOST_BACKEND") == "memory"
    config = HostConfig.from_host_json(root / "host.json", port=args.port, rpc_port=args.rpc_port,
                                       function_key=os.environ.get("DEVHOST_FUNCTION_KEY", ""),
                                       master_key=os.environ.get("DEVHOST_MASTER_KEY", ""))
    if args.hub:
        config.hub = args.hub
    config.hub_wait = _setting("DEVHOST_HUB_WAIT_SECONDS", config.hub_wait, float)
    try:
        store = open_store("memory" if memory else "azure_storage",
                           expand_connection_string(os.environ.get("AzureWebJobsStorage", "")), config.hub)
    except ValueError as exc:  # the SDK's words for a malformed connection string (it never quotes the key)
        _refuse(f"AzureWebJobsStorage: {exc}")
    logging.getLogger("devhost").info("settings from %s", settings_file.name if settings_file else "environment")
    try:
        status = asyncio.run(_serve(DevHost(app, store, config)))
    except (HubBusy, StorageUnreachable) as exc:
        _refuse(str(exc))
    if status:
        raise SystemExit(status)


def _refuse(reason: str) -> None:
    """Stops the start with one line, as the Functions host names a bad setting."""
    print(f"devhost: {reason}", file=sys.stderr)
    raise SystemExit(2)


def _setting(name: str, default, cast):
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        number = cast(value)
    except ValueError:
        _refuse(f"{name} must be a number, not {value!r}")
    if not 0 <= number < float("inf"):
        _refuse(f"{name} must be a number from 0, not {value!r}")
    return number


async def _serve(host: DevHost) -> int:
    """Serves until SIGINT or SIGTERM (exit status 0) or until another host takes the task hub over (3)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await host.start()
    freezer = loop.create_task(freeze_after_imports())
    print(f"devhost ready on {host.base_url}", flush=True)
    lost = host.engine.hub_lost
    waiters = [loop.create_task(stop.wait()), loop.create_task(lost.wait())]
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in waiters:
        waiter.cancel()
    freezer.cancel()
    await host.stop()
    if lost.is_set():  # another devhost took the task hub over: this one writes nothing more and exits
        print("devhost: the task hub was taken over by another host; stopping", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    main()
