"""Outbound webhooks: subscriptions, one orchestration per delivery with durable retries, the attempt log, replay."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable

import azure.durable_functions as df
import azure.functions as func

from shared.automation import attempts
from shared.automation import subscriptions as subs
from shared.automation.deliveries import STATUSES
from shared.automation.store import WebhookStore, subscription_not_found
from shared.config import get_settings
from shared.errors import BadRequest, Conflict, NotFound, parse_json_body
from shared.jobs import page_of, parse_limit, query_scope
from shared.observability import log_event
from shared.storage.tables import Tables

from ._http import handles_errors, json_response
from ._jobs import start_once
from ._retry import call_with_retries

bp = df.Blueprint()


def _store() -> WebhookStore:
    return WebhookStore(Tables(get_settings()))


def _now() -> datetime:
    return datetime.now(timezone.utc)


@bp.route(route="webhooks/subscriptions", methods=["POST"])
@handles_errors
async def create_subscription(req: func.HttpRequest) -> func.HttpResponse:
    """The secret is in this answer only: keep it, it verifies every delivery."""
    body = parse_json_body(req.get_body(), subs.SubscriptionIn)
    subscription, secret = subs.create(body, _now(), get_settings().callback_allowed_hosts)
    await _store().save_subscription(subscription)
    log_event("webhook.subscription.created", subscription_id=subscription.id, events=subscription.events)
    return json_response({**subscription.public(), "secret": secret}, 201,
                         {"Location": f"/api/webhooks/subscriptions/{subscription.id}"})


@bp.route(route="webhooks/subscriptions", methods=["GET"])
@handles_errors
async def list_subscriptions(req: func.HttpRequest) -> func.HttpResponse:
    return json_response({"subscriptions": [s.public() for s in await _store().subscriptions(fresh=True)]})


@bp.route(route="webhooks/subscriptions/{subscription_id}", methods=["GET"])
@handles_errors
async def get_subscription(req: func.HttpRequest) -> func.HttpResponse:
    return json_response((await _store().require_subscription(req.route_params["subscription_id"])).public())


@bp.route(route="webhooks/subscriptions/{subscription_id}", methods=["DELETE"])
@handles_errors
async def delete_subscription(req: func.HttpRequest) -> func.HttpResponse:
    """Pending retries of its deliveries end as `cancelled`."""
    await _store().delete_subscription(req.route_params["subscription_id"])
    return func.HttpResponse(status_code=204)


@bp.route(route="webhooks/subscriptions/{subscription_id}/rotate", methods=["POST"])
@handles_errors
async def rotate_secret(req: func.HttpRequest) -> func.HttpResponse:
    """A new secret; the old one keeps signing (a second signature) for WEBHOOK_ROTATION_GRACE_HOURS."""
    grace = timedelta(hours=get_settings().webhook_rotation_grace_hours)
    secret = ""

    def rotate(subscription: subs.Subscription) -> subs.Subscription:
        nonlocal secret
        rotated, secret = subs.rotate(subscription, _now(), grace)
        return rotated

    rotated = await _changed(req.route_params["subscription_id"], rotate)
    log_event("webhook.subscription.rotated", subscription_id=rotated.id)
    return json_response({**rotated.public(), "secret": secret,
                          "previous_secrets_expire_at": [s.expires_at for s in rotated.secrets[1:]]})


@bp.route(route="webhooks/subscriptions/{subscription_id}/enable", methods=["POST"])
@handles_errors
async def enable_subscription(req: func.HttpRequest) -> func.HttpResponse:
    """Turns a subscription disabled by 410 Gone or by days of failures back on."""
    enabled = await _changed(req.route_params["subscription_id"], lambda subscription: subscription.model_copy(
        update={"enabled": True, "disabled_reason": None, "failing_since": None}))
    return json_response(enabled.public())


async def _changed(subscription_id: str, change: Callable[[subs.Subscription], subs.Subscription]) -> subs.Subscription:
    changed = await _store().change_subscription(subscription_id, change)
    if changed is None:
        raise subscription_not_found(subscription_id)
    return changed


@bp.route(route="webhooks/deliveries", methods=["GET"])
@handles_errors
async def list_deliveries(req: func.HttpRequest) -> func.HttpResponse:
    status = req.params.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}.", code="invalid_status")
    limit = parse_limit(req.params.get("limit"), default=100, maximum=1000)
    found = [d async for d in _store().deliveries(req.params.get("subscription_id") or None, status)]
    page, continuation = page_of(found, limit, req.params.get("continuation"),
                                 query_scope("webhooks/deliveries", req.params, ("subscription_id", "status")),
                                 key=_newest_first)
    return json_response({"deliveries": [d.summary() for d in page], "count": len(page),
                          "continuation": continuation})


def _newest_first(delivery) -> tuple[str, str]:
    return delivery.created_at, delivery.id


@bp.route(route="webhooks/deliveries/{delivery_id}", methods=["GET"])
@handles_errors
async def get_delivery(req: func.HttpRequest) -> func.HttpResponse:
    return json_response((await _store().find_delivery(req.route_params["delivery_id"])).model_dump())


@bp.route(route="webhooks/deliveries/{delivery_id}/replay", methods=["POST"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def replay_delivery(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Sends the same event (same webhook-id) once more, now, as a new attempt on the same delivery."""
    store = _store()
    delivery = await store.find_delivery(req.route_params["delivery_id"])
    subscription = await store.require_subscription(delivery.subscription_id)
    if not subscription.enabled:  # an attempt would not be made: say so rather than 202 and nothing sent
        raise Conflict(f"The subscription is disabled ({subscription.disabled_reason or 'by you'}); enable it "
                       f"(POST /api/webhooks/subscriptions/{subscription.id}/enable), then replay.",
                       code="subscription_disabled")
    replay = await store.change_delivery(delivery.subscription_id, delivery.id,
                                         lambda current: current.model_copy(update={"replays": current.replays + 1}))
    if replay is None:
        raise NotFound(f"No webhook delivery '{delivery.id}'.", code="delivery_not_found")
    await start_once(client, "webhook_delivery", f"{delivery.id}:replay-{replay.replays}",
                     {"subscription_id": delivery.subscription_id, "delivery_id": delivery.id, "trigger": "replay"})
    return json_response(replay.summary(), 202)


@bp.orchestration_trigger(context_name="context")
def webhook_delivery(context: df.DurableOrchestrationContext):
    """One event to one subscriber: attempts on durable timers until delivered, refused for good, or out of tries."""
    task = dict(context.get_input())
    first = task.pop("first", None)  # the delivery as created: for the first attempt only
    outcome = yield from call_with_retries(context, "attempt_webhook", task, {"first": first} if first else None)
    return {"delivered": outcome["ok"], "attempts": outcome["attempts"], "error": outcome.get("error")}


@bp.activity_trigger(input_name="task")
async def attempt_webhook(task: dict) -> dict:
    return await attempts.attempt(_store(), task, get_settings(), _now())
