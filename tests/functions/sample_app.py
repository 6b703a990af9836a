"""A Durable app that exercises every devhost feature; the tests in this folder drive it over HTTP."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import timedelta

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
calls: dict[str, int] = {}
_calls_lock = threading.Lock()
# concurrency_probe's view of how many activities run at once: {"active": now, "peak": highest seen}
concurrency = {"active": 0, "peak": 0}
timer_requests: list[func.TimerRequest] = []  # what every_second was called with


def _count(name: str) -> int:
    with _calls_lock:  # sync activities run on several pool threads at once
        calls[name] = calls.get(name, 0) + 1
        return calls[name]


@app.route(route="start/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client) -> func.HttpResponse:
    body = req.get_json() if req.get_body() else None
    instance_id = await client.start_new(req.route_params["name"], req.params.get("id"), body)
    return func.HttpResponse(json.dumps({"id": instance_id}), status_code=202, mimetype="application/json")


@app.route(route="echo/{id:int}/{rest?}", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
def echo(req: func.HttpRequest) -> func.HttpResponse:
    files = {}
    if req.files:
        files = {k: f.read().decode() for k, f in req.files.items()}
    return func.HttpResponse(json.dumps({
        "method": req.method, "route": dict(req.route_params), "query": dict(req.params),
        "header": req.headers.get("x-test"), "body_len": len(req.get_body()), "form": dict(req.form),
        "files": files}), mimetype="application/json")


@app.route(route="binary", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
async def binary(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.get_body()[::-1], mimetype="application/octet-stream")


@app.route(route="text", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def text(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.get_body().decode("utf-8").upper(), mimetype="text/plain", charset="utf-8")


@app.route(route="secured", methods=["GET"])  # no auth_level: the app's default (FUNCTION) applies
def secured(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("secret")


@app.route(route="boom", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("unhandled in an HTTP function")


@app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_only(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("admin")


@app.route(route="wait/{name}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start_and_wait(req: func.HttpRequest, client) -> func.HttpResponse:
    instance_id = await client.start_new(req.route_params["name"], None, req.get_json())
    timeout_ms = int(req.params.get("timeout", "5000"))
    return await client.wait_for_completion_or_create_check_status_response(req, instance_id, timeout_ms, 50)


@app.orchestration_trigger(context_name="context")
def chain(context: df.DurableOrchestrationContext):
    n = context.get_input() or 3
    value = 0
    for _ in range(n):
        value = yield context.call_activity("add_one", value)
    return value


@app.activity_trigger(input_name="value")
def add_one(value: int) -> int:
    return value + 1


@app.activity_trigger(input_name="value")
async def double_async(value: int) -> int:
    await asyncio.sleep(0.01)
    return value * 2


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    n = context.get_input()
    results = yield context.task_all([context.call_activity("double_async", i) for i in range(n)])
    return sum(results)


@app.activity_trigger(input_name="key")
def always_fails(key: str) -> None:
    _count(key)
    raise ValueError(f"boom {key}")


@app.activity_trigger(input_name="key")
def fails_twice(key: str) -> str:
    if _count(key) <= 2:
        raise RuntimeError(f"transient {key}")
    return f"ok after {calls[key]}"


@app.orchestration_trigger(context_name="context")
def retrying(context: df.DurableOrchestrationContext):
    data = context.get_input()
    options = df.RetryOptions(first_retry_interval_in_milliseconds=50, max_number_of_attempts=data["attempts"])
    result = yield context.call_activity_with_retry(data["activity"], options, data["key"])
    return result


@app.activity_trigger(input_name="key")
async def nap(key: str) -> int:
    """Counts its runs and takes a moment: a stop catches it under way."""
    count = _count(key)
    await asyncio.sleep(0.3)
    return count


@app.orchestration_trigger(context_name="context")
def two_naps(context: df.DurableOrchestrationContext):
    key = context.get_input()
    return [(yield context.call_activity("nap", key)), (yield context.call_activity("nap", key))]


@app.orchestration_trigger(context_name="context")
def catches_failure(context: df.DurableOrchestrationContext):
    try:
        yield context.call_activity("always_fails", context.get_input())
    except Exception as exc:  # noqa: BLE001
        return f"caught: {exc}".split("\n")[0]
    return "no failure"


@app.orchestration_trigger(context_name="context")
def wait_with_timeout(context: df.DurableOrchestrationContext):
    seconds = context.get_input()
    deadline = context.current_utc_datetime + timedelta(seconds=seconds)
    timer = context.create_timer(deadline)
    approval = context.wait_for_external_event("Approval")
    winner = yield context.task_any([approval, timer])
    if winner == approval:
        timer.cancel()
        return {"approved": approval.result}
    return "timed out"


@app.orchestration_trigger(context_name="context")
def early_event(context: df.DurableOrchestrationContext):
    yield context.call_activity("slow", context.get_input() or 0.3)  # time for the test to raise "Go" first
    data = yield context.wait_for_external_event("Go")
    return data


@app.orchestration_trigger(context_name="context")
def durable_timer(context: df.DurableOrchestrationContext):
    before = context.current_utc_datetime
    yield context.create_timer(before + timedelta(seconds=context.get_input()))
    return (context.current_utc_datetime - before).total_seconds()


@app.orchestration_trigger(context_name="context")
def counter_loop(context: df.DurableOrchestrationContext):
    count = context.get_input() or 0
    context.set_custom_status({"count": count, "history": "fresh"})
    if count >= 3:
        return count
    yield context.call_activity("add_one", count)
    context.continue_as_new(count + 1)


@app.orchestration_trigger(context_name="context")
def parent(context: df.DurableOrchestrationContext):
    a = yield context.call_sub_orchestrator("chain", 2)
    b = yield context.call_sub_orchestrator("chain", 3, f"{context.instance_id}-child")
    return [a, b]


@app.orchestration_trigger(context_name="context")
def progress(context: df.DurableOrchestrationContext):
    n = context.get_input()
    for i in range(n):
        context.set_custom_status({"current": i, "total": n})
        yield context.call_activity("slow", 0.2)
    context.set_custom_status({"current": n, "total": n})
    return n


@app.activity_trigger(input_name="seconds")
def slow(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@app.orchestration_trigger(context_name="context")
def deterministic(context: df.DurableOrchestrationContext):
    started = context.current_utc_datetime
    first = context.new_uuid()
    replaying = [context.is_replaying]
    echoed = yield context.call_activity("identity", first)  # the activity sees the uuid of the first episode
    replaying.append(context.is_replaying)
    second = context.new_uuid()
    return {"uuids": [first, second], "echoed": echoed, "started": started.isoformat(),
            "now": context.current_utc_datetime.isoformat(), "replaying": replaying}


@app.activity_trigger(input_name="value")
def identity(value):
    return value


@app.activity_trigger(input_name="key")
def tick(key: str) -> int:
    count = _count(key)
    time.sleep(0.05)
    return count


@app.orchestration_trigger(context_name="context")
def ticker(context: df.DurableOrchestrationContext):
    data = context.get_input()
    for _ in range(data["n"]):
        yield context.call_activity("tick", data["key"])
    return data["n"]


@app.activity_trigger(input_name="key")
def fails_once(key: str) -> str:
    if _count(key) == 1:
        raise RuntimeError(f"first call of {key} fails")
    return f"ok on call {calls[key]}"


@app.orchestration_trigger(context_name="context")
def rewindable(context: df.DurableOrchestrationContext):
    key = context.get_input()
    before = yield context.call_activity("tick", f"{key}-before")
    result = yield context.call_activity("fails_once", key)
    return [before, result]


@app.activity_trigger(input_name="seconds")
def concurrency_probe(seconds: float) -> int:
    with _calls_lock:
        concurrency["active"] += 1
        concurrency["peak"] = max(concurrency["peak"], concurrency["active"])
    try:
        time.sleep(seconds)
    finally:
        with _calls_lock:
            concurrency["active"] -= 1
    return 1


@app.orchestration_trigger(context_name="context")
def probe_fan_out(context: df.DurableOrchestrationContext):
    data = context.get_input()
    results = yield context.task_all([context.call_activity("concurrency_probe", data["seconds"])
                                      for _ in range(data["n"])])
    return sum(results)


@app.orchestration_trigger(context_name="context")
def mixed_activities(context: df.DurableOrchestrationContext):
    plus_one = yield context.call_activity("add_one", context.get_input())  # sync, runs on a pool thread
    doubled = yield context.call_activity("double_async", plus_one)  # async, awaited on the host loop
    return doubled


@app.orchestration_trigger(context_name="context")
def crashes(context: df.DurableOrchestrationContext):
    yield context.call_activity("add_one", 0)
    raise ValueError("kaput in the orchestrator")


@app.entity_trigger(context_name="context", entity_name="Counter")
def counter(context: df.DurableEntityContext):
    value = context.get_state(lambda: 0)
    if context.operation_name == "add":
        value += context.get_input()
    elif context.operation_name == "reset":
        value = 0
    elif context.operation_name == "fail":
        raise ValueError("bad op")
    context.set_state(value)
    context.set_result(value)


@app.orchestration_trigger(context_name="context")
def uses_entity(context: df.DurableOrchestrationContext):
    entity = df.EntityId("Counter", context.get_input())
    first = yield context.call_entity(entity, "add", 5)
    context.signal_entity(entity, "add", 1)
    second = yield context.call_entity(entity, "add", 10)
    try:
        yield context.call_entity(entity, "fail")
    except Exception as exc:  # noqa: BLE001
        return [first, second, str(exc)]
    return [first, second]


@app.orchestration_trigger(context_name="context")
def signals_while_working(context: df.DurableOrchestrationContext):
    """Each step signals an entity and calls a quick activity: its outbox flush and its next commit overlap."""
    value = 0
    for _ in range(6):
        context.signal_entity(df.EntityId("Counter", context.get_input()), "add", 1)
        value = yield context.call_activity("add_one", value)
    return value


@app.orchestration_trigger(context_name="context")
def signal_and_finish(context: df.DurableOrchestrationContext):
    context.signal_entity(df.EntityId("Counter", context.get_input()), "add", 7)  # sent by the last episode
    return "signalled"


@app.timer_trigger(schedule="*/1 * * * * *", arg_name="timer", run_on_startup=False)
def every_second(timer: func.TimerRequest) -> None:
    timer_requests.append(timer)
    _count("timer")


@app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer", run_on_startup=False)
def once_a_year(timer: func.TimerRequest) -> None:
    _count("yearly")
