"""Outbound webhooks: subscriptions, one orchestration per delivery with durable retries, the attempt log, replay."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import azure.durable_functions as df
import azure.functions as func

from shared.automation import subscriptions as subs
from shared.automation.deliveries import STATUSES, AttemptRecord, recorded
from shared.automation.store import WebhookStore
from shared.config import get_settings
from shared.errors import BadRequest, parse_json_body
from shared.jobs import parse_limit
from shared.observability import log_event
from shared.storage.tables import Tables
from shared.webhooks import post_signed

from ._http import handles_errors, json_response
from ._jobs import start_once
from ._retry import call_with_retries

bp = df.Blueprint()


def _store() -> WebhookStore:
    return WebhookStore(Tables(get_settings()))


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


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
    store = _store()
    subscription = await store.require_subscription(req.route_params["subscription_id"])
    grace = timedelta(hours=get_settings().webhook_rotation_grace_hours)
    rotated, secret = subs.rotate(subscription, _now(), grace)
    await store.save_subscription(rotated)
    log_event("webhook.subscription.rotated", subscription_id=rotated.id)
    return json_response({**rotated.public(), "secret": secret,
                          "previous_secrets_expire_at": [s.expires_at for s in rotated.secrets[1:]]})


@bp.route(route="webhooks/subscriptions/{subscription_id}/enable", methods=["POST"])
@handles_errors
async def enable_subscription(req: func.HttpRequest) -> func.HttpResponse:
    """Turns a subscription disabled by 410 Gone or by days of failures back on."""
    store = _store()
    subscription = await store.require_subscription(req.route_params["subscription_id"])
    enabled = subscription.model_copy(update={"enabled": True, "disabled_reason": None, "failing_since": None})
    await store.save_subscription(enabled)
    return json_response(enabled.public())


@bp.route(route="webhooks/deliveries", methods=["GET"])
@handles_errors
async def list_deliveries(req: func.HttpRequest) -> func.HttpResponse:
    status = req.params.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}.", code="invalid_status")
    limit = parse_limit(req.params.get("limit"), default=100, maximum=1000)
    found = [d async for d in _store().deliveries(req.params.get("subscription_id") or None, status)]
    found.sort(key=lambda d: d.created_at, reverse=True)
    return json_response({"deliveries": [d.summary() for d in found[:limit]], "count": min(len(found), limit)})


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
    await store.require_subscription(delivery.subscription_id)
    replay = delivery.model_copy(update={"replays": delivery.replays + 1})
    await store.save_delivery(replay)
    await start_once(client, "webhook_delivery", f"{delivery.id}:replay-{replay.replays}",
                     {"subscription_id": delivery.subscription_id, "delivery_id": delivery.id, "trigger": "replay"})
    return json_response(replay.summary(), 202)


@bp.orchestration_trigger(context_name="context")
def webhook_delivery(context: df.DurableOrchestrationContext):
    """One event to one subscriber: attempts on durable timers until delivered, refused for good, or out of tries."""
    outcome = yield from call_with_retries(context, "attempt_webhook", context.get_input())
    return {"delivered": outcome["ok"], "attempts": outcome["attempts"], "error": outcome.get("error")}


async def _note_health(store: WebhookStore, subscription: subs.Subscription, ok: bool, status_code: int | None,
                       now: datetime) -> subs.Subscription:
    """The subscription after this attempt; written (from a fresh read) only when its health changed."""
    disable_after = timedelta(days=get_settings().webhook_disable_after_days)
    if subs.after_attempt(subscription, ok=ok, status_code=status_code, now=now,
                          disable_after=disable_after) == subscription:
        return subscription
    current = await store.subscription(subscription.id, fresh=True)
    if current is None:  # deleted meanwhile: writing it back would bring it to life again
        return subscription.model_copy(update={"enabled": False})
    health = subs.after_attempt(current, ok=ok, status_code=status_code, now=now, disable_after=disable_after)
    if health != current:
        await store.save_subscription(health)
        if not health.enabled:
            log_event("webhook.subscription.disabled", subscription_id=health.id, reason=health.disabled_reason)
    return health


def _final(code: str, message: str) -> dict:
    return {"ok": False, "error": {"code": code, "message": message}, "retry_in": None, "usage": []}


@bp.activity_trigger(input_name="task")
async def attempt_webhook(task: dict) -> dict:
    settings = get_settings()
    store = _store()
    now = _now()
    delivery = await store.delivery(task["subscription_id"], task["delivery_id"])
    if delivery is None:
        return _final("delivery_not_found", "The delivery record is gone.")
    trigger = task.get("trigger", "schedule")
    if trigger == "schedule" and delivery.status in ("delivered", "cancelled"):  # a replay got there first
        return {"ok": delivery.status == "delivered", "value": {"status_code": None}, "usage": [],
                "error": None if delivery.status == "delivered" else {"code": "cancelled", "message": "cancelled"},
                "retry_in": None}
    subscription = await store.subscription(task["subscription_id"])
    if subscription is None or not subscription.enabled:
        await store.save_delivery(delivery.model_copy(update={"status": "cancelled", "next_attempt_at": None}))
        return _final("subscription_inactive", "The subscription was deleted or disabled.")
    attempt = await post_signed(subscription.url, delivery.event.model_dump(),
                                secrets=subscription.signing_secrets(now), message_id=delivery.event.id,
                                timeout=settings.callback_timeout_seconds,
                                allowed_hosts=settings.callback_allowed_hosts)
    health = await _note_health(store, subscription, attempt.ok, attempt.status_code, now)
    refused = attempt.status_code is None and attempt.permanent  # e.g. the name resolves to a private address
    retry_in = None if attempt.ok or refused or trigger == "replay" or not health.enabled else \
        subs.wait_before(task["attempt"], subs.parse_schedule(settings.webhook_retry_schedule))
    record = AttemptRecord(number=len(delivery.attempts) + 1, at=_iso(now), status_code=attempt.status_code,
                           error=attempt.error, duration_ms=round(attempt.duration_ms, 1), trigger=trigger)
    next_at = _iso(now + timedelta(seconds=retry_in)) if retry_in is not None else None
    if trigger == "replay" and not attempt.ok and delivery.status in ("pending", "retrying"):
        # a failed replay leaves the scheduled attempts as they were
        updated = delivery.model_copy(update={"attempts": [*delivery.attempts, record]})
    else:
        updated = recorded(delivery, record, ok=attempt.ok, final=retry_in is None, next_attempt_at=next_at)
    await store.save_delivery(updated)
    log_event("webhook.attempt", delivery_id=delivery.id, subscription_id=subscription.id,
              event_type=delivery.event.type, attempt=record.number, status_code=attempt.status_code,
              ok=attempt.ok, duration_ms=record.duration_ms)
    if attempt.ok:
        return {"ok": True, "value": {"status_code": attempt.status_code}, "usage": []}
    return {"ok": False, "error": {"code": "webhook_failed", "message": attempt.error or "delivery failed"},
            "retry_in": retry_in, "usage": []}
