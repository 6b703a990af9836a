"""Builds the configured AI provider once per worker."""
from __future__ import annotations

import threading
from functools import lru_cache

from ..config import Settings, get_settings
from .offline import OfflineProvider
from .openai_provider import OpenAIProvider
from .port import AIProvider
from .usage import price_table


def build_provider(settings: Settings) -> AIProvider:
    """Short SDK timeouts and few SDK retries: the orchestration owns retrying."""
    provider = settings.effective_ai_provider
    if provider == "offline":
        return OfflineProvider()
    prices = price_table(settings.ai_price_table)
    timed = {"auto": None, "model": True, "pieces": False}[settings.transcription_times]
    common = {"timeout": settings.ai_timeout_seconds, "max_retries": settings.ai_sdk_max_retries}
    if provider == "azure_openai":
        from openai import AzureOpenAI

        key = settings.azure_openai_api_key.get_secret_value()
        if key:
            auth = {"api_key": key}
        else:
            from azure.identity import DefaultAzureCredential, get_bearer_token_provider

            credential = DefaultAzureCredential(managed_identity_client_id=settings.azure_client_id or None)
            auth = {"azure_ad_token_provider": get_bearer_token_provider(
                credential, "https://cognitiveservices.azure.com/.default")}
        client = AzureOpenAI(azure_endpoint=settings.azure_openai_endpoint,
                             api_version=settings.azure_openai_api_version, **auth, **common)
        models = {"extract": settings.azure_openai_chat_deployment, "chat": settings.azure_openai_chat_deployment,
                  "embed": settings.azure_openai_embedding_deployment,
                  "transcribe": settings.azure_openai_transcription_deployment}
        return OpenAIProvider(client, models, prices, name="azure_openai", timed_transcripts=timed)
    from openai import OpenAI

    client = OpenAI(api_key=settings.openai_api_key.get_secret_value() or "not-needed",
                    base_url=settings.openai_base_url or None, **common)
    models = {"extract": settings.openai_model, "chat": settings.openai_model,
              "embed": settings.openai_embedding_model, "transcribe": settings.openai_transcription_model}
    return OpenAIProvider(client, models, prices, name="openai", timed_transcripts=timed)


_building = threading.Lock()


@lru_cache(maxsize=1)
def _provider() -> AIProvider:
    return build_provider(get_settings())


def get_provider() -> AIProvider:
    """The worker's provider. Built under a lock: eight activities starting at once would otherwise build eight
    clients, each loading the CA certificates while holding the GIL."""
    with _building:
        return _provider()
