"""One Settings object read from the environment, validated once, cached."""
from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import SettingsError


class Settings(BaseSettings):
    """Every setting the app reads; names match local.settings.example.json and the Azure app settings."""

    model_config = SettingsConfigDict(case_sensitive=True, extra="ignore", populate_by_name=True)

    storage_connection: str = Field("", alias="AzureWebJobsStorage")
    storage_account: str = Field("", alias="AzureWebJobsStorage__accountName")
    storage_client_id: str = Field("", alias="AzureWebJobsStorage__clientId")
    ai_provider: Literal["offline", "openai", "azure_openai"] = Field("offline", alias="AI_PROVIDER")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", alias="LOG_LEVEL")
    job_wait_max_seconds: float = Field(25.0, alias="JOB_WAIT_MAX_SECONDS", gt=0, le=230)
    health_timeout_seconds: float = Field(2.0, alias="HEALTH_TIMEOUT_SECONDS", gt=0, le=30)

    def model_post_init(self, _context: object) -> None:
        if not (self.storage_connection or self.storage_account):
            raise SettingsError("AzureWebJobsStorage: set a connection string, or "
                                "AzureWebJobsStorage__accountName for managed identity")


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "settings"
        raise SettingsError(f"{name}: {first['msg']}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
