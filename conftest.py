"""Shared pytest fixtures: the reference image, the weights pair, and xdist-safe shared work."""
from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("PADDLE_GRADCAM_PROGRESS", "0")


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> Path:
    """A directory all xdist workers of this session share."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def reference_image() -> Path:
    path = REPO_ROOT / "fixtures" / "both.png"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make fixtures` (it copies ../shared/fixtures/both.png or downloads it)")
    return path


@pytest.fixture(scope="session")
def weights_pair(shared_dir):
    """(torch .pth, paddle .pdparams, torch sha256) of the default seeded ResNet50."""
    from paddle_impl.weights import ensure_default_weights, ensure_paddle_weights, sha256_of

    with file_lock(shared_dir / "weights.lock"):
        torch_path = ensure_default_weights()
        paddle_path = ensure_paddle_weights(torch_path)
    return torch_path, paddle_path, sha256_of(torch_path)
