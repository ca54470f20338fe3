"""Where a parity run's numbers came from: versions, machine, inputs (read without importing torch or paddle)."""
from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Tuple

__all__ = ["package_versions", "cpu_name", "base_provenance", "project_state", "DECIDING_PATHS", "PROFILE_DECIDING_PATHS",
           "deciding_paths", "last_change",
           "is_ancestor", "staleness", "repo_relative", "portable_command", "portable"]

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
    data = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    data.update(package_versions())
    data["platform"] = platform.platform()
    data["cpu"] = f"{cpu_name()} ({os.cpu_count()} cores)"
    data["command"] = portable_command(" ".join(["python -m parity"] + sys.argv[1:]))
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


# The code that decides a report's numbers and verdicts: a report computed before its last change is stale.
DECIDING_PATHS = ("paddle_impl", "parity/compare.py", "parity/registry.py")
# A profile whose models come from a registry of their own is decided by it too: the zoo's twins and their known
# differences; the hub pairs' entries (builders, switches, known differences) and the code that proves each switch.
PROFILE_DECIDING_PATHS = {
    "zoo": ("parity/model_zoo.py",),
    "hubs": ("parity/hubs", "parity/hub_transfer.py"),
}


def deciding_paths(profile: Optional[str] = None) -> Tuple[str, ...]:
    """The paths whose last change a report of ``profile`` must postdate (the core's, then the profile's own)."""
    return DECIDING_PATHS + PROFILE_DECIDING_PATHS.get(profile or "", ())


def last_change(paths=DECIDING_PATHS, root: Optional[Path] = None) -> Optional[str]:
    """The newest commit that touched any of ``paths`` (relative to the checkout), or None when unknown."""
    root = Path(root) if root is not None else _REPO_ROOT
    found = _git(["log", "-1", "--format=%H", "--", *paths], root)
    if found is None:
        return None
    return found.strip() or None


def is_ancestor(older: str, newer: str, root: Optional[Path] = None) -> Optional[bool]:
    """Whether commit ``older`` is ``newer`` or one of its ancestors; None when git cannot tell (unknown commit)."""
    root = Path(root) if root is not None else _REPO_ROOT
    env = dict(os.environ, GIT_OPTIONAL_LOCKS="0", LC_ALL="C")
    try:
        done = subprocess.run(["git", "merge-base", "--is-ancestor", older, newer], cwd=root, env=env,
                              capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return {0: True, 1: False}.get(done.returncode)


def staleness(commit: Optional[str], root: Optional[Path] = None, paths=DECIDING_PATHS) -> Optional[str]:
    """Why a report computed at ``commit`` no longer describes the code (a sentence), or None when it does.

    Stale when the commit is unknown, is not in this repository's history, or
    precedes the last change to ``paths``.
    """
    if not commit:
        return "computed at an unknown commit"
    changed = last_change(paths, root)
    if changed is None:
        return None  # no history of those paths here: nothing newer to be stale against
    verdict = is_ancestor(changed, commit, root)
    if verdict is None:
        return f"computed at {commit[:12]}, a commit this repository does not have"
    if not verdict:
        return f"computed before {changed[:12]} changed the code that decides it"
    return None


def repo_relative(path, root: Optional[Path] = None) -> str:
    """``path`` relative to the checkout when it lies inside it (``reports/zoo``), else as given.

    Keeps a machine's directories out of what a report records.
    """
    root = Path(root) if root is not None else _REPO_ROOT
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except (ValueError, OSError):
        return str(path)


def _portable_word(word: str, root: Path) -> str:
    """One command-line word with its absolute path made machine-free: repo-relative, else ``…/last/two``."""
    if "=" in word and word.startswith("--"):
        option, value = word.split("=", 1)
        return f"{option}={_portable_word(value, root)}"
    if not word.startswith("/"):
        return word
    relative = repo_relative(word, root)
    if relative != word:
        return relative or "."
    parts = Path(word).parts[1:]
    return "…/" + "/".join(parts[-2:]) if len(parts) > 2 else word


def portable_command(command: str, root: Optional[Path] = None) -> str:
    """``command`` without this machine's directories: paths in the checkout relative to it, others cut to their tail.

    ``python -m parity merge /work/shards/zoo/1 --out /srv/x/reports/zoo`` becomes
    ``python -m parity merge …/zoo/1 --out …/reports/zoo`` (or ``reports/zoo`` inside the checkout).
    """
    root = Path(root) if root is not None else _REPO_ROOT
    return " ".join(_portable_word(word, root) for word in str(command).split(" "))


def portable(value, root: Optional[Path] = None):
    """A JSON value with every absolute path inside the checkout (as a string or a key) made relative to it."""
    root = Path(root) if root is not None else _REPO_ROOT

    def fix(item):
        if isinstance(item, str) and item.startswith("/"):
            relative = repo_relative(item, root)
            return relative if relative != item else item
        if isinstance(item, dict):
            return {fix(k): fix(v) for k, v in item.items()}
        if isinstance(item, list):
            return [fix(v) for v in item]
        return item

    return fix(value)
