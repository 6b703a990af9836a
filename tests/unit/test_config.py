"""Settings: defaults, validation, and one clear line naming the bad variable."""
from __future__ import annotations

import pytest

from shared.config import load_settings
from shared.errors import SettingsError


def test_defaults_with_only_storage(monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.delenv("AI_PROVIDER", raising=False)
    settings = load_settings()
    assert settings.effective_ai_provider == "offline" and settings.job_wait_max_seconds == 25


def test_missing_storage_names_the_variable(monkeypatch):
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.delenv("AzureWebJobsStorage__accountName", raising=False)
    with pytest.raises(SettingsError, match="^AzureWebJobsStorage"):
        load_settings()


def test_managed_identity_storage_is_enough(monkeypatch):
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("AzureWebJobsStorage__accountName", "intakestore")
    assert load_settings().storage_account == "intakestore"


@pytest.mark.parametrize("name,value", [("AI_PROVIDER", "skynet"), ("JOB_WAIT_MAX_SECONDS", "-3"),
                                        ("LOG_LEVEL", "LOUD"), ("WHATSAPP_MAX_EVENT_AGE_SECONDS", "inf"),
                                        ("WEBHOOK_DISABLE_AFTER_DAYS", "1e300"), ("CALL_MAX_DURATION_SECONDS", "nan"),
                                        ("WAHA_BASE_URL", "ftp://waha.example.com"), ("SMS_BASE_URL", "localhost:3000"),
                                        ("OPENAI_BASE_URL", "https://"), ("OPENAI_MODEL", "")])
def test_malformed_value_fails_with_its_name(monkeypatch, name, value):
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value).startswith(name) and "\n" not in str(caught.value)


@pytest.mark.parametrize("secret", ["", "whsec_", "whsec_not base64!", "whsec_c2hvcnQ=", "short"])
def test_a_callback_signing_secret_anyone_could_guess_stops_the_start(monkeypatch, secret):
    """An empty key would sign every callback with a signature anyone can make."""
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("CALLBACK_SIGNING_SECRET", secret)
    with pytest.raises(SettingsError, match="^CALLBACK_SIGNING_SECRET: required") as caught:
        load_settings().check_for_the_app()
    assert secret[6:] not in str(caught.value) or not secret[6:]


def test_the_example_settings_secret_is_a_good_one(monkeypatch):
    import json
    from pathlib import Path

    values = json.loads((Path(__file__).resolve().parents[2] / "local.settings.example.json").read_text())["Values"]
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("CALLBACK_SIGNING_SECRET", values["CALLBACK_SIGNING_SECRET"])
    load_settings().check_for_the_app()


def test_openai_without_a_key_or_a_server_of_its_own_names_the_key(monkeypatch):
    monkeypatch.setenv("AzureWebJobsStorage", "UseDevelopmentStorage=true")
    monkeypatch.setenv("AI_PROVIDER", "openai")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(SettingsError, match="^OPENAI_API_KEY: required"):
        load_settings()
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")  # a compatible server may need no key
    assert load_settings().effective_ai_provider == "openai"
