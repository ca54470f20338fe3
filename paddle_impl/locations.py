"""Where the project's data lives: the checkout when there is one, a per-user directory otherwise.

Run from a checkout (``PYTHONPATH=.``, ``python cam.py``, ``make ...``, or an
editable install), the data root is the repository itself, so the reference
image, the weights and the upstream-results cache stay where they always were:
``fixtures/both.png``, ``fixtures/weights/``, ``fixtures/cache/torch/``.

Installed from a wheel, the package sits in site-packages, which is never
written to.  The data root is then ``$PADDLE_GRADCAM_HOME`` when that is set
(and not empty), else ``~/.cache/paddle-gradcam-parity``, with the same
``fixtures/...`` layout below it.

A checkout is recognised by the directory above this package holding a
``pyproject.toml`` that names this project next to ``paddle_impl/``: a
site-packages directory never does.

Nothing here creates a directory: the writers (``paddle_impl.atomic``) create
what they write into, and the readers report what is missing.

Standard library only, so the framework-free tools can import it cheaply.
"""
from __future__ import annotations

import functools
import json
import os
import re
import shlex
from pathlib import Path
from typing import Optional, Tuple

__all__ = [
    "PROJECT_NAME",
    "HOME_ENV_VAR",
    "checkout_root",
    "is_checkout",
    "user_data_dir",
    "data_root",
    "fixtures_dir",
    "default_image",
    "weights_dir",
    "cache_dir",
    "fallback_image",
    "install_command",
]

PROJECT_NAME = "paddle-gradcam-parity"
HOME_ENV_VAR = "PADDLE_GRADCAM_HOME"

_PACKAGE_DIR = Path(__file__).resolve().parent
_NAME_LINE = re.compile(r"""^\s*name\s*=\s*["']""" + re.escape(PROJECT_NAME) + r"""["']\s*$""", re.MULTILINE)


@functools.lru_cache(maxsize=None)
def _checkout_root_of(package_dir: Path) -> Optional[Path]:
    root = package_dir.parent
    pyproject = root / "pyproject.toml"
    if not (pyproject.is_file() and (root / "paddle_impl").is_dir()):
        return None
    try:
        text = pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    # Another project's pyproject.toml one level up (a vendored copy, an odd
    # sys.path) must not make us write into that project's tree.
    return root if _NAME_LINE.search(text) else None


def checkout_root() -> Optional[Path]:
    """The repository this package runs from, or None when it runs installed (site-packages)."""
    return _checkout_root_of(_PACKAGE_DIR)


def is_checkout() -> bool:
    """Whether this package runs from a checkout of the repository."""
    return checkout_root() is not None


def user_data_dir() -> Path:
    """``$PADDLE_GRADCAM_HOME`` when set and not empty, else ``~/.cache/paddle-gradcam-parity``.

    Read on every call, so a test or a wrapper script can point it elsewhere.
    """
    configured = os.environ.get(HOME_ENV_VAR, "").strip()
    if configured:
        return Path(configured).expanduser().resolve()
    return Path.home() / ".cache" / PROJECT_NAME


def data_root() -> Path:
    """The directory that ``fixtures/`` lives under: the checkout, or :func:`user_data_dir` when installed."""
    return checkout_root() or user_data_dir()


def fixtures_dir() -> Path:
    """``<data root>/fixtures``: the reference image, the weights and the caches."""
    return data_root() / "fixtures"


def default_image() -> Path:
    """``<data root>/fixtures/both.png``: upstream's example image, the default input of both command lines."""
    return fixtures_dir() / "both.png"


def weights_dir() -> Path:
    """``<data root>/fixtures/weights``: the seeded/downloaded ``.pth`` files, and ``converted/`` below it."""
    return fixtures_dir() / "weights"


def cache_dir() -> Path:
    """``<data root>/fixtures/cache/torch``: the cache of upstream (torch) results the parity harness reuses."""
    return fixtures_dir() / "cache" / "torch"


def fallback_image() -> Optional[Path]:
    """matplotlib's bundled ``sample_data/grace_hopper.jpg``, or None when matplotlib does not ship it.

    An installed file, so it is there with a pip install too; the harness
    uses it when :func:`default_image` is missing, and says so in its report.
    """
    try:
        import matplotlib
    except ImportError:
        return None
    candidate = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if candidate.is_file():
        return candidate
    try:
        from matplotlib import cbook

        found = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    except Exception:  # noqa: BLE001 - any failure just means "no fallback"
        return None
    return found if found.is_file() else None


def _installed_from() -> Optional[Tuple[str, bool]]:
    """(source, editable) of this project's installed distribution, from pip's ``direct_url.json`` (PEP 610).

    ``source`` is a local directory or archive; None when the distribution was
    not installed from a local path (or is not installed at all).
    """
    from importlib import metadata
    from urllib.parse import unquote, urlparse

    try:
        text = metadata.distribution(PROJECT_NAME).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    try:
        record = json.loads(text or "")
    except ValueError:
        return None
    url = urlparse(str(record.get("url", "")))
    if url.scheme != "file":
        return None
    editable = bool((record.get("dir_info") or {}).get("editable"))
    return unquote(url.path), editable


def install_command(extra: str) -> str:
    """The pip command that adds ``extra`` (``parity``...) to this project, as the user installed it.

    The project is not on PyPI, so the command names where it came from: the
    checkout it runs from (``pip install '.[parity]'`` in that directory), or
    the directory or wheel pip recorded when it was installed.
    """
    root = checkout_root()
    if root is not None:
        editable = _installed_from()
        flag = "-e " if editable is not None and editable[1] else ""
        where = "." if Path.cwd().resolve() == root.resolve() else str(root)
        return f"pip install {flag}{shlex.quote(f'{where}[{extra}]')}"
    source = _installed_from()
    if source is None:
        return f"pip install '<your checkout of {PROJECT_NAME}>[{extra}]'"
    path, editable = source
    if Path(path).exists():
        return f"pip install {'-e ' if editable else ''}{shlex.quote(f'{path}[{extra}]')}"
    return f"pip install '<your checkout of {PROJECT_NAME}>[{extra}]' (it was installed from {path}, which is gone)"
