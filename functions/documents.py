"""Document vision: POST /api/process-document, task and job status, and the page-by-page orchestration."""
from __future__ import annotations

import asyncio

import azure.durable_functions as df
import azure.functions as func

from shared import files as filetypes
from shared.ai.factory import get_provider
from shared.ai.usage import summarize
from shared.blocking import in_thread
from shared.config import get_settings
from shared.documents import ingest, service
from shared.documents.status import progress_status, task_status
from shared.errors import BadRequest, NotFound
from shared.jobs import is_finished, job_id_for, parse_wait, validate_job_id
from shared.observability import log_event
from shared.outcomes import run
from shared.storage.blobs import BlobStore

from ._http import handles_errors, json_response, uploaded_files
from ._jobs import INPUTS, read_job, require_job, respond_with_job, start_job, wait_for_job
from ._observe import observed_activity, observed_orchestrator
from ._retry import CRASH_RETRY, bounded_fan_out, deliver_callback

bp = df.Blueprint()
_EXTENSIONS = {filetypes.PNG: "png", filetypes.JPEG: "jpg", filetypes.WEBP: "webp"}


def _limits() -> ingest.Limits:
    settings = get_settings()
    return ingest.Limits(settings.document_max_pages, settings.document_max_page_bytes, settings.document_max_bytes)


def _parse(req: func.HttpRequest) -> ingest.DocumentRequest:
    settings = get_settings()
    body = req.get_body()
    content_type = filetypes.normalise_type(req.headers.get("content-type"))
    hosts = settings.callback_allowed_hosts
    if content_type == "application/json":
        return ingest.parse_json(body, _limits(), hosts)
    if content_type == "multipart/form-data":
        uploads = [(data, declared, name) for name, declared, data in uploaded_files(req)]
        return ingest.parse_upload(uploads, dict(req.form), _limits(), hosts)
    if not body:
        raise BadRequest("The body is empty.", code="empty_request")
    return ingest.parse_upload([(body, content_type, req.params.get("filename"))], dict(req.params), _limits(), hosts)


async def _store(folder: str, request: ingest.DocumentRequest) -> dict:
    """Pages (or the PDF) to Blob storage; the orchestration carries references only."""
    blobs = BlobStore(get_settings())
    if request.pdf is not None:
        ref = await blobs.put(INPUTS, f"{folder}/document.pdf", request.pdf, filetypes.PDF)
        pages = [{"pdf": ref, "index": i} for i in range(request.num_pages)]
    else:
        refs = await asyncio.gather(*(
            blobs.put(INPUTS, f"{folder}/page-{n}.{_EXTENSIONS[ctype]}", data, ctype)
            for n, (data, ctype) in enumerate(request.images, start=1)))
        pages = [{"blob": ref, "content_type": ctype} for ref, (_, ctype) in zip(refs, request.images)]
    return {"pages": pages, "fallback_text": request.fallback_text, "user_id": request.user_id,
            "caller_job_id": request.caller_job_id, "file_type": request.file_type,
            "callback_url": request.callback_url, "parallelism": get_settings().document_page_parallelism}


_SEED_STATUS = {"done": ("done", "Document processed"), "failed": ("failed", "Document processing failed"),
                "canceled": ("canceled", "Document processing was canceled")}


def _seed_answer(job: dict, request: ingest.DocumentRequest) -> dict:
    caller_id = request.caller_job_id or job["job_id"]
    status, message = _SEED_STATUS.get(job["status"], ("queued", "Document queued for processing"))
    return {"status": status, "message": message,
            "job_id": caller_id, "task_id": job["job_id"], "user_id": request.user_id,
            "num_pages": request.num_pages, "file_type": request.file_type,
            "status_endpoint": f"/api/job-status/{caller_id}", "task_endpoint": f"/api/task-status/{job['job_id']}",
            **{k: v for k, v in task_status(job).items() if k not in ("task_id", "status")}}


@bp.route(route="process-document", methods=["POST"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def process_document(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    request = await in_thread(_parse, req)  # opening the files (PDF pages, images) may take a while

    async def store(folder: str) -> dict:
        return await _store(folder, request)

    # The caller's job id is a natural idempotency key: the same id is the same document.
    job = await start_job(client, req, kind="doc", orchestrator="document_vision",
                          fingerprint_of=request.fingerprint_view(), prepare=store,
                          idempotency_key=request.caller_job_id or req.headers.get("Idempotency-Key"))
    return await respond_with_job(client, req, job, f"/api/task-status/{job['job_id']}",
                                  lambda finished: _seed_answer(finished, request))


def _wait_seconds(req: func.HttpRequest) -> float:
    return parse_wait(req.params.get("wait"), get_settings().job_wait_max_seconds)


async def _task_response(client: df.DurableOrchestrationClient, req: func.HttpRequest,
                         task_id: str) -> func.HttpResponse:
    job = await require_job(client, task_id, "document_vision")
    wait = _wait_seconds(req)
    if wait and not is_finished(job):
        job = await wait_for_job(client, task_id, wait)
    return json_response(task_status(job), 200, {"Location": f"/api/task-status/{task_id}"})


@bp.route(route="task-status/{task_id}", methods=["GET"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def get_task_status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    return await _task_response(client, req, validate_job_id(req.route_params["task_id"]))


@bp.route(route="job-status/{job_id}", methods=["GET"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def get_job_status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    job_id = validate_job_id(req.route_params["job_id"])
    task_id = job_id_for("doc", job_id)  # the caller's job id
    if job_id.startswith("doc-") and await read_job(client, task_id) is None:
        task_id = job_id  # a document sent without one: its answer gave the task id as its job id
    try:
        return await _task_response(client, req, task_id)
    except NotFound:
        raise NotFound(f"No document with job id '{job_id}'.", code="job_not_found") from None


@bp.orchestration_trigger(context_name="context")
@observed_orchestrator("documents", done="document.processed")
def document_vision(context: df.DurableOrchestrationContext):
    request = context.get_input()["request"]
    pages = request["pages"]
    total = len(pages)
    context.set_custom_status(progress_status(0, total))
    inputs = [{"activity": "read_document_page",
               "input": {**page, "page": n, "total": total, "job_id": context.instance_id}}
              for n, page in enumerate(pages, 1)]
    results = yield from bounded_fan_out(context, "retried_activity", inputs, request["parallelism"],
                                         lambda done: context.set_custom_status(progress_status(done, total)))
    merged = yield context.call_activity_with_retry("merge_document_pages", CRASH_RETRY, {
        "job_id": context.instance_id, "outcomes": results, "fallback_text": request.get("fallback_text")})
    usage = summarize([u for outcome in results for u in outcome.get("usage", [])])
    output = {"result": merged, "usage": usage}
    if request.get("callback_url"):
        body = {"type": "document.processed", "job_id": context.instance_id, "task_id": context.instance_id,
                "caller_job_id": request.get("caller_job_id"), "status": "done", "data": merged, "usage": usage}
        output["callback"] = yield from deliver_callback(context, request["callback_url"], "document.processed",
                                                         body)
    return output


@bp.activity_trigger(input_name="task")
@observed_activity("documents")
async def read_document_page(task: dict) -> dict:
    settings = get_settings()
    blobs = BlobStore(settings)
    pdf = await blobs.get(task["pdf"]) if task.get("pdf") else None
    image = await blobs.get(task["blob"]) if task.get("blob") else None

    def work():
        text, images = service.page_input(image=image, content_type=task.get("content_type"), pdf=pdf,
                                          page_index=task.get("index"))
        result = service.read_page(get_provider(), text, images, task["page"], task["total"])
        for usage in result.usage:
            log_event("ai.usage", job_id=task["job_id"], capability="documents", page=task["page"],
                      **usage.model_dump())
        return result.value.model_dump(), result.usage

    return await in_thread(run, work, attempt=task.get("attempt", 1), max_attempts=settings.ai_max_attempts,
                           base_delay=settings.ai_retry_base_seconds)


@bp.activity_trigger(input_name="task")
@observed_activity("documents")
def merge_document_pages(task: dict) -> dict:
    pages = []
    for number, outcome in enumerate(task["outcomes"], start=1):
        if outcome.get("ok"):
            pages.append({**outcome["value"], "page": number})
        else:  # the page stays failed, and the caller's fallback text (of the whole document) stands in for it
            pages.append({"page": number, "failed": True, "error": outcome["error"], "text": "",
                          "source": "fallback_text" if task.get("fallback_text") else None})
    return service.merge(pages, task.get("fallback_text"))
