"""The assistant's turn: pending messages of one chat, rate limit and pause, a grounded answer sent via WAHA."""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, NamedTuple, Sequence

from azure.core.exceptions import ResourceNotFoundError

from ..ai.port import AIProvider
from ..ai.usage import Usage
from ..blocking import in_thread
from ..errors import AppError, Unprocessable
from ..observability import log_event
from ..storage.blobs import BlobStore
from ..storage.tables import Tables
from .burst import Turn, plan_turn
from .events import IncomingMessage
from .ratelimit import RateState, admit
from .replies import chat_messages, handoff_reason, send_text_body, sendable
from .waha import Waha

if TYPE_CHECKING:
    from .knowledge import Hit, VectorIndex
    from .search_index import AzureSearchIndex

MESSAGES, CONVERSATIONS, DOCUMENTS = "WhatsAppMessages", "WhatsAppConversations", "KnowledgeDocuments"
DUPLICATES = "WhatsAppDuplicates"
WAKES = "WhatsAppWakes"
WAKE_CLAIM_SECONDS = 60  # claims are per minute (see `claim_wake` and `sweep_wake_claims`)
CLOCK_SKEW_S = 0.5  # how far two workers' clocks may differ: each side trusts a claim's hold this much less
RECLAIMED_LOOK_S = 0.1  # how soon a conversation looks again when a claim was made anew while it cleared them
KB_CONTAINER = "knowledge"
RATE_NOTICE = ("You are sending messages faster than I can answer. I will reply to new messages in a "
               "minute.")
MEMORY = 10
MEMORY_CHARS = 2_000  # of each remembered question and answer: a turn may join many long messages
TURN_MESSAGES = 500  # pending messages one turn takes: its reply's row lists their marks, and a row holds 1 MiB
TURN_STATE = "~turn"  # row key, among a chat's messages, of what its turns carry on: memory and the rate state
MAX_TURN_WAIT_S = 15.0  # someone typing on and on is answered after this long all the same
MEDIA_PAGES = 5  # pages of a PDF sent in a chat that are read
MEDIA_TEXT_CHARS = 6000


@dataclass
class Deps:
    tables: Tables
    blobs: BlobStore
    waha: Waha
    provider: AIProvider
    rate_limit: int = 10
    piece_s: float = 30.0  # voice notes are heard as calls are: see `shared.calls.service.transcribe_audio`
    burst_s: float = 0.0  # lines typed within this of each other form one turn (0: every pending message)
    search: "AzureSearchIndex | None" = None  # the knowledge base in Azure AI Search; None: in memory


def conversation_id(session: str, chat_id: str) -> str:
    return "chat-" + hashlib.sha256(f"{session}:{chat_id}".encode()).hexdigest()[:32]


async def record_incoming(tables: Tables, message: IncomingMessage, kind: str) -> bool:
    """Stores an incoming message once; False for a duplicate delivery of the same session + message id."""
    row = {**message.model_dump(), "kind": kind, "direction": "in", "status": "pending",
           "received_at": time.time()}
    return await tables.insert(MESSAGES, message.chat_id, f"{message.session}:{message.message_id}", row,
                               _columns(row))


async def claim_wake(tables: Tables, session: str, chat_id: str, now: float, hold_s: float = 0.0) -> float | None:
    """Whether the webhook that just stored a message of the chat must wake its conversation: it must for one
    message until the conversation next finds nothing pending (`next_turn` clears the claim then), and is given
    the time until which its claim holds the conversation awake (see below); None: it need not.

    A busy conversation reads what is pending before it sleeps again, so waking it once per turn is enough,
    and the rest of a burst costs one insert each instead of an orchestrator episode. The message must be
    stored before the claim is tried: a claim exists only while its conversation has yet to look. Claims are
    per minute, and a claim that stands for minutes while messages wait is a wake-up that went missing:
    `sweep_wake_claims` wakes its conversation (a webhook cut off between claiming and waking is also
    repaired by WAHA's redelivery, which wakes the conversation regardless: see `functions.whatsapp`).

    A claim also holds its conversation awake for `hold_s` (up to `MAX_TURN_WAIT_S`): until then `next_turn`
    neither clears it nor lets the conversation sleep, so a message stored before the time answered (the claim's
    `until`) is read by a look still to come, and the webhook that claimed needs neither to claim nor to wake for
    it (see `functions.whatsapp.waha_webhook`).
    """
    hold_s = min(max(hold_s, 0.0), MAX_TURN_WAIT_S)
    claim = {"at": now, "session": session, "chat_id": chat_id, **({"until": now + hold_s} if hold_s else {})}
    # per WAHA session: a customer who writes to two of the business's numbers has a conversation with each
    claimed = await tables.insert(WAKES, chat_id, f"{int(now // WAKE_CLAIM_SECONDS):012d}:{session}", claim)
    return now + hold_s if claimed else None


class Swept(NamedTuple):
    woken: list[str]  # chats with messages waiting behind a claim that stood for minutes
    cleared: int  # such claims of chats with nothing waiting, deleted


async def sweep_wake_claims(tables: Tables, now: float, wake: Callable[[str, str], Awaitable[None]]) -> Swept:
    """Claims that have stood a minute or more (the last two minutes' are left alone): a turn takes seconds,
    so such a claim tells of a wake-up that went missing (a webhook cut off after claiming, whose delivery
    WAHA did not retry; a claim stored whose insert still answered an error; a conversation that died) or of
    a turn held up (WAHA down). `wake(session, chat_id)` the chats with messages waiting (a wake-up too many
    costs a busy conversation one look), and delete the claims of chats with none. A chat that cannot be woken
    now is tried again at the next sweep; the others are not held up by it."""
    cutoff = f"{int(now // WAKE_CLAIM_SECONDS) - 1:012d}"
    idle: set[tuple[str | None, str]] = set()
    tried: set[tuple[str | None, str]] = set()
    woken: list[str] = []
    cleared = 0
    async for key, rk, claim in tables.query(WAKES, "RowKey lt @cutoff", {"cutoff": cutoff}):
        chat_id = claim.get("chat_id", key)  # claims from before they named their chat: its (escaped) key
        conversation = (claim.get("session"), chat_id)
        if conversation in tried:
            continue
        if conversation not in idle:
            found = await unsettled(tables, chat_id, carried=False, session=claim.get("session"))
            session = claim.get("session") or next((row["session"] for _, row in found.pending), None)
            if (found.pending or found.settling) and session:
                tried.add(conversation)
                try:
                    await wake(session, chat_id)
                except Exception as exc:  # noqa: BLE001 - the host busy or restarting: tried at the next sweep
                    log_event("whatsapp.wake.failed", level=logging.WARNING, chat_id=chat_id, error=str(exc)[:300])
                    continue
                woken.append(chat_id)
                continue
            idle.add(conversation)
        await tables.delete(WAKES, chat_id, rk)
        cleared += 1
    return Swept(woken, cleared)


async def _clear_wake_claims(tables: Tables, chat_id: str, now: float, session: str | None = None) -> float | None:
    """Deletes the conversation's claims (the chat's in `session`; claims that name no session count for every one),
    unless one still holds the conversation awake: then the time it lapses (on this clock, `CLOCK_SKEW_S` after the
    claiming worker's). A claim written since it was read (made again under the same key, after a look running at
    the same time deleted it) is not deleted: it is looked at again soon."""
    claims = [(rk, row, etag) async for rk, row, etag in tables.partition_tagged(WAKES, chat_id)
              if session is None or row.get("session") in (session, None)]
    held = max((row["until"] + CLOCK_SKEW_S for _, row, _ in claims if "until" in row), default=0.0)
    if held > now:
        return held
    for rk, _, etag in claims:
        if not await tables.delete_unchanged(WAKES, chat_id, rk, etag):
            return now + RECLAIMED_LOOK_S
    return None


async def next_turn(tables: Tables, chat_id: str, *, window_s: float, now: float,
                    session: str | None = None) -> float | None:
    """Seconds until the chat's next turn is due (0: now), None when nothing is pending: then the claim of a
    wake-up is cleared first, so that the next message wakes the conversation (see `claim_wake`). With nothing
    pending while a claim holds the conversation awake: the seconds until it lapses, when the conversation looks
    again (messages the claiming webhook stored meanwhile did not wake it). `session`: the conversation's WAHA
    session, whose messages alone it answers (see `unsettled`)."""
    found = await unsettled(tables, chat_id, carried=False, session=session)
    if not found.pending and not found.settling:
        held = await _clear_wake_claims(tables, chat_id, now, session)
        if held is not None:
            return held - now
        found = await unsettled(tables, chat_id, carried=False, session=session)  # came before the claims went
    if found.settling:
        return 0.0
    if not found.pending:
        return None
    turn = _turn(found.pending, now, window_s)
    return 0.0 if turn.ready else max(turn.wake_at - now, 0.0)


def _turn(pending: list[tuple[str, dict]], now: float, window_s: float) -> Turn[tuple[str, dict]]:
    """The turn among the chat's pending messages: lines typed within `window_s` of each other, answered once
    the chat is quiet for `window_s` or the first of them waited `MAX_TURN_WAIT_S` (see `plan_turn`)."""
    if window_s <= 0:
        return Turn(ready=True, messages=list(pending))
    turn = plan_turn(pending, now, window_s=window_s, max_wait_s=max(MAX_TURN_WAIT_S, window_s),
                     at=lambda kv: kv[1]["received_at"])
    order = {rk: n for n, (rk, _) in enumerate(pending)}  # as `unsettled` has them: the time the user sent them
    return Turn(turn.ready, sorted(turn.messages, key=lambda kv: order[kv[0]]), turn.rest, turn.wake_at)


def _columns(row: dict) -> dict:
    """Status and direction as table properties: a turn asks for the pending messages, not the whole chat."""
    return {"Status": row["status"], "Direction": row["direction"]}


async def save_messages(tables: Tables, chat_id: str, rows: dict[str, dict], *, atomic: bool = False) -> bool:
    """Rows of one chat written together: as few requests as Table storage allows, each all or nothing; `atomic`:
    in one or not at all (False)."""
    return await tables.upsert_many(MESSAGES, chat_id, rows, _columns, atomic=atomic)


class Unsettled(NamedTuple):
    """What a turn of a chat finds: its incoming messages not yet answered, oldest first; the replies sent whose
    messages are not all marked yet (see `_send_once`); what the turns before carried on (None: none yet)."""

    pending: list[tuple[str, dict]]
    settling: list[tuple[str, dict]]
    carried: dict | None


def _is_message(row: dict) -> bool:
    """A message received or sent: not what turns carry on, nor a reply composed and not sent (yet)."""
    return row.get("direction") in ("in", "out") and row.get("status") != COMPOSED


async def unsettled(tables: Tables, chat_id: str, *, carried: bool = True, session: str | None = None) -> Unsettled:
    """`carried=False`: without reading what the turns carry on (`carried` is None). `session`: only the messages
    and replies of that WAHA session: a customer who writes to two of the business's numbers is answered by each
    through its own (the chat's memory and rate are shared)."""
    found = [(rk, row) async for _, rk, row in tables.query(
        MESSAGES, "(Status eq 'pending' and Direction eq 'in') or Status eq 'settling'"
        + (" or Status eq 'state'" if carried else ""), partition=chat_id)
        if session is None or row.get("direction") not in ("in", "out") or row.get("session") in (session, None)]
    incoming = sorted(((rk, row) for rk, row in found if row["direction"] == "in"),
                      key=lambda kv: (kv[1].get("timestamp") or 0, kv[1]["received_at"]))
    return Unsettled(incoming, [(rk, row) for rk, row in found if row["direction"] == "out"],
                     next((row for rk, row in found if rk == TURN_STATE), None))


async def record_duplicate(tables: Tables, message: IncomingMessage) -> None:
    await tables.insert(DUPLICATES, message.chat_id, f"{message.message_id}:{time.time_ns()}",
                        {"message_id": message.message_id, "at": time.time()})


async def messages(tables: Tables, *, chat_id: str | None, direction: str | None, since: float | None,
                   limit: int, offset: int) -> tuple[list[dict], int | None]:
    """Stored messages, oldest first; `offset` and the returned next offset page through them."""
    rows = await _sorted_messages(tables, chat_id, direction, since)
    page = rows[offset:offset + limit]
    return page, (offset + limit if offset + limit < len(rows) else None)


async def _sorted_messages(tables: Tables, chat_id: str | None, direction: str | None = None,
                           since: float | None = None) -> list[dict]:
    if chat_id:
        rows = [row async for _, row in tables.partition(MESSAGES, chat_id)]
    else:
        rows = [row async for _, _, row in tables.all(MESSAGES)]
    rows = [r for r in rows if _is_message(r) and (not direction or r["direction"] == direction)
            and (since is None or r["received_at"] >= since)]
    rows.sort(key=lambda r: (r["received_at"], r.get("message_id", "")))
    return rows


async def conversations(tables: Tables) -> list[dict]:
    found: dict[str, dict] = {}
    async for chat_id, _, row in tables.all(MESSAGES):
        if not _is_message(row):
            continue
        entry = found.setdefault(row.get("chat_id") or chat_id, {"chat_id": row.get("chat_id") or chat_id,
                                                                 "messages": 0, "last_at": 0.0, "paused": False})
        entry["messages"] += 1
        entry["last_at"] = max(entry["last_at"], row["received_at"])
    async for _, chat_id, row in tables.all(CONVERSATIONS):  # a chat paused before it wrote is listed too
        chat_id = row.get("chat_id") or chat_id
        entry = found.setdefault(chat_id, {"chat_id": chat_id, "messages": 0, "last_at": 0.0})
        entry["paused"] = bool(row.get("paused"))
    return sorted(found.values(), key=lambda c: c["last_at"], reverse=True)


async def conversation(tables: Tables, chat_id: str) -> dict | None:
    rows = await _sorted_messages(tables, chat_id)  # the newest 50, however long the chat
    state = await tables.get(CONVERSATIONS, "chat", chat_id)
    if not rows and state is None:
        return None
    carried = await tables.get(MESSAGES, chat_id, TURN_STATE) or state or {}  # older chats: the conversation row
    return {"chat_id": chat_id, "paused": bool((state or {}).get("paused")), "messages": rows[-50:],
            "memory": carried.get("memory", [])}


def _percentile(values: list[float], q: float) -> float | None:
    """The median as usual (the mean of the middle two of an even count); other quantiles by nearest rank."""
    if not values:
        return None
    if q == 0.5:
        return statistics.median(values)
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def stats(tables: Tables) -> dict:
    rows = [row async for _, _, row in tables.all(MESSAGES) if _is_message(row)]
    incoming = [r for r in rows if r["direction"] == "in"]
    replies = [r for r in rows if r["direction"] == "out" and r.get("kind") == "reply"]
    usage = [u for r in replies for u in r.get("usage", [])]
    latencies = [r["latency_s"] for r in replies if "latency_s" in r]
    limited = {r["chat_id"] for r in incoming if r["status"] == "rate_limited"}
    duplicates = len([1 async for _ in tables.all(DUPLICATES)])
    return {"messages_in": len(incoming), "messages_out": len(rows) - len(incoming), "replies": len(replies),
            "reply_latency_s": {"median": _percentile(latencies, 0.5), "p95": _percentile(latencies, 0.95)},
            "tokens": {"input": sum(u.get("input_tokens", 0) for u in usage),
                       "output": sum(u.get("output_tokens", 0) for u in usage)},
            "cost_usd": round(sum(u.get("cost_usd", 0.0) for u in usage), 6),
            "rate_limited_users": len(limited), "duplicates_dropped": duplicates}


async def set_paused(tables: Tables, chat_id: str, paused: bool) -> dict:
    """Human takeover, in the conversation row, which turns do not write: a turn running meanwhile cannot undo it."""
    return await tables.change(CONVERSATIONS, "chat", chat_id,
                               lambda row: {**row, "chat_id": chat_id, "paused": paused}, create=True)


class KnowledgeBase:
    """Chunks and vectors as one blob per document, listed in a table; searched in memory with numpy.

    Vectors are stored as float32 bytes (base64), a fifth of their JSON size and nothing to parse.
    """

    _cache: dict[str, tuple[dict[str, float], "VectorIndex"]] = {}
    _locks: dict[int, asyncio.Lock] = {}

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    async def add(self, doc_id: str, name: str, pages: list[tuple[int, str]], version: float | None = None,
                  still_wanted: Callable[[], Awaitable[bool]] | None = None) -> tuple[int, list[Usage]]:
        """Chunks, embeds and stores the document as uploaded at `version` (the upload's time): it goes live unless
        a later upload or a delete of the same id came first (uploads may finish in another order than they came),
        or `still_wanted` says no (the upload was canceled). 422 when the document holds no text."""
        from .knowledge import chunk_text, packed_vectors  # numpy loads with the first knowledge-base use

        version = time.time() if version is None else version
        chunks = chunk_text(pages)
        if not chunks:
            raise Unprocessable("The document holds no text to answer from (a scan? the knowledge base reads no "
                                "images): nothing was changed.", code="document_has_no_text")
        vectors, usage = [], []
        for start in range(0, len(chunks), 64):  # embeddings in batches
            result = await in_thread(self.deps.provider.embed, [c.text for c in chunks[start:start + 64]])
            vectors += result.value
            usage += result.usage
        if still_wanted is not None and not await still_wanted():  # before anything is written: a run again of
            # an upload that went live and was canceled after must not touch its live chunks
            raise Unprocessable("The upload was canceled: nothing was changed.", code="upload_canceled")
        body = json.dumps({"chunks": [c.model_dump() for c in chunks], **packed_vectors(vectors)}).encode()
        blob = await self.deps.blobs.put(KB_CONTAINER, f"{doc_id}.{round(version * 1e6)}.json", body,
                                         "application/json")
        row = {"id": doc_id, "name": name, "chunks": len(chunks), "updated": time.time(), "version": version,
               "blob": blob}
        replaced = await self._commit(doc_id, row)
        if replaced is False:  # a later upload or a delete won: this version never goes live
            await self.deps.blobs.delete(blob)
            return len(chunks), usage
        if self.deps.search is not None:
            await self.deps.search.replace(doc_id, chunks, vectors)
        if replaced is not None and replaced.get("blob") != blob:  # the same blob: this upload's earlier attempt
            await self._drop_blob(replaced)
        return len(chunks), usage

    async def _commit(self, doc_id: str, row: dict) -> dict | bool | None:
        """Writes the document's row unless one of a later version (or a later delete) stands; the row it replaced
        (None: there was none), or False when this version lost. The same version again (an upload's activity run
        once more after a crash) writes over its own row."""
        while True:
            held = await self.deps.tables.get_tagged(DOCUMENTS, "kb", doc_id)
            if held is None:
                if await self.deps.tables.insert(DOCUMENTS, "kb", doc_id, row):
                    return None
                continue
            current, etag = held
            if float(current.get("version", current.get("updated", 0))) > row["version"]:
                return False
            if await self.deps.tables.replace_unchanged(DOCUMENTS, "kb", doc_id, row, None, etag):
                return current

    async def _drop_blob(self, row: dict) -> None:
        """The chunks of a version no longer live."""
        if not row.get("deleted"):
            await self.deps.blobs.delete(self._chunks_of(row))

    async def remove(self, doc_id: str) -> bool:
        """False when there was nothing of it. The delete stands against uploads of the id that came before it and
        finish later (a mark with the delete's time takes the row's place); in Azure AI Search, chunks a failed
        upload left are deleted too."""
        exists = await self.deps.tables.get(DOCUMENTS, "kb", doc_id) is not None  # no mark for ids never uploaded
        replaced = await self._commit(doc_id, {"id": doc_id, "deleted": True, "version": time.time(),
                                               "updated": time.time()}) if exists else None
        searched = await self.deps.search.remove(doc_id) if self.deps.search is not None else 0
        if not isinstance(replaced, dict) or replaced.get("deleted"):
            return searched > 0
        await self._drop_blob(replaced)
        return True

    async def search(self, vector: Sequence[float], k: int = 5) -> list["Hit"]:
        """The `k` passages nearest the question: Azure AI Search when configured, else the worker's index. A base
        embedded by another model than the question has nothing near it: no passages (the bot says it does not
        know and asks for a person) and a warning to upload the documents again, not a failed turn."""
        if self.deps.search is not None:
            width = await self.deps.search.width()
            hits = await self.deps.search.search(vector, k) if width == len(vector) else []
        else:
            index = await self.index()
            width = index.dim
            hits = index.search(vector, k=k) if width == len(vector) else []
        if width is not None and width != len(vector):
            log_event("kb.search.other_model", logging.WARNING, index_dimensions=width, question_dimensions=len(vector),
                      action="The documents were embedded by another model: upload them again.")
        return hits

    async def documents(self) -> list[dict]:
        """The live documents: id, name, chunks, updated (deleted ones leave a mark, not listed)."""
        return [{k: row[k] for k in ("id", "name", "chunks", "updated")} for row in (await self._live()).values()]

    async def _live(self) -> dict[str, dict]:
        return {row["id"]: row async for _, row in self.deps.tables.partition(DOCUMENTS, "kb")
                if not row.get("deleted")}

    @staticmethod
    def _chunks_of(row: dict) -> str:
        """The blob of a version's chunks (rows stored before versions name it by id alone)."""
        return row.get("blob") or f"{KB_CONTAINER}/{row['id']}.json"

    async def index(self) -> "VectorIndex":
        """The worker's index, brought up to date with the document list: only documents added or changed since
        are read, deleted ones dropped; a worker keeps the vectors in memory."""
        from .knowledge import VectorIndex

        loop = id(asyncio.get_running_loop())
        lock = self._locks.setdefault(loop, asyncio.Lock())  # one refresh at a time: not one index per turn
        async with lock:
            live = await self._live()
            listed = {doc_id: row["updated"] for doc_id, row in live.items()}
            known, index = self._cache.get("kb") or ({}, VectorIndex())
            if known == listed:
                return index
            known = dict(known)
            if not await self._refresh(index, known, listed, live):  # another embedding model: afresh, newest first
                known, index = {}, VectorIndex()
                await self._refresh(index, known, listed, live)
            self._cache["kb"] = (known, index)
            return index

    async def _refresh(self, index: "VectorIndex", known: dict[str, float], listed: dict[str, float],
                       live: dict[str, dict]) -> bool:
        """Brings `index` and `known` to `listed`, newest documents first; False when a document newer than all
        indexed ones has vectors of another width (the embedding model changed), so the index must be rebuilt.
        Older documents of another width are skipped: every question would fail on them."""
        from .knowledge import Chunk, unpacked_vectors

        for doc_id in [d for d in known if d not in listed]:
            index.remove(doc_id)
            del known[doc_id]
        if not known and index.dim:  # every document gone: the next one sets the width, whatever it is
            return False
        newest_known = max(known.values(), default=None)
        for doc_id, updated in sorted(listed.items(), key=lambda item: -item[1]):
            if known.get(doc_id) == updated:
                continue
            try:
                data = json.loads(await self.deps.blobs.get(self._chunks_of(live[doc_id])))
            except ResourceNotFoundError:  # replaced or deleted since the listing: the next refresh reads it
                continue
            vectors = unpacked_vectors(data)
            if index.dim and vectors.shape[0] and vectors.shape[1] != index.dim:
                if newest_known is not None and updated > newest_known:
                    return False
                index.remove(doc_id)
                log_event("kb.document.skipped", logging.WARNING, doc_id=doc_id,
                          reason=f"its vectors have {vectors.shape[1]} dimensions, the newer documents "
                                 f"{index.dim}: upload it again after changing the embedding model")
            else:
                index.add(doc_id, [Chunk(**c) for c in data["chunks"]], vectors)
            known[doc_id] = updated
        return True


async def answer_turn(chat_id: str, deps: Deps, *, only_if_due: bool = False,
                      session: str | None = None) -> dict[str, Any]:
    """Answers the chat's turn (its pending messages up to the first pause of `deps.burst_s`) in one reply; safe
    to run twice (the reply is keyed). `only_if_due`: unless the turn is due yet (the conversation found nothing
    pending before: lines that came since wait for their turn, or the rest of their burst would be a second one)."""
    tables = deps.tables
    found = await unsettled(tables, chat_id, session=session)
    if found.settling:  # a turn cut off while marking what its reply answered: finish that, send nothing
        return await _finish_settling(tables, chat_id, found.pending, found.settling)
    turn = _turn(found.pending, time.time(), deps.burst_s)
    if only_if_due and not turn.ready:
        return {"replied": False, "reason": "not_due", "usage": []}
    # A message that came since the turn was found due joins it: the conversation decided to answer now.
    pending = (turn.messages if turn.ready else found.pending)[:TURN_MESSAGES]  # a flood takes several turns
    if not pending:
        return {"replied": False, "reason": "nothing_pending", "usage": []}
    received = [{"message_id": row["message_id"], "kind": row.get("kind"), "text": row.get("text"),
                 "from": row.get("sender"), "received_at": row["received_at"]} for _, row in pending]
    conversation = await tables.get(CONVERSATIONS, "chat", chat_id) or {}

    async def hold() -> dict[str, Any]:
        await save_messages(tables, chat_id, {rk: {**row, "status": "held"} for rk, row in pending})
        return {"replied": False, "reason": "paused", "messages": received, "usage": []}

    if conversation.get("paused"):
        return await hold()
    carried = found.carried or conversation  # chats answered before the turn state row kept it in the conversation
    memory: list[dict] = carried.get("memory", [])
    state = RateState.model_validate(carried.get("rate") or {})
    # The turn takes the lines up to the first that the limit judges otherwise than the one before: a reply for lines
    # let through, or a notice for lines over the limit, each sent once as any reply is; the rest is the next turn's.
    # (Lines are judged by when they were sent, in that order: the state a turn stores holds all it let through.)
    decisions = []
    for _, row in pending:
        decisions.append(admit(state, _sent_at(row), limit=deps.rate_limit))
        state = decisions[-1].state
    run = next((n for n, d in enumerate(decisions) if d.allowed != decisions[0].allowed), len(decisions))
    if run < len(pending):
        pending, decisions = pending[:run], decisions[:run]
        state = decisions[-1].state
        kept = {row["message_id"] for _, row in pending}
        received = [m for m in received if m["message_id"] in kept]
    allowed = [(rk, row) for (rk, row), d in zip(pending, decisions) if d.allowed]
    limited = {rk: {**row, "status": "rate_limited"} for (rk, row), d in zip(pending, decisions) if not d.allowed}
    notify = any(d.notify for d in decisions)
    last = IncomingMessage.model_validate({k: v for k, v in pending[-1][1].items()
                                           if k in IncomingMessage.model_fields})
    usage: list[Usage] = []
    answer = handoff = None

    def carry(memory: list[dict]) -> dict[str, dict]:
        """The rows a turn writes with its reply, besides the marks of its messages: what the next turn needs."""
        kept = [{**m, "content": m["content"][:MEMORY_CHARS]} for m in memory[-MEMORY:]]
        return {TURN_STATE: {"direction": "state", "status": "state", "chat_id": chat_id, "memory": kept,
                             "rate": state.model_dump()}}

    async def refused(exc: AppError, answering: list[tuple[str, dict]]) -> dict[str, Any]:
        """WAHA (or the model) refused the reply for good (a 4xx, not a moment of unavailability): trying again
        would be refused again, so the messages are marked `failed` and the chat is handed to a person."""
        log_event("whatsapp.reply.refused", level=logging.ERROR, chat_id=chat_id, code=exc.code)
        failed_rows = {rk: {**row, "status": "failed", "error": exc.code} for rk, row in answering}
        await save_messages(tables, chat_id, {**limited, **failed_rows, **carry(memory)})
        return {"replied": False, "reason": exc.code, "messages": received, "handoff": "reply_refused",
                "answer": None, "usage": [u.model_dump() for u in usage]}

    if allowed:
        for rk, row in allowed:
            if row.get("kind") in ("audio", "document", "image") and not row.get("transcript"):
                row["transcript"], used = await _read_media_or_say_why(deps, row)
                usage += used
                await save_messages(tables, chat_id, {rk: row})
        question = "\n".join(row.get("transcript") or row["text"] for _, row in allowed
                              if row.get("transcript") or row.get("text"))

        def remembered(answer: str) -> list[dict]:
            return memory + [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]

        async def compose() -> tuple[str, dict]:
            nonlocal usage
            embedded = await in_thread(deps.provider.embed, [question])
            usage += embedded.usage
            hits = await KnowledgeBase(deps).search(embedded.value[0], k=5)
            reply = await in_thread(deps.provider.chat, chat_messages(question, hits, memory))
            usage += reply.usage
            first_received = min(row["received_at"] for _, row in allowed)
            return sendable(reply.value), {"latency_s": round(time.time() - first_received, 3),
                                           "answers": len(allowed), "usage": [u.model_dump() for u in usage]}

        answered = {rk: {**row, "status": "answered"} for rk, row in allowed}
        try:
            answer = await _send_once(deps, last, [rk for rk, _ in allowed], compose,
                                      [r["message_id"] for _, r in allowed],
                                      settled=lambda text: {**answered, **carry(remembered(text))})
        except Paused:  # the lines are held, and counted towards the limit: a resume does not let more through
            await save_messages(tables, chat_id, carry(memory))
            return {**await hold(), "usage": [u.model_dump() for u in usage]}
        except AppError as exc:
            if exc.transient:
                raise
            return await refused(exc, allowed)
        handoff = handoff_reason(question, answer)
    elif notify:
        try:
            await _send_once(deps, last, [f"notice:{rk}" for rk, _ in pending[-1:]], _rate_notice, [], quote=False,
                             settled=lambda _: {**limited, **carry(memory)})
        except Paused:
            return await hold()
        except AppError as exc:
            if exc.transient:
                raise
            return await refused(exc, [])
    else:
        await save_messages(tables, chat_id, {**limited, **carry(memory)})
    return {"replied": bool(allowed), "answer": answer, "answered": len(allowed),
            "rate_limited": len(pending) - len(allowed), "notice": notify, "messages": received,
            "handoff": handoff, "usage": [u.model_dump() for u in usage]}


async def _read_media_or_say_why(deps: Deps, row: dict) -> tuple[str, list[Usage]]:
    """`_read_media`; media that can never be read (gone from WAHA, damaged, refused by the model) is answered
    as such, with the caption, instead of failing the turn again and again. What may pass (WAHA or the model
    unreachable) still fails the turn, which is retried."""
    try:
        return await _read_media(deps, row)
    except AppError as exc:
        if exc.transient:
            raise
        log_event("whatsapp.media.unreadable", chat_id=row["chat_id"], message_id=row["message_id"], code=exc.code)
        name = row.get("media_filename") or row["kind"]
        return f"{row.get('text', '')}\n[{name}: could not be read ({exc.code})]".strip(), []


async def _read_media(deps: Deps, row: dict) -> tuple[str, list[Usage]]:
    """Media of a message, downloaded from WAHA at once and kept in Blob storage, turned into text: voice
    notes transcribed, PDFs and images read like the pages of document vision. The caption comes first."""
    from ..documents.service import page_input, read_page

    data = await deps.waha.download(row["media_url"])
    extension = {"audio": "ogg", "document": "pdf", "image": "img"}[row["kind"]]
    await deps.blobs.put("whatsapp-media", f"{row['chat_id']}/{row['message_id']}.{extension}", data,
                         (row.get("media_mimetype") or "application/octet-stream").split(";")[0])
    if row["kind"] == "audio":
        from ..calls.service import transcribe_audio

        result = await in_thread(transcribe_audio, deps.provider, data, filename="voice-note.ogg", language=None,
                                 piece_s=deps.piece_s)
        return " ".join(s.text for s in result.value).strip() or row.get("text", ""), result.usage
    if row["kind"] == "image":
        pages = [("", data, row.get("media_mimetype") or "image/jpeg", None)]
    else:
        from ..files import pdf_page_count

        pages = [("", None, None, index) for index in range(min(pdf_page_count(data), MEDIA_PAGES))]
    texts, usage = [], []
    for number, (_, image, mimetype, index) in enumerate(pages, start=1):
        text, images = page_input(image=image, content_type=mimetype, pdf=data if index is not None else None,
                                  page_index=index)
        reading = await in_thread(read_page, deps.provider, text, images, number, len(pages))
        texts.append(reading.value.text)
        usage += reading.usage
    name = row.get("media_filename") or row["kind"]
    content = "\n".join(texts).strip()[:MEDIA_TEXT_CHARS]
    return f"{row.get('text', '')}\n[{name}]\n{content}".strip(), usage


COMPOSED = "composed"  # the status of a reply WAHA has not taken yet: its text, kept for the retry
_COMPOSED_FIELDS = ("latency_s", "answers", "usage")  # what `compose` adds to the reply's row


def _sent_at(row: dict) -> float:
    return row.get("timestamp") or row["received_at"]


def reply_key(keys: list[str]) -> str:
    """The row key of the reply to the messages `keys` (row keys), the same in every run of their turn."""
    return "reply:" + hashlib.sha256("|".join(keys).encode()).hexdigest()[:24]


async def _rate_notice() -> tuple[str, dict]:
    return RATE_NOTICE, {}


async def _send_once(deps: Deps, question: IncomingMessage, keys: list[str],
                     compose: Callable[[], Awaitable[tuple[str, dict]]], seen_ids: list[str], quote: bool = True,
                     settled: Callable[[str], dict[str, dict]] = lambda _: {}) -> str:
    """The text sent for the messages `keys`: `compose()` (the text and fields for its row) sent through WAHA, unless
    a run before sent it already (an activity may run twice after a crash); then that text, and nothing composed.

    What was sent is stored with the rows `settled(text)` (the marks of the messages it answers, what the turn
    carries on) in one transaction: a turn run again finds either all of them or none. (Between WAHA taking the text
    and this write, a crash still sends it twice: WAHA takes no idempotency key.) Marks too many for one transaction
    are written in several, the reply `settling` meanwhile with the list of them, so that a turn cut off in between
    finishes them."""
    tables, chat_id = deps.tables, question.chat_id
    reply_id = reply_key(keys)
    earlier = await tables.get(MESSAGES, chat_id, reply_id)
    if earlier and earlier.get("status") in ("sent", "settling"):  # its rows again: rows older code left pending
        await _store(tables, chat_id, reply_id, _as_sent(earlier), settled(earlier["text"]))
        return earlier["text"]
    if earlier and earlier.get("status") == COMPOSED:  # WAHA did not take it before: no second model call
        text, extra = earlier["text"], {k: v for k, v in earlier.items() if k in _COMPOSED_FIELDS}
    else:
        text, extra = await compose()
    if (await tables.get(CONVERSATIONS, "chat", chat_id) or {}).get("paused"):  # while the model was composing
        raise Paused()
    if seen_ids:
        await _courtesy(deps.waha.send_seen(question.session, chat_id, seen_ids), chat_id, "seen")
    await _courtesy(deps.waha.typing(question.session, chat_id, True), chat_id, "typing")
    try:
        reply = {**await _send(deps, question, reply_id, text, quote=quote), **extra}
    except AppError as exc:
        if exc.transient:  # WAHA down or not WORKING: the retry sends this text (its model calls counted once)
            await save_messages(tables, chat_id, {reply_id: {**_row(question, reply_id, text, quote), **extra,
                                                             "status": COMPOSED}})
        raise
    await _store(tables, chat_id, reply_id, reply, settled(text))
    await _courtesy(deps.waha.typing(question.session, chat_id, False), chat_id, "typing")
    return text


class Paused(Exception):
    """The operator paused the chat while its reply was being composed: nothing is sent."""


async def _courtesy(call: Awaitable[None], chat_id: str, what: str) -> None:
    """Seen and typing are courtesies: an engine that refuses them (some do not support typing) does not hold up
    the reply; WAHA unreachable is noticed by the send that follows."""
    try:
        await call
    except AppError as exc:
        log_event("whatsapp.courtesy.failed", level=logging.WARNING, chat_id=chat_id, call=what, code=exc.code)


async def _send(deps: Deps, question: IncomingMessage, row_key: str, text: str, *, quote: bool) -> dict:
    """`text` sent to the chat (quoting `question` when `quote`); its row, to be stored."""
    await deps.waha.send_text(send_text_body(question, text, quote=quote))
    return _row(question, row_key, text, quote)


def _row(question: IncomingMessage, row_key: str, text: str, quote: bool) -> dict:
    return {"direction": "out", "status": "sent", "text": text, "chat_id": question.chat_id,
            "session": question.session, "message_id": row_key, "timestamp": time.time(), "received_at": time.time(),
            "kind": "reply" if quote else "notice"}


async def _store(tables: Tables, chat_id: str, reply_id: str, reply: dict, rows: dict[str, dict]) -> None:
    """The reply's row and `rows` in one transaction; when they do not fit one, the reply first, `settling` with
    the marks still to write, then the marks, then the reply `sent`: a turn cut off in between finishes them."""
    if await save_messages(tables, chat_id, {reply_id: reply, **rows}, atomic=True):
        return
    marks = {rk: row for rk, row in rows.items() if row["direction"] == "in"}
    settling = {reply_id: {**reply, "status": "settling", "settles": {rk: row["status"] for rk, row in marks.items()}}}
    carried = {rk: row for rk, row in rows.items() if rk not in marks}
    if not await save_messages(tables, chat_id, {**settling, **carried}, atomic=True):
        await save_messages(tables, chat_id, settling)  # a reply too long to go with them: the carried rows
        await save_messages(tables, chat_id, carried)  # are lost if a crash falls between these two writes
    await save_messages(tables, chat_id, marks)
    await save_messages(tables, chat_id, {reply_id: reply})


def _as_sent(reply: dict) -> dict:
    return {**{k: v for k, v in reply.items() if k != "settles"}, "status": "sent"}


async def _finish_settling(tables: Tables, chat_id: str, pending: list[tuple[str, dict]],
                           settling: list[tuple[str, dict]]) -> dict[str, Any]:
    """Marks the messages of replies cut off while `settling` as their turn meant to; the rest wait for the next."""
    waiting = dict(pending)
    for rk, reply in settling:
        marks = reply.get("settles", {})
        await save_messages(tables, chat_id, {m: {**waiting[m], "status": status} for m, status in marks.items()
                                              if m in waiting})
        await save_messages(tables, chat_id, {rk: _as_sent(reply)})
    return {"replied": False, "reason": "settled", "usage": []}
