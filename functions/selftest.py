"""Operator self-test: a pipeline that chains activities, fans out and waits on a durable timer."""
from __future__ import annotations

from datetime import timedelta

import azure.durable_functions as df
import azure.functions as func

from shared import selftest

from ._http import handles_errors
from ._jobs import respond_with_job, start_job
from ._observe import observed_activity, observed_orchestrator

bp = df.Blueprint()


@bp.route(route="selftest", methods=["POST"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def start_selftest(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    job = await start_job(client, req, kind="selftest", orchestrator="selftest_pipeline", payload={})
    return await respond_with_job(client, req, job, f"/api/jobs/{job['job_id']}")


@bp.orchestration_trigger(context_name="context")
@observed_orchestrator("selftest")
def selftest_pipeline(context: df.DurableOrchestrationContext):
    started = context.current_utc_datetime
    context.set_custom_status({"current": 0, "total": 3, "message": "Chaining activities"})
    value = 0
    for _ in range(selftest.CHAIN_LENGTH):
        value = yield context.call_activity("selftest_chain_step", value)
    context.set_custom_status({"current": 1, "total": 3, "message": "Fanning out"})
    squares = yield context.task_all([context.call_activity("selftest_square", i)
                                      for i in range(selftest.FAN_OUT)])
    context.set_custom_status({"current": 2, "total": 3, "message": "Waiting on a durable timer"})
    yield context.create_timer(context.current_utc_datetime + timedelta(seconds=selftest.TIMER_SECONDS))
    fired = context.current_utc_datetime
    context.set_custom_status({"current": 3, "total": 3, "message": "Done"})
    return {"result": selftest.report(value, squares, started, fired, context.current_utc_datetime), "usage": {}}


@bp.activity_trigger(input_name="value")
@observed_activity("selftest")
def selftest_chain_step(value: int) -> int:
    return selftest.chain_step(value)


@bp.activity_trigger(input_name="value")
@observed_activity("selftest")
def selftest_square(value: int) -> int:
    return selftest.square(value)
