#!/usr/bin/env bash
# One idempotent deploy with the Azure CLI: resource group, Bicep, app package. Used by `make deploy` and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${RESOURCE_GROUP:?set RESOURCE_GROUP (the resource group to deploy into)}"
LOCATION="${LOCATION:-swedencentral}"
NAME_PREFIX="${NAME_PREFIX:-intake}"
AI_PROVIDER="${AI_PROVIDER:-offline}"
DEPLOY_AZURE_OPENAI="${DEPLOY_AZURE_OPENAI:-false}"

az group create --name "$RESOURCE_GROUP" --location "$LOCATION" --output none

# The callback signing secret is made once and kept in Key Vault; later deploys reuse it.
vault=$(az keyvault list --resource-group "$RESOURCE_GROUP" --query "[?starts_with(name, '${NAME_PREFIX}kv')].name | [0]" -o tsv 2>/dev/null || true)
if [ -z "${CALLBACK_SIGNING_SECRET:-}" ]; then
  if [ -n "$vault" ] && az keyvault secret show --vault-name "$vault" --name callback-signing-secret --output none 2>/dev/null; then
    CALLBACK_SIGNING_SECRET=$(az keyvault secret show --vault-name "$vault" --name callback-signing-secret --query value -o tsv)
  else
    CALLBACK_SIGNING_SECRET="whsec_$(openssl rand -base64 32)"
  fi
fi

outputs=$(az deployment group create \
  --resource-group "$RESOURCE_GROUP" \
  --name "intake-$(date +%Y%m%d%H%M%S)" \
  --template-file infra/main.bicep \
  --parameters namePrefix="$NAME_PREFIX" location="$LOCATION" aiProvider="$AI_PROVIDER" \
               deployAzureOpenAI="$DEPLOY_AZURE_OPENAI" \
               openAiApiKey="${OPENAI_API_KEY:-}" wahaHmacKey="${WAHA_HMAC_KEY:-}" wahaApiKey="${WAHA_API_KEY:-}" \
               callbackSigningSecret="$CALLBACK_SIGNING_SECRET" \
  --query properties.outputs --output json)
app=$(echo "$outputs" | python3 -c 'import json,sys; print(json.load(sys.stdin)["functionAppName"]["value"])')

# Package what .funcignore lets through; the platform installs requirements.txt (remote build).
package=$(mktemp -d)/app.zip
python3 - "$package" <<'PY'
import fnmatch, os, sys, zipfile
patterns = [p.strip().rstrip("/") for p in open(".funcignore") if p.strip() and not p.startswith("#")]
def ignored(path):
    parts = path.split(os.sep)
    return any(fnmatch.fnmatch(part, p) for p in patterns for part in parts) or \
        any(fnmatch.fnmatch(path, p) for p in patterns)
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as archive:
    for root, dirs, files in os.walk("."):
        dirs[:] = [d for d in dirs if not ignored(os.path.relpath(os.path.join(root, d)))]
        for name in files:
            rel = os.path.relpath(os.path.join(root, name))
            if not ignored(rel):
                archive.write(rel)
PY
az functionapp deployment source config-zip --resource-group "$RESOURCE_GROUP" --name "$app" \
  --src "$package" --build-remote true --output none

echo "Deployed $app"
echo "$outputs" | python3 -c 'import json,sys; [print(f"  {k}: {v[\"value\"]}") for k, v in json.load(sys.stdin).items()]'
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  echo "function_app=$app" >> "$GITHUB_OUTPUT"
fi
