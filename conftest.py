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


@pytest.fixture(scope="module")
def one_thread():
    """Both frameworks on one thread for a module: float32 bits depend on the thread count."""
    import paddle
    import torch

    torch.set_num_threads(1)
    paddle.base.core.set_num_threads(1)


@pytest.fixture(scope="session")
def reference_image() -> Path:
    path = REPO_ROOT / "fixtures" / "both.png"
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make fixtures` (it copies ../shared/fixtures/both.png or downloads it)")
    return path


@pytest.fixture(scope="session")
def weights_pair(shared_dir):
    """(torch .pth, paddle .pdparams, content identity) of the default seeded ResNet50."""
    from parity.weights import ensure_default_weights, ensure_paddle_weights, weights_identity

    with file_lock(shared_dir / "weights.lock"):
        torch_path = ensure_default_weights()
        paddle_path = ensure_paddle_weights(torch_path)
        identity = weights_identity(torch_path)
    return torch_path, paddle_path, identity


def run_shared_matrix(shared_dir: Path, name: str, weights_pair, reference_image: Path, **config_kwargs):
    """One ``run_matrix`` per session under ``shared_dir/matrix/NAME`` (xdist workers share it under a lock).

    Returns (out directory, {case id: record}, upstream cache directory).  The
    run uses one worker with one thread, so it never takes more than the one
    core an xdist worker stands for.
    """
    import json

    from parity.weights import sha256_of
    from parity.cache import ResultCache
    from parity.config import make_config
    from parity.runner import run_matrix

    base = shared_dir / "matrix" / name
    with file_lock(shared_dir / "matrix" / f"{name}.lock"):
        done = base / "records.json"
        if not done.exists():
            torch_weights, paddle_weights, identity = weights_pair
            settings = dict(profile="tiny", dtype="float32", jobs=1, threads=1)
            settings.update(config_kwargs)
            config = make_config(
                out=base / "out", image=reference_image, image_sha256=sha256_of(reference_image),
                torch_weights=torch_weights, paddle_weights=paddle_weights, weights_identity=identity, **settings,
            )
            config.cache = ResultCache(base / "cache", enabled=True)
            records = run_matrix(config)
            done.write_text(json.dumps({r["id"]: r for r in records}))
    return base / "out", json.loads(done.read_text()), base / "cache"


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Make ``--dist loadgroup`` group by ``xdist_group`` again.

    pytest-xdist 3.8 tags a grouped test by rewriting ``Item._nodeid``, which
    pytest 9 no longer reads (node ids come from ``Item._id``), so its groups
    were silently ignored; this tags them the way the scheduler expects
    (``nodeid@group``).
    """
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import NodeId

    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in item.iter_markers("xdist_group")})
        suffix = "@" + "_".join(names)
        if names and not item.nodeid.endswith(suffix):
            item._id = NodeId.parse(item.nodeid + suffix)
