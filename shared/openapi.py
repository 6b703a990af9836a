"""The OpenAPI description of every HTTP endpoint, with schemas taken from the pydantic models."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .offers.models import Offer
from .version import VERSION

ERROR_CODES = {"400": "Malformed request", "401": "Missing or wrong function key", "404": "Not found",
               "409": "Conflict (idempotency key reused with another body, or wrong job state)",
               "413": "Body too large", "415": "Unsupported media type", "422": "Valid JSON, invalid content"}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*codes: str) -> dict:
    return {code: {"description": ERROR_CODES[code], "content": {"application/json": {"schema": _ref("Error")}}}
            for code in codes}


def _job_responses(schema: str = "Job", *extra_errors: str) -> dict:
    body = {"application/json": {"schema": _ref(schema)}}
    return {"200": {"description": "The job, finished (with ?wait=N when it finished in time)", "content": body},
            "202": {"description": "The job, still running; poll the Location header",
                    "headers": {"Location": {"schema": {"type": "string"}}}, "content": body},
            **_errors("400", "401", *extra_errors)}


WAIT = {"name": "wait", "in": "query", "required": False, "schema": {"type": "number", "minimum": 0},
        "description": "Seconds to wait for the job to finish before answering (capped by JOB_WAIT_MAX_SECONDS)"}
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"},
               "description": "Same key and body give the same job; the same key with another body is a 409"}
JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
CALL_ID = {"name": "call_id", "in": "path", "required": True, "schema": {"type": "string"}}
CHAT_ID = {"name": "chat_id", "in": "path", "required": True, "schema": {"type": "string"}}


class JobError(BaseModel):
    code: str
    message: str


class Progress(BaseModel):
    current: int
    total: int
    message: str


class Job(BaseModel):
    job_id: str
    type: str
    status: str
    created_at: str | None
    updated_at: str | None
    progress: Progress
    result: Any = None
    error: JobError | None = None
    usage: dict[str, Any] = {}
    callback: dict[str, Any] | None = None


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in (Offer, Job):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    schemas["OfferResult"] = {"allOf": [_ref("Job"), {"type": "object", "properties": {
        "data": {"anyOf": [_ref("Offer"), {"type": "null"}], "description": "The offer (same as result)"}}}]}
    schemas["Error"] = {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string", "description": "stable snake_case code"}, "message": {"type": "string"},
            "details": {"type": "array", "items": {}}}}}}
    schemas["IngestJson"] = {"type": "object", "properties": {
        "text": {"type": "string"}, "source": {"enum": ["email", "whatsapp", "document", "text", "other"]},
        "subject": {"type": "string"}, "metadata": {"type": "object"},
        "callback_url": {"type": "string", "format": "uri",
                         "description": "https URL that receives the finished job, signed with Standard Webhooks"},
        "file": _ref("Base64File"), "files": {"type": "array", "items": _ref("Base64File")}}}
    schemas["Base64File"] = {"type": "object", "required": ["content_base64"], "properties": {
        "name": {"type": "string"}, "content_type": {"type": "string"}, "content_base64": {"type": "string"}}}
    schemas["DocumentRequest"] = {"type": "object", "properties": {
        "job_id": {"type": "string", "description": "your id; the same id is the same document (idempotent)"},
        "user_id": {"type": "string"}, "images_base64": {"type": "array", "items": {"type": "string"}},
        "file_base64": {"type": "string", "description": "a PDF instead of page images"},
        "num_pages": {"type": "integer"}, "file_type": {"type": "string"},
        "fallback_text": {"type": "string", "description": "text used for pages that cannot be read"},
        "callback_url": {"type": "string", "format": "uri"}}}
    task_fields = {"state": {"enum": ["PENDING", "PROGRESS", "SUCCESS", "PARTIAL", "FAILURE"]},
                   "current": {"type": "integer"}, "total": {"type": "integer"},
                   "progress": {"type": "integer", "minimum": 0, "maximum": 100}, "result": {"type": "object"},
                   "failed_pages": {"type": "array", "items": {"type": "integer"}}}
    schemas["TaskStatus"] = {"type": "object", "properties": {
        "task_id": {"type": "string"}, "status": {"type": "string", "description": "Processing page 2 of 5"},
        **task_fields}}
    schemas["DocumentQueued"] = {"type": "object", "properties": {
        "status": {"type": "string"}, "message": {"type": "string"}, "job_id": {"type": "string"},
        "task_id": {"type": "string"}, "user_id": {"type": "string"}, "num_pages": {"type": "integer"},
        "file_type": {"type": "string"}, "status_endpoint": {"type": "string"},
        "task_endpoint": {"type": "string"}, **task_fields}}
    schemas["Health"] = {"type": "object", "properties": {
        "status": {"enum": ["ok", "degraded"]}, "version": {"type": "string"}, "ai_provider": {"type": "string"},
        "storage": {"type": "object"}}}
    schemas["CallbackEvent"] = {"type": "object", "description": "Body POSTed to callback_url when a job ends",
                                "properties": {"type": {"enum": ["offer.parsed", "offer.failed",
                                                                          "document.processed"]},
                                               "job_id": {"type": "string"}, "status": {"type": "string"},
                                               "data": {}, "error": {}, "usage": {"type": "object"},
                                               "metadata": {"type": "object"}}}
    return schemas


def to_openapi_30(node: Any) -> Any:
    """Pydantic writes JSON Schema 2020-12 (`anyOf: [X, null]`); OpenAPI 3.0 says `nullable: true`.

    3.0 is what the bundled Swagger UI (4.x) renders.
    """
    if isinstance(node, list):
        return [to_openapi_30(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: to_openapi_30(v) for k, v in node.items() if k != "const"}
    options = node.get("anyOf")
    if isinstance(options, list) and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        node.pop("anyOf")
        merged = rest[0] if len(rest) == 1 else {"anyOf": rest}
        if "$ref" in merged:
            merged = {"allOf": [merged]}
        node = {**merged, **node, "nullable": True}
    if isinstance(node.get("type"), list):
        types = [t for t in node["type"] if t != "null"]
        node["type"] = types[0]
        node["nullable"] = True
    return node


def build_spec() -> dict[str, Any]:
    ingest_bodies = {
        "application/json": {"schema": _ref("IngestJson")},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "file": {"type": "string", "format": "binary"}, "text": {"type": "string"},
            "source": {"type": "string"}, "metadata": {"type": "string", "description": "JSON object"},
            "callback_url": {"type": "string"}}}},
        **{t: {"schema": {"type": "string", "format": "binary"}} for t in (
            "message/rfc822", "application/pdf",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            "image/png", "image/jpeg", "image/webp")},
        "text/plain": {"schema": {"type": "string"}}}
    paths = {
        "/api/ingest": {"post": {
            "summary": "Submit an offer (e-mail, chat text, PDF, DOCX or image); answers at once with a job",
            "operationId": "ingestOffer", "tags": ["offers"], "parameters": [IDEMPOTENCY, WAIT],
            "requestBody": {"required": True, "content": ingest_bodies},
            "responses": _job_responses("OfferResult", "409", "413", "415", "422"),
            "callbacks": {"jobFinished": {"{$request.body#/callback_url}": {"post": {
                "requestBody": {"content": {"application/json": {"schema": _ref("CallbackEvent")}}},
                "responses": {"200": {"description": "Accepted"}}}}}}}},
        "/api/result/{job_id}": {"get": {
            "summary": "The offer job: status, and the structured offer when done", "operationId": "getResult",
            "tags": ["offers"], "parameters": [JOB_ID, WAIT], "responses": _job_responses("OfferResult", "404")}},
        "/api/process-document": {"post": {
            "summary": "Submit page images or a PDF; pages are read in parallel, progress per page",
            "operationId": "processDocument", "tags": ["documents"], "parameters": [IDEMPOTENCY, WAIT],
            "requestBody": {"required": True, "content": {
                "application/json": {"schema": _ref("DocumentRequest")},
                "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {"schema": {"type": "object", "properties": {
                    "file": {"type": "string", "format": "binary"}, "job_id": {"type": "string"},
                    "user_id": {"type": "string"}, "fallback_text": {"type": "string"},
                    "callback_url": {"type": "string"}}}}}},
            "responses": {"202": {"description": "Queued", "content": {"application/json": {
                "schema": _ref("DocumentQueued")}}},
                "200": {"description": "Done within ?wait", "content": {"application/json": {
                    "schema": _ref("DocumentQueued")}}},
                **_errors("400", "401", "409", "413", "415", "422")}}},
        "/api/task-status/{task_id}": {"get": {
            "summary": "Progress and result of a document task", "operationId": "taskStatus", "tags": ["documents"],
            "parameters": [{"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}, WAIT],
            "responses": {"200": {"description": "Task status", "content": {"application/json": {
                "schema": _ref("TaskStatus")}}}, **_errors("400", "401", "404")}}},
        "/api/job-status/{job_id}": {"get": {
            "summary": "The task of the caller's job id", "operationId": "jobStatus", "tags": ["documents"],
            "parameters": [JOB_ID, WAIT],
            "responses": {"200": {"description": "Task status", "content": {"application/json": {
                "schema": _ref("TaskStatus")}}}, **_errors("400", "401", "404")}}},
        "/api/webhook": {"post": {
            "summary": "WAHA webhook: every WhatsApp event; authenticated by X-Webhook-Hmac (HMAC-SHA512 of the body)",
            "operationId": "wahaWebhook", "tags": ["whatsapp"], "security": [],
            "parameters": [{"name": "X-Webhook-Hmac", "in": "header", "required": True, "schema": {"type": "string"}},
                           {"name": "X-Webhook-Hmac-Algorithm", "in": "header", "schema": {"enum": ["sha512"]}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {"200": {"description": "accepted, duplicate or ignored (with the reason)",
                                  "content": {"application/json": {"schema": {"type": "object", "properties": {
                                      "status": {"enum": ["accepted", "duplicate", "ignored"]},
                                      "reason": {"type": "string"}}}}}},
                          **_errors("400", "401", "422")}}},
        "/api/conversations/{chat_id}/pause": {"post": {
            "summary": "Human takeover: the bot stops replying in this chat", "operationId": "pauseConversation",
            "tags": ["whatsapp"], "parameters": [CHAT_ID],
            "responses": {"200": {"description": "Paused"}, **_errors("401")}}},
        "/api/conversations/{chat_id}/resume": {"post": {
            "summary": "The bot replies again in this chat", "operationId": "resumeConversation",
            "tags": ["whatsapp"], "parameters": [CHAT_ID],
            "responses": {"200": {"description": "Resumed"}, **_errors("401")}}},
        "/api/messages": {"get": {
            "summary": "Stored WhatsApp messages, oldest first", "operationId": "listMessages", "tags": ["whatsapp"],
            "parameters": [{"name": n, "in": "query", "schema": {"type": t}} for n, t in (
                ("chat_id", "string"), ("direction", "string"), ("since", "number"), ("limit", "integer"),
                ("continuation", "string"))],
            "responses": {"200": {"description": "A page of messages"}, **_errors("400", "401")}}},
        "/api/conversations": {"get": {
            "summary": "Chats, most recent first", "operationId": "listConversations", "tags": ["whatsapp"],
            "responses": {"200": {"description": "Conversations"}, **_errors("401")}}},
        "/api/conversations/{chat_id}": {"get": {
            "summary": "One chat: pause state, recent messages, memory", "operationId": "getConversation",
            "tags": ["whatsapp"], "parameters": [CHAT_ID],
            "responses": {"200": {"description": "The conversation"}, **_errors("401", "404")}}},
        "/api/stats": {"get": {
            "summary": "Messages in and out, replies, reply latency, tokens and cost, rate-limited users, duplicates",
            "operationId": "whatsappStats", "tags": ["whatsapp"],
            "responses": {"200": {"description": "Counters"}, **_errors("401")}}},
        "/api/kb/documents": {
            "post": {"summary": "Add or replace a knowledge-base document (PDF, DOCX, text, Markdown, HTML)",
                     "operationId": "addKnowledgeDocument", "tags": ["whatsapp"],
                     "parameters": [IDEMPOTENCY, WAIT, {"name": "name", "in": "query", "schema": {"type": "string"}},
                                    {"name": "id", "in": "query", "schema": {"type": "string"}}],
                     "requestBody": {"required": True, "content": {
                         "multipart/form-data": {"schema": {"type": "object", "properties": {
                             "file": {"type": "string", "format": "binary"}}}},
                         "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                         "text/plain": {"schema": {"type": "string"}}}},
                     "responses": _job_responses("Job", "409", "415", "422")},
            "get": {"summary": "Documents of the knowledge base", "operationId": "listKnowledgeDocuments",
                    "tags": ["whatsapp"], "responses": {"200": {"description": "Documents"}, **_errors("401")}}},
        "/api/kb/documents/{doc_id}": {"delete": {
            "summary": "Remove a document: its passages are no longer retrieved", "operationId":
            "deleteKnowledgeDocument", "tags": ["whatsapp"],
            "parameters": [{"name": "doc_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"204": {"description": "Removed"}, **_errors("401", "404")}}},
        "/api/calls/upload": {"post": {
            "summary": "Upload a sales-call recording (WAV, MP3, M4A, OGG/Opus, WebM); answers at once with the call's job",
            "operationId": "uploadCall", "tags": ["calls"],
            "parameters": [IDEMPOTENCY, WAIT] + [{"name": n, "in": "query", "schema": {"type": "string"}} for n in (
                "title", "participants", "language", "external_id", "callback_url", "filename")],
            "requestBody": {"required": True, "content": {
                "multipart/form-data": {"schema": {"type": "object", "properties": {
                    "file": {"type": "string", "format": "binary"}, "title": {"type": "string"},
                    "participants": {"type": "string"}, "language": {"type": "string"},
                    "external_id": {"type": "string"}, "callback_url": {"type": "string"}}}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": _job_responses("Job", "409", "413", "422")}},
        "/api/calls/upload-url": {"post": {
            "summary": "A short-lived URL to PUT a large recording straight into Blob storage",
            "operationId": "callUploadUrl", "tags": ["calls"],
            "parameters": [{"name": "filename", "in": "query", "schema": {"type": "string"}}],
            "responses": {"201": {"description": "upload_url, method, headers, blob, expires_at"}, **_errors("401")}}},
        "/api/calls/search": {"get": {
            "summary": "Semantic search over the segments of analysed calls", "operationId": "searchCalls",
            "tags": ["calls"], "parameters": [{"name": "q", "in": "query", "required": True,
                                               "schema": {"type": "string"}},
                                              {"name": "k", "in": "query", "schema": {"type": "integer"}}],
            "responses": {"200": {"description": "Hits: call_id, start, end, text, speaker, score"},
                          **_errors("400", "401")}}},
        "/api/calls": {"post": {
            "summary": "Analyse a recording uploaded through /api/calls/upload-url",
            "operationId": "startCall", "tags": ["calls"], "parameters": [IDEMPOTENCY, WAIT],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["blob"], "properties": {
                    "blob": {"type": "string"}, "title": {"type": "string"}, "participants": {"type": "string"},
                    "language": {"type": "string"}, "external_id": {"type": "string"},
                    "callback_url": {"type": "string"}}}}}},
            "responses": _job_responses("Job", "404", "409", "422")}, "get": {
            "summary": "Calls, newest first; ?status= and ?q= (text in title and analysis)", "operationId": "listCalls",
            "tags": ["calls"], "parameters": [{"name": n, "in": "query", "schema": {"type": "string"}}
                                              for n in ("status", "q")],
            "responses": {"200": {"description": "Calls"}, **_errors("401")}}},
        "/api/calls/{call_id}": {
            "get": {"summary": "The call: status, progress, transcript, analysis, usage and cost",
                    "operationId": "getCall", "tags": ["calls"], "parameters": [CALL_ID, WAIT],
                    "responses": _job_responses("Job", "404")},
            "delete": {"summary": "Remove the call: audio, chunks, transcript, vectors and analysis",
                       "operationId": "deleteCall", "tags": ["calls"], "parameters": [CALL_ID],
                       "responses": {"204": {"description": "Removed"}, **_errors("401", "404", "409")}}},
        "/api/calls/{call_id}/transcript": {"get": {
            "summary": "The transcript as json, txt, srt or vtt", "operationId": "getTranscript", "tags": ["calls"],
            "parameters": [CALL_ID, {"name": "format", "in": "query",
                                     "schema": {"enum": ["json", "txt", "srt", "vtt"]}}],
            "responses": {"200": {"description": "Transcript"}, **_errors("400", "401", "404")}}},
        "/api/jobs": {"get": {
            "summary": "Jobs, newest first", "operationId": "listJobs", "tags": ["jobs"],
            "parameters": [
                {"name": "status", "in": "query", "schema": {"type": "string"},
                 "description": "comma list of accepted, processing, done, failed, canceled"},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                {"name": "continuation", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "A page of jobs", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"jobs": {"type": "array", "items": _ref("Job")},
                                                 "continuation": {"type": "string", "nullable": True}}}}}},
                          **_errors("400", "401")}}},
        "/api/jobs/{job_id}": {
            "get": {"summary": "One job", "operationId": "getJob", "tags": ["jobs"], "parameters": [JOB_ID, WAIT],
                    "responses": _job_responses("Job", "404")},
            "delete": {"summary": "Purge a finished job", "operationId": "deleteJob", "tags": ["jobs"],
                       "parameters": [JOB_ID],
                       "responses": {"204": {"description": "Purged"}, **_errors("400", "401", "404", "409")}}},
        "/api/jobs/{job_id}/cancel": {"post": {
            "summary": "Cancel a running job", "operationId": "cancelJob", "tags": ["jobs"], "parameters": [JOB_ID],
            "responses": _job_responses("Job", "404", "409")}},
        "/api/selftest": {"post": {
            "summary": "Run the operator self-test pipeline", "operationId": "selftest", "tags": ["operations"],
            "parameters": [IDEMPOTENCY, WAIT], "responses": _job_responses("Job", "409")}},
        "/api/health": {"get": {
            "summary": "Storage reachability, AI provider and version", "operationId": "health",
            "tags": ["operations"],
            "responses": {"200": {"description": "Healthy", "content": {"application/json": {
                "schema": _ref("Health")}}},
                "503": {"description": "Storage unreachable", "content": {"application/json": {
                    "schema": _ref("Health")}}}, **_errors("401")}}},
        "/api/openapi.json": {"get": {"summary": "This document (OpenAPI 3.0)", "operationId": "openapi", "tags": ["operations"],
                                      "responses": {"200": {"description": "OpenAPI 3.0"}}}},
        "/api/docs": {"get": {"summary": "Swagger UI", "operationId": "docs", "tags": ["operations"],
                              "responses": {"200": {"description": "HTML"}}}},
    }
    return {"openapi": "3.0.3",
            "info": {"title": "Intake", "version": VERSION,
                     "description": "Offers, documents, calls and WhatsApp messages to structured data. Every "
                                    "route takes a function key (x-functions-key header or ?code=)."},
            "security": [{"functionKeyHeader": []}, {"functionKeyQuery": []}],
            "paths": paths,
            "components": {"schemas": to_openapi_30(_schemas()), "securitySchemes": {
                "functionKeyHeader": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"}}}}
