"""The GitHub Actions workflow: valid against GitHub's schema, and the same CI as .ci/run."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO

WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


def _check_jsonschema(path: Path) -> subprocess.CompletedProcess:
    # The schema ships inside check-jsonschema (a dev extra): no download, works offline.
    cli = Path(sys.executable).parent / "check-jsonschema"
    command = str(cli) if cli.exists() else shutil.which("check-jsonschema") or "check-jsonschema"
    return subprocess.run([command, "--builtin-schema", "vendor.github-workflows", str(path)],
                          capture_output=True, text=True)


def test_workflow_is_valid_for_github_actions():
    checked = _check_jsonschema(WORKFLOW)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_linter_rejects_a_broken_workflow(tmp_path):
    broken = yaml.safe_load(WORKFLOW.read_text())
    broken["jobs"]["pipeline"]["steps"][0] = {"uses": "actions/checkout@v4", "run": "both at once"}
    path = tmp_path / "ci.yml"
    path.write_text(yaml.safe_dump(broken))
    assert _check_jsonschema(path).returncode != 0


def test_workflow_runs_ci_run_on_push_and_keeps_reports_and_screenshots():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert "push" in triggers
    steps = workflow["jobs"]["pipeline"]["steps"]
    assert any("bash .ci/run" in step.get("run", "") for step in steps)
    (upload,) = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    assert upload["if"] == "always()"  # a red run keeps its reports too
    assert set(upload["with"]["path"].split()) == {"reports/", "artifacts/"}
    # artifacts/ is where .ci/run has the browser tests put their screenshots
    assert 'CI_ARTIFACTS_DIR="${CI_ARTIFACTS_DIR:-$PWD/artifacts}"' in (REPO / ".ci" / "run").read_text()
