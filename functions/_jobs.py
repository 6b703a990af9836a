"""Starting and reading jobs through the Durable client: idempotency keys, waits and the job JSON."""
from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Awaitable, Callable

import azure.durable_functions as df
import azure.functions as func

from shared.config import get_settings
from shared.errors import Conflict, NotFound
from shared.jobs import (OrchestrationSnapshot, check_same_request, is_finished, job_id_for, job_json,
                         parse_wait, request_fingerprint)
from shared.observability import log_event
from shared.storage.blobs import BlobStore
from shared.storage.tables import Tables

from ._http import json_response
from ._retry import step_id


INPUTS = "intake-inputs"  # the files a job was started with, under its id: offers, documents, knowledge base
CALLS = "calls"  # a call's recording and the pieces made of it, under its id


# What `start_job` starts: the jobs `GET /api/jobs` lists. Conversations, deliveries, rule runs and the steps a job
# runs as sub-orchestrations are orchestrations too, but no caller's job.
JOB_ORCHESTRATORS = frozenset({"offer_ingestion", "document_vision", "call_analysis", "kb_ingestion",
                               "selftest_pipeline"})
JOBS_WITH_FILES = frozenset({"offer_ingestion", "document_vision", "kb_ingestion"})  # in INPUTS (calls: CALLS)


async def _steps_of(client: df.DurableOrchestrationClient,
                    job_id: str) -> AsyncIterator[df.DurableOrchestrationStatus]:
    """The steps (sub-orchestrations) the job ran or runs: numbered from 1 in the order they started, so the first
    number that is not there ends them (see `bounded_fan_out`); no listing of every instance of the hub."""
    number = 1
    while (status := await client.get_status(step_id(job_id, number))) and status.instance_id:
        yield status
        number += 1


async def cancel_job_steps(client: df.DurableOrchestrationClient, job_id: str) -> None:
    """Terminating an orchestration does not reach its sub-orchestrations: a canceled job's pages or chunks still
    under way are terminated here, or they would go on calling the model."""
    async for step in _steps_of(client, job_id):
        if getattr(step.runtime_status, "value", None) in ("Running", "Pending"):
            try:
                await client.terminate(step.instance_id, "its job was canceled")
            except Exception:  # noqa: BLE001 - it finished meanwhile
                pass


async def purge_job(client: df.DurableOrchestrationClient, job_id: str) -> None:
    """Purges the job and its sub-orchestrations, whose outputs hold parts of its result (a page read, a chunk
    heard); the job last, so that a purge cut off can be asked for again."""
    steps = [step.instance_id async for step in _steps_of(client, job_id)]  # all found before any is purged
    for step in reversed(steps):  # the last first: a purge cut off leaves steps 1..k, which a retry finds
        await client.purge_instance_history(step)
    await client.purge_instance_history(job_id)


async def forget_job(client: df.DurableOrchestrationClient, job_id: str, *, with_files: bool = True) -> int:
    """Deletes a finished job: the files it was sent (first: a purge that fails leaves the job to delete again), the
    claim of its Idempotency-Key, its history and its steps'. How many files there were."""
    removed = 0
    if with_files:
        removed = await delete_job_files(job_id)
        await release_key(job_id)
    await purge_job(client, job_id)
    return removed


async def delete_job_files(folder: str) -> int:
    """Deletes the files kept for a job (`folder`: its id, or the folder of one request); how many there were."""
    blobs = BlobStore(get_settings())
    return sum(await asyncio.gather(*(blobs.delete_prefix(container, f"{folder.rstrip('/')}/")
                                      for container in (INPUTS, CALLS))))


def snapshot(status: df.DurableOrchestrationStatus) -> OrchestrationSnapshot:
    runtime = status.runtime_status
    return OrchestrationSnapshot(
        instance_id=status.instance_id, name=status.name or "",
        runtime_status=getattr(runtime, "value", str(runtime)), created_at=status.created_time,
        updated_at=status.last_updated_time, custom_status=status.custom_status, output=status.output)


async def read_job(client: df.DurableOrchestrationClient, job_id: str) -> dict | None:
    status = await client.get_status(job_id)
    if not status or not status.instance_id:
        return None
    return job_json(snapshot(status))


async def require_job(client: df.DurableOrchestrationClient, job_id: str, orchestrator: str | None = None) -> dict:
    """The job, 404 when there is none; `orchestrator`: a route for one kind of job sees no other kind."""
    job = await read_job(client, job_id)
    if job is None or (orchestrator is not None and job["type"] != orchestrator):
        raise NotFound(f"No job with id '{job_id}'.", code="job_not_found")
    return job


async def wait_for_job(client: df.DurableOrchestrationClient, job_id: str, seconds: float) -> dict:
    """Polls until the job finishes or the wait runs out; the poll interval grows from 20 ms to 100 ms."""
    deadline = time.monotonic() + seconds
    delay = 0.02
    job = await require_job(client, job_id)
    while not is_finished(job) and time.monotonic() < deadline:
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.1)
        job = await require_job(client, job_id)
    return job


def job_http_response(job: dict, location: str, shape: Callable[[dict], dict] | None = None) -> func.HttpResponse:
    headers = {"Location": location}
    if not is_finished(job):
        headers["Retry-After"] = "1"
    return json_response(shape(job) if shape else job, 200 if is_finished(job) else 202, headers)


async def start_job(client: df.DurableOrchestrationClient, req: func.HttpRequest, *, kind: str,
                    orchestrator: str, payload: Any = None, fingerprint_of: Any = None,
                    prepare: Callable[[str], Awaitable[Any]] | None = None,
                    idempotency_key: str | None = None) -> dict:
    """Starts `orchestrator`, or returns the job an earlier request with the same Idempotency-Key started.

    `prepare(folder)` builds the payload (e.g. after storing bytes in Blob storage under `folder`); it runs only when
    no job has the key yet. `folder` is the job id, then the request's fingerprint: requests that race under one key
    with different bodies (one gets a 409) store their bytes apart. `fingerprint_of` is what identifies the request;
    `idempotency_key` stands in for the header when the request names its own id (e.g. the caller's job id).
    """
    if orchestrator not in JOB_ORCHESTRATORS:
        raise ValueError(f"{orchestrator} is not in JOB_ORCHESTRATORS: its jobs would not be listed")
    fingerprint = request_fingerprint(fingerprint_of if fingerprint_of is not None else payload)
    key = idempotency_key if idempotency_key is not None else req.headers.get("Idempotency-Key")
    job_id = job_id_for(kind, key)
    token = None  # this request's claim of the key, while it holds it
    if key is not None:
        existing = await _existing_job(client, job_id, fingerprint)
        if existing is None and prepare is not None:
            existing, token = await _claim_key(client, job_id, fingerprint)
        if existing is not None:
            return existing
    folder = f"{job_id}/{fingerprint[:16]}"

    async def give_up() -> None:
        """No job came of this request: what it stored goes, and its key is free again for any body, unless another
        request took the claim over meanwhile (and may use the same folder)."""
        if key is None or (token is not None and await release_key(job_id, token)):
            await _forget_files(folder, prepare)

    try:
        job_input = {"request": await prepare(folder) if prepare else payload, "fingerprint": fingerprint}
    except BaseException:
        await give_up()
        raise
    if token is not None and not await _holds_key(job_id, token):  # taken over: this request was too slow
        try:
            existing = await _twin_job(client, job_id, fingerprint)
        except Conflict:  # by another body, whose job now holds the key: this request's own folder goes
            await _forget_files(folder, prepare)
            raise
        if existing is not None:
            return existing
        raise Conflict("Another request with this Idempotency-Key is starting its job; send it again.",
                       code="idempotency_key_busy")
    try:
        await client.start_new(orchestrator, job_id, job_input)
    except Exception:  # noqa: BLE001 - a concurrent request with the same key may have won the race
        try:
            existing = await _existing_job(client, job_id, fingerprint) if key is not None else None
        except Conflict:  # it did, with another body: the files this request stored in its own folder go
            await _forget_files(folder, prepare)
            raise
        if existing is None:
            await give_up()
            raise
        return existing
    log_event("job.accepted", job_id=job_id, capability=kind)
    now = datetime.now(timezone.utc)  # just started: no need to ask the hub what it would say
    return job_json(OrchestrationSnapshot(job_id, orchestrator, "Pending", now, now, None, None))


JOB_KEYS = "JobKeys"  # the Idempotency-Key of each job that stores files first, and the request it belongs to
TWIN_WAIT_S = 30.0  # how long the same request sent twice waits for its twin to start the job


async def _claim_key(client: df.DurableOrchestrationClient, job_id: str,
                     fingerprint: str) -> tuple[dict | None, str | None]:
    """Makes this request the one its Idempotency-Key starts a job for, before it stores its files (which may take
    seconds): else a request with another body, checked meanwhile, would start after this one's job finished, and
    Durable replaces a finished instance (host.json: NonRunningStates), so the key would run twice.

    Answers the job the key already has (the same body sent twice at once: the twin's), or this request's claim
    token. 409 when another body holds the claim. A claim older than `TWIN_WAIT_S` with no job is one whose request
    died or gave up: it is taken over, whatever its body (its holder, if alive, sees that before it starts)."""
    tables = Tables(get_settings())
    token = uuid.uuid4().hex
    while True:
        claim = {"fingerprint": fingerprint, "claimed_at": time.time(), "token": token}
        if await tables.insert(JOB_KEYS, job_id, "key", claim):
            return None, token
        held = await tables.get_tagged(JOB_KEYS, job_id, "key")
        if held is None:  # deleted meanwhile (its job was deleted): insert again
            continue
        row, etag = held
        if time.time() < float(row.get("claimed_at") or 0) + TWIN_WAIT_S:
            check_same_request(row, fingerprint)
            existing = await _twin_job(client, job_id, fingerprint, until=float(row["claimed_at"]) + TWIN_WAIT_S)
            if existing is not None:
                return existing, None
            continue  # the claim went stale: taken over below, unless a job came
        existing = await _existing_job(client, job_id, fingerprint)  # a job of another body: 409
        if existing is not None:
            return existing, None
        if await tables.replace_unchanged(JOB_KEYS, job_id, "key", claim, None, etag):
            return None, token


async def _twin_job(client: df.DurableOrchestrationClient, job_id: str, fingerprint: str,
                    until: float | None = None) -> dict | None:
    """The job another request with this key starts, waited for until `until` (default: `TWIN_WAIT_S` from now)."""
    until = time.time() + TWIN_WAIT_S if until is None else until
    while True:
        existing = await _existing_job(client, job_id, fingerprint)
        if existing is not None or time.time() >= until:
            return existing
        await asyncio.sleep(0.2)


async def _holds_key(job_id: str, token: str) -> bool:
    held = await Tables(get_settings()).get(JOB_KEYS, job_id, "key")
    return held is not None and held.get("token") == token


async def release_key(job_id: str, token: str | None = None) -> bool:
    """Frees the job's Idempotency-Key for any body: when the job is deleted, or (`token`: only while that request
    still holds the claim) when the request that claimed it started no job. Whether it freed it."""
    tables = Tables(get_settings())
    held = await tables.get_tagged(JOB_KEYS, job_id, "key")
    if held is None or (token is not None and held[0].get("token") != token):
        return False
    return await tables.delete_unchanged(JOB_KEYS, job_id, "key", held[1])


async def _forget_files(folder: str, prepare: Any) -> None:
    if prepare is None:
        return
    try:
        await delete_job_files(folder)
    except Exception:  # noqa: BLE001 - the request's own error is the answer; the files stay behind, as before
        log_event("job.files_left", folder=folder)


async def _existing_job(client: df.DurableOrchestrationClient, job_id: str, fingerprint: str) -> dict | None:
    existing = await client.get_status(job_id, show_input=True)
    if not existing or not existing.instance_id:
        return None
    check_same_request(existing.input_, fingerprint)
    return job_json(snapshot(existing))


async def respond_with_job(client: df.DurableOrchestrationClient, req: func.HttpRequest, job: dict,
                           location: str, shape: Callable[[dict], dict] | None = None) -> func.HttpResponse:
    """Honours `?wait=N`: the finished job in this response when it is ready in time, else 202."""
    wait = parse_wait(req.params.get("wait"), get_settings().job_wait_max_seconds)
    if wait and not is_finished(job):
        job = await wait_for_job(client, job["job_id"], wait)
    return job_http_response(job, location, shape)


async def start_once(client: df.DurableOrchestrationClient, orchestrator: str, instance_id: str, payload: Any) -> bool:
    """Starts the instance unless it exists: work derived from one event or key starts once."""
    async def exists() -> bool:
        status = await client.get_status(instance_id)
        return bool(status and status.instance_id and status.runtime_status is not None)

    if await exists():
        return False
    try:
        await client.start_new(orchestrator, instance_id, payload)
    except Exception:  # noqa: BLE001 - a concurrent twin started it between our look and our start
        if await exists():
            return False
        raise
    return True
