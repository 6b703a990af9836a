"""Real processes for tests: Azurite and devhost on free loopback ports, stopped or killed on demand."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from shared.storage.connection import azurite_connection_string

ROOT = Path(__file__).resolve().parents[2]
FUNCTION_KEY = "integration-function-key"
MASTER_KEY = "integration-master-key"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    """Until something listens on `port`; with `process`, an exit of it ends the wait at once (ProcessLookupError)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        if process is not None and process.poll() is not None:
            raise ProcessLookupError(f"the process meant to listen on port {port} exited ({process.returncode})")
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


# Azurite closes a connection idle for 5 s; aiohttp (under the Azure SDK) reuses one idle for up to 15 s, and a
# request sent as Azurite closes it fails with "Server disconnected" (not retried for inserts). Keep them longer.
AZURITE_KEEP_ALIVE = ("--blobKeepAliveTimeout", "60", "--queueKeepAliveTimeout", "60", "--tableKeepAliveTimeout", "60")


def azurite_binary() -> str:
    found = os.environ.get("AZURITE_BIN") or str(ROOT / ".tools/node_modules/.bin/azurite")
    if not Path(found).exists() and not shutil.which(found):
        raise FileNotFoundError(f"Azurite not found at {found}; run `make deps`")
    return found


class Azurite:
    """An Azurite on three free ports with its own data folder."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="azurite-")
        self.blob_port, self.queue_port, self.table_port = free_port(), free_port(), free_port()
        self.process: subprocess.Popen | None = None

    def start(self, attempts: int = 3) -> "Azurite":
        """A port picked free may be taken (by another test's outgoing connection) before Azurite binds it: Azurite
        then exits, and starts again on other free ports."""
        for attempt in range(attempts):
            self.process = subprocess.Popen(
                [azurite_binary(), "--silent", "--disableTelemetry", "--skipApiVersionCheck", "--loose",
                 *AZURITE_KEEP_ALIVE, "--location", self.folder, "--blobPort", str(self.blob_port),
                 "--queuePort", str(self.queue_port), "--tablePort", str(self.table_port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                for port in (self.blob_port, self.queue_port, self.table_port):
                    wait_for_port(port, process=self.process)
                return self
            except ProcessLookupError:
                if attempt == attempts - 1:
                    raise
                self.blob_port, self.queue_port, self.table_port = free_port(), free_port(), free_port()
        return self

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(blob_port=self.blob_port, queue_port=self.queue_port,
                                         table_port=self.table_port)

    def blob_names(self, container: str, prefix: str = "") -> list[str]:
        """The names of the blobs in the container that start with `prefix` (none when there is no container)."""
        from azure.core.exceptions import ResourceNotFoundError
        from azure.storage.blob import ContainerClient

        with ContainerClient.from_connection_string(self.connection_string, container) as client:
            try:
                return [blob.name for blob in client.list_blobs(name_starts_with=prefix)]
            except ResourceNotFoundError:
                return []

    def stop(self, keep_data: bool = False) -> None:
        """Stops Azurite; `keep_data` keeps its folder, so that `start()` brings the same storage back."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # a busy Azurite can take long to close; do not leave it behind
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        if not keep_data:
            shutil.rmtree(self.folder, ignore_errors=True)


class DevhostProcess:
    """`python -m devhost` as a child process, the way `make run` starts it."""

    def __init__(self, storage: str | None, extra_env: dict[str, str] | None = None,
                 app_root: Path = ROOT) -> None:
        self.port = free_port()
        self.storage = storage
        # Hosts started side by side get hubs of their own; a restart (`again`) keeps its predecessor's.
        self.extra_env = {"DEVHOST_HUB": f"Test{uuid.uuid4().hex[:12]}", **(extra_env or {})}
        self.app_root = app_root
        self.process: subprocess.Popen | None = None
        self.log_path = Path(tempfile.mkstemp(prefix="devhost-", suffix=".log")[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "DevhostProcess":
        env = {**os.environ, "DEVHOST_FUNCTION_KEY": FUNCTION_KEY, "DEVHOST_MASTER_KEY": MASTER_KEY,
               "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", **self.extra_env}
        args = [sys.executable, "-m", "devhost", "--port", str(self.port)]
        if self.storage is None:
            args.append("--memory")
        else:
            env["AzureWebJobsStorage"] = self.storage
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(args, cwd=self.app_root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"devhost exited with {self.process.returncode}:\n{self.log()}")
            try:
                urllib.request.urlopen(f"{self.base_url}/api/__ready__", timeout=1)
            except urllib.error.HTTPError:
                return self  # any HTTP answer means the host serves
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"devhost did not start:\n{self.log()}")

    def again(self, **env: str) -> "DevhostProcess":
        """A new host on the same storage and task hub, as after a restart (not started yet)."""
        return DevhostProcess(self.storage, {**self.extra_env, **env}, self.app_root)

    def kill(self) -> None:
        """`kill -9`: no shutdown code runs."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]
