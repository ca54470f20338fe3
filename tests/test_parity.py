"""The parity matrix as pytest cases: ``pytest -k gradcam-aug_smooth``.

The fast tier runs the tiny profile (every seed method and mode at reduced
size) of all 32 cases in float32 (one ``run_matrix`` per session, shared by the
xdist workers) and a float64 canary; the opt-in tier (``-m slow``) adds the
float64 subset of every method and the quick profile, and ``pytest -m full``
runs the full profile.  Each case test asserts its own
record, so a failure names the case and, through the comparison message, the
first stage over its bound.
"""
from __future__ import annotations

import pytest

from conftest import run_shared_matrix
from parity.registry import METHODS, Case, all_cases

# Every test here reads a shared run: keep them on one xdist worker (make test uses --dist loadgroup),
# so the other worker runs the rest of the suite instead of waiting for the same run.
pytestmark = pytest.mark.xdist_group("shared-matrix")

FLOAT64_CANARY = ["gradcam", "ablationcam"]
FLOAT64_REST = [m for m in METHODS if m not in FLOAT64_CANARY]
FLOAT64_SMOOTHS = ["no_smooth", "eigen_smooth"]


def _assert_case(record):
    assert record["error"] is None, record["error"]
    assert record["passed"], record["message"]


def _record(case: Case, name: str, shared_dir, weights_pair, reference_image, **kwargs):
    _, records, _ = run_shared_matrix(shared_dir, name, weights_pair, reference_image, **kwargs)
    assert case.id in records, f"{case.id} was not part of the {name} run: {sorted(records)}"
    return records[case.id]


@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_tiny_float32(case, shared_dir, reference_image, weights_pair):
    _assert_case(_record(case, "tiny-float32", shared_dir, weights_pair, reference_image))


@pytest.mark.parametrize("case", all_cases(FLOAT64_CANARY, FLOAT64_SMOOTHS), ids=lambda c: c.id)
def test_tiny_float64(case, shared_dir, reference_image, weights_pair):
    _assert_case(_record(case, "tiny-float64-canary", shared_dir, weights_pair, reference_image, dtype="float64",
                         methods=FLOAT64_CANARY, smooths=FLOAT64_SMOOTHS))


@pytest.mark.slow
@pytest.mark.parametrize("case", all_cases(FLOAT64_REST, FLOAT64_SMOOTHS), ids=lambda c: c.id)
def test_tiny_float64_every_method(case, shared_dir, reference_image, weights_pair):
    _assert_case(_record(case, "tiny-float64", shared_dir, weights_pair, reference_image, dtype="float64",
                         methods=FLOAT64_REST, smooths=FLOAT64_SMOOTHS))


@pytest.mark.slow
@pytest.mark.parametrize("case", all_cases(["gradcam", "layercam"], ["aug_smooth", "aug_eigen_smooth"]), ids=lambda c: c.id)
def test_tiny_float64_augmented(case, shared_dir, reference_image, weights_pair):
    _assert_case(_record(case, "tiny-float64-aug", shared_dir, weights_pair, reference_image, dtype="float64",
                         methods=["gradcam", "layercam"], smooths=["aug_smooth", "aug_eigen_smooth"]))


@pytest.mark.slow
@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_quick_float32(case, shared_dir, reference_image, weights_pair):
    _assert_case(_record(case, "quick-float32", shared_dir, weights_pair, reference_image, profile="quick", jobs=2))


@pytest.mark.full
@pytest.mark.parametrize("case", all_cases(), ids=lambda c: c.id)
def test_full_float32(case, shared_dir, reference_image, weights_pair):
    _assert_case(_record(case, "full-float32", shared_dir, weights_pair, reference_image, profile="full", jobs=2))
