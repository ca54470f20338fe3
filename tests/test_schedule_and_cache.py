"""Planning, scheduling and the upstream cache: they decide who computes what and when, never a number.

The end-to-end tests run the same cases under different schedules (one
worker or two, whole jobs or per-variant weights units, upstream computed or
taken from the cache) and compare every stage file byte for byte, and they
count the in-process weight reuse exactly: a reuse happens only when a pass's
arguments are the same to the bit, so an exact count is itself a check that
the numbers did not move between passes or processes.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from parity.cache import ResultCache
from parity.config import make_config
from parity.outcome import JobOutcome
from parity.plan import (
    SPLIT_MIN_SECONDS, cache_key, job_views, make_plan, plan_jobs, should_split, view_cases, weights_units,
)
from parity.runner import run_matrix
from parity.schedule import AUG_VARIANTS, WORKER_OVERHEAD_SECONDS, estimate_makespan, method_variant_cost

pytestmark = pytest.mark.filterwarnings("ignore:No ccache found:UserWarning")


def _config(tmp_path: Path, profile: str = "full", **kwargs):
    defaults = dict(
        profile=profile, dtype="float32", out=tmp_path / "out", image=tmp_path / "img.png", image_sha256="0" * 64,
        torch_weights=tmp_path / "w.pth", paddle_weights=tmp_path / "w.pdparams",
        weights_identity="1" * 64, use_cache=False,
    )
    defaults.update(kwargs)
    return make_config(**defaults)


def _digest(directory: Path) -> dict:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*.npy"))}


# -- planning -----------------------------------------------------------------------------
def test_short_methods_share_a_process_and_long_ones_get_their_own(tmp_path):
    jobs = plan_jobs(_config(tmp_path), tmp_path / "work")
    light = ("eigencam", "eigengradcam", "gradcam", "gradcam++", "layercam", "xgradcam")
    # full profile: upstream's ScoreCAM/AblationCAM and Paddle's ScoreCAM take minutes per variant;
    # Paddle's AblationCAM replays only the layers after the target (seconds) and shares a process
    torch_groups = {tuple(sorted(j.methods)) for j in jobs if j.framework == "torch"}
    paddle_groups = {tuple(sorted(j.methods)) for j in jobs if j.framework == "paddle"}
    assert torch_groups == {light, ("ablationcam",), ("scorecam",)}
    assert paddle_groups == {tuple(sorted(light + ("ablationcam",))), ("scorecam",)}
    for job in jobs:  # every job runs all four modes of its methods in one process ...
        assert job.modes == [(True, False), (True, True), (False, False), (False, True)]
        # ... and stands for one view per method and augmentation setting
        views = job_views(job)
        assert [(v.method, v.aug_smooth, v.eigen_modes) for v in views] == [
            (m, aug, [False, True]) for m in job.methods for aug in (True, False)]
    assert len(plan_jobs(_config(tmp_path), tmp_path / "work", combine=False)) == 32  # one per (side, method, aug)
    # quick profile: ScoreCAM/AblationCAM run on another setup (64x64, layer2), so four processes in all
    quick = plan_jobs(_config(tmp_path, profile="quick"), tmp_path / "work")
    assert len(quick) == 4 and {len(j.methods) for j in quick} == {2, 6}
    # with one augmentation setting asked for, there is nothing to combine
    plain = plan_jobs(_config(tmp_path, smooths=["no_smooth", "eigen_smooth"]), tmp_path / "w")
    assert not any(j.aug_smooth or j.plain_eigen_modes for j in plain)


def test_methods_without_aug_smooth_have_no_augmented_view(tmp_path):
    jobs = plan_jobs(_config(tmp_path, profile="all-methods"), tmp_path / "work")
    finer = [v for j in jobs for v in job_views(j) if v.method == "finercam"]
    assert finer and all(not v.aug_smooth for v in finer)
    assert {tuple(view_cases(v)) for v in finer} == {("no_smooth", "eigen_smooth")}


def test_long_aug_variants_become_weights_units_that_the_cases_job_waits_for(tmp_path):
    config = _config(tmp_path)
    plan = make_plan(config, tmp_path / "work")
    units = plan.units()
    assert sorted({(u.framework, u.method) for u in units}) == [
        ("paddle", "scorecam"), ("torch", "ablationcam"), ("torch", "scorecam")]
    assert len(units) == 3 * AUG_VARIANTS
    waiting = [j for j in plan.jobs if j.weights_from]
    assert len(waiting) == 3
    for job in waiting:
        mine = [u for u in units if (u.framework, u.method) == (job.framework, job.method)]
        assert sorted(u.variant for u in mine) == list(range(AUG_VARIANTS))
        assert plan.waits_for(job) == [u.out_dir for u in mine]
        assert all(u.eigen_modes == [] and u.threads == config.threads for u in mine)
    paddle_shared = next(j for j in plan.jobs if j.framework == "paddle" and "ablationcam" in j.methods)
    assert method_variant_cost("ablationcam", "paddle", paddle_shared.setup, config.threads) < SPLIT_MIN_SECONDS
    assert not should_split(paddle_shared, config) and not paddle_shared.weights_from


def test_splitting_follows_the_cost_unless_forced(tmp_path):
    quick = make_plan(_config(tmp_path, profile="quick"), tmp_path / "work")
    assert not quick.units()  # a quick-profile variant takes seconds: not worth a process
    # forced, ScoreCAM and AblationCAM leave the process they shared and split, both frameworks
    forced = make_plan(_config(tmp_path, profile="quick", split_units=True), tmp_path / "work")
    assert len(forced.units()) == 4 * AUG_VARIANTS
    assert sorted({tuple(j.methods) for j in forced.jobs if j.weights_from}) == [("ablationcam",), ("scorecam",)]
    never = make_plan(_config(tmp_path, split_units=False), tmp_path / "work")
    assert not never.units()
    no_reuse = make_plan(_config(tmp_path, reuse_weights=False), tmp_path / "work")
    assert not no_reuse.units()
    plain_only = make_plan(_config(tmp_path, smooths=["no_smooth", "eigen_smooth"]), tmp_path / "work")
    assert not plain_only.units()  # one variant: the cases job itself is the unit


def test_cache_keys_cover_threads_setup_variant_and_weights_identity(tmp_path):
    one = _config(tmp_path, threads=1, methods=["scorecam"])
    job = plan_jobs(one, tmp_path / "work")[0]
    view = job_views(job)[0]
    assert cache_key(one, view) != cache_key(_config(tmp_path, threads=2, methods=["scorecam"]), replace(view, threads=2))
    assert cache_key(one, view) != cache_key(_config(tmp_path, weights_identity="2" * 64, methods=["scorecam"]), view)
    assert cache_key(one, view) != cache_key(one, replace(view, setup=replace(view.setup, batch=2)))
    assert cache_key(one, view) != cache_key(one, replace(view, setup=replace(view.setup, size=(32, 40))))
    units = weights_units(job)
    assert len({cache_key(one, u) for u in units}) == AUG_VARIANTS
    assert cache_key(one, units[0]) != cache_key(one, view)
    # the key does not depend on where the weights file lies, only on what it holds
    moved = _config(tmp_path, torch_weights=tmp_path / "elsewhere" / "w.pth", methods=["scorecam"])
    assert cache_key(moved, view) == cache_key(one, view)


def test_workers_never_exceed_jobs_or_cores_over_threads(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert _config(tmp_path, jobs=2, threads=1).workers == 2
    assert _config(tmp_path, jobs=8, threads=2).workers == 4
    assert _config(tmp_path, jobs=8, threads=16).workers == 1
    assert _config(tmp_path, jobs=1, threads=1).workers == 1


def test_the_aug_variant_count_is_the_ports():
    from paddle_impl.augmentation import AUG_SMOOTH_VARIANTS

    assert AUG_VARIANTS == len(AUG_SMOOTH_VARIANTS)


def test_makespan_of_equal_jobs_halves_with_two_workers():
    assert estimate_makespan([100.0] * 4, 1) == pytest.approx(4 * (WORKER_OVERHEAD_SECONDS + 100.0))
    assert estimate_makespan([100.0] * 4, 2) == pytest.approx(2 * (WORKER_OVERHEAD_SECONDS + 100.0))


# -- the runner's ordering, with fake workers ------------------------------------------------
def _fake_worker(started, fail_variant=None):
    def run(job, timeout, live):
        started.append((job.framework, job.method, job.variant))
        if job.is_unit and job.variant == fail_variant:
            return JobOutcome(job, False, 0.0, Path(job.out_dir), error=f"unit {job.variant} broke")
        if job.is_unit:
            return JobOutcome(job, True, 0.0, Path(job.out_dir), result={"kind": "weights"})
        return JobOutcome(job, False, 0.0, Path(job.out_dir), error="cases job not really run")
    return run


def test_units_run_before_the_job_that_waits_for_them(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr("parity.runner._run_worker", _fake_worker(started))
    records = run_matrix(_config(tmp_path, methods=["scorecam"], split_units=True, jobs=1))
    for framework in ("torch", "paddle"):
        order = [v for f, m, v in started if f == framework]
        assert order[-1] is None and sorted(order[:-1]) == list(range(AUG_VARIANTS))
    assert len(records) == 4 and all(r["error"] for r in records)


def test_a_failed_unit_fails_its_cases_without_running_them(tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr("parity.runner._run_worker", _fake_worker(started, fail_variant=3))
    records = run_matrix(_config(tmp_path, methods=["scorecam"], split_units=True, jobs=1))
    assert [v for f, m, v in started if v is None] == []  # no cases job started
    assert len(records) == 4
    for record in records:
        assert "weights unit(s) failed" in record["error"] and "unit 3 broke" in record["error"]


# -- end to end: the same bits whatever the schedule ---------------------------------------------
EXPECTED_REUSE_COMBINED = {"no_smooth": 1, "aug_smooth": 0, "eigen_smooth": 1, "aug_eigen_smooth": 6}
EXPECTED_REUSE_SPLIT = {"no_smooth": 1, "aug_smooth": 6, "eigen_smooth": 1, "aug_eigen_smooth": 6}
SUBSET = ["gradcam", "scorecam"]


def _stage_digests(out: Path, methods) -> dict:
    return {key: value for key, value in _digest(out / "stages").items() if key.split("/")[1] in methods}


def _reuse(records) -> dict:
    return {r["smooth"]: r["weights_reused"] for r in records.values() if r["method"] == "scorecam"}


def _run_subset(tmp_path, name, weights_pair, reference_image, cache_dir=None, **kwargs):
    from parity.weights import sha256_of

    torch_weights, paddle_weights, identity = weights_pair
    config = _config(
        tmp_path, profile="tiny", out=tmp_path / name, image=reference_image, image_sha256=sha256_of(reference_image),
        torch_weights=torch_weights, paddle_weights=paddle_weights, weights_identity=identity,
        methods=SUBSET, use_cache=cache_dir is not None, threads=1, **kwargs,
    )
    config.cache = ResultCache(cache_dir or tmp_path / "no-cache", enabled=cache_dir is not None)
    schedules = []
    records = run_matrix(config, on_schedule=schedules.append)
    assert all(r["passed"] for r in records), [r["message"] for r in records]
    assert all(not r["flags"] for r in records), [r["flags"] for r in records]
    return {r["id"]: r for r in records}, schedules[0]


@pytest.fixture(scope="module")
def one_worker_run(shared_dir, weights_pair, reference_image):
    """The session's tiny float32 matrix: one worker, whole jobs, upstream computed and cached."""
    from conftest import run_shared_matrix

    out, records, cache_dir = run_shared_matrix(shared_dir, "tiny-float32", weights_pair, reference_image)
    assert _reuse(records) == {mode: {"torch": n, "paddle": n} for mode, n in EXPECTED_REUSE_COMBINED.items()}
    reference = _stage_digests(out, SUBSET)
    assert len(reference) > 50
    return records, reference, cache_dir


@pytest.mark.slow
@pytest.mark.xdist_group("shared-matrix")
@pytest.mark.timeout(900)
def test_two_workers_and_weights_units_give_the_same_bits(tmp_path, one_worker_run, weights_pair, reference_image):
    """Two workers at once, ScoreCAM split into six weights units per framework.

    In the slow tier: its 14 worker processes took 113-139 s of ``make test``'s 600 s budget (2026-12-07).
    Two workers on the same bits stay in the fast tier (``test_upstream_from_the_cache_gives_the_same_bits``,
    ``jobs=2``); the units' order and failure handling too (the fake-worker tests above).
    """
    records, reference, _ = one_worker_run
    split, schedule = _run_subset(tmp_path, "split", weights_pair, reference_image, jobs=2, split_units=True)
    assert schedule["workers"] == min(2, os.cpu_count() or 1)
    assert schedule["weights_units"] == 2 * AUG_VARIANTS
    # every pass found its weights in the units: the units' processes computed the same bits
    assert _reuse(split) == {mode: {"torch": n, "paddle": n} for mode, n in EXPECTED_REUSE_SPLIT.items()}
    assert _stage_digests(tmp_path / "split", SUBSET) == reference
    for case_id, record in split.items():
        assert record["cam_max_abs_diff"] == records[case_id]["cam_max_abs_diff"]


@pytest.mark.xdist_group("shared-matrix")
@pytest.mark.timeout(900)
def test_upstream_from_the_cache_gives_the_same_bits(tmp_path, one_worker_run, weights_pair, reference_image):
    records, reference, cache_dir = one_worker_run
    warm, schedule = _run_subset(tmp_path, "warm", weights_pair, reference_image, cache_dir=cache_dir, jobs=2)
    assert schedule["cached_jobs"] == 4 and schedule["worker_jobs"] == 2  # only the two Paddle jobs run
    assert all(r["torch_cached"] for r in warm.values())
    assert _stage_digests(tmp_path / "warm", SUBSET) == reference
    # the cache holds one-augmentation views, each with its own cases only
    for entry in (p for p in cache_dir.iterdir() if not p.name.startswith(".")):
        cases = sorted(json.loads((entry / "result.json").read_text())["cases"])
        assert sorted(p.name for p in entry.iterdir() if p.is_dir()) == cases


@pytest.mark.slow
@pytest.mark.xdist_group("shared-matrix")
@pytest.mark.timeout(900)
def test_one_job_per_augmentation_gives_the_same_bits(tmp_path, one_worker_run, weights_pair, reference_image, monkeypatch):
    """Without combining: plain and augmented cases in separate processes, no identity-variant reuse."""
    from parity.plan import Plan

    _, reference, _ = one_worker_run
    monkeypatch.setattr("parity.runner.make_plan", lambda config, work: Plan(jobs=plan_jobs(config, work, combine=False)))
    separate, _ = _run_subset(tmp_path, "separate", weights_pair, reference_image, jobs=2)
    assert _reuse(separate)["no_smooth"] == {"torch": 0, "paddle": 0}
    assert _stage_digests(tmp_path / "separate", SUBSET) == reference


def test_cache_is_not_used_when_disabled(tmp_path):
    cache = ResultCache(tmp_path / "cache", enabled=False)
    source = tmp_path / "result"
    source.mkdir()
    (source / "result.json").write_text("{}")
    cache.store("k", source)
    assert cache.lookup("k") is None and not (tmp_path / "cache").exists()
    assert ResultCache.key({"a": 1, "b": 2}) == ResultCache.key({"b": 2, "a": 1})
