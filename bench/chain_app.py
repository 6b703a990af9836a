"""Bench-only Durable app: an orchestrator that chains a trivial sync activity N times (N from its input)."""
from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.orchestration_trigger(context_name="context")
def chain(context: df.DurableOrchestrationContext):
    value = 0
    for _ in range(int(context.get_input())):
        value = yield context.call_activity("step", value)
    return value


@app.activity_trigger(input_name="value")
def step(value: int) -> int:
    return value + 1


@app.route(route="chain/{n:int}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start_chain(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """HTTP starter, for poking the bench app by hand; the bench itself starts instances with the client."""
    instance_id = await client.start_new("chain", None, int(req.route_params["n"]))
    return client.create_check_status_response(req, instance_id)
