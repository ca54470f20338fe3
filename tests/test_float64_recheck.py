"""A float32 case that fails after the two models agree is rerun in float64, which tells rounding from a bug."""
from __future__ import annotations

import pytest

from parity.cache import ResultCache
from parity.config import make_config
from parity.registry import Setup
from parity.report import case_status
from parity.runner import ENGINES_OFF, FLOAT64, LiveProcesses, recheck_in_float64, run_matrix

pytestmark = pytest.mark.filterwarnings("ignore:No ccache found:UserWarning")


@pytest.mark.timeout(600)
def test_an_ill_conditioned_float32_case_is_explained_by_its_float64_rerun(tmp_path, reference_image):
    """The seeded ShuffleNet's score moves by ~1e-7 when one conv5 channel is ablated (y = 0.031): AblationCAM's
    weights (y - y_k)/y are then a few float32 ulps of y, and float32 cannot tell the two sides apart."""
    import torch
    import torchvision

    from parity.weights import ensure_paddle_weights, sha256_of, weights_identity

    arch = "shufflenet_v2_x1_0"
    # torchvision's plain init (the zoo's default weights now seed its constant tensors, which moves the score away
    # from this tie): what this test needs is a case that float32 cannot decide
    torch.manual_seed(0)
    torch_path = tmp_path / "shufflenet_v2_x1_0_plain_init.pth"
    torch.save(torchvision.models.shufflenet_v2_x1_0().state_dict(), torch_path)
    weights_dir = tmp_path / "weights"
    config = make_config(
        profile="quick", dtype="float32", out=tmp_path / "out", image=reference_image,
        image_sha256=sha256_of(reference_image), methods=["ablationcam", "gradcam"], smooths=["no_smooth"],
        weights={arch: (torch_path, ensure_paddle_weights(torch_path, weights_dir, arch=arch),
                        weights_identity(torch_path, weights_dir, arch=arch))},
        setup_transform=lambda setup: Setup(model=arch, size=(64, 64)), jobs=1, threads=1,
    )
    config.cache = ResultCache(tmp_path / "cache", enabled=False)
    records = {r["id"]: r for r in run_matrix(config)}
    rerun = []
    recheck_in_float64(config, list(records.values()), LiveProcesses(), on_start=lambda n, what: rerun.append((n, what)))
    ablation, gradcam = records["ablationcam-no_smooth"], records["gradcam-no_smooth"]
    assert not ablation["passed"] and ablation["first_divergent_stage"] == "weights", ablation["message"]
    # only the failed case is rerun: in float64, then (it agrees there) in float32 without the engines
    assert rerun == [(1, FLOAT64), (1, ENGINES_OFF)] and "float64_check" not in gradcam
    assert ablation["float64_check"]["passed"] and ablation["float64_check"]["cam_max_abs_diff"] < 1e-6
    assert "Rerun in float64: passes" in ablation["message"] and "not the port" in ablation["message"]
    assert "Rerun in float32 with Paddle's compiled engines off: " in ablation["message"]
    assert ablation["engines_off_check"]["error"] is None
    assert case_status(ablation) == "float32 only" and case_status(gradcam) == "passed"


def _record(passed, float64_check=None, error=None, architecture_differs=None):
    record = {"id": "m-no_smooth", "passed": passed, "error": error, "architecture_differs": architecture_differs,
              "overlay_identical_fraction": 1.0 if passed else 0.5, "cam_max_abs_diff": 1e-3}
    if float64_check is not None:
        record["float64_check"] = float64_check
    return record


@pytest.mark.parametrize("float64_check, status", [
    (None, "failed"),                                              # not rerun: stays failed
    ({"skipped": "the float32 case took 900 s"}, "failed"),
    ({"passed": False, "error": None}, "failed"),                  # float64 fails too: a real difference
    ({"passed": False, "error": "worker died"}, "failed"),
    ({"passed": True, "error": None}, "float32 only"),
])
def test_only_a_passing_float64_rerun_makes_a_failure_float32_only(float64_check, status):
    from parity.cli import status_allows_success, summarize
    from parity.report import summary_line, verdict_line

    record = _record(False, float64_check)
    assert case_status(record) == status
    results = {"cases": [_record(True), record]}
    counts = summarize(results["cases"])
    if status == "failed":
        assert counts["failed"] == 1 and counts["float32_only"] == 0 and not status_allows_success(record)
        assert verdict_line(results).startswith("❌")
    else:
        assert counts["failed"] == 0 and counts["float32_only"] == 1 and status_allows_success(record)
        assert verdict_line(results).startswith("✅")
        assert "**1/2 cases passed**" in summary_line(results) and "float32 only, float64 agrees: 1" in summary_line(results)


def _failed_record(case_id, seconds=1.0):
    return {"id": case_id, "passed": False, "error": None, "architecture_differs": None, "first_divergent_stage": "cam",
            "torch_seconds": seconds, "paddle_seconds": seconds, "message": "over its bound"}


def test_a_case_that_float64_clears_is_rerun_in_float32_without_the_engines(monkeypatch, tmp_path):
    """The float64 rerun runs no engine, so it cannot tell the engines' rounding from the dynamic graph's: only a
    case it clears is run once more, in float32 with ``compiled_engines=False``, and its record says which it was."""
    from types import SimpleNamespace

    import parity.runner as runner
    from parity.report import summary_line

    cases = [SimpleNamespace(id=name) for name in ("engine", "graph", "real", "slow")]
    run_cache = ResultCache(tmp_path / "cache")
    config = SimpleNamespace(dtype="float32", cases=cases, out=tmp_path, compiled_engines=True, cache=run_cache)
    runs = []

    def fake_run_matrix(again, live):
        # float64 has nothing cached to read; the engines-off rerun's upstream side is the run's own float32 one
        assert (again.cache is run_cache) == (again.dtype == "float32") and again.cache.enabled == (again.dtype == "float32")
        runs.append((again.dtype, again.compiled_engines, sorted(c.id for c in again.cases)))
        for case in again.cases:
            if again.dtype == "float64":
                passed = case.id != "real"
            else:  # float32, engines off: only the engines' rounding goes away
                passed = case.id == "engine"
            yield {"id": case.id, "passed": passed, "error": None, "cam_max_abs_diff": 1e-7 if passed else 1e-3,
                   "first_divergent_stage": None if passed else "gradients"}

    monkeypatch.setattr(runner, "run_matrix", fake_run_matrix)
    monkeypatch.setattr(runner, "replace", lambda config, **changes: SimpleNamespace(**{**vars(config), **changes}))
    records = [_failed_record("engine"), _failed_record("graph"), _failed_record("real"), _failed_record("slow", 600)]
    announced = []
    recheck_in_float64(config, records, LiveProcesses(), on_start=lambda n, what: announced.append((n, what)))
    engine, graph, real, slow = records
    assert runs == [("float64", True, ["engine", "graph", "real"]), ("float32", False, ["engine", "graph"])]
    assert announced == [(3, FLOAT64), (2, ENGINES_OFF)]
    assert "skipped" in slow["float64_check"] and "engines_off_check" not in slow and "engines_off_check" not in real
    assert engine["engines_off_check"]["passed"] and "fused kernels round differently" in engine["message"]
    assert not graph["engines_off_check"]["passed"] and "dynamic graph's float32 rounding" in graph["message"]
    assert [case_status(r) for r in records] == ["float32 only", "float32 only", "failed", "failed"]
    line = summary_line({"cases": records})
    assert "float32 only, float64 agrees: 2 (1 of them pass with Paddle's compiled engines off)" in line, line


def test_the_engines_off_flag_reaches_every_worker_job(tmp_path, reference_image):
    from dataclasses import replace

    from parity.plan import plan_jobs
    from parity.weights import sha256_of

    config = make_config(profile="quick", dtype="float32", out=tmp_path / "out", image=reference_image,
                         image_sha256=sha256_of(reference_image), methods=["gradcam", "eigencam"],
                         smooths=["no_smooth"], weights={"resnet18": (tmp_path / "t.pth", tmp_path / "p", "id")},
                         setup_transform=lambda setup: Setup(model="resnet18", size=(64, 64)), jobs=1, threads=1)
    assert {job.compiled_engines for job in plan_jobs(config, tmp_path)} == {True}
    jobs = plan_jobs(replace(config, compiled_engines=False), tmp_path)
    assert jobs and {job.compiled_engines for job in jobs} == {False}
