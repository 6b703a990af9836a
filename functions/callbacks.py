"""Durable pieces every capability uses: signed job callbacks, and activities retried as sub-orchestrations."""
from __future__ import annotations

import azure.durable_functions as df

from shared.config import get_settings
from shared.errors import DeliveryError
from shared.outcomes import failed, succeeded
from shared.webhooks import post_signed

from ._observe import observed_activity
from ._retry import call_with_retries

bp = df.Blueprint()


@bp.activity_trigger(input_name="delivery")
@observed_activity("callbacks")
async def deliver_callback(delivery: dict) -> dict:
    settings = get_settings()
    attempt = await post_signed(delivery["url"], delivery["body"],
                                secrets=[settings.callback_signing_secret.get_secret_value()],
                                message_id=delivery["message_id"], timeout=settings.callback_timeout_seconds,
                                allowed_hosts=settings.callback_allowed_hosts)
    if attempt.ok:
        return succeeded(attempt.to_dict())
    error = DeliveryError(attempt.error or "delivery failed",
                          code="callback_rejected" if attempt.permanent else "callback_failed",
                          transient=not attempt.permanent)
    return failed(error, attempt=delivery["attempt"], max_attempts=settings.callback_max_attempts,
                  base_delay=settings.ai_retry_base_seconds)


@bp.orchestration_trigger(context_name="context")
def retried_activity(context: df.DurableOrchestrationContext):
    """`{"activity", "input"}`: one activity with its own durable retries; its outcome, never an exception.

    Fan-outs run these as sub-orchestrations, so that every item waits on its own retry timers.
    """
    task = context.get_input()
    outcome = yield from call_with_retries(context, task["activity"], task["input"])
    return outcome
