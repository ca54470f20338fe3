"""The upstream-result cache and the choice of how many workers run at once.

The cache must make a rerun reuse upstream's results (and only upstream's:
the Paddle side is always recomputed) without changing a single number; the
scheduler must run a warm rerun's lone long Paddle job with every core and a
cold run's mix of long jobs side by side.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from parity.cache import ResultCache
from parity.config import make_config
from parity.registry import PROFILES
from parity.runner import JobOutcome, plan_jobs, run_matrix
from parity.schedule import WORKER_OVERHEAD_SECONDS, choose_workers, estimate_makespan, job_cost

pytestmark = pytest.mark.filterwarnings("ignore:No ccache found:UserWarning")


def _config(tmp_path: Path, profile: str = "full", **kwargs):
    defaults = dict(
        profile=profile, dtype="float32", out=tmp_path / "out", image=tmp_path / "img.png", image_sha256="0" * 64,
        image_size=(224, 224), torch_weights=tmp_path / "w.pth", paddle_weights=tmp_path / "w.pdparams",
        torch_weights_sha256="1" * 64, use_cache=False,
    )
    defaults.update(kwargs)
    return make_config(**defaults)


# -- scheduling ----------------------------------------------------------------------------
def test_cold_full_run_keeps_two_one_thread_workers(tmp_path):
    jobs = plan_jobs(_config(tmp_path), tmp_path / "work")
    assert len(jobs) == 32  # 8 methods x {plain, aug} x {torch, paddle}
    assert choose_workers(jobs, PROFILES["full"], max_workers=2, cores=2) == (2, 1)


def test_warm_full_run_gives_the_paddle_jobs_every_core(tmp_path):
    # With upstream cached, Paddle's aug_smooth ScoreCAM is longer than all the rest together.
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
