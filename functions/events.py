"""Domain events: orchestrators emit them, `publish_events` routes each to webhook deliveries and rules."""
from __future__ import annotations

import logging
from typing import Any, Generator

import azure.durable_functions as df
import azure.functions as func

from shared.automation.deliveries import Delivery, delivery_id
from shared.automation.events import CustomEventIn, Event, claim_custom_id, new_event
from shared.automation.rules import RuleStore
from shared.automation.store import WebhookStore
from shared.clock import iso_utc
from shared.config import get_settings
from shared.errors import parse_json_body
from shared.observability import log_event
from shared.storage.tables import Tables

from ._http import handles_errors, json_response
from ._jobs import start_once
from ._retry import CRASH_RETRY

bp = df.Blueprint()


def emit(context: df.DurableOrchestrationContext, type_: str, subject: str,
         data: dict[str, Any]) -> Generator[Any, Any, None]:
    """Publishes an event from an orchestrator; a replay builds the very same event (id and time)."""
    yield from emit_all(context, [(type_, subject, data)])


def emit_all(context: df.DurableOrchestrationContext,
             events: list[tuple[str, str, dict[str, Any]]]) -> Generator[Any, Any, None]:
    """Several events in one activity: a WhatsApp turn's events cost one step, not one each."""
    if not events:
        return
    built = [new_event(type_, subject, data, event_id="evt_" + str(context.new_uuid()).replace("-", ""),
                       occurred_at=context.current_utc_datetime) for type_, subject, data in events]
    try:
        yield context.call_activity_with_retry("publish_events", CRASH_RETRY, [e.model_dump() for e in built])
    except Exception as exc:  # noqa: BLE001 - storage down through every retry: the job itself still stands
        if not context.is_replaying:
            log_event("event.publish_failed", level=logging.ERROR, event_ids=[e.id for e in built],
                      error=str(exc)[:300])


async def publish(client: df.DurableOrchestrationClient, event: Event) -> dict:
    """One delivery orchestration per interested subscription, and one rules run when rules await the type."""
    tables = Tables(get_settings())
    webhooks = WebhookStore(tables)
    now = iso_utc()
    deliveries = []
    for subscription in await webhooks.subscriptions():
        if not subscription.wants(event.type):
            continue
        delivery = Delivery(id=delivery_id(event.id, subscription.id), subscription_id=subscription.id,
                            event=event, created_at=now)
        task = {"subscription_id": subscription.id, "delivery_id": delivery.id}
        etag = await webhooks.create_delivery(delivery)
        if etag is not None:  # the first attempt need not read back what was just written
            await client.start_new("webhook_delivery", delivery.id,
                                   {**task, "first": {"delivery": delivery.model_dump(), "etag": etag}})
        else:  # routed before (a retry, or the same event again): start only what a crash left unstarted
            await start_once(client, "webhook_delivery", delivery.id, task)
        deliveries.append(delivery.id)
    rules = bool(await RuleStore(tables).matching(event.type))
    if rules:
        await start_once(client, "rules_evaluation", f"rules_{event.id}", event.model_dump())
    log_event("event.published", event_id=event.id, event_type=event.type, subject=event.subject,
              deliveries=len(deliveries), rules=rules)
    return {"event_id": event.id, "deliveries": deliveries, "rules": rules}


@bp.activity_trigger(input_name="events")
@bp.durable_client_input(client_name="client")
async def publish_events(events: list, client: df.DurableOrchestrationClient) -> list[dict]:
    return [await publish(client, Event.model_validate(event)) for event in events]


@bp.route(route="events", methods=["POST"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def post_event(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Your own systems publish `custom.*` events; subscriptions and rules treat them like ours."""
    body = parse_json_body(req.get_body(), CustomEventIn)
    if body.id is not None:
        await claim_custom_id(Tables(get_settings()), body)
    event = new_event(body.type, body.subject, body.data, event_id=body.id)
    routed = await publish(client, event)
    return json_response({"event": event.model_dump(), **routed}, 202)
