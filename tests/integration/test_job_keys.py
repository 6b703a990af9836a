"""Idempotency-Key claims (table JobKeys on Azurite) when a request is slower than the wait for its twin."""
from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from types import SimpleNamespace

import azure.durable_functions as df
import pytest

from shared.config import get_settings
from shared.errors import Conflict
from shared.storage.blobs import BlobStore


class TaskHub:
    """The Durable client calls `start_job` makes, with the host's rule that matters here: a start replaces a
    finished instance (host.json: NonRunningStates) and is refused for a running one."""

    def __init__(self) -> None:
        self.instances: dict[str, SimpleNamespace] = {}
        self.starts: list[dict] = []

    async def get_status(self, instance_id: str, show_input: bool = False) -> SimpleNamespace:
        return self.instances.get(instance_id) or SimpleNamespace(instance_id=None, runtime_status=None)

    async def start_new(self, orchestrator: str, instance_id: str, client_input: dict) -> str:
        current = self.instances.get(instance_id)
        if current is not None and current.runtime_status.value in ("Running", "Pending"):
            raise RuntimeError(f"An instance with ID '{instance_id}' already exists.")
        now = datetime.now(timezone.utc)
        self.instances[instance_id] = SimpleNamespace(
            instance_id=instance_id, name=orchestrator, runtime_status=df.OrchestrationRuntimeStatus.Completed,
            created_time=now, last_updated_time=now, custom_status=None, output=None, input_=client_input)
        self.starts.append(client_input)  # finished at once: the worst case for a replacement
        return instance_id


@pytest.fixture()
def jobs(azurite, monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    get_settings.cache_clear()
    import functions._jobs as module  # the app's modules read their settings as they load

    monkeypatch.setattr(module, "TWIN_WAIT_S", 1.0)  # stands for 30 s: a request storing for longer than that
    yield module
    get_settings.cache_clear()


def _request(key: str) -> SimpleNamespace:
    return SimpleNamespace(headers={"Idempotency-Key": key}, params={})


def test_a_request_whose_claim_was_taken_over_does_not_start_the_key_again(jobs):
    hub, key = TaskHub(), f"slow-{time.time()}"

    async def main() -> None:
        async def slow(folder: str) -> dict:
            await asyncio.sleep(2.5)
            return {"body": "A"}

        async def quick(folder: str) -> dict:
            return {"body": "B"}

        first = asyncio.create_task(jobs.start_job(hub, _request(key), kind="doc", orchestrator="document_vision",
                                                   prepare=slow, fingerprint_of={"body": "A"}))
        await asyncio.sleep(1.3)  # the first request's claim is stale, and it is still storing
        await jobs.start_job(hub, _request(key), kind="doc", orchestrator="document_vision", prepare=quick,
                             fingerprint_of={"body": "B"})
        with pytest.raises(Conflict):
            await first

    asyncio.run(main())
    assert [s["request"]["body"] for s in hub.starts] == ["B"]  # one start: nothing replaced the finished job


def test_a_request_that_lost_its_claim_and_fails_leaves_the_twins_files_and_claim(jobs):
    hub, key = TaskHub(), f"twin-{time.time()}"
    blobs = BlobStore(get_settings())
    tries = []

    async def main() -> dict:
        async def prepare(folder: str) -> dict:
            tries.append(folder)
            await blobs.put(jobs.INPUTS, f"{folder}/file.pdf", b"%PDF-1.4 data", "application/pdf")
            if len(tries) == 1:
                await asyncio.sleep(2.0)
                raise ConnectionError("the first request's storage failed")
            return {"blob": f"{jobs.INPUTS}/{folder}/file.pdf"}

        first = asyncio.create_task(jobs.start_job(hub, _request(key), kind="doc", orchestrator="document_vision",
                                                   prepare=prepare, fingerprint_of={"body": "same"}))
        await asyncio.sleep(0.2)
        twin = await jobs.start_job(hub, _request(key), kind="doc", orchestrator="document_vision",
                                    prepare=prepare, fingerprint_of={"body": "same"})  # takes the stale claim over
        with pytest.raises(ConnectionError):
            await first
        assert await blobs.size(hub.starts[-1]["request"]["blob"]) is not None  # the started job's input stays
        assert await jobs.Tables(get_settings()).get(jobs.JOB_KEYS, twin["job_id"], "key") is not None
        return twin

    asyncio.run(main())
    assert len(hub.starts) == 1


def test_a_purge_cut_off_is_finished_by_the_next_delete(jobs):
    hub = TaskHub()
    job_id = "doc-cut"
    for instance_id in [job_id] + [jobs.step_id(job_id, n) for n in (1, 2, 3)]:
        hub.instances[instance_id] = SimpleNamespace(instance_id=instance_id)
    failing = {jobs.step_id(job_id, 2)}

    async def purge(instance_id: str) -> None:
        if instance_id in failing:
            failing.discard(instance_id)
            raise ConnectionError("storage went away while purging")
        hub.instances.pop(instance_id)

    hub.purge_instance_history = purge
    with pytest.raises(ConnectionError):
        asyncio.run(jobs.purge_job(hub, job_id))
    asyncio.run(jobs.purge_job(hub, job_id))  # the DELETE asked for again
    assert hub.instances == {}  # no step left behind, holding a page read or a piece of transcript
