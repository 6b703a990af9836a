"""The generic jobs API over orchestration status, and the health probe."""
from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from shared.config import get_settings
from shared.errors import Conflict, ServiceUnavailable
from shared.jobs import (is_finished, job_json, newest_first, page_of, parse_limit, parse_status_filter, query_scope,
                         validate_job_id)
from shared.observability import log_event
from shared.storage.clients import check_storage
from shared.version import VERSION

from ._http import handles_errors, json_response
from ._jobs import (JOB_ORCHESTRATORS, JOBS_WITH_FILES, cancel_job_steps, forget_job, require_job, respond_with_job,
                    snapshot)

bp = df.Blueprint()


@bp.route(route="jobs/{job_id}", methods=["GET"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def get_job(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    job_id = validate_job_id(req.route_params["job_id"])
    return await respond_with_job(client, req, await require_job(client, job_id), f"/api/jobs/{job_id}")


@bp.route(route="jobs", methods=["GET"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def list_jobs(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    runtime, wanted = parse_status_filter(req.params.get("status"))
    limit = parse_limit(req.params.get("limit"))
    statuses = await client.get_status_by(
        runtime_status=[df.OrchestrationRuntimeStatus(s) for s in runtime] if runtime else None)
    jobs = [job for job in (job_json(snapshot(s)) for s in statuses if s.name in JOB_ORCHESTRATORS)
            if not wanted or job["status"] in wanted]
    page, continuation = page_of(jobs, limit, req.params.get("continuation"),
                                 query_scope("jobs", req.params, ("status",)), key=newest_first)
    return json_response({"jobs": page, "continuation": continuation})


@bp.route(route="jobs/{job_id}/cancel", methods=["POST"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def cancel_job(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    job_id = validate_job_id(req.route_params["job_id"])
    job = await require_job(client, job_id)
    if is_finished(job):
        raise Conflict(f"Job '{job_id}' already ended as {job['status']}.", code="job_finished")
    await client.terminate(job_id, "canceled by request")
    await cancel_job_steps(client, job_id)
    job = await require_job(client, job_id)
    return json_response(job, 202 if not is_finished(job) else 200)


@bp.route(route="jobs/{job_id}", methods=["DELETE"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def delete_job(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    job_id = validate_job_id(req.route_params["job_id"])
    job = await require_job(client, job_id)
    if not is_finished(job):
        raise Conflict(f"Job '{job_id}' is still {job['status']}; cancel it first.", code="job_not_finished")
    if job["type"] == "call_analysis":
        from .calls import forget_call

        await forget_call(client, job_id)
        return func.HttpResponse(status_code=204)
    removed = await forget_job(client, job_id, with_files=job["type"] in JOBS_WITH_FILES)
    log_event("job.deleted", job_id=job_id, blobs=removed)
    return func.HttpResponse(status_code=204)


@bp.route(route="health", methods=["GET"])
@handles_errors
async def health(req: func.HttpRequest) -> func.HttpResponse:
    settings = get_settings()
    body = {"status": "ok", "version": VERSION, "ai_provider": settings.effective_ai_provider,
            "storage": {"reachable": True}}
    try:
        body["storage"]["latency_ms"] = round(await check_storage(settings) * 1000, 1)
    except ServiceUnavailable as error:
        body.update(status="degraded", storage={"reachable": False, "error": error.to_body()["error"]})
        return json_response(body, 503)
    return json_response(body)
