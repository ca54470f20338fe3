"""The parity matrix as pytest cases: ``pytest -k gradcam-aug_smooth``.

Each (method, augmentation) pair runs once per session, torch and Paddle each
in a worker process of its own, covering both eigen modes (so ScoreCAM's and
AblationCAM's channel weights are computed once per augmentation variant);
the case tests then compare stage by stage.  ``make test`` runs the quick
profile in float32 for all 32 cases and a float64 subset; ``pytest -m full``
runs the full profile.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import file_lock
from paddle_impl.weights import sha256_of
from parity.config import make_config
from parity.registry import Case, all_cases
from parity.runner import finalize_case, run_case_group

FLOAT64_SUBSET = [
    Case(method, smooth)
    for method in ("gradcam", "gradcam++", "xgradcam", "eigencam", "eigengradcam", "layercam", "scorecam", "ablationcam")
    for smooth in ("no_smooth", "eigen_smooth")
] + [Case("gradcam", "aug_smooth"), Case("layercam", "aug_eigen_smooth")]


def _case_record(case: Case, profile: str, dtype: str, shared_dir: Path, reference_image: Path, weights_pair):
    torch_weights, paddle_weights, torch_sha = weights_pair
    group = f"{profile}-{dtype}-{case.method}-{'aug' if case.mode.aug_smooth else 'plain'}"
    work = shared_dir / "parity-work" / group
    config = make_config(
        profile=profile, dtype=dtype, out=shared_dir / "parity-out" / f"{profile}-{dtype}",
        image=reference_image, image_sha256=sha256_of(reference_image),
        torch_weights=torch_weights, paddle_weights=paddle_weights, torch_weights_sha256=torch_sha,
        methods=[case.method], jobs=1,
    )
    with file_lock(shared_dir / "parity-work" / f"{group}.lock"):
        done_marker = work / "outcomes.json"
        if not done_marker.exists():
            torch_out, paddle_out = run_case_group(config, case.method, case.mode.aug_smooth, work)
            done_marker.write_text(json.dumps({"ok": [torch_out.ok, paddle_out.ok]}))
            _OUTCOMES[group] = (torch_out, paddle_out)
    if group not in _OUTCOMES:
        # Another xdist worker ran this group; rebuild the outcomes from its files.
        torch_out, paddle_out = run_case_group(config, case.method, case.mode.aug_smooth, work)
        _OUTCOMES[group] = (torch_out, paddle_out)
    torch_out, paddle_out = _OUTCOMES[group]
    return finalize_case(config, case, torch_out, paddle_out)


_OUTCOMES = {}


def _assert_case(record):
    assert record["error"] is None, record["error"]
    assert record["passed"], record["message"]


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_quick_float32(case, shared_dir, reference_image, weights_pair):
    _assert_case(_case_record(case, "quick", "float32", shared_dir, reference_image, weights_pair))


@pytest.mark.parametrize("case", FLOAT64_SUBSET, ids=lambda c: c.id)
def test_quick_float64(case, shared_dir, reference_image, weights_pair):
    _assert_case(_case_record(case, "quick", "float64", shared_dir, reference_image, weights_pair))


@pytest.mark.full
@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_full_float32(case, shared_dir, reference_image, weights_pair):
    _assert_case(_case_record(case, "full", "float32", shared_dir, reference_image, weights_pair))
