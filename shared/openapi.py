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


def _automation_models() -> tuple:
    from .automation.deliveries import Delivery
    from .automation.events import CustomEventIn, Event
    from .automation.notifications import Notification, NotificationIn
    from .automation.rules import RuleIn
    from .automation.subscriptions import SubscriptionIn
    from .automation.templates import NamedTemplateIn, PreviewIn, Rendered, TemplateIn

    return (Event, CustomEventIn, SubscriptionIn, Delivery, NotificationIn, Notification, TemplateIn, NamedTemplateIn,
            PreviewIn, Rendered, RuleIn)


def _schemas() -> dict[str, Any]:
    from .automation.events import CATALOGUE

    schemas: dict[str, Any] = {}
    for model in (Offer, Job, *_automation_models()):
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
    schemas["Event"]["properties"]["type"]["description"] = "; ".join(
        f"`{name}`: {meaning}" for name, meaning in CATALOGUE.items()) + "; `custom.*`: published by you"
    schemas["Subscription"] = {"type": "object", "description": "A webhook subscription (its secret is never shown "
                               "again after creation or rotation)", "properties": {
        "id": {"type": "string"}, "url": {"type": "string"}, "events": {"type": "array", "items": {"type": "string"}},
        "description": {"type": "string"}, "enabled": {"type": "boolean"},
        "disabled_reason": {"type": "string", "nullable": True}, "created_at": {"type": "string"},
        "failing_since": {"type": "string", "nullable": True}, "last_success_at": {"type": "string", "nullable": True},
        "secret": {"type": "string", "description": "whsec_...; only in the answer to creation and rotation"}}}
    schemas["Rule"] = {"allOf": [_ref("RuleIn"), {"type": "object", "properties": {
        "id": {"type": "string"}, "created_at": {"type": "string"}}}]}
    return schemas


def _automation_paths() -> dict[str, Any]:
    def body(schema: str) -> dict:
        return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}

    def ok(description: str, schema: str | None = None) -> dict:
        answer: dict[str, Any] = {"description": description}
        if schema:
            answer["content"] = {"application/json": {"schema": _ref(schema)}}
        return answer

    def path_param(name: str) -> dict:
        return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}

    signed = {"webhookDelivery": {"{$request.body#/url}": {"post": {
        "summary": "Each event the subscription wants, signed with Standard Webhooks",
        "parameters": [{"name": h, "in": "header", "required": True, "schema": {"type": "string"}} for h in (
            "webhook-id", "webhook-timestamp", "webhook-signature")],
        "requestBody": {"content": {"application/json": {"schema": _ref("Event")}}},
        "responses": {"200": {"description": "2xx: delivered"}, "410": {"description": "Gone: disables"}}}}}}
    sub, dlv, tpl, rule = (path_param(n) for n in ("subscription_id", "delivery_id", "name", "rule_id"))
    tags = {"tags": ["automation"]}
    return {
        "/api/events": {"post": {**tags, "summary": "Publish your own custom.* event to subscriptions and rules",
                                 "operationId": "publishEvent", "requestBody": body("CustomEventIn"),
                                 "responses": {"202": ok("Routed: the event, its deliveries, whether rules run"),
                                               **_errors("400", "401", "409", "413", "422")}}},
        "/api/webhooks/subscriptions": {
            "post": {**tags, "summary": "Subscribe a URL to events; the answer holds its whsec_ secret, once",
                     "operationId": "createSubscription", "requestBody": body("SubscriptionIn"),
                     "callbacks": signed,
                     "responses": {"201": ok("Created", "Subscription"), **_errors("400", "401", "422")}},
            "get": {**tags, "summary": "Subscriptions", "operationId": "listSubscriptions",
                    "responses": {"200": ok("Subscriptions"), **_errors("401")}}},
        "/api/webhooks/subscriptions/{subscription_id}": {
            "get": {**tags, "summary": "One subscription", "operationId": "getSubscription", "parameters": [sub],
                    "responses": {"200": ok("The subscription", "Subscription"), **_errors("401", "404")}},
            "delete": {**tags, "summary": "Unsubscribe; pending retries are cancelled",
                       "operationId": "deleteSubscription", "parameters": [sub],
                       "responses": {"204": ok("Deleted"), **_errors("401", "404")}}},
        "/api/webhooks/subscriptions/{subscription_id}/rotate": {"post": {
            **tags, "summary": "New secret; the old one also signs for WEBHOOK_ROTATION_GRACE_HOURS",
            "operationId": "rotateSecret", "parameters": [sub],
            "responses": {"200": ok("Rotated; the new secret", "Subscription"), **_errors("401", "404")}}},
        "/api/webhooks/subscriptions/{subscription_id}/enable": {"post": {
            **tags, "summary": "Enable a subscription disabled by 410 Gone or days of failures",
            "operationId": "enableSubscription", "parameters": [sub],
            "responses": {"200": ok("Enabled", "Subscription"), **_errors("401", "404")}}},
        "/api/webhooks/deliveries": {"get": {
            **tags, "summary": "Deliveries with every attempt, newest first", "operationId": "listDeliveries",
            "parameters": [{"name": "subscription_id", "in": "query", "schema": {"type": "string"}},
                           {"name": "status", "in": "query", "schema": {
                               "enum": ["pending", "retrying", "delivered", "failed", "cancelled"]}},
                           {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                       "maximum": 1000}},
                           {"name": "continuation", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": ok("A page of deliveries; `continuation` fetches the next"),
                          **_errors("400", "401")}}},
        "/api/webhooks/deliveries/{delivery_id}": {"get": {
            **tags, "summary": "One delivery, with its event and attempts", "operationId": "getDelivery",
            "parameters": [dlv], "responses": {"200": ok("The delivery", "Delivery"), **_errors("401", "404")}}},
        "/api/webhooks/deliveries/{delivery_id}/replay": {"post": {
            **tags, "summary": "Send the delivery's event again now, as a new attempt", "operationId": "replayDelivery",
            "parameters": [dlv], "responses": {"202": ok("Replay started"), **_errors("401", "404")}}},
        "/api/notifications": {
            "post": {**tags, "summary": "Send an e-mail, SMS or WhatsApp message from a template or a body",
                     "operationId": "sendNotification", "requestBody": body("NotificationIn"),
                     "parameters": [IDEMPOTENCY],
                     "responses": {"202": ok("Queued", "Notification"),
                                   "200": ok("The same idempotency key: the notification sent before", "Notification"),
                                   **_errors("400", "401", "404", "409", "413", "422")}},
            "get": {**tags, "summary": "Notifications, newest first", "operationId": "listNotifications",
                    "parameters": [{"name": n, "in": "query", "schema": {"type": "string"}}
                                   for n in ("status", "channel", "to", "limit")],
                    "responses": {"200": ok("Notifications"), **_errors("400", "401")}}},
        "/api/notifications/{notification_id}": {"get": {
            **tags, "summary": "Delivery status of a notification", "operationId": "getNotification",
            "parameters": [path_param("notification_id")],
            "responses": {"200": ok("The notification", "Notification"), **_errors("401", "404")}}},
        "/api/templates": {
            "post": {**tags, "summary": "Create a Jinja2 template (sandboxed; text and HTML)",
                     "operationId": "createTemplate", "requestBody": body("NamedTemplateIn"),
                     "responses": {"201": ok("Created"), **_errors("400", "401", "409", "413", "422")}},
            "get": {**tags, "summary": "Templates", "operationId": "listTemplates",
                    "responses": {"200": ok("Templates"), **_errors("401")}}},
        "/api/templates/preview": {"post": {
            **tags, "summary": "Render an unsaved template with data", "operationId": "previewUnsavedTemplate",
            "requestBody": body("PreviewIn"),
            "responses": {"200": ok("Rendered", "Rendered"), **_errors("400", "401", "422")}}},
        "/api/templates/{name}": {
            "get": {**tags, "summary": "One template", "operationId": "getTemplate", "parameters": [tpl],
                    "responses": {"200": ok("The template"), **_errors("401", "404")}},
            "put": {**tags, "summary": "Replace a template", "operationId": "replaceTemplate", "parameters": [tpl],
                    "requestBody": body("TemplateIn"),
                    "responses": {"200": ok("Replaced"), **_errors("400", "401", "404", "413", "422")}},
            "delete": {**tags, "summary": "Delete a template", "operationId": "deleteTemplate", "parameters": [tpl],
                       "responses": {"204": ok("Deleted"), **_errors("401", "404")}}},
        "/api/templates/{name}/preview": {"post": {
            **tags, "summary": "Render a template with data; an undefined variable is a 422",
            "operationId": "previewTemplate", "parameters": [tpl], "requestBody": body("PreviewIn"),
            "responses": {"200": ok("Rendered", "Rendered"), **_errors("400", "401", "404", "422")}}},
        "/api/rules": {
            "post": {**tags, "summary": "Create a rule: event, conditions, actions, priority, stop_processing",
                     "operationId": "createRule", "requestBody": body("RuleIn"),
                     "responses": {"201": ok("Created", "Rule"), **_errors("400", "401", "422")}},
            "get": {**tags, "summary": "Rules in the order they are evaluated", "operationId": "listRules",
                    "responses": {"200": ok("Rules"), **_errors("401")}}},
        "/api/rules/test": {"post": {
            **tags, "summary": "Dry run: which rules fire for a sample event, with their actions filled in "
                                 "(a notification's `message`; `error` on an action that would fail)",
            "operationId": "testRules", "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"type": "object", "required": ["event"], "properties": {
                    "event": {"type": "object", "properties": {"type": {"type": "string"},
                                                               "subject": {"type": "string"},
                                                               "data": {"type": "object"}}},
                    "rule": _ref("RuleIn"), "rule_id": {"type": "string"}}}}}},
            "responses": {"200": ok("fires, fired (rules and actions), evaluated"), **_errors("400", "401", "404",
                                                                                           "422")}}},
        "/api/rules/{rule_id}": {
            "get": {**tags, "summary": "One rule", "operationId": "getRule", "parameters": [rule],
                    "responses": {"200": ok("The rule", "Rule"), **_errors("401", "404")}},
            "put": {**tags, "summary": "Replace a rule", "operationId": "replaceRule", "parameters": [rule],
                    "requestBody": body("RuleIn"),
                    "responses": {"200": ok("Replaced", "Rule"), **_errors("400", "401", "404", "422")}},
            "delete": {**tags, "summary": "Delete a rule", "operationId": "deleteRule", "parameters": [rule],
                       "responses": {"204": ok("Deleted"), **_errors("401", "404")}}},
    }


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
        "text/plain": {"schema": {"type": "string"}}, "text/html": {"schema": {"type": "string"}}}
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
            "summary": "Calls, newest first; ?status=, ?from= and ?to= (upload date), ?q= (text in title and "
                       "analysis), ?limit= and ?continuation= pages", "operationId": "listCalls",
            "tags": ["calls"], "parameters": [{"name": n, "in": "query", "schema": {"type": "string"}}
                                              for n in ("status", "from", "to", "q", "limit", "continuation")],
            "responses": {"200": {"description": "A page of calls and the continuation of the next"},
                          **_errors("400", "401")}}},
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
            "delete": {"summary": "Purge a finished job and the files it was sent", "operationId": "deleteJob",
                       "tags": ["jobs"],
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
    paths.update(_automation_paths())
    return {"openapi": "3.0.3",
            "info": {"title": "Intake", "version": VERSION,
                     "description": "Offers, documents, calls and WhatsApp messages to structured data. Every "
                                    "route takes a function key (x-functions-key header or ?code=)."},
            "security": [{"functionKeyHeader": []}, {"functionKeyQuery": []}],
            "paths": paths,
            "components": {"schemas": to_openapi_30(_schemas()), "securitySchemes": {
                "functionKeyHeader": {"type": "apiKey", "in": "header", "name": "x-functions-key"},
                "functionKeyQuery": {"type": "apiKey", "in": "query", "name": "code"}}}}
