"""Call analysis: upload a recording, get transcript, speakers, sales insights and cost per call."""
from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from shared.ai.factory import get_provider
from shared.ai.usage import summarize
from shared.blocking import in_thread
from shared.calls.cost import call_cost
from shared.config import get_settings
from shared.errors import BadRequest, Conflict, NotFound, Unprocessable, decode_json
from shared.jobs import (is_finished, job_json, newest_first, page_of, parse_date, parse_limit, parse_status_filter,
                         query_scope, validate_job_id)
from shared.observability import log_event
from shared.offers.ingest import check_size
from shared.outcomes import run
from shared.storage.blobs import BlobStore
from shared.webhooks import validate_target

from ._http import checked_file_name, handles_errors, json_response, uploaded_file
from ._jobs import CALLS, forget_job, require_job, respond_with_job, snapshot, start_job
from ._observe import observed_activity, observed_orchestrator
from ._retry import CRASH_RETRY, bounded_fan_out, call_with_retries, deliver_callback

bp = df.Blueprint()
_FORMATS = {"json": "application/json", "txt": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}


MAX_BLOB_BYTES = 2 << 30  # a recording uploaded to Blob storage: four hours (the longest allowed) of CD audio
_META_FIELDS = ("title", "participants", "language", "external_id", "callback_url")
_META_CHARS = 2_000


def _call_meta(source: Any) -> dict:
    """The call's metadata from a form or a JSON body; each field at most _META_CHARS long as JSON (it travels
    in the job's input)."""
    meta = {k: source.get(k) for k in _META_FIELDS}
    for key, value in meta.items():
        if value is not None and len(json.dumps(value)) > _META_CHARS:
            raise Unprocessable(f"{key} may hold at most {_META_CHARS:,} characters.", code="invalid_call_metadata")
    return meta


def _upload(req: func.HttpRequest) -> tuple[bytes, str, dict]:
    settings = get_settings()
    check_size(len(req.get_body()), settings.call_max_bytes)
    if req.files:
        name, _, data = uploaded_file(req)
        name, fields = name or "call", dict(req.form)
    else:
        name = checked_file_name(req.params.get("filename")) or "call"
        data, fields = req.get_body(), dict(req.params)
    if not data:
        raise BadRequest("Send the recording as the body or as a multipart file.", code="empty_request")
    from shared.calls.audio import probe  # audio libraries load on first use, not at start

    probe(data, max_duration_s=settings.call_max_duration_seconds)  # not audio, truncated, too long: 422 now
    meta = _call_meta(fields)
    if meta["callback_url"]:
        validate_target(meta["callback_url"], settings.callback_allowed_hosts)
    return data, name, meta


@bp.route(route="calls/upload", methods=["POST"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def upload_call(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    data, name, meta = await in_thread(_upload, req)  # probing the audio may take seconds: not on the event loop

    async def store(folder: str) -> dict:
        await _undelete(folder)
        ref = await BlobStore(get_settings()).put(CALLS, f"{folder}/audio", data, "application/octet-stream")
        return {**meta, "filename": name, "blob": ref}

    job = await start_job(client, req, kind="call", orchestrator="call_analysis", prepare=store,
                          fingerprint_of={**meta, "sha": hashlib.sha256(data).hexdigest()})
    return await respond_with_job(client, req, job, f"/api/calls/{job['job_id']}")


@bp.route(route="calls/upload-url", methods=["POST"])
@handles_errors
async def call_upload_url(req: func.HttpRequest) -> func.HttpResponse:
    """For recordings over the Functions body limit: PUT the file to this URL, then POST /api/calls."""
    name = "".join(c for c in (req.params.get("filename") or "call") if c.isalnum() or c in "._-")[:80].strip(".")
    name = name or "call"  # `.` and `..` are no file name: POST /api/calls would refuse the blob
    blob = f"uploads/{uuid.uuid4().hex}/{name}"
    url, expires = await BlobStore(get_settings()).upload_url(CALLS, blob)
    return json_response({"upload_url": url, "method": "PUT", "headers": {"x-ms-blob-type": "BlockBlob"},
                          "blob": blob, "expires_at": expires}, 201)


@bp.route(route="calls", methods=["POST"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def start_call_from_blob(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = decode_json(req.get_body() or b"{}")
    blob = body.get("blob") if isinstance(body, dict) else None
    if (not isinstance(blob, str) or not blob.startswith("uploads/")
            or any(part in ("", ".", "..") for part in blob.split("/"))):
        raise BadRequest("blob must be the name returned by /api/calls/upload-url.", code="invalid_blob")
    settings = get_settings()
    blobs = BlobStore(settings)
    ref = f"{CALLS}/{blob}"
    size = await blobs.size(ref)
    if size is None:
        raise NotFound("Nothing was uploaded under this name (or the upload URL expired).", code="upload_not_found")
    check_size(size, MAX_BLOB_BYTES)
    data = await blobs.get(ref)
    from shared.calls.audio import probe

    await in_thread(probe, data, max_duration_s=settings.call_max_duration_seconds)
    meta = _call_meta(body)
    if meta["callback_url"]:
        validate_target(meta["callback_url"], settings.callback_allowed_hosts)

    async def prepare(folder: str) -> dict:
        await _undelete(folder)
        return {**meta, "filename": blob.rsplit("/", 1)[-1], "blob": ref}

    # An upload is one call: the blob is the idempotency key, so that deleting the call may delete the recording.
    job = await start_job(client, req, kind="call", orchestrator="call_analysis", prepare=prepare,
                          fingerprint_of={**meta, "blob": blob}, idempotency_key=f"upload:{blob}")
    return await respond_with_job(client, req, job, f"/api/calls/{job['job_id']}")


@bp.route(route="calls/search", methods=["GET"])
@handles_errors
async def search_calls(req: func.HttpRequest) -> func.HttpResponse:
    """Semantic search over the segments of analysed calls."""
    query = (req.params.get("q") or "").strip()
    if not query:
        raise BadRequest("q is required.", code="missing_query")
    from shared.calls.search import search
    from shared.jobs import parse_limit

    hits = await search(BlobStore(get_settings()), get_provider(), query,
                        k=parse_limit(req.params.get("k"), default=5, maximum=50))
    return json_response({"query": query, "hits": hits})


async def _result(call_id: str) -> dict | None:
    try:
        return json.loads(await BlobStore(get_settings()).get(f"{CALLS}/{call_id}/result.json"))
    except Exception:  # noqa: BLE001 - not analysed (yet), or deleted
        return None


@bp.route(route="calls/{call_id}", methods=["GET"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def get_call(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    call_id = validate_job_id(req.route_params["call_id"])
    job = await require_job(client, call_id, "call_analysis")

    async def with_transcript(j: dict) -> dict:
        stored = await _result(call_id) if j["status"] == "done" else None
        return {**j, "transcript": stored["segments"] if stored else None}

    response = await respond_with_job(client, req, job, f"/api/calls/{call_id}")
    body = await with_transcript(json.loads(response.get_body()))
    return json_response(body, response.status_code, dict(response.headers))


@bp.route(route="calls/{call_id}/transcript", methods=["GET"])
@handles_errors
async def get_transcript(req: func.HttpRequest) -> func.HttpResponse:
    call_id = validate_job_id(req.route_params["call_id"])
    fmt = req.params.get("format", "json")
    if fmt not in _FORMATS:
        raise BadRequest(f"format must be one of {', '.join(_FORMATS)}.", code="invalid_format")
    stored = await _result(call_id)
    if stored is None:
        raise NotFound("No transcript for this call (yet).", code="transcript_not_found")
    from shared.calls.service import segments_of
    from shared.calls.transcript import to_srt, to_txt, to_vtt

    segments = segments_of(stored["segments"])
    text = {"json": lambda: json.dumps({"call_id": call_id, "segments": stored["segments"]}),
            "txt": lambda: to_txt(segments, timestamps=True), "srt": lambda: to_srt(segments),
            "vtt": lambda: to_vtt(segments)}[fmt]()
    return func.HttpResponse(text, mimetype=_FORMATS[fmt], charset="utf-8")


@bp.route(route="calls", methods=["GET"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def list_calls(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Newest first; `status` (done, failed...), `from`/`to` (dates or date-times of upload), `q` (text in the
    title and analysis), `limit` and `continuation` pages."""
    runtime, wanted = parse_status_filter(req.params.get("status"))
    created_from = parse_date(req.params.get("from"), "from")
    created_to = parse_date(req.params.get("to"), "to", end=True)
    limit = parse_limit(req.params.get("limit"))
    text = (req.params.get("q") or "").lower()
    statuses = await client.get_status_by(
        created_time_from=created_from, created_time_to=created_to,
        runtime_status=[df.OrchestrationRuntimeStatus(s) for s in runtime] if runtime else None)
    calls = [job for job in (job_json(snapshot(s)) for s in statuses if s.name == "call_analysis")
             if (not wanted or job["status"] in wanted)
             and (not text or text in json.dumps(job.get("result") or {}).lower())]
    scope = query_scope("calls", req.params, ("status", "from", "to", "q"))
    page, continuation = page_of(calls, limit, req.params.get("continuation"), scope, key=newest_first)
    return json_response({"calls": page, "continuation": continuation})


@bp.route(route="calls/{call_id}", methods=["DELETE"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def delete_call(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    call_id = validate_job_id(req.route_params["call_id"])
    job = await require_job(client, call_id, "call_analysis")
    if not is_finished(job):
        raise Conflict("The call is still being analysed; cancel it first.", code="job_not_finished")
    await forget_call(client, call_id)
    return func.HttpResponse(status_code=204)


DELETED = "deleted"  # `calls/deleted/<call id>` marks a deleted call: see `forget_call`


async def forget_call(client: df.DurableOrchestrationClient, call_id: str) -> None:
    """Deletes a finished call: its files, the recording it was uploaded as, its history.

    A canceled call's activities may still run and store files after these are deleted: the mark made first tells
    them to delete what they stored (see `_put_call_file`), so nothing of the call comes back."""
    blobs = BlobStore(get_settings())
    await blobs.put(CALLS, f"{DELETED}/{call_id}", b"", "text/plain")
    status = await client.get_status(call_id, show_input=True)
    job_input = status.input_ if status else None
    if isinstance(job_input, str):
        job_input = json.loads(job_input)
    upload = str(((job_input or {}).get("request") or {}).get("blob") or "")
    removed = 0
    if upload.startswith(f"{CALLS}/uploads/"):  # POST /api/calls: the recording stays where it was uploaded
        removed = await blobs.delete_prefix(CALLS, upload.split("/", 1)[1].rsplit("/", 1)[0] + "/")
    removed += await forget_job(client, call_id)
    log_event("call.deleted", job_id=call_id, blobs=removed)


async def _undelete(folder: str) -> None:
    """A call started again under the id of one deleted before (the same Idempotency-Key) keeps its files."""
    await BlobStore(get_settings()).delete(f"{CALLS}/{DELETED}/{folder.split('/')[0]}")


async def _put_call_file(blobs: BlobStore, call_id: str, name: str, data: bytes, content_type: str) -> str:
    """Stores one of the call's files, unless the call was deleted meanwhile: then this file goes with the rest."""
    ref = await blobs.put(CALLS, f"{call_id}/{name}", data, content_type)
    if await blobs.size(f"{CALLS}/{DELETED}/{call_id}") is not None:
        await blobs.delete_prefix(CALLS, f"{call_id}/")
        raise NotFound("The call was deleted while it was being analysed.", code="call_deleted")
    return ref


@bp.orchestration_trigger(context_name="context")
@observed_orchestrator("calls", done="call.analyzed")
def call_analysis(context: df.DurableOrchestrationContext):
    request = context.get_input()["request"]
    call_id = context.instance_id
    context.set_custom_status({"current": 0, "total": 3, "message": "Preparing the audio"})
    prepared = yield context.call_activity_with_retry("prepare_call_audio", CRASH_RETRY,
                                                      {"call_id": call_id, "blob": request["blob"]})
    if not prepared["ok"]:
        return {"error": prepared["error"], "usage": {}}
    chunks = prepared["value"]["chunks"]
    context.set_custom_status({"current": 1, "total": 3, "message": f"Transcribing {len(chunks)} chunks"})
    inputs = [{"activity": "transcribe_call_chunk", "input": {**chunk, "job_id": call_id,
                                                              "language": request.get("language")}}
              for chunk in chunks]
    outcomes = yield from bounded_fan_out(context, "retried_activity", inputs, prepared["value"]["parallelism"])
    usage = [u for outcome in outcomes for u in outcome.get("usage", [])]
    failure = next((o for o in outcomes if not o["ok"]), None)
    if failure:
        return {"error": failure["error"], "usage": summarize(usage)}
    context.set_custom_status({"current": 2, "total": 3, "message": "Analysing the conversation"})
    analysed = yield from call_with_retries(context, "analyse_call", {
        "call_id": call_id, "blob": request["blob"], "channels": prepared["value"]["info"]["channels"],
        "duration": prepared["value"]["info"]["duration_s"],
        "chunks": [{**c, "segments_blob": o["value"]} for c, o in zip(chunks, outcomes)]})
    usage += analysed["usage"]
    if not analysed["ok"]:
        return {"error": analysed["error"], "usage": summarize(usage)}
    context.set_custom_status({"current": 3, "total": 3, "message": "Done"})
    result = {**{k: request.get(k) for k in ("title", "participants", "language", "external_id", "filename")},
              **analysed["value"], "audio": prepared["value"]["info"], "chunks": len(chunks),
              "cost": call_cost(usage, prepared["value"]["info"]["duration_s"]).model_dump()}
    output = {"result": result, "usage": summarize(usage)}
    if request.get("callback_url"):
        output["callback"] = yield from deliver_callback(context, request["callback_url"], "call.analyzed", {
            "type": "call.analyzed", "job_id": call_id, "status": "done", "data": result})
    return output


@bp.activity_trigger(input_name="task")
@observed_activity("calls")
async def prepare_call_audio(task: dict) -> dict:
    from shared.calls import service

    settings = get_settings()
    blobs = BlobStore(settings)
    audio = await blobs.get(task["blob"])

    def work():
        return service.chunk_audio(audio, max_duration_s=settings.call_max_duration_seconds,
                                   max_chunk_s=settings.call_chunk_seconds,
                                   lanes=settings.call_chunk_parallelism), []

    outcome = await in_thread(run, work, attempt=1, max_attempts=1, base_delay=1)
    if not outcome["ok"]:
        return outcome
    info, chunks = outcome["value"]
    refs = await asyncio.gather(*(_put_call_file(blobs, task["call_id"], f"chunk-{n}.wav", data, "audio/wav")
                                  for n, (_, _, data) in enumerate(chunks, start=1)))
    return {"ok": True, "usage": [], "value": {
        "info": info, "parallelism": settings.call_chunk_parallelism,
        "chunks": [{"blob": ref, "start": start, "end": end} for ref, (start, end, _) in zip(refs, chunks)]}}


@bp.activity_trigger(input_name="task")
@observed_activity("calls")
async def transcribe_call_chunk(task: dict) -> dict:
    from shared.calls import service

    settings = get_settings()
    blobs = BlobStore(settings)
    audio = await blobs.get(task["blob"])

    def work():
        result = service.transcribe_audio(get_provider(), audio, filename="chunk.wav", language=task.get("language"),
                                          piece_s=settings.call_piece_seconds)
        return [{"start": s.start, "end": s.end, "text": s.text, "speaker": s.speaker} for s in result.value], \
            result.usage

    outcome = await in_thread(run, work, attempt=task.get("attempt", 1),
                              max_attempts=settings.ai_max_attempts, base_delay=settings.ai_retry_base_seconds)
    if outcome["ok"]:  # segments to Blob storage: a long chunk's text would bloat the orchestration history
        call_id, name = task["blob"].split("/", 1)[1].split("/", 1)  # calls/<call id>/chunk-<n>.wav
        outcome["value"] = await _put_call_file(blobs, call_id, name.replace(".wav", ".json"),
                                                json.dumps(outcome["value"]).encode(), "application/json")
    return outcome


@bp.activity_trigger(input_name="task")
@observed_activity("calls")
async def analyse_call(task: dict) -> dict:
    from shared.calls import service

    settings = get_settings()
    blobs = BlobStore(settings)
    audio = await blobs.get(task["blob"]) if task["channels"] == 2 else b""  # stereo: a speaker per channel
    segments = await asyncio.gather(*(blobs.get(c["segments_blob"]) for c in task["chunks"]))
    chunks = [{**c, "segments": json.loads(data)} for c, data in zip(task["chunks"], segments)]

    def work():
        analysis, usage = service.analyse(get_provider(), audio, chunks, task["channels"])
        return analysis, usage

    outcome = await in_thread(run, work, attempt=task.get("attempt", 1),
                              max_attempts=settings.ai_max_attempts, base_delay=settings.ai_retry_base_seconds)
    if not outcome["ok"]:
        return outcome
    stored = outcome["value"]
    await _put_call_file(blobs, task["call_id"], "result.json", json.dumps(stored).encode(), "application/json")
    outcome["value"] = {"analysis": stored["analysis"], "speakers": stored["speakers"],
                        "segments": len(stored["segments"]), "dropped_insights": stored["dropped"],
                        "duration_s": task["duration"]}
    return outcome
