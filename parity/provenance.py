"""Where a parity run's numbers came from: versions, machine, inputs (read without importing torch or paddle)."""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

__all__ = ["package_versions", "cpu_name", "base_provenance", "project_state"]

_PACKAGES = {
    "torch": "torch",
    "torchvision": "torchvision",
    "paddlepaddle": "paddlepaddle",
    "grad-cam": "grad-cam",
    "numpy": "numpy",
    "opencv": "opencv-python-headless",
}


def package_versions() -> Dict[str, str]:
    versions = {"python": platform.python_version()}
    for label, dist in _PACKAGES.items():
        try:
            versions[label] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[label] = "not installed"
    return versions


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def base_provenance() -> Dict:
    import os

    data = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    data.update(package_versions())
    data["platform"] = platform.platform()
    data["cpu"] = f"{cpu_name()} ({os.cpu_count()} cores)"
    data["command"] = " ".join(["python -m parity"] + sys.argv[1:])
    return data



_REPO_ROOT = Path(__file__).resolve().parent.parent


def _git(args, cwd: Path) -> Optional[str]:
    """``git ARGS`` in ``cwd``: its stdout, or None when git is missing, fails or hangs."""
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0", LC_ALL="C")  # a status must not take the index lock
    try:
        done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=20,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return done.stdout if done.returncode == 0 else None


def project_state(root: Optional[Path] = None) -> Dict[str, object]:
    """This project's own version: ``{"commit": sha or None, "dirty": bool or None}``; never raises.

    ``dirty`` is True when a tracked file differs from the commit or an
    untracked, not ignored file exists, outside ``reports/`` (the run's own
    output, which a run rewrites).  Both are None when ``root`` is not a git
    checkout or git cannot be run.
    """
    try:
        root = Path(root) if root is not None else _REPO_ROOT
        commit = _git(["rev-parse", "--verify", "--quiet", "HEAD"], root)
        if not commit or not commit.strip():
            return {"commit": None, "dirty": None}
        status = _git(["status", "--porcelain", "--untracked-files=normal", "--", ".", ":(exclude)reports"], root)
        return {"commit": commit.strip(), "dirty": None if status is None else bool(status.strip())}
    except Exception:  # provenance must never stop a run
        return {"commit": None, "dirty": None}
