#!/usr/bin/env bash
# Calls POST /api/selftest on a deployed app and waits until the job is done (or fails the step).
set -euo pipefail
app="${1:?function app name}"
: "${RESOURCE_GROUP:?set RESOURCE_GROUP}"
host=$(az functionapp show --resource-group "$RESOURCE_GROUP" --name "$app" --query defaultHostName -o tsv)
key=$(az functionapp keys list --resource-group "$RESOURCE_GROUP" --name "$app" --query functionKeys.default -o tsv)
echo "::add-mask::$key"
job=$(curl -fsS -X POST "https://$host/api/selftest?wait=20" -H "x-functions-key: $key" -H "Idempotency-Key: smoke-${GITHUB_RUN_ID:-$(date +%s)}")
job_id=$(echo "$job" | python3 -c 'import json,sys; print(json.load(sys.stdin)["job_id"])')
for _ in $(seq 1 30); do
  status=$(curl -fsS "https://$host/api/jobs/$job_id?wait=10" -H "x-functions-key: $key" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  echo "self-test $job_id: $status"
  case "$status" in
    done) exit 0 ;;
    failed|canceled) exit 1 ;;
  esac
done
echo "self-test did not finish in time" >&2
exit 1
