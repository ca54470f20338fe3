"""The import contracts of pyproject.toml ([tool.importlinter]) hold, and they catch what they forbid.

``lint-imports`` runs from the project's venv, as .ci/run runs it.  The
breakage tests run it on a copy of the packages with one import added, so a
contract that could never fail would show up here.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not LINT_IMPORTS.exists(), reason=f"import-linter is not installed beside {sys.executable}"),
]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=150)


def test_the_contracts_hold():
    result = lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    flat = " ".join(result.stdout.split())  # rich wraps long contract names
    assert "0 broken" in flat, result.stdout
    for contract in ("The port stands alone", "No import cycle among the modules of paddle_impl",
                     "No import cycle among the modules of parity", "The harness in layers"):
        assert contract in flat, (contract, result.stdout)


def _copy_with(tmp_path: Path, module: str, line: str) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    shutil.copy2(REPO_ROOT / "pyproject.toml", root / "pyproject.toml")
    for package in ("paddle_impl", "parity"):
        shutil.copytree(REPO_ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    path = root / module
    path.write_text(path.read_text() + "\n\ndef _added_by_the_test():\n    " + line + "\n")
    return root


@pytest.mark.parametrize("module, line, broken", [
    # a lazy import inside a function counts as much as one at the top
    ("paddle_impl/grad_cam.py", "import torch", "The port stands alone"),
    ("paddle_impl/cam_command.py", "from parity import registry", "The port stands alone"),
    ("paddle_impl/atomic.py", "from paddle_impl import cam_command", "No import cycle among the modules of paddle_impl"),
    ("parity/shard.py", "from parity.cli import prepare_run", "The harness in layers"),
    ("parity/registry.py", "from parity import report", "The harness in layers"),
    # the hub entries sit below the zoo that collects them, with no exception for the pair
    ("parity/hubs/cnns.py", "from parity import model_zoo", "No import cycle among the modules of parity"),
])
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, line, broken):
    result = lint_imports(_copy_with(tmp_path, module, line))
    assert result.returncode != 0, result.stdout
    flat = " ".join(result.stdout.split())
    assert f"{broken}" in flat and "BROKEN" in flat, result.stdout
