"""Offer ingestion for Make.com: POST /api/ingest, GET /api/result/{job_id}, and the pipeline behind them."""
from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import azure.durable_functions as df
import azure.functions as func

from shared import files as filetypes
from shared.ai.factory import get_provider
from shared.ai.usage import summarize
from shared.blocking import in_thread
from shared.config import get_settings
from shared.errors import BadRequest
from shared.jobs import job_id_for, request_fingerprint, validate_job_id
from shared.observability import log_event
from shared.offers import ingest, service
from shared.outcomes import run
from shared.storage.blobs import BlobStore

from ._http import checked_file_name, handles_errors, uploaded_files
from ._jobs import INPUTS, require_job, respond_with_job, start_job, start_once
from ._observe import observed_activity, observed_orchestrator
from ._retry import call_with_retries, deliver_callback

bp = df.Blueprint()


def _parse(req: func.HttpRequest) -> ingest.IngestRequest:
    settings = get_settings()
    body = req.get_body()
    ingest.check_size(len(body), settings.ingest_max_bytes)
    content_type = filetypes.normalise_type(req.headers.get("content-type"))
    hosts = settings.callback_allowed_hosts
    if content_type == "application/json":
        return ingest.parse_json(body, hosts)
    if content_type == "multipart/form-data":
        return ingest.parse_form(dict(req.form), uploaded_files(req), hosts)
    if not body:
        raise BadRequest("The body is empty.", code="empty_request")
    return ingest.parse_raw(req.headers.get("content-type") or "", body,  # with its charset, if it names one
                            name=checked_file_name(req.params.get("filename")),
                            source=req.params.get("source"),
                            callback_url=req.params.get("callback_url"), allowed_hosts=hosts)


async def _store(folder: str, request: ingest.IngestRequest) -> dict:
    """Bytes to Blob storage; the orchestration gets references and small fields only."""
    blobs = BlobStore(get_settings())
    files = await asyncio.gather(*(
        blobs.put(INPUTS, f"{folder}/{f.sha256[:16]}-{filetypes.storable_name(f.name)}", f.data, f.content_type)
        for f in request.files))
    text, text_blob = request.text, None
    if text and len(text.encode()) > ingest.INLINE_TEXT_LIMIT:
        text_blob = await blobs.put(INPUTS, f"{folder}/text.txt", text.encode(), filetypes.TEXT)
        text = None
    return {"text": text, "text_blob": text_blob, "source": request.source, "subject": request.subject,
            "metadata": request.metadata, "callback_url": request.callback_url,
            "received_at": datetime.now(timezone.utc).isoformat(),
            "files": [{"name": f.name, "content_type": f.content_type, "size": len(f.data), "blob": ref}
                      for f, ref in zip(request.files, files)]}


def _result_json(job: dict) -> dict:
    """The seed's shape ({job_id, status, data, error}) on top of the job JSON."""
    return {**job, "data": job["result"]}


@bp.route(route="ingest", methods=["POST"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def ingest_offer(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    request = await in_thread(_parse, req)  # opening the files (PDF pages, images) may take a while

    async def store(folder: str) -> dict:
        return await _store(folder, request)

    job = await start_job(client, req, kind="offer", orchestrator="offer_ingestion",
                          fingerprint_of=request.fingerprint_view(), prepare=store)
    return await respond_with_job(client, req, job, f"/api/result/{job['job_id']}", _result_json)


@bp.route(route="result/{job_id}", methods=["GET"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def get_result(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    job_id = validate_job_id(req.route_params["job_id"])
    job = await require_job(client, job_id, "offer_ingestion")
    return await respond_with_job(client, req, job, f"/api/result/{job_id}", _result_json)


@bp.orchestration_trigger(context_name="context")
@observed_orchestrator("offers", done="offer.parsed", failed="offer.failed")
def offer_ingestion(context: df.DurableOrchestrationContext):
    request = context.get_input()["request"]
    context.set_custom_status({"current": 0, "total": 1, "message": "Reading the offer"})
    outcome = yield from call_with_retries(context, "parse_offer", {"job_id": context.instance_id,
                                                                    "request": request})
    usage = summarize(outcome["usage"])
    output = {"result": outcome["value"], "usage": usage} if outcome["ok"] else \
        {"error": outcome["error"], "usage": usage}
    context.set_custom_status({"current": 1, "total": 1, "message": "Done" if outcome["ok"] else "Failed"})
    if request.get("callback_url"):
        event = "offer.parsed" if outcome["ok"] else "offer.failed"
        body = {"type": event, "job_id": context.instance_id, "status": "done" if outcome["ok"] else "failed",
                "data": output.get("result"), "error": output.get("error"), "usage": usage,
                "metadata": request.get("metadata") or {}}
        output["callback"] = yield from deliver_callback(context, request["callback_url"], event, body)
    return output


@bp.activity_trigger(input_name="task")
@observed_activity("offers")
async def parse_offer(task: dict) -> dict:
    settings = get_settings()
    request = task["request"]
    blobs = BlobStore(settings)
    text = request.get("text")
    if request.get("text_blob"):
        text = (await blobs.get(request["text_blob"])).decode()
    files = [(f["name"], f["content_type"], await blobs.get(f["blob"])) for f in request.get("files", [])]

    def work():
        normalized = service.read_input(text, files)
        result = service.extract_offer(normalized, get_provider(), source=request.get("source"),
                                       received_on=request["received_at"][:10])
        for usage in result.usage:
            log_event("ai.usage", job_id=task["job_id"], capability="offers", **usage.model_dump())
        return result.value.model_dump(), result.usage

    return await in_thread(run, work, attempt=task.get("attempt", 1), max_attempts=settings.ai_max_attempts,
                           base_delay=settings.ai_retry_base_seconds)



async def start_offer_from_text(client: df.DurableOrchestrationClient, text: str, key: str, metadata: dict) -> str:
    """An offer job started by the app itself (a rule's action); `key` makes it start once."""
    job_id = job_id_for("offer", key)
    request = {"text": text, "text_blob": None, "source": "rule", "subject": None, "metadata": metadata,
               "callback_url": None, "received_at": datetime.now(timezone.utc).isoformat(), "files": []}
    await start_once(client, "offer_ingestion", job_id, {"request": request,
                                                          "fingerprint": request_fingerprint({"text": text})})
    return job_id
