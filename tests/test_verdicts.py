"""Each status a case can have, decided from its numbers, and one honest count of them (no torch, no paddle)."""
import json
from pathlib import Path

import numpy as np
import pytest

from parity.case_record import finalize_case
from parity.compare import VACUOUS_RANGE, ties, vacuity_note, vacuous_images
from parity.config import RunConfig
from parity.outcome import JobOutcome
from parity.registry import METHODS, Case, Setup
from parity.report_markdown import render_markdown
from parity.report_verdict import (
    case_counts, case_status, run_summary, status_allows_success, summary_line, vacuous_allowed, verdict_line,
    verdict_word,
)
from parity.step_summary import render_step_summary

RNG = np.random.default_rng(7)


def _record(**fields):
    record = {"id": "gradcam-no_smooth", "method": "gradcam", "smooth": "no_smooth", "passed": True, "error": None,
              "architecture_differs": None, "vacuous": None, "ill_conditioned": None, "tolerance": 1e-4,
              "cam_max_abs_diff": 1e-7, "overlay_identical_fraction": 1.0, "flags": [], "stages": []}
    record.update(fields)
    return record


# -- vacuous ------------------------------------------------------------------------------
def test_a_batch_with_one_flat_image_on_both_sides_is_vacuous():
    structured = RNG.random((2, 7, 7))
    flat = structured.copy()
    flat[1] = 0.25  # a constant map: nothing to see
    assert vacuous_images(flat, flat + 1e-9) == [1]
    assert "image 1 of 2" in vacuity_note(flat, flat)
    assert vacuous_images(structured, structured) == []
    assert vacuity_note(structured, structured) is None


def test_flat_on_one_side_only_or_nan_is_not_vacuous_but_a_finding():
    cam = RNG.random((1, 5, 5))
    assert vacuous_images(np.zeros_like(cam), cam) == []  # one flat side differs: the comparison says so
    nan = np.full((1, 5, 5), np.nan)
    assert vacuous_images(nan, nan) == []


def test_the_range_threshold_is_strict():
    below = np.zeros((1, 4, 4))
    below[0, 0, 0] = VACUOUS_RANGE / 2
    above = np.zeros((1, 4, 4))
    above[0, 0, 0] = VACUOUS_RANGE * 2
    assert vacuous_images(below, below) == [0]
    assert vacuous_images(above, above) == []


def test_a_vacuous_case_is_never_counted_as_passed():
    results = {"cases": [_record(), _record(id="b", vacuous="both final CAMs are flat")]}
    assert case_status(results["cases"][1]) == "vacuous"
    counts = case_counts(results)
    assert counts["passed"] == 1 and counts["vacuous"] == 1 and counts["cases"] == 2
    assert summary_line(results).startswith("**1/2 cases passed** · vacuous: 1")
    assert verdict_word(results) == "INCONCLUSIVE" and verdict_line(results).startswith("⚠️ **INCONCLUSIVE**")


def test_an_older_record_flagged_flat_reads_as_vacuous():
    old = _record(flags=["flat CAM (all zeros)"])
    del old["vacuous"]
    assert case_status(old) == "vacuous"
    recorded = _record(flags=["flat CAM (all zeros)"], vacuous=None)  # a newer run decided: not vacuous
    assert case_status(recorded) == "passed"


def test_a_vacuous_case_fails_the_run_except_in_upstreams_32px_matrix():
    vacuous = _record(vacuous="flat")
    assert not status_allows_success(vacuous)
    assert status_allows_success(vacuous, vacuous_ok=vacuous_allowed("upstream-suite"))
    assert not vacuous_allowed("quick") and not vacuous_allowed("zoo")


# -- ill-conditioned ----------------------------------------------------------------------
def test_segeigencam_sign_chosen_by_a_tie_is_ill_conditioned():
    spec = METHODS["segeigencam"]
    tie = np.array([[[[0.5, -0.5]]]], dtype=np.float32)  # two spatial positions: exactly +a and -a
    decided = np.array([[[[0.9, -0.3]]]], dtype=np.float32)
    found = ties(spec, "float32", {"raw_cam": tie}, {"raw_cam": -tie}, target_category=1)
    assert len(found) == 1 and "sign correction" in found[0]
    assert ties(spec, "float32", {"raw_cam": decided}, {"raw_cam": decided}, target_category=1) == []
    # the same map under a method without sign correction decides nothing by |max| vs |min|
    assert ties(METHODS["gradcam"], "float32", {"raw_cam": tie}, {"raw_cam": tie}, target_category=1) == []


def test_two_classes_with_equal_scores_under_argmax_are_a_tie():
    spec = METHODS["gradcam"]
    logits = RNG.normal(size=(1, 2, 10))
    tied = logits.copy()
    tied[0, 1, [3, 7]] = tied[0, 1].max() + 1.0  # image 1: two classes share the top score
    found = ties(spec, "float32", {"logits": tied}, {"logits": tied}, target_category=None)
    assert len(found) == 1 and "target class" in found[0]
    assert ties(spec, "float32", {"logits": logits}, {"logits": logits}, target_category=None) == []
    # a fixed target category takes no argmax: the tie decides nothing
    assert ties(spec, "float32", {"logits": tied}, {"logits": tied}, target_category=3) == []


def test_an_ill_conditioned_case_is_neither_passed_nor_failed():
    for passed in (True, False):
        case = _record(passed=passed, ill_conditioned="target class decided by a tie")
        assert case_status(case) == "ill-conditioned"
        assert status_allows_success(case)
    results = {"cases": [_record(), _record(id="t", passed=False, ill_conditioned="tie")]}
    assert case_counts(results)["ill_conditioned"] == 1 and case_counts(results)["failed"] == 0
    assert "ill-conditioned: 1" in summary_line(results) and verdict_word(results) == "INCONCLUSIVE"


# -- one count everywhere -----------------------------------------------------------------
@pytest.mark.parametrize("status, fields", [
    ("failed", {"passed": False}),
    ("error", {"passed": False, "error": "worker died"}),
    ("architectures differ", {"passed": False, "architecture_differs": "another function"}),
    ("float32 only", {"passed": False, "float64_check": {"passed": True, "error": None}}),
    ("vacuous", {"vacuous": "flat"}),
    ("ill-conditioned", {"ill_conditioned": "tie"}),
])
def test_every_status_is_in_the_denominator_and_named(status, fields):
    results = {"provenance": {"profile": "quick"}, "cases": [_record(), _record(id="other", **fields)]}
    assert case_status(results["cases"][1]) == status
    line = summary_line(results)
    assert line.startswith("**1/2 cases passed**")
    # a case that cannot pass, or whose float64 rerun passes, leaves the verdict to the others
    assert (verdict_word(results) == "PASS") == (status in ("architectures differ", "float32 only"))
    if status not in ("error",):
        label = "float32 only, float64 agrees" if status == "float32 only" else status
        assert f"{label}: 1" in line
    # the title line, the step summary, the report's first screen and parity.json's summary carry the same line
    summary = run_summary(results)
    assert summary["verdict_line"] == verdict_line(results) and summary["verdict"] == verdict_word(results)
    assert summary[{"error": "errors", "architectures differ": "architecture_differs", "float32 only": "float32_only",
                    "ill-conditioned": "ill_conditioned"}.get(status, status)] == 1
    assert verdict_line(results) in render_step_summary(results)
    assert render_markdown(results).splitlines()[2] == verdict_line(results)


# -- decided where the case is recorded ---------------------------------------------------
def _side(tmp_path: Path, name: str, cam: np.ndarray, logits: np.ndarray) -> JobOutcome:
    stage_dir = tmp_path / name / "gradcam" / "no_smooth"
    stage_dir.mkdir(parents=True)
    overlay = np.zeros((1, cam.shape[-2], cam.shape[-1], 3), np.uint8)
    stages = {"input": np.zeros((1, 1, 3, 8, 8), np.float32), "targets": np.array([[int(logits.argmax())]]),
              "logits": logits, "cam": cam, "overlay": overlay}
    for stage, array in stages.items():
        np.save(stage_dir / f"{stage}.npy", array)
    info = {"seconds": 0.1, "weights_reused": 0, "target_categories": [[int(logits.argmax())]]}
    return JobOutcome(job=None, ok=True, seconds=0.1, out_dir=tmp_path / name,
                      result={"cases": {"gradcam": {"no_smooth": info}}, "threads": 1})


@pytest.mark.parametrize("flat, tied, status", [(False, False, "passed"), (True, False, "vacuous"),
                                                (False, True, "ill-conditioned")])
def test_finalize_case_records_vacuity_and_ties(tmp_path, flat, tied, status):
    cam = np.zeros((1, 8, 8), np.float32) if flat else RNG.random((1, 8, 8)).astype(np.float32)
    logits = RNG.normal(size=(1, 1, 10)).astype(np.float32)
    if tied:
        logits[0, 0, [2, 4]] = logits.max() + 1.0
    config = RunConfig(cases=[], weights={}, dtype="float32", device="cpu", image=Path("x.png"), cache_fields={},
                       out=tmp_path / "out")
    case = Case("gradcam", "no_smooth", Setup())
    record = finalize_case(config, case, _side(tmp_path, "torch", cam, logits), _side(tmp_path, "paddle", cam, logits))
    assert record["error"] is None and record["passed"]  # both sides equal: the comparison alone would pass
    assert bool(record["vacuous"]) == flat and bool(record["ill_conditioned"]) == tied
    assert case_status(record) == status


@pytest.mark.parametrize("profile, status", [("quick", 1), ("zoo", 1), ("upstream-suite", 0)])
def test_a_profile_run_with_a_vacuous_case_exits_1_except_upstreams_matrix(tmp_path, profile, status, capsys):
    from parity.cli import write_results

    records = [_record(message="ok"), _record(id="flat", vacuous="both final CAMs are flat", message="ok")]
    assert write_results(tmp_path, {"profile": profile, "dtype": "float32"}, records) == status
    saved = json.loads((tmp_path / "parity.json").read_text(encoding="utf-8"))
    assert saved["summary"]["vacuous"] == 1 and saved["summary"]["verdict"] == "INCONCLUSIVE"
    assert "**1/2 cases passed** · vacuous: 1" in capsys.readouterr().out
    # without the vacuous case the same run passes
    assert write_results(tmp_path, {"profile": profile, "dtype": "float32"}, records[:1]) == 0


def test_a_paper_measure_on_flat_maps_is_marked_vacuous():
    from parity.paper import render_markdown as paper_markdown

    row = {"method": "gradcam", "images": 2, "paddle_average_drop": 1.0, "torch_average_drop": 1.0,
           "paddle_increase": 0.0, "torch_increase": 0.0, "cam_max_abs_diff": 0.0, "drop_max_abs_diff": 0.0}
    data = {"settings": {"images": ["a.png", "b.png"], "size": [32, 32], "model": "resnet50", "layers": "layer4",
                         "weights": "imagenet", "command": "python -m parity.paper"},
            "versions": {}, "date": "2026-12-06", "y": [0.5, 0.5], "rows": [dict(row, vacuous_images=1), row]}
    lines = paper_markdown(data).splitlines()
    assert sum("| gradcam ⚪ vacuous on 1 image(s) |" in line for line in lines) == 1
    assert sum(line.startswith("| gradcam | ") for line in lines) == 1
