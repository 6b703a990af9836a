"""WhatsApp assistant behind WAHA: signed webhook, one conversation orchestration per chat, knowledge base."""
from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from collections import OrderedDict
from datetime import timedelta
from functools import lru_cache
from typing import TYPE_CHECKING

import azure.durable_functions as df
import azure.functions as func

from shared import files as filetypes
from shared.ai.factory import get_provider
from shared.ai.usage import summarize
from shared.blocking import in_thread
from shared.config import get_settings
from shared.errors import AppError, BadRequest, NotFound
from shared.jobs import decode_continuation, encode_continuation, parse_limit, query_scope
from shared.observability import log_event
from shared.outcomes import failed, succeeded
from shared.storage.blobs import BlobStore
from shared.storage.tables import Tables
from shared.offers.ingest import declared_text
from shared.whatsapp import assistant
from shared.whatsapp.events import checked_chat_id, classify, dedup_key, is_fresh, parse_envelope
from shared.whatsapp.kb_documents import check_pages, document_pages
from shared.whatsapp.signature import verify_hmac
from shared.whatsapp.waha import Waha

from ._http import checked_file_name, handles_errors, json_response, uploaded_file
from ._jobs import INPUTS, respond_with_job, start_job
from ._observe import observed_activity, observed_orchestrator
from ._retry import CRASH_RETRY, call_with_retries
from .events import emit_all

if TYPE_CHECKING:
    from shared.whatsapp.search_index import AzureSearchIndex

bp = df.Blueprint()
_DOC_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
LOOK_AGAIN_S = 60  # after a conversation's step failed through all its Durable retries (a bug, storage gone)


@lru_cache(maxsize=1)
def _search_index() -> "AzureSearchIndex | None":
    """The knowledge base in Azure AI Search when so configured; one client credential per worker."""
    settings = get_settings()
    if settings.kb_search_backend != "azure_search":
        return None
    from shared.whatsapp.search_index import AzureSearchIndex

    return AzureSearchIndex(settings)


def _deps() -> assistant.Deps:
    settings = get_settings()
    return assistant.Deps(Tables(settings), BlobStore(settings),
                          Waha(settings.waha_base_url, settings.waha_api_key.get_secret_value()), get_provider(),
                          rate_limit=settings.whatsapp_rate_limit, piece_s=settings.call_piece_seconds,
                          burst_s=settings.whatsapp_burst_seconds,
                          search=_search_index())


@bp.route(route="webhook", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@bp.durable_client_input(client_name="client")
@handles_errors
async def waha_webhook(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Anonymous for the Functions host: WAHA's HMAC over the raw body is the authentication."""
    settings = get_settings()
    raw = req.get_body()
    verify_hmac(raw, dict(req.headers), settings.waha_hmac_key.get_secret_value())
    envelope = parse_envelope(raw)
    if not is_fresh(envelope, int(time.time() * 1000), settings.whatsapp_max_event_age_seconds):
        return json_response({"status": "ignored", "reason": "stale"})
    decision = classify(envelope)
    if not decision.answer or decision.message is None:
        return json_response({"status": "ignored", "reason": decision.reason})
    message = decision.message
    tables = Tables(settings)
    if not await assistant.record_incoming(tables, message, decision.kind):
        log_event("whatsapp.duplicate", session=message.session, dedup=dedup_key(envelope))
        await assistant.record_duplicate(tables, message)
        # WAHA delivers again when an attempt broke off, perhaps after the message was stored and before its
        # conversation was woken: wake it whatever the claims say (a wake-up too many costs one episode).
        await _wake(client, message.session, message.chat_id, settings.whatsapp_burst_seconds)
        return json_response({"status": "duplicate"})
    log_event("whatsapp.message.received", chat_id=message.chat_id, message_id=message.message_id)
    instance = assistant.conversation_id(message.session, message.chat_id)
    if time.time() < _held_awake.get(instance, 0.0) - assistant.CLOCK_SKEW_S:
        # stored before the claim this worker made lapses: the conversation it woke reads it before it sleeps
        return json_response({"status": "accepted"})
    until = await assistant.claim_wake(tables, message.session, message.chat_id, time.time(),
                                       settings.whatsapp_burst_seconds)
    if until is not None:
        await _wake(client, message.session, message.chat_id, settings.whatsapp_burst_seconds)
        _remember(_held_awake, instance, until)
    return json_response({"status": "accepted"})


RUNNING_HINTS = 10_000  # conversations a worker remembers having seen running or woken (see `_wake`)
_seen_running: OrderedDict[str, None] = OrderedDict()
_held_awake: OrderedDict[str, float] = OrderedDict()  # conversation -> until when this worker's claim holds it


def _remember(hints: OrderedDict, instance: str, value: float | None = None) -> None:
    hints[instance] = value
    hints.move_to_end(instance)
    if len(hints) > RUNNING_HINTS:
        hints.popitem(last=False)


async def _wake(client: df.DurableOrchestrationClient, session: str, chat_id: str, burst_s: float) -> None:
    """The chat's conversation runs forever: tell it a message came, or start it when it does not run.

    Which call comes first is a guess that costs one call when wrong: a conversation this worker saw running
    is raised (one that ended since answers 404 or 410, and is started), any other is started (one that runs
    answers 409: host.json's NonRunningStates keeps a running instance from being replaced; it is raised). So
    a new chat costs one call, as does a chat this worker woke before. A conversation started here knows that
    a message just came, so its first turn is due one burst window from now.
    """
    instance = assistant.conversation_id(session, chat_id)
    if instance in _seen_running:
        try:
            await client.raise_event(instance, "message", {"chat_id": chat_id})
            _remember(_seen_running, instance)
            return
        except Exception:  # noqa: BLE001 - not running any more: start it
            pass
    try:
        await client.start_new("whatsapp_conversation", instance,
                               {"session": session, "chat_id": chat_id, "due_in_s": burst_s})
    except Exception:  # noqa: BLE001 - it runs (or a concurrent message started it first): wake it
        await client.raise_event(instance, "message", {"chat_id": chat_id})
    _remember(_seen_running, instance)


@bp.timer_trigger(schedule="0 * * * * *", arg_name="timer", run_on_startup=False)
@bp.durable_client_input(client_name="client")
async def whatsapp_wake_sweep(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    """Once a minute: a chat whose messages wait behind a wake-up claim that stood for minutes is woken (see
    `assistant.sweep_wake_claims`), so no message waits for the customer to write again."""
    settings = get_settings()

    async def wake(session: str, chat_id: str) -> None:
        await _wake(client, session, chat_id, settings.whatsapp_burst_seconds)

    swept = await assistant.sweep_wake_claims(Tables(settings), time.time(), wake)
    for chat_id in swept.woken:  # a wake-up gone missing, or a turn held up for minutes (WAHA down)
        log_event("whatsapp.wake.swept", chat_id=chat_id)
    if swept.cleared:
        log_event("whatsapp.wake.claims_cleared", count=swept.cleared)


@bp.orchestration_trigger(context_name="context")
def whatsapp_conversation(context: df.DurableOrchestrationContext):
    """Wait for a message, wait until the chat is quiet for the burst window, answer the turn, start over
    (continue_as_new keeps history small).

    Messages live in table storage, so a wake-up that comes while the conversation is busy costs nothing:
    each execution first asks what is pending (and clears the claim of a wake-up when nothing is). A step that
    fails through all its retries (storage gone, a bug) does not end the conversation: it looks again later.
    """
    chat = dict(context.get_input())
    try:
        due = yield from _until_turn_due(context, chat, chat.pop("due_in_s", None))
        # found nothing pending: a line that came since is answered only once its own turn is due
        outcome = yield from call_with_retries(context, "whatsapp_answer", chat,
                                               first_only=None if due else {"only_if_due": True})
    except Exception as exc:  # noqa: BLE001 - the messages stay pending for the next execution
        if not context.is_replaying:
            log_event("whatsapp.conversation.failed", level=logging.ERROR, chat_id=chat["chat_id"],
                      error=str(exc)[:300])
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=LOOK_AGAIN_S))
        context.continue_as_new(chat)
        return
    look_again_s = get_settings().whatsapp_look_again_seconds
    if not outcome["ok"]:  # WAHA refused or stayed down through the retries: the messages stay pending, and are
        # answered (with the text composed already) once it takes them; looked at again later, not at once
        if not context.is_replaying:
            log_event("whatsapp.reply.failed", level=logging.ERROR, chat_id=chat["chat_id"],
                      error=outcome["error"]["code"], attempts=outcome["attempts"], look_again_s=look_again_s)
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=look_again_s))
        context.continue_as_new(chat)
        return
    turn = outcome["value"]
    if not context.is_replaying and turn.get("replied"):
        log_event("whatsapp.reply.sent", chat_id=chat["chat_id"], usage=summarize(outcome["usage"]))
    yield from emit_turn_events(context, chat["chat_id"], turn)
    context.continue_as_new(chat)


def _until_turn_due(context: df.DurableOrchestrationContext, chat: dict, due_in_s: float | None):
    """Returns once the chat's turn is due (True), or once nothing is pending any more (False: a claim's hold that
    kept the conversation awake lapsed, say); `due_in_s` given: started for a message that just came."""
    if due_in_s is None:
        plan = yield context.call_activity_with_retry("whatsapp_pending", CRASH_RETRY, chat)
        if "count" in plan:  # the history of a conversation from before turns waited for quiet: its steps
            if not plan["count"]:
                yield context.wait_for_external_event("message")
            yield context.create_timer(context.current_utc_datetime + timedelta(seconds=plan["burst_seconds"]))
            return True
        due_in_s = plan["due_in_s"]
        if due_in_s is None:
            yield context.wait_for_external_event("message")
            due_in_s = plan["burst_seconds"]
    while due_in_s:  # someone is still typing: each line moves the turn on, up to a limit
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=due_in_s))
        due_in_s = (yield context.call_activity_with_retry("whatsapp_pending", CRASH_RETRY, chat))["due_in_s"]
    return due_in_s is not None


def emit_turn_events(context: df.DurableOrchestrationContext, chat_id: str, turn: dict):
    messages = turn.get("messages", [])
    events = [("whatsapp.message.received", chat_id, {"chat_id": chat_id, **m}) for m in messages]
    if turn.get("replied"):
        events.append(("whatsapp.reply.sent", chat_id, {"chat_id": chat_id, "text": turn.get("answer"),
                                                        "message_ids": [m["message_id"] for m in messages]}))
    if turn.get("handoff"):
        events.append(("whatsapp.handoff.requested", chat_id, {
            "chat_id": chat_id, "reason": turn["handoff"], "answer": turn.get("answer"),
            "question": " ".join(m.get("text") or "" for m in messages).strip()}))
    yield from emit_all(context, events)


@bp.activity_trigger(input_name="chat")
async def whatsapp_pending(chat: dict) -> dict:
    """`due_in_s`: seconds until the chat's turn is due, None when nothing is pending."""
    settings = get_settings()
    due_in_s = await assistant.next_turn(Tables(settings), chat["chat_id"], window_s=settings.whatsapp_burst_seconds,
                                         now=time.time(), session=chat.get("session"))
    return {"due_in_s": due_in_s, "burst_seconds": settings.whatsapp_burst_seconds}


@bp.activity_trigger(input_name="chat")
@observed_activity("whatsapp")
async def whatsapp_answer(chat: dict) -> dict:
    settings = get_settings()
    try:
        result = await assistant.answer_turn(chat["chat_id"], _deps(), only_if_due=chat.get("only_if_due", False),
                                             session=chat.get("session"))
    except AppError as error:  # WAHA down or the session not WORKING: retried on a durable timer
        return failed(error, attempt=chat.get("attempt", 1), max_attempts=settings.whatsapp_send_attempts,
                      base_delay=settings.ai_retry_base_seconds)
    usage = result.pop("usage")
    return {**succeeded(result), "usage": usage}


async def _pause(req: func.HttpRequest, paused: bool) -> func.HttpResponse:
    conversation = await assistant.set_paused(Tables(get_settings()), checked_chat_id(req.route_params["chat_id"]),
                                              paused)
    return json_response({"chat_id": conversation["chat_id"], "paused": conversation["paused"]})


@bp.route(route="conversations/{chat_id}/pause", methods=["POST"])
@handles_errors
async def pause_conversation(req: func.HttpRequest) -> func.HttpResponse:
    """Human takeover: a paused chat gets no replies until it is resumed."""
    return await _pause(req, True)


@bp.route(route="conversations/{chat_id}/resume", methods=["POST"])
@handles_errors
async def resume_conversation(req: func.HttpRequest) -> func.HttpResponse:
    return await _pause(req, False)


@bp.route(route="kb/documents", methods=["POST"])
@bp.durable_client_input(client_name="client")
@handles_errors
async def upload_kb_document(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = req.get_body()
    if req.files:
        given, declared, body = uploaded_file(req)
    else:
        given, declared = checked_file_name(req.params.get("name")), req.headers.get("content-type")
        if (filetypes.normalise_type(declared) in (filetypes.TEXT, filetypes.HTML) and "charset" in (declared or "")
                and filetypes.sniff(body) is None):  # a PDF or DOCX labelled as text is read as what it is
            body = declared_text(declared, body).encode()  # stored as UTF-8, read in the charset it names
    name = given or "document"
    if not body:
        raise BadRequest("Send the document as the body or as a multipart file.", code="empty_request")
    info = await in_thread(filetypes.inspect, body, declared, name, allowed=frozenset(
        {filetypes.PDF, filetypes.DOCX, filetypes.TEXT, filetypes.HTML}))
    check_pages(info)
    sha = hashlib.sha256(body).hexdigest()
    # the same name is the same document (a new version replaces it); an unnamed one is known by its content
    doc_id = req.params.get("id") or (hashlib.sha256(given.encode()).hexdigest() if given else sha)[:16]
    if not _DOC_ID.match(doc_id) or doc_id.strip(".") == "":
        raise BadRequest("id may hold letters, digits, '.', '_' and '-', at most 128 of them (not only dots).",
                         code="invalid_id")

    async def store(folder: str) -> dict:
        ref = await BlobStore(get_settings()).put(INPUTS, f"{folder}/{filetypes.storable_name(name)}", body,
                                                  info.content_type)
        # the upload's time orders the versions of one id: the last upload wins, whichever finishes last
        return {"doc_id": doc_id, "name": name, "content_type": info.content_type, "blob": ref,
                "version": time.time()}

    job = await start_job(client, req, kind="kb", orchestrator="kb_ingestion", prepare=store,
                          fingerprint_of={"doc_id": doc_id, "sha": sha})
    return await respond_with_job(client, req, job, f"/api/jobs/{job['job_id']}")


@bp.orchestration_trigger(context_name="context")
@observed_orchestrator("knowledge")
def kb_ingestion(context: df.DurableOrchestrationContext):
    request = {**context.get_input()["request"], "job_id": context.instance_id}
    outcome = yield from call_with_retries(context, "kb_add_document", request)
    usage = summarize(outcome["usage"])
    return {"result": outcome["value"], "usage": usage} if outcome["ok"] else {"error": outcome["error"],
                                                                             "usage": usage}


@bp.activity_trigger(input_name="request")
@bp.durable_client_input(client_name="client")
@observed_activity("knowledge")
async def kb_add_document(request: dict, client: df.DurableOrchestrationClient) -> dict:
    settings = get_settings()
    data = await BlobStore(settings).get(request["blob"])

    async def still_wanted() -> bool:  # a canceled upload does not go live (the activity runs on after a cancel)
        status = await client.get_status(request["job_id"]) if request.get("job_id") else None
        return getattr(getattr(status, "runtime_status", None), "value", None) not in ("Terminated", "Canceled")

    try:
        pages = await in_thread(document_pages, request["content_type"], data)
        count, usage = await assistant.KnowledgeBase(_deps()).add(
            request["doc_id"], request["name"], pages, request.get("version") or time.time(), still_wanted)
    except AppError as error:
        return failed(error, attempt=request.get("attempt", 1), max_attempts=settings.ai_max_attempts,
                      base_delay=settings.ai_retry_base_seconds)
    return succeeded({"doc_id": request["doc_id"], "name": request["name"], "chunks": count}, usage)


@bp.route(route="kb/documents", methods=["GET"])
@handles_errors
async def list_kb_documents(req: func.HttpRequest) -> func.HttpResponse:
    return json_response({"documents": await assistant.KnowledgeBase(_deps()).documents()})


@bp.route(route="kb/documents/{doc_id}", methods=["DELETE"])
@handles_errors
async def delete_kb_document(req: func.HttpRequest) -> func.HttpResponse:
    if not _DOC_ID.match(req.route_params["doc_id"]):  # no id an upload takes: nothing to delete
        raise NotFound("No such document in the knowledge base.", code="document_not_found")
    if not await assistant.KnowledgeBase(_deps()).remove(req.route_params["doc_id"]):
        raise NotFound("No such document in the knowledge base.", code="document_not_found")
    return func.HttpResponse(status_code=204)


@bp.route(route="messages", methods=["GET"])
@handles_errors
async def list_messages(req: func.HttpRequest) -> func.HttpResponse:
    direction = req.params.get("direction")
    if direction not in (None, "", "in", "out"):
        raise BadRequest("direction must be in or out.", code="invalid_direction")
    try:
        since = float(req.params["since"]) if req.params.get("since") else None
    except ValueError:
        since = math.nan
    if since is not None and not math.isfinite(since):
        raise BadRequest("since must be a Unix time in seconds.", code="invalid_since")
    chat_id = req.params.get("chat_id")
    scope = query_scope("messages", req.params, ("chat_id", "direction", "since"))
    rows, following = await assistant.messages(
        Tables(get_settings()), chat_id=checked_chat_id(chat_id) if chat_id else None, direction=direction or None,
        since=since,
        limit=parse_limit(req.params.get("limit"), default=100, maximum=1000),
        offset=decode_continuation(req.params.get("continuation"), scope))
    return json_response({"messages": rows,
                          "continuation": encode_continuation(following, scope) if following is not None else None})


@bp.route(route="conversations", methods=["GET"])
@handles_errors
async def list_conversations(req: func.HttpRequest) -> func.HttpResponse:
    return json_response({"conversations": await assistant.conversations(Tables(get_settings()))})


@bp.route(route="conversations/{chat_id}", methods=["GET"])
@handles_errors
async def get_conversation(req: func.HttpRequest) -> func.HttpResponse:
    found = await assistant.conversation(Tables(get_settings()), checked_chat_id(req.route_params["chat_id"]))
    if found is None:
        raise NotFound("No conversation with this chat id.", code="conversation_not_found")
    return json_response(found)


@bp.route(route="stats", methods=["GET"])
@handles_errors
async def whatsapp_stats(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(await assistant.stats(Tables(get_settings())))
