"""Run the parity matrix: plan worker jobs, run them in parallel processes, compare, lay out the artifacts.

A *job* is one framework's run of one method with one augmentation setting;
it covers the requested eigen modes in one process so that ScoreCAM's and
AblationCAM's channel weights are computed once per augmentation variant and
reused for the eigen_smooth case (``parity.stages``).  For those two methods
the plain and the augmented job are one process, so the plain cases reuse the
weights of aug_smooth's identity variant; such a job still caches and pairs
as its two one-augmentation *views* (``job_views``).  A *case* is
``method × smoothing mode`` and needs its torch job and its Paddle job.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple

import numpy as np

from parity.cache import ResultCache
from parity.compare import CaseComparison, compare_case
from parity.registry import METHODS, SMOOTH_MODES, Case, Profile, all_cases, smooth_name
from parity.schedule import choose_workers, job_cost
from parity.worker import WorkerJob

__all__ = ["RunConfig", "run_matrix", "run_case_group", "finalize_case", "plan_jobs", "job_views", "JobOutcome"]

REPO_ROOT = Path(__file__).resolve().parent.parent
STDERR_TAIL_CHARS = 2000


@dataclass
class RunConfig:
    profile: Profile
    dtype: str
    device: str
    methods: List[str]
    smooths: List[str]
    image: Path
    torch_weights: Path
    paddle_weights: Path
    cache_fields: Dict
    out: Path
    jobs: int = 2
    target_category: Optional[int] = None
    cache: ResultCache = field(default_factory=lambda: ResultCache(enabled=False))
    case_timeout: float = 3 * 3600.0
    reuse_weights: bool = True
    inject_fault: Dict[str, str] = field(default_factory=dict)  # "framework:method" -> "crash" | "hang"

    @property
    def threads_per_worker(self) -> int:
        return max(1, (os.cpu_count() or 1) // max(1, self.jobs))


@dataclass
class JobOutcome:
    job: WorkerJob
    ok: bool
    seconds: float
    out_dir: Path
    cached: bool = False
    error: Optional[str] = None
    result: Dict = field(default_factory=dict)


class _LiveProcesses:
    """Worker processes now running, so an interrupt can take them all down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: Set[subprocess.Popen] = set()
        self.stopping = False

    def add(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.add(proc)
            stopping = self.stopping
        if stopping:  # started just as kill_all() took its snapshot
            _kill_group(proc)

    def discard(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    def kill_all(self) -> None:
        self.stopping = True
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)


def plan_jobs(config: RunConfig, work_dir: Path, combine: bool = True) -> List[WorkerJob]:
    """One job per (framework, method, augmentation), longest first.

    With ``combine`` (and weight reuse on), a method that reruns the network
    per channel gets one job per framework for all its modes, so its plain
    cases reuse the channel weights of aug_smooth's identity variant.
    """
    jobs = []
    for method in config.methods:
        spec = METHODS[method]
        for aug in (False, True):
            eigen_modes = [
                SMOOTH_MODES[s].eigen_smooth for s in config.smooths if SMOOTH_MODES[s].aug_smooth == aug
            ]
            if not eigen_modes:
                continue
            for framework in ("torch", "paddle"):
                jobs.append(
                    WorkerJob(
                        framework=framework,
                        method=method,
                        aug_smooth=aug,
                        eigen_modes=eigen_modes,
                        image=str(config.image),
                        image_size=config.profile.image_size(spec),
                        target_layer=config.profile.target_layer(spec),
                        torch_weights=str(config.torch_weights),
                        paddle_weights=str(config.paddle_weights),
                        dtype=config.dtype,
                        device=config.device,
                        threads=config.threads_per_worker,
                        out_dir=str(work_dir / f"{framework}-{method}-{'aug' if aug else 'plain'}"),
                        target_category=config.target_category,
                        reuse_weights=config.reuse_weights,
                        inject_fault=config.inject_fault.get(f"{framework}:{method}"),
                    )
                )
    if combine and config.reuse_weights:
        jobs = _combine_plain_into_aug(jobs)
    # Longest first, so two slow jobs do not end up running last, one after the other.
    jobs.sort(key=lambda j: (not METHODS[j.method].reruns_network_per_channel, not j.aug_smooth))
    return jobs


def _combine_plain_into_aug(jobs: List[WorkerJob]) -> List[WorkerJob]:
    by_key = {(j.framework, j.method, j.aug_smooth): j for j in jobs}
    combined = []
    for job in jobs:
        if not METHODS[job.method].reruns_network_per_channel:
            combined.append(job)
            continue
        aug_job = by_key.get((job.framework, job.method, True))
        plain_job = by_key.get((job.framework, job.method, False))
        if aug_job is None or plain_job is None:
            combined.append(job)
        elif job is aug_job:
            out_dir = str(Path(job.out_dir).with_name(f"{job.framework}-{job.method}-all"))
            combined.append(replace(job, plain_eigen_modes=list(plain_job.eigen_modes), out_dir=out_dir))
    return combined


def job_views(job: WorkerJob) -> List[WorkerJob]:
    """The one-augmentation jobs ``job`` stands for: the unit of caching and of case pairing.

    The views share the job's ``out_dir``: a worker writes each case under its own name.
    """
    if not job.plain_eigen_modes:
        return [job]
    return [
        replace(job, plain_eigen_modes=[]),
        replace(job, aug_smooth=False, eigen_modes=list(job.plain_eigen_modes), plain_eigen_modes=[]),
    ]


def _cache_key(config: RunConfig, job: WorkerJob) -> str:
    fields = dict(config.cache_fields)
    fields.update(
        method=job.method, aug_smooth=job.aug_smooth, eigen_modes=job.eigen_modes, dtype=job.dtype,
        device=job.device, image_size=job.image_size, target_layer=job.target_layer,
        target_category=job.target_category, reuse_weights=job.reuse_weights,
    )
    return ResultCache.key(fields)


def _run_worker(job: WorkerJob, timeout: float, live: _LiveProcesses) -> JobOutcome:
    out_dir = Path(job.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    job_file = out_dir / "job.json"
    job_file.write_text(job.to_json())
    log_path = out_dir / "worker.log"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PADDLE_GRADCAM_PROGRESS="0", PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        if live.stopping:
            return JobOutcome(job, False, 0.0, out_dir, error="not started: the run was interrupted")
        proc = subprocess.Popen(
            [sys.executable, "-m", "parity.worker", str(job_file)],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        live.add(proc)
        try:
            returncode = proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            returncode, timed_out = proc.returncode, True
        finally:
            live.discard(proc)
    seconds = time.perf_counter() - started
    tail = log_path.read_text(errors="replace")[-STDERR_TAIL_CHARS:]
    if timed_out:
        return JobOutcome(job, False, seconds, out_dir, error=f"{job.framework} worker timed out after {timeout:g} s; its output ends:\n{tail}")
    if returncode != 0:
        how = f"exited with status {returncode}"
        if returncode < 0:
            with contextlib.suppress(ValueError):
                how = f"was killed by {signal.Signals(-returncode).name} (status {returncode})"
        return JobOutcome(job, False, seconds, out_dir, error=f"{job.framework} worker {how}; its output ends:\n{tail}")
    result = json.loads((out_dir / "result.json").read_text())
    return JobOutcome(job, True, seconds, out_dir, result=result)


def _cached_outcome(config: RunConfig, job: WorkerJob) -> Optional[JobOutcome]:
    """The stored upstream result of ``job``, if the cache has it (only torch jobs are cached)."""
    if job.framework != "torch":
        return None
    hit = config.cache.lookup(_cache_key(config, job))
    if hit is None:
        return None
    result = json.loads((hit / "result.json").read_text())
    return JobOutcome(replace(job, out_dir=str(hit)), True, 0.0, hit, cached=True, result=result)


def _execute(config: RunConfig, job: WorkerJob, live: _LiveProcesses) -> JobOutcome:
    outcome = _run_worker(job, config.case_timeout, live)
    if outcome.ok and job.framework == "torch":
        for view in job_views(job):
            smooths = [smooth_name(aug, eigen) for aug, eigen in view.modes]
            config.cache.store(_cache_key(config, view), outcome.out_dir, cases=smooths)
    return outcome


def _load_stages(directory: Path) -> Dict[str, np.ndarray]:
    return {path.stem: np.load(path, allow_pickle=False) for path in sorted(directory.glob("*.npy"))}


def _flags(stages: Dict[str, np.ndarray]) -> List[str]:
    flags = []
    cam = stages.get("cam")
    if cam is not None and not np.all(np.isfinite(cam)):
        flags.append("non-finite CAM")
    elif cam is not None and not np.any(cam):
        flags.append("flat CAM (all zeros)")
    for name in ("activations", "gradients"):
        if name in stages and not np.all(np.isfinite(stages[name])):
            flags.append(f"non-finite {name}")
    return flags


def _finalize_case(config: RunConfig, case: Case, torch_out: JobOutcome, paddle_out: JobOutcome) -> Dict:
    import cv2

    from paddle_impl.atomic import save_npy, write_bytes
    from parity.report import write_diff_image

    spec = case.spec
    mode_dir = f"log_{case.smooth}"
    files = {
        "paddle_cam_jpg": f"output_paddle/{mode_dir}/{case.method}_cam.jpg",
        "torch_cam_jpg": f"output_torch/{mode_dir}/{case.method}_cam.jpg",
        "paddle_cam_npy": f"output_paddle/{mode_dir}/{case.method}_cam.npy",
        "torch_cam_npy": f"output_torch/{mode_dir}/{case.method}_cam.npy",
        "diff_jpg": f"diff/{mode_dir}/{case.method}_absdiff.jpg",
    }
    record = {
        "id": case.id, "method": case.method, "smooth": case.smooth, "dtype": config.dtype,
        "tolerance": spec.cam_atol_float64 if config.dtype == "float64" else spec.cam_atol_float32,
        "image_size": None, "target_layer": config.profile.target_layer(spec),
        "passed": False, "error": None, "cam_max_abs_diff": None, "cam_mean_abs_diff": None,
        "overlay_identical_fraction": None, "overlay_max_diff": None, "first_divergent_stage": None,
        "message": "", "paddle_seconds": None, "torch_seconds": None, "torch_cached": torch_out.cached,
        "weights_reused": {}, "target_categories": {}, "threads": {}, "flags": [], "stages": [], "files": files,
    }
    errors = [o.error for o in (torch_out, paddle_out) if not o.ok]
    if errors:
        record["error"] = "\n".join(errors)
        record["message"] = record["error"]
        return record

    sides = {}
    for name, outcome in (("torch", torch_out), ("paddle", paddle_out)):
        stages = _load_stages(Path(outcome.out_dir) / case.smooth)
        sides[name] = stages
        info = outcome.result["cases"][case.smooth]
        record[f"{name}_seconds"] = info["seconds"]
        record["weights_reused"][name] = info["weights_reused"]
        record["target_categories"][name] = info["target_categories"]
        record["threads"][name] = outcome.result.get("threads")
        for stage, array in stages.items():
            save_npy(config.out / "stages" / mode_dir / case.method / f"{stage}_{name}.npy", array)
        save_npy(config.out / files[f"{name}_cam_npy"], stages["cam"])
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(stages["overlay"], cv2.COLOR_RGB2BGR))
        write_bytes(config.out / files[f"{name}_cam_jpg"], jpg.tobytes())

    comparison: CaseComparison = compare_case(case.id, spec, config.dtype, sides["paddle"], sides["torch"])
    cam_diff, overlay_diff = comparison.stage("cam"), comparison.stage("overlay")
    overlay_equal = np.equal(sides["paddle"]["overlay"], sides["torch"]["overlay"])
    write_diff_image(sides["paddle"]["cam"], sides["torch"]["cam"], config.out / files["diff_jpg"])
    first = comparison.first_divergent
    record.update(
        passed=comparison.passed,
        image_size=list(sides["torch"]["cam"].shape[-2:]),
        cam_max_abs_diff=cam_diff.max_abs_diff,
        cam_mean_abs_diff=cam_diff.mean_abs_diff,
        overlay_identical_fraction=float(overlay_equal.mean()),
        overlay_max_diff=int(overlay_diff.max_abs_diff),
        first_divergent_stage=None if first is None else first.stage,
        message=comparison.message(),
        flags=sorted(set(_flags(sides["torch"])) | set(_flags(sides["paddle"]))),
        stages=[s.to_json() for s in comparison.stages],
    )
    return record


def run_matrix(
    config: RunConfig,
    live: Optional[_LiveProcesses] = None,
    progress: Optional[Callable[[Dict, int, int], None]] = None,
    on_schedule: Optional[Callable[[Dict], None]] = None,
) -> List[Dict]:
    """Run every selected case; return one record per case in registry order.

    ``on_schedule`` hears, before any worker starts, how the jobs will run:
    how many came from the cache, how many workers at once, threads each.
    """
    live = live or _LiveProcesses()
    cases = all_cases(config.methods, config.smooths)
    records: Dict[str, Dict] = {}
    done: Dict[Tuple[str, str, bool], JobOutcome] = {}

    def record_outcome(job: WorkerJob, outcome: JobOutcome) -> None:
        views = job_views(job)
        for view in views:
            done[(view.framework, view.method, view.aug_smooth)] = outcome
        for view in views:
            other = done.get(("paddle" if view.framework == "torch" else "torch", view.method, view.aug_smooth))
            if other is None:
                continue
            torch_out = outcome if view.framework == "torch" else other
            paddle_out = other if view.framework == "torch" else outcome
            for eigen in view.eigen_modes:
                case = Case(view.method, smooth_name(view.aug_smooth, eigen))
                record = _finalize_case(config, case, torch_out, paddle_out)
                records[case.id] = record
                if progress is not None:
                    progress(record, len(records), len(cases))

    with tempfile.TemporaryDirectory(prefix="parity-work-") as work:
        to_run, cached_jobs = [], 0
        for job in plan_jobs(config, Path(work)):
            missing = []
            for view in job_views(job):
                cached = _cached_outcome(config, view)
                if cached is None:
                    missing.append(view)
                else:
                    cached_jobs += 1
                    record_outcome(view, cached)
            # a combined job runs whole only if none of it is cached; a lone missing part runs alone
            to_run.extend([job] if len(missing) == len(job_views(job)) else missing)
        workers, threads = choose_workers(to_run, config.profile, config.jobs, os.cpu_count() or 1)
        # longest first (by the registry's cost estimates), so no long job starts last
        to_run.sort(key=lambda job: job_cost(job, config.profile), reverse=True)
        to_run = [replace(job, threads=threads) for job in to_run]
        if on_schedule is not None:
            on_schedule({"cached_jobs": cached_jobs, "worker_jobs": len(to_run), "workers": workers, "threads_per_worker": threads})
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending = {pool.submit(_execute, config, job, live): job for job in to_run}
            try:
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        job = pending.pop(future)
                        record_outcome(job, future.result())
            except BaseException:
                # Ctrl-C, SIGTERM or an error here: the pool's exit waits for its threads, and
                # they wait for their workers, so take the workers down first.
                live.kill_all()
                for future in pending:
                    future.cancel()
                raise
    return [records[c.id] for c in cases if c.id in records]


def run_case_group(config: RunConfig, method: str, aug_smooth: bool, work_dir: Path) -> Tuple[JobOutcome, JobOutcome]:
    """Run the torch and the Paddle job of one (method, augmentation) pair, one after the other."""
    live = _LiveProcesses()
    jobs = [j for j in plan_jobs(config, work_dir, combine=False) if j.method == method and j.aug_smooth == aug_smooth]
    outcomes = {job.framework: _execute(config, job, live) for job in jobs}
    return outcomes["torch"], outcomes["paddle"]


def finalize_case(config: RunConfig, case: Case, torch_out: JobOutcome, paddle_out: JobOutcome) -> Dict:
    """Compare one case and write its artifacts under ``config.out``; returns its parity.json record."""
    return _finalize_case(config, case, torch_out, paddle_out)
