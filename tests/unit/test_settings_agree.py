"""Every setting the app reads is in local.settings.example.json, the Bicep app settings and the README."""
from __future__ import annotations

import json
import re
from pathlib import Path

from shared.config import Settings
from tests.support.bicep import parse

ROOT = Path(__file__).resolve().parents[2]
# Read by the Functions host or devhost, not by the app, hence only where they apply:
LOCAL_ONLY = {"FUNCTIONS_WORKER_RUNTIME", "AzureWebJobsFeatureFlags", "DEVHOST_FUNCTION_KEY", "DEVHOST_MASTER_KEY"}
AZURE_HOST_ONLY = {"AzureWebJobsStorage__credential", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"}
# Azure reaches storage with managed identity: a connection string would carry a key.
NOT_IN_AZURE = {"AzureWebJobsStorage"}


def app_settings() -> set[str]:
    return {field.alias for field in Settings.model_fields.values()}


def example_settings() -> set[str]:
    return set(json.loads((ROOT / "local.settings.example.json").read_text())["Values"])


def bicep_settings() -> set[str]:
    app = parse(ROOT / "infra/main.bicep").resources["app"].body
    return {s["name"] for s in app["properties"]["siteConfig"]["appSettings"]}


def readme_settings() -> set[str]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| setting | default | meaning |"):]
    return set(re.findall(r"^\| `([A-Za-z0-9_]+)` \|", table, re.MULTILINE))


def test_example_file_has_every_app_setting_and_only_local_extras():
    assert example_settings() - LOCAL_ONLY == app_settings()


def test_bicep_has_every_app_setting_but_the_connection_string():
    assert bicep_settings() - AZURE_HOST_ONLY == app_settings() - NOT_IN_AZURE


def test_readme_table_lists_every_setting_of_both_files():
    assert readme_settings() == example_settings() | bicep_settings()
