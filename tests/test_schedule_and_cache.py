"""The upstream-result cache and the choice of how many workers run at once.

The cache must make a rerun reuse upstream's results (and only upstream's:
the Paddle side is always recomputed) without changing a single number; the
scheduler must run a warm rerun's lone long Paddle job with every core and a
cold run's mix of long jobs side by side.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from parity.cache import ResultCache
from parity.config import make_config
from parity.registry import PROFILES
from parity.runner import JobOutcome, job_views, plan_jobs, run_matrix
from parity.schedule import WORKER_OVERHEAD_SECONDS, choose_workers, estimate_makespan, job_cost

pytestmark = pytest.mark.filterwarnings("ignore:No ccache found:UserWarning")


def _config(tmp_path: Path, profile: str = "full", **kwargs):
    defaults = dict(
        profile=profile, dtype="float32", out=tmp_path / "out", image=tmp_path / "img.png", image_sha256="0" * 64,
        torch_weights=tmp_path / "w.pth", paddle_weights=tmp_path / "w.pdparams",
        torch_weights_sha256="1" * 64, use_cache=False,
    )
    defaults.update(kwargs)
    return make_config(**defaults)


# -- scheduling ----------------------------------------------------------------------------
def test_equally_long_jobs_run_side_by_side(tmp_path):
    jobs = [j for j in plan_jobs(_config(tmp_path, methods=["scorecam"]), tmp_path / "work")]
    assert [j.framework for j in jobs] == ["torch", "paddle"]
    same_cost = [jobs[0], replace(jobs[0], framework="torch", out_dir="elsewhere")]
    assert choose_workers(same_cost, PROFILES["full"], max_workers=2, cores=2) == (2, 1)
    assert choose_workers(same_cost, PROFILES["full"], max_workers=1, cores=2) == (1, 2)


def test_warm_full_run_gives_the_paddle_jobs_every_core(tmp_path):
    # With upstream cached, Paddle's ScoreCAM is longer than all the rest together.
    paddle_only = [j for j in plan_jobs(_config(tmp_path), tmp_path / "work") if j.framework == "paddle"]
    costs = [job_cost(j, PROFILES["full"]) for j in paddle_only]
    assert max(costs) > sum(costs) - max(costs)
    assert choose_workers(paddle_only, PROFILES["full"], max_workers=2, cores=2) == (1, 2)
    assert estimate_makespan(costs, 1, 2) < estimate_makespan(costs, 2, 2)


def test_worker_count_never_exceeds_jobs_or_the_limit(tmp_path):
    jobs = plan_jobs(_config(tmp_path, methods=["gradcam"]), tmp_path / "work")
    for max_workers in (1, 2, 8):
        workers, threads = choose_workers(jobs, PROFILES["quick"], max_workers=max_workers, cores=8)
        assert 1 <= workers <= min(max_workers, len(jobs))
        assert threads == 8 // workers
    assert choose_workers([], PROFILES["full"], max_workers=2, cores=2) == (1, 2)


def test_makespan_of_equal_jobs_halves_with_two_workers_and_two_cores():
    costs = [100.0] * 4
    one = estimate_makespan(costs, 1, 2)  # 4 jobs in a row with two threads
    two = estimate_makespan(costs, 2, 2)  # 2 + 2 jobs with one thread each
    assert one == pytest.approx(4 * (WORKER_OVERHEAD_SECONDS + 100.0))
    assert two > one / 2  # one thread is slower than two


# -- one process for a heavy method's plain and augmented cases ---------------------------
def test_heavy_methods_get_one_job_per_framework_with_two_views(tmp_path):
    jobs = plan_jobs(_config(tmp_path), tmp_path / "work")
    assert len(jobs) == 28  # light: 6 x {plain, aug} x 2; heavy: 2 x 2 combined
    combined = [j for j in jobs if j.plain_eigen_modes]
    assert sorted((j.framework, j.method) for j in combined) == [
        ("paddle", "ablationcam"), ("paddle", "scorecam"), ("torch", "ablationcam"), ("torch", "scorecam")]
    for job in combined:
        assert job.aug_smooth and job.modes == [(True, False), (True, True), (False, False), (False, True)]
        assert [(v.aug_smooth, v.eigen_modes, v.plain_eigen_modes) for v in job_views(job)] == [
            (True, [False, True], []), (False, [False, True], [])]
    # without weight reuse, or with only one augmentation setting asked for, nothing is combined
    assert not any(j.plain_eigen_modes for j in plan_jobs(_config(tmp_path, reuse_weights=False), tmp_path / "w"))
    assert not any(j.plain_eigen_modes for j in plan_jobs(_config(tmp_path, smooths=["no_smooth", "eigen_smooth"]), tmp_path / "w"))
    assert not any(j.plain_eigen_modes for j in plan_jobs(_config(tmp_path), tmp_path / "w", combine=False))


@pytest.mark.timeout(900)
def test_plain_cases_reuse_the_identity_variant_with_the_same_numbers(tmp_path, weights_pair, reference_image, monkeypatch):
    """ScoreCAM, quick profile: one process per framework for all four modes vs one per augmentation."""
    from paddle_impl.weights import sha256_of

    torch_weights, paddle_weights, torch_sha = weights_pair
    cache_dir = tmp_path / "cache"

    def config_for(out: Path, cache: bool):
        config = _config(
            tmp_path, profile="quick", out=out, image=reference_image, image_sha256=sha256_of(reference_image),
            torch_weights=torch_weights, paddle_weights=paddle_weights, torch_weights_sha256=torch_sha,
            methods=["scorecam"], use_cache=cache, jobs=1,  # same thread count on both runs: it moves float32 bits
        )
        config.cache = ResultCache(cache_dir, enabled=cache)
        return config

    schedules = []
    combined = run_matrix(config_for(tmp_path / "combined", cache=True), on_schedule=schedules.append)
    assert schedules[0]["worker_jobs"] == 2  # torch and paddle, each all four modes
    reused = {r["smooth"]: r["weights_reused"] for r in combined}
    # no_smooth: its one pass is aug_smooth's identity variant; eigen modes: every pass
    assert reused == {"no_smooth": {"torch": 1, "paddle": 1}, "aug_smooth": {"torch": 0, "paddle": 0},
                      "eigen_smooth": {"torch": 1, "paddle": 1}, "aug_eigen_smooth": {"torch": 6, "paddle": 6}}

    with monkeypatch.context() as patch:
        patch.setattr("parity.runner.plan_jobs", lambda config, work_dir, combine=True: plan_jobs(config, work_dir, combine=False))
        separate = run_matrix(config_for(tmp_path / "separate", cache=False))
    assert {r["smooth"]: r["weights_reused"]["torch"] for r in separate}["no_smooth"] == 0
    assert _digest(tmp_path / "combined" / "stages") == _digest(tmp_path / "separate" / "stages")
    assert all(r["passed"] for r in combined), [r["message"] for r in combined]
    assert {r["threads"]["torch"] for r in combined + separate} == {os.cpu_count()}

    # the combined torch job was cached as its two views, each holding only its own cases
    entries = sorted(p for p in cache_dir.iterdir() if not p.name.startswith("."))
    assert len(entries) == 2
    held = sorted(sorted(json.loads((e / "result.json").read_text())["cases"]) for e in entries)
    assert held == [["aug_eigen_smooth", "aug_smooth"], ["eigen_smooth", "no_smooth"]]
    for entry in entries:
        assert sorted(p.name for p in entry.iterdir() if p.is_dir()) == sorted(json.loads((entry / "result.json").read_text())["cases"])
    schedules.clear()
    warm = run_matrix(config_for(tmp_path / "warm", cache=True), on_schedule=schedules.append)
    assert schedules[0]["cached_jobs"] == 2 and schedules[0]["worker_jobs"] == 1
    assert all(r["torch_cached"] for r in warm)
    assert _digest(tmp_path / "combined" / "stages") == _digest(tmp_path / "warm" / "stages")


# -- the cache, end to end -------------------------------------------------------------------
def _digest(directory: Path) -> dict:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*.npy"))}


@pytest.mark.timeout(600)
def test_rerun_takes_upstream_from_the_cache_and_recomputes_paddle(tmp_path, weights_pair, reference_image, monkeypatch):
    from paddle_impl.weights import sha256_of

    torch_weights, paddle_weights, torch_sha = weights_pair
    cache_dir = tmp_path / "cache"

    def run(out: Path):
        config = _config(
            tmp_path, profile="quick", out=out, image=reference_image, image_sha256=sha256_of(reference_image),
            torch_weights=torch_weights, paddle_weights=paddle_weights, torch_weights_sha256=torch_sha,
            methods=["gradcam"], smooths=["no_smooth", "eigen_smooth"], use_cache=True, jobs=2,
        )
        config.cache = ResultCache(cache_dir, enabled=True)
        schedules = []
        records = run_matrix(config, on_schedule=schedules.append)
        return records, schedules[0]

    cold, cold_schedule = run(tmp_path / "cold")
    assert cold_schedule["cached_jobs"] == 0 and cold_schedule["worker_jobs"] == 2
    assert [r["torch_cached"] for r in cold] == [False, False]
    assert len([p for p in cache_dir.iterdir() if not p.name.startswith(".")]) == 1

    warm, warm_schedule = run(tmp_path / "warm")
    assert warm_schedule["cached_jobs"] == 1 and warm_schedule["worker_jobs"] == 1
    assert warm_schedule["workers"] == 1
    assert [r["torch_cached"] for r in warm] == [True, True]
    assert all(r["passed"] for r in cold + warm), [r["message"] for r in cold + warm]
    # the same numbers on both sides: upstream's came from the cache, Paddle's were recomputed
    assert _digest(tmp_path / "cold" / "stages") == _digest(tmp_path / "warm" / "stages")
    for cold_record, warm_record in zip(cold, warm):
        assert cold_record["cam_max_abs_diff"] == warm_record["cam_max_abs_diff"]
        assert warm_record["paddle_seconds"] is not None

    # a different weights digest is a different key: nothing is reused
    started = []

    def record_start(job, timeout, live):
        started.append(job.framework)
        return JobOutcome(job, False, 0.0, Path(job.out_dir), error="not run")

    monkeypatch.setattr("parity.runner._run_worker", record_start)
    config = _config(tmp_path, profile="quick", methods=["gradcam"], smooths=["no_smooth"], use_cache=True,
                     torch_weights_sha256="2" * 64)
    config.cache = ResultCache(cache_dir, enabled=True)
    run_matrix(config)
    assert sorted(started) == ["paddle", "torch"]


def test_cache_is_not_used_when_disabled(tmp_path):
    cache = ResultCache(tmp_path / "cache", enabled=False)
    source = tmp_path / "result"
    source.mkdir()
    (source / "result.json").write_text("{}")
    cache.store("k", source)
    assert cache.lookup("k") is None and not (tmp_path / "cache").exists()
    np.testing.assert_equal(ResultCache.key({"a": 1, "b": 2}), ResultCache.key({"b": 2, "a": 1}))
