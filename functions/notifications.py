"""Notifications by e-mail, SMS and WhatsApp from sandboxed templates, each sent by its own orchestration."""
from __future__ import annotations

import random
import time
from typing import get_args

import azure.durable_functions as df
import azure.functions as func

from shared.automation.notifications import NOTIFICATION_STATUSES, Channel, Notification, NotificationIn, sender_for
from shared.automation.outbox import Outbox, notification_id, validate_template_name
from shared.automation.templates import NamedTemplateIn, PreviewIn, TemplateIn, render
from shared.blocking import in_thread
from shared.clock import iso_utc
from shared.config import get_settings
from shared.errors import BadRequest, Conflict, DeliveryError, parse_json_body
from shared.jobs import parse_limit, request_fingerprint
from shared.observability import log_event
from shared.outcomes import failed, succeeded
from shared.storage.tables import Tables

from ._http import handles_errors, json_response
from ._jobs import start_once
from ._retry import call_with_retries

bp = df.Blueprint()


def _outbox() -> Outbox:
    return Outbox(Tables(get_settings()))


@bp.route(route="templates", methods=["POST"])
@handles_errors
async def create_template(req: func.HttpRequest) -> func.HttpResponse:
    body = parse_json_body(req.get_body(), NamedTemplateIn)
    template = TemplateIn.model_validate(body.model_dump(exclude={"name"}))
    await _outbox().create_template(body.name, template)
    return json_response({"name": body.name, **template.model_dump()}, 201, {"Location": f"/api/templates/{body.name}"})


@bp.route(route="templates", methods=["GET"])
@handles_errors
async def list_templates(req: func.HttpRequest) -> func.HttpResponse:
    return json_response({"templates": await _outbox().templates()})


@bp.route(route="templates/preview", methods=["POST"])
@handles_errors
async def preview_unsaved_template(req: func.HttpRequest) -> func.HttpResponse:
    body = parse_json_body(req.get_body(), PreviewIn)
    if body.template is None:
        raise BadRequest("Give the `template` to preview, or use /api/templates/{name}/preview.", code="no_template")
    return json_response((await in_thread(render, body.template, body.data)).model_dump())


@bp.route(route="templates/{name}", methods=["GET"])
@handles_errors
async def get_template(req: func.HttpRequest) -> func.HttpResponse:
    name = req.route_params["name"]
    return json_response({"name": name, **(await _outbox().template(name)).model_dump()})


@bp.route(route="templates/{name}", methods=["PUT"])
@handles_errors
async def replace_template(req: func.HttpRequest) -> func.HttpResponse:
    name = validate_template_name(req.route_params["name"])
    template = parse_json_body(req.get_body(), TemplateIn)
    await _outbox().replace_template(name, template)
    return json_response({"name": name, **template.model_dump()})


@bp.route(route="templates/{name}", methods=["DELETE"])
@handles_errors
async def delete_template(req: func.HttpRequest) -> func.HttpResponse:
    await _outbox().delete_template(req.route_params["name"])
    return func.HttpResponse(status_code=204)


@bp.route(route="templates/{name}/preview", methods=["POST"])
@handles_errors
async def preview_template(req: func.HttpRequest) -> func.HttpResponse:
    """The subject, text and HTML the data gives: a missing variable is a 422 here, not at send time."""
    body = parse_json_body(req.get_body() or b"{}", PreviewIn)
    template = await _outbox().template(req.route_params["name"])
    return json_response((await in_thread(render, template, body.data)).model_dump())


async def queue_notification(client: df.DurableOrchestrationClient, request: NotificationIn,
                             source: str = "api") -> tuple[Notification, bool]:
    """Renders, records and starts the sending; the same idempotency key gives the same notification."""
    outbox = _outbox()
    notification, created = await outbox.create(Notification(
        id=notification_id(request.idempotency_key), channel=request.channel, to=request.to,
        template=request.template, content=await outbox.content(request), created_at=iso_utc(), source=source,
        fingerprint=request_fingerprint(request.model_dump(mode="json", exclude={"idempotency_key"}))))
    await start_once(client, "notification_delivery", notification.id, {"id": notification.id})
    return notification, created


@bp.route(route="notifications", methods=["POST"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def post_notification(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    request = parse_json_body(req.get_body(), NotificationIn)
    if request.idempotency_key is None and req.headers.get("Idempotency-Key"):
        request = request.model_copy(update={"idempotency_key": req.headers["Idempotency-Key"]})
    notification, created = await queue_notification(client, request)
    return json_response(notification.public(), 202 if created else 200,
                         {"Location": f"/api/notifications/{notification.id}"})


@bp.route(route="notifications/{notification_id}", methods=["GET"])
@handles_errors
async def get_notification(req: func.HttpRequest) -> func.HttpResponse:
    return json_response((await _outbox().get(req.route_params["notification_id"])).public())


@bp.route(route="notifications", methods=["GET"])
@handles_errors
async def list_notifications(req: func.HttpRequest) -> func.HttpResponse:
    status, to, channel = (req.params.get(k) or None for k in ("status", "to", "channel"))
    if status is not None and status not in NOTIFICATION_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(NOTIFICATION_STATUSES)}.", code="invalid_status")
    if channel is not None and channel not in get_args(Channel):
        raise BadRequest(f"channel must be one of {', '.join(get_args(Channel))}.", code="invalid_channel")
    if to is not None and channel is None:
        raise BadRequest("Filter by `to` together with `channel`.", code="channel_required")
    limit = parse_limit(req.params.get("limit"), default=100, maximum=1000)
    found = sorted([n async for n in _outbox().list(status, to, channel)], key=lambda n: n.created_at, reverse=True)
    return json_response({"notifications": [n.public() for n in found[:limit]]})


@bp.orchestration_trigger(context_name="context")
def notification_delivery(context: df.DurableOrchestrationContext):
    outcome = yield from call_with_retries(context, "send_notification", context.get_input())
    return {"sent": outcome["ok"], "error": outcome.get("error")}


@bp.activity_trigger(input_name="task")
async def send_notification(task: dict) -> dict:
    settings = get_settings()
    outbox = _outbox()
    notification = await outbox.get(task["id"])
    if notification.status in ("sent", "failed"):  # a replay after a crash: done already
        return {"ok": notification.status == "sent", "value": {}, "error": notification.error, "retry_in": None,
                "usage": []}
    try:
        decision = await outbox.admit(notification.channel, notification.to, time.time(),
                                      settings.notify_rate_limit_per_hour)
    except Conflict:  # many notifications to this recipient counted at once: count again in a moment
        return {"ok": False, "error": {"code": "concurrent_update", "message": "Counting the recipient's budget."},
                "retry_in": round(0.5 + random.random(), 3), "usage": []}
    if not decision.allowed:
        await outbox.save(notification.model_copy(update={"status": "waiting"}))
        return {"ok": False, "error": {"code": "recipient_rate_limited", "message": "Waiting for the hourly budget."},
                "retry_in": round(decision.retry_after_s + 0.05, 3), "usage": []}
    attempts = notification.attempts + 1
    try:
        await sender_for(notification.channel, settings).send(notification.to, notification.content,
                                                              key=notification.id)
    except DeliveryError as error:
        outcome = failed(error, attempt=attempts, max_attempts=settings.notify_max_attempts,
                         base_delay=settings.ai_retry_base_seconds)
        status = "queued" if outcome["retry_in"] is not None else "failed"
        await outbox.save(notification.model_copy(update={"attempts": attempts, "status": status,
                                                          "error": outcome["error"]}))
        log_event("notification.failed", notification_id=notification.id, channel=notification.channel,
                  error_code=error.code, final=status == "failed")
        return outcome
    await outbox.save(notification.model_copy(update={"attempts": attempts, "status": "sent", "error": None,
                                                      "sent_at": iso_utc()}))
    log_event("notification.sent", notification_id=notification.id, channel=notification.channel)
    return succeeded({"attempts": attempts})
