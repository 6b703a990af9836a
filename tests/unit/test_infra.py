"""infra/main.bicep, read with tree-sitter-bicep (the Bicep CLI cannot be installed here)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.bicep import BicepFile, parse

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd": "Cognitive Services OpenAI User",
}


@pytest.fixture(scope="module")
def bicep() -> BicepFile:
    return parse(INFRA / "main.bicep")


def test_bicep_has_no_syntax_errors(bicep):
    assert not bicep.has_syntax_errors, bicep.errors


def test_syntax_errors_are_detected(tmp_path):
    broken = tmp_path / "broken.bicep"
    broken.write_text("resource x 'Microsoft.Web/sites@2024-04-01' = {\n  name: 'a'\n  properties: {\n")
    assert parse(broken).has_syntax_errors


def test_function_app_runs_python_311_on_flex_consumption(bicep):
    plan = bicep.resources["plan"].body
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    app = bicep.resources["app"].body
    assert app["properties"]["serverFarmId"] == "plan.id"
    config = app["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["scaleAndConcurrency"]["instanceMemoryMB"] == "instanceMemoryMB"
    assert "alwaysReadyHttpInstances" in config["scaleAndConcurrency"]["alwaysReady"]
    assert config["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"


def test_app_uses_a_user_assigned_identity_for_storage(bicep):
    app = bicep.resources["app"].body
    assert app["identity"]["type"] == "UserAssigned"
    settings = {s["name"]: s["value"] for s in app["properties"]["siteConfig"]["appSettings"]}
    assert settings["AzureWebJobsStorage__accountName"] == "storage.name"
    assert settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert settings["AzureWebJobsStorage__clientId"] == "identity.properties.clientId"
    assert "AzureWebJobsStorage" not in settings


def test_storage_refuses_shared_keys_old_tls_and_public_blobs(bicep):
    props = bicep.resources["storage"].body["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["allowBlobPublicAccess"] is False
    assert bicep.resources["packageContainer"].body["properties"]["publicAccess"] == "None"


@pytest.mark.parametrize("symbol,role,scope", [
    ("blobOwner", "storageBlobDataOwner", "storage"),
    ("queueContributor", "storageQueueDataContributor", "storage"),
    ("tableContributor", "storageTableDataContributor", "storage"),
    ("secretsUser", "keyVaultSecretsUser", "vault"),
    ("openAiUser", "cognitiveServicesOpenAIUser", "openAi"),
])
def test_identity_gets_each_role_on_the_right_scope(bicep, symbol, role, scope):
    assignment = bicep.resources[symbol]
    assert assignment.type.startswith("Microsoft.Authorization/roleAssignments@")
    assert assignment.body["scope"] == scope
    assert assignment.body["properties"]["principalId"] == "identity.properties.principalId"
    assert assignment.body["properties"]["roleDefinitionId"].endswith(f"roles.{role})")
    assert bicep.variables["roles"][role] in ROLES


def test_role_guids_are_the_built_in_ones(bicep):
    assert {g: ROLES[g] for g in bicep.variables["roles"].values() if g in ROLES} == {
        g: n for g, n in ROLES.items()}


def test_secrets_are_key_vault_references_from_an_rbac_vault(bicep):
    assert bicep.resources["vault"].body["properties"]["enableRbacAuthorization"] is True
    app = bicep.resources["app"].body
    assert app["properties"]["keyVaultReferenceIdentity"] == "identity.id"
    settings = {s["name"]: s["value"] for s in app["properties"]["siteConfig"]["appSettings"]}
    for name, secret in (("OPENAI_API_KEY", "openai-api-key"), ("WAHA_HMAC_KEY", "waha-hmac-key"),
                         ("CALLBACK_SIGNING_SECRET", "callback-signing-secret")):
        assert f"@Microsoft.KeyVault(VaultName=${{vault.name}};SecretName={secret})" in settings[name]
    for param in ("openAiApiKey", "wahaHmacKey", "callbackSigningSecret"):
        assert "@secure()" in bicep.params[param]["decorators"]
    assert bicep.params["openAiApiKey"]["default"] == bicep.params["wahaHmacKey"]["default"] == ""
    assert bicep.params["callbackSigningSecret"]["default"] is None  # required: the app refuses to sign without it


def test_azure_openai_is_optional_and_wired_to_the_app(bicep):
    for symbol in ("openAi", "chatDeployment", "embeddingDeployment", "openAiUser"):
        assert bicep.resources[symbol].condition == "(deployAzureOpenAI)"
    assert bicep.resources["openAi"].body["properties"]["disableLocalAuth"] is True
    assert "deployAzureOpenAI ? 'azure_openai'" in bicep.variables["effectiveProvider"]


def test_monitoring_has_workspace_insights_and_a_workbook(bicep):
    assert bicep.of_type("Microsoft.OperationalInsights/workspaces")
    assert bicep.resources["insights"].body["properties"]["WorkspaceResourceId"] == "logs.id"
    workbook = json.loads((INFRA / "workbook.json").read_text())
    titles = " | ".join(item["content"].get("title", "") for item in workbook["items"])
    for view in ("Jobs by status per capability", "Job duration percentiles", "Failures by error code",
                 "AI tokens and cost", "WhatsApp reply latency"):
        assert view in titles


def test_outputs_name_the_urls_make_and_waha_need(bicep):
    assert {"functionAppName", "defaultHostName", "makeIngestUrl", "wahaWebhookUrl"} <= set(bicep.outputs)
    assert bicep.outputs["wahaWebhookUrl"].endswith("/api/webhook'")


def test_no_secret_values_or_keyed_connection_strings_in_infra():
    pattern = re.compile(r"(AccountKey=|SharedAccessSignature=|sk-[A-Za-z0-9]{20,}|listKeys\(|"
                         r"InstrumentationKey=[0-9a-f-]{36}|password\s*[:=]\s*'[^']+')", re.IGNORECASE)
    hits = [f"{p.name}: {m.group(0)}" for p in INFRA.rglob("*") if p.is_file()
            for m in pattern.finditer(p.read_text(errors="ignore"))]
    assert hits == []
