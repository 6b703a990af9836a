"""One Settings object read from the environment, validated once, cached."""
from __future__ import annotations

import base64
import binascii
import os
from functools import lru_cache
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from .ai.usage import price_table
from .errors import SettingsError


class Settings(BaseModel):
    """Every setting the app reads; names match local.settings.example.json and the Azure app settings."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True, allow_inf_nan=False)

    storage_connection: str = Field("", alias="AzureWebJobsStorage")
    storage_account: str = Field("", alias="AzureWebJobsStorage__accountName")
    storage_client_id: str = Field("", alias="AzureWebJobsStorage__clientId")
    ai_provider: Literal["", "offline", "openai", "azure_openai"] = Field("", alias="AI_PROVIDER")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="LOG_LEVEL")
    job_wait_max_seconds: float = Field(25.0, alias="JOB_WAIT_MAX_SECONDS", gt=0, le=230)
    health_timeout_seconds: float = Field(2.0, alias="HEALTH_TIMEOUT_SECONDS", gt=0, le=30)
    app_insights_connection: str = Field("", alias="APPLICATIONINSIGHTS_CONNECTION_STRING")
    azure_client_id: str = Field("", alias="AZURE_CLIENT_ID")

    # AI providers (the AI port reads these)
    openai_api_key: SecretStr = Field(SecretStr(""), alias="OPENAI_API_KEY")
    openai_base_url: str = Field("", alias="OPENAI_BASE_URL")
    openai_model: str = Field("gpt-4o-mini", alias="OPENAI_MODEL", min_length=1)
    openai_embedding_model: str = Field("text-embedding-3-small", alias="OPENAI_EMBEDDING_MODEL", min_length=1)
    openai_transcription_model: str = Field("gpt-4o-mini-transcribe", alias="OPENAI_TRANSCRIPTION_MODEL",
                                            min_length=1)
    # who times a transcript: the model (whisper: verbose_json segments) or pieces cut at pauses (models that answer
    # text alone); auto: the model when the model or deployment name says whisper
    transcription_times: Literal["auto", "model", "pieces"] = Field("auto", alias="TRANSCRIPTION_TIMES")
    ai_timeout_seconds: float = Field(30.0, alias="AI_TIMEOUT_SECONDS", gt=0, le=600)
    ai_sdk_max_retries: int = Field(1, alias="AI_SDK_MAX_RETRIES", ge=0, le=5)
    ai_max_attempts: int = Field(4, alias="AI_MAX_ATTEMPTS", ge=1, le=10)
    ai_retry_base_seconds: float = Field(2.0, alias="AI_RETRY_BASE_SECONDS", gt=0, le=300)
    ai_price_table: str = Field("", alias="AI_PRICE_TABLE")
    azure_openai_endpoint: str = Field("", alias="AZURE_OPENAI_ENDPOINT")
    azure_openai_api_key: SecretStr = Field(SecretStr(""), alias="AZURE_OPENAI_API_KEY")
    azure_openai_api_version: str = Field("2024-10-21", alias="AZURE_OPENAI_API_VERSION")
    azure_openai_chat_deployment: str = Field("gpt-4o-mini", alias="AZURE_OPENAI_CHAT_DEPLOYMENT")
    azure_openai_embedding_deployment: str = Field("text-embedding-3-small", alias="AZURE_OPENAI_EMBEDDING_DEPLOYMENT")
    azure_openai_transcription_deployment: str = Field("whisper", alias="AZURE_OPENAI_TRANSCRIPTION_DEPLOYMENT")

    # Offer ingestion and callbacks
    ingest_max_bytes: int = Field(25 * 1024 * 1024, alias="INGEST_MAX_BYTES", gt=0, le=100 * 1024 * 1024)
    callback_max_attempts: int = Field(6, alias="CALLBACK_MAX_ATTEMPTS", ge=1, le=20)
    callback_timeout_seconds: float = Field(10.0, alias="CALLBACK_TIMEOUT_SECONDS", gt=0, le=60)
    callback_allowed_hosts: str = Field("", alias="CALLBACK_ALLOWED_HOSTS")

    # Document vision
    document_page_parallelism: int = Field(8, alias="DOCUMENT_PAGE_PARALLELISM", ge=1, le=64)
    document_max_pages: int = Field(50, alias="DOCUMENT_MAX_PAGES", ge=1, le=500)
    document_max_page_bytes: int = Field(10 * 1024 * 1024, alias="DOCUMENT_MAX_PAGE_BYTES", gt=0)
    document_max_bytes: int = Field(50 * 1024 * 1024, alias="DOCUMENT_MAX_BYTES", gt=0)

    # Call analysis
    call_max_bytes: int = Field(100 * 1024 * 1024, alias="CALL_MAX_BYTES", gt=0)
    call_max_duration_seconds: float = Field(4 * 3600.0, alias="CALL_MAX_DURATION_SECONDS", gt=0, le=24 * 3600)
    call_chunk_seconds: float = Field(600.0, alias="CALL_CHUNK_SECONDS", ge=30, le=1400)
    # a model that answers text without times hears each chunk in pieces this long at most, cut at pauses
    call_piece_seconds: float = Field(30.0, alias="CALL_PIECE_SECONDS", ge=5, le=300)
    call_chunk_parallelism: int = Field(8, alias="CALL_CHUNK_PARALLELISM", ge=1, le=64)

    # WhatsApp assistant (WAHA)
    waha_base_url: str = Field("http://127.0.0.1:3000", alias="WAHA_BASE_URL")
    waha_api_key: SecretStr = Field(SecretStr(""), alias="WAHA_API_KEY")
    whatsapp_burst_seconds: float = Field(3.0, alias="WHATSAPP_BURST_SECONDS", ge=0, le=60)
    whatsapp_rate_limit: int = Field(10, alias="WHATSAPP_RATE_LIMIT_PER_MINUTE", ge=1, le=1000)
    whatsapp_max_event_age_seconds: float = Field(300.0, alias="WHATSAPP_MAX_EVENT_AGE_SECONDS", gt=0, le=7 * 86400)
    whatsapp_send_attempts: int = Field(8, alias="WHATSAPP_SEND_ATTEMPTS", ge=1, le=50)
    # after a turn's attempts are spent (WAHA down for long, or refusing): its messages wait this long, then again
    whatsapp_look_again_seconds: float = Field(60.0, alias="WHATSAPP_LOOK_AGAIN_SECONDS", ge=1, le=3600)
    # Knowledge base search: in the worker's memory, or Azure AI Search for bases too large for it
    kb_search_backend: Literal["memory", "azure_search"] = Field("memory", alias="KB_SEARCH_BACKEND")
    azure_search_endpoint: str = Field("", alias="AZURE_SEARCH_ENDPOINT")
    azure_search_index: str = Field("knowledge", alias="AZURE_SEARCH_INDEX", pattern=r"^[a-z0-9][a-z0-9-]{1,127}$")
    azure_search_api_key: SecretStr = Field(SecretStr(""), alias="AZURE_SEARCH_API_KEY")  # none: managed identity

    # Automation: webhook subscriptions and notifications
    webhook_retry_schedule: str = Field("5s,5m,30m,2h,5h,10h,10h", alias="WEBHOOK_RETRY_SCHEDULE")
    webhook_disable_after_days: float = Field(5.0, alias="WEBHOOK_DISABLE_AFTER_DAYS", gt=0, le=365)
    webhook_rotation_grace_hours: float = Field(24.0, alias="WEBHOOK_ROTATION_GRACE_HOURS", ge=0, le=720)
    email_provider: Literal["smtp", "acs"] = Field("smtp", alias="EMAIL_PROVIDER")
    acs_email_endpoint: str = Field("", alias="ACS_EMAIL_ENDPOINT")  # with managed identity
    acs_email_connection_string: SecretStr = Field(SecretStr(""), alias="ACS_EMAIL_CONNECTION_STRING")
    smtp_host: str = Field("", alias="SMTP_HOST")
    smtp_port: int = Field(587, alias="SMTP_PORT", ge=1, le=65535)
    smtp_starttls: bool = Field(True, alias="SMTP_STARTTLS")
    smtp_user: str = Field("", alias="SMTP_USER")
    smtp_password: SecretStr = Field(SecretStr(""), alias="SMTP_PASSWORD")
    email_from: str = Field("", alias="EMAIL_FROM")
    sms_base_url: str = Field("", alias="SMS_BASE_URL")
    sms_account_sid: str = Field("", alias="SMS_ACCOUNT_SID")
    sms_auth_token: SecretStr = Field(SecretStr(""), alias="SMS_AUTH_TOKEN")
    sms_from: str = Field("", alias="SMS_FROM")
    waha_session: str = Field("default", alias="WAHA_SESSION")
    notify_rate_limit_per_hour: int = Field(20, alias="NOTIFY_RATE_LIMIT_PER_HOUR", ge=1, le=10000)
    notify_max_attempts: int = Field(5, alias="NOTIFY_MAX_ATTEMPTS", ge=1, le=20)

    # Signing secrets of the integrations
    waha_hmac_key: SecretStr = Field(SecretStr(""), alias="WAHA_HMAC_KEY")
    callback_signing_secret: SecretStr = Field(SecretStr(""), alias="CALLBACK_SIGNING_SECRET")

    @property
    def effective_ai_provider(self) -> str:
        """`offline` unless a provider is chosen, or an OpenAI key or server is configured."""
        if self.ai_provider:
            return self.ai_provider
        return "openai" if (self.openai_api_key.get_secret_value() or self.openai_base_url) else "offline"

    def secret_values(self) -> list[str]:
        """Every secret's value, so that logging can mask them wherever they show up."""
        return [v.get_secret_value() for v in (self.openai_api_key, self.azure_openai_api_key, self.waha_hmac_key,
                                               self.callback_signing_secret, self.waha_api_key,
                                               self.smtp_password, self.sms_auth_token, self.azure_search_api_key,
                                               self.acs_email_connection_string)
                if v.get_secret_value()]

    def check_for_the_app(self) -> None:
        """What the app itself needs, checked as it loads (tools and tests may read the settings without it)."""
        if len(signing_key(self.callback_signing_secret.get_secret_value())) < MIN_SIGNING_KEY_BYTES:
            raise SettingsError("CALLBACK_SIGNING_SECRET: required, whsec_ and the base64 of at least "
                                f"{MIN_SIGNING_KEY_BYTES} random bytes (Standard Webhooks); job callbacks and rule "
                                "webhooks are signed with it")

    def model_post_init(self, _context: object) -> None:
        if not (self.storage_connection or self.storage_account):
            raise SettingsError("AzureWebJobsStorage: set a connection string, or "
                                "AzureWebJobsStorage__accountName for managed identity")
        if self.ai_price_table.strip():
            try:
                price_table(self.ai_price_table)
            except (ValueError, AttributeError, TypeError):
                raise SettingsError("AI_PRICE_TABLE: must be a JSON object of model -> prices") from None
        try:
            from .automation.subscriptions import parse_schedule

            parse_schedule(self.webhook_retry_schedule)
        except ValueError as exc:
            raise SettingsError(f"WEBHOOK_RETRY_SCHEDULE: {exc}") from None
        for name, url in (("OPENAI_BASE_URL", self.openai_base_url),
                          ("AZURE_OPENAI_ENDPOINT", self.azure_openai_endpoint), ("WAHA_BASE_URL", self.waha_base_url),
                          ("SMS_BASE_URL", self.sms_base_url),
                          ("AZURE_SEARCH_ENDPOINT", self.azure_search_endpoint),
                          ("ACS_EMAIL_ENDPOINT", self.acs_email_endpoint)):
            if url and not _is_http_url(url):
                raise SettingsError(f"{name}: must be an http:// or https:// URL with a host")
        if (self.ai_provider == "openai" and not self.openai_api_key.get_secret_value()
                and not self.openai_base_url):
            raise SettingsError("OPENAI_API_KEY: required when AI_PROVIDER is openai (or OPENAI_BASE_URL for a "
                                "compatible server that needs none)")
        if self.ai_provider == "azure_openai" and not self.azure_openai_endpoint:
            raise SettingsError("AZURE_OPENAI_ENDPOINT: required when AI_PROVIDER is azure_openai")
        if self.kb_search_backend == "azure_search" and not self.azure_search_endpoint:
            raise SettingsError("AZURE_SEARCH_ENDPOINT: required when KB_SEARCH_BACKEND is azure_search")


MIN_SIGNING_KEY_BYTES = 16


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def signing_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret (`whsec_<base64>`; other strings are the key's bytes); empty when
    the base64 is malformed."""
    if not secret.startswith("whsec_"):
        return secret.encode()
    try:
        return base64.b64decode(secret[len("whsec_"):], validate=True)
    except binascii.Error:
        return b""


def load_settings() -> Settings:
    names = {field.alias for field in Settings.model_fields.values()}
    try:
        return Settings.model_validate({k: v for k, v in os.environ.items() if k in names})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "settings"
        raise SettingsError(f"{name}: {first['msg']}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
