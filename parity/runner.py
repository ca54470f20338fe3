"""Run a parity plan: worker processes side by side, units before the jobs that wait for them, cases compared as their two sides finish.

Every worker computes with the run's fixed thread count (``RunConfig.threads``);
how many run at once (``RunConfig.workers``) changes only the wall time, never
a number.
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
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set, Tuple

from parity.case_record import empty_record, finalize_case
from parity.compare import stage_bounds
from parity.cache import ResultCache
from parity.config import RunConfig
from parity.diagnose import diagnose
from parity.outcome import JobOutcome, error_headline
from parity.plan import Plan, cache_key, job_views, make_plan, view_cases
from parity.registry import Case
from parity.schedule import job_cost
from parity.worker import WorkerJob, method_error, worker_environment

__all__ = ["run_matrix", "run_plan", "JobOutcome", "LiveProcesses", "CaseCollector", "cached_outcome", "schedule_of",
           "recheck_in_float64"]

STDERR_TAIL_CHARS = 2000


class LiveProcesses:
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


def _run_worker(job: WorkerJob, timeout: float, live: LiveProcesses) -> JobOutcome:
    out_dir = Path(job.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    job_file = out_dir / "job.json"
    job_file.write_text(job.to_json())
    log_path = out_dir / "worker.log"
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        if live.stopping:
            return JobOutcome(job, False, 0.0, out_dir, error="not started: the run was interrupted")
        proc = subprocess.Popen(
            [sys.executable, "-m", "parity.worker", str(job_file)],
            cwd=out_dir, env=worker_environment(job.threads), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
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
    what = f"{job.framework} worker" + (f" (weights unit, variant {job.variant})" if job.is_unit else "")
    if timed_out:
        return JobOutcome(job, False, seconds, out_dir, error=f"{what} timed out after {timeout:g} s; its output ends:\n{tail}")
    if returncode != 0:
        how = f"exited with status {returncode}"
        if returncode < 0:
            with contextlib.suppress(ValueError):
                how = f"was killed by {signal.Signals(-returncode).name} (status {returncode})"
        return JobOutcome(job, False, seconds, out_dir, error=f"{what} {how}; its output ends:\n{tail}")
    result = json.loads((out_dir / "result.json").read_text())
    return JobOutcome(job, True, seconds, out_dir, result=result)


def _execute(config: RunConfig, job: WorkerJob, live: LiveProcesses) -> JobOutcome:
    outcome = _run_worker(job, config.case_timeout, live)
    if outcome.ok and job.framework == "torch":
        if job.is_unit:
            config.cache.store(cache_key(config, job), outcome.out_dir)
        else:
            for view in job_views(job):
                if method_error(outcome.result, view.method) is None:
                    config.cache.store(cache_key(config, view), outcome.out_dir, method=view.method, cases=view_cases(view))
    return outcome


def _unit_failure(job: WorkerJob, failed: Dict[str, JobOutcome]) -> Optional[JobOutcome]:
    """The outcome of a cases job whose weights units did not all finish, or None."""
    broken = [failed[d] for d in job.weights_from if d in failed]
    if not broken:
        return None
    reasons = "\n".join(o.error or "failed" for o in broken)
    return JobOutcome(job, False, 0.0, Path(job.out_dir), error=f"{job.framework} weights unit(s) failed:\n{reasons}")


def run_plan(
    config: RunConfig,
    plan: Plan,
    on_outcome: Callable[[WorkerJob, JobOutcome], None],
    live: LiveProcesses,
    report_units: bool = False,
) -> None:
    """Run the plan's jobs on ``config.workers`` workers, longest ready job first.

    A cases job becomes ready when the weights units it waits for have
    finished; if one of them failed, the job is not run and its cases are
    reported as errors.  ``on_outcome`` hears every cases job's outcome
    (and, with ``report_units``, every weights unit's).
    """
    waiting = {job.out_dir: job for job in plan.jobs}
    needs = {job.out_dir: set(plan.waits_for(job)) for job in plan.jobs}
    finished: Set[str] = set()
    failed: Dict[str, JobOutcome] = {}

    def ready() -> List[WorkerJob]:
        jobs = [job for key, job in waiting.items() if needs[key] <= finished | set(failed)]
        return sorted(jobs, key=job_cost, reverse=True)

    with ThreadPoolExecutor(max_workers=config.workers) as pool:
        running: Dict[Future, WorkerJob] = {}
        try:
            while waiting or running:
                for job in ready():
                    if len(running) >= config.workers:
                        break
                    del waiting[job.out_dir]
                    blocked = _unit_failure(job, failed)
                    if blocked is not None:
                        on_outcome(job, blocked)
                        continue
                    running[pool.submit(_execute, config, job, live)] = job
                if not running:
                    if waiting and not ready():
                        raise RuntimeError(f"parity plan cannot progress: {sorted(waiting)} wait for jobs that never run")
                    continue  # everything left was blocked by a failed unit and is reported now
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    job = running.pop(future)
                    outcome = future.result()
                    if not job.is_unit or report_units:
                        on_outcome(job, outcome)
                    if job.is_unit and outcome.ok:
                        finished.add(job.out_dir)
                    elif job.is_unit:
                        failed[job.out_dir] = outcome
        except BaseException:
            # Ctrl-C, SIGTERM or an error here: the pool's exit waits for its threads, and
            # they wait for their workers, so take the workers down first.
            live.kill_all()
            for future in running:
                future.cancel()
            raise


class CaseCollector:
    """Pairs each view's torch and Paddle outcomes as they arrive, and turns every pair into case records.

    ``run_matrix`` feeds it as workers finish; a sharded run's merge feeds it
    the outcomes the shards left on disk.
    """

    def __init__(self, config: RunConfig, progress: Optional[Callable[[Dict, int, int], None]] = None) -> None:
        self.config = config
        self.progress = progress
        self.wanted = {case.id for case in config.cases}
        self.records: Dict[str, Dict] = {}
        self._done: Dict[Tuple, JobOutcome] = {}
        self._diagnoses: Dict = {}
        for case in config.cases:
            if case.setup.model in config.unavailable:
                # paddle.vision's architecture differs from torchvision's: no weight transfer can make the
                # two models compute the same function, so nothing runs and the case is reported as such
                record = empty_record(config, case)
                record["architecture_differs"] = config.unavailable[case.setup.model]
                record["message"] = f"{case.id}: not run: {config.unavailable[case.setup.model]}"
                self._add(record)

    def _add(self, record: Dict) -> None:
        self.records[record["id"]] = record
        if self.progress is not None:
            self.progress(record, len(self.records), len(self.config.cases))

    def _diagnose_layers(self, case: Case, torch_out: JobOutcome, input_array) -> Dict:
        # every method of a setup runs on the same two models: one diagnosis per setup
        if case.setup not in self._diagnoses:
            rtol = stage_bounds(case.spec, self.config.dtype)["logits"].value
            self._diagnoses[case.setup] = diagnose(torch_out.job, input_array, rtol)
        return self._diagnoses[case.setup]

    def add(self, job: WorkerJob, outcome: JobOutcome) -> None:
        views = job_views(job)
        for view in views:
            self._done[(view.framework, view.setup, view.method, view.aug_smooth)] = outcome
        for view in views:
            other = self._done.get(("paddle" if view.framework == "torch" else "torch", view.setup, view.method, view.aug_smooth))
            if other is None:
                continue
            torch_out = outcome if view.framework == "torch" else other
            paddle_out = other if view.framework == "torch" else outcome
            for smooth in view_cases(view):
                case = Case(view.method, smooth, view.setup)
                if case.id in self.wanted:
                    self._add(finalize_case(self.config, case, torch_out, paddle_out, self._diagnose_layers))

    def in_order(self) -> List[Dict]:
        return [self.records[c.id] for c in self.config.cases if c.id in self.records]


def cached_outcome(view: WorkerJob, entry: Path) -> JobOutcome:
    result = json.loads((entry / "result.json").read_text())
    return JobOutcome(replace(view, out_dir=str(entry)), True, 0.0, entry, cached=True, result=result)


def schedule_of(config: RunConfig, plan: Plan) -> Dict:
    return {
        "cached_jobs": len(plan.cached), "cached_units": plan.cached_units,
        "worker_jobs": len(plan.jobs), "weights_units": len(plan.units()),
        "workers": min(config.workers, max(1, len(plan.jobs))), "threads_per_worker": config.threads,
    }


def run_matrix(
    config: RunConfig,
    live: Optional[LiveProcesses] = None,
    progress: Optional[Callable[[Dict, int, int], None]] = None,
    on_schedule: Optional[Callable[[Dict], None]] = None,
    unit_progress: Optional[Callable[[WorkerJob, JobOutcome, int, int], None]] = None,
) -> List[Dict]:
    """Run every selected case; return one record per case in registry order.

    ``on_schedule`` hears, before any worker starts, how the jobs will run:
    how many upstream results came from the cache, how many worker processes
    (weights units among them) will run, how many at once, threads each.
    ``unit_progress`` hears each weights unit as it ends (with how many have
    ended, of how many): a cold full run spends its first twenty minutes on them.
    """
    live = live or LiveProcesses()
    collector = CaseCollector(config, progress)
    with tempfile.TemporaryDirectory(prefix="parity-work-") as work:
        plan = make_plan(config, Path(work))
        for view, entry in plan.cached:
            collector.add(view, cached_outcome(view, entry))
        if on_schedule is not None:
            on_schedule(schedule_of(config, plan))
        units_total = sum(job.is_unit for job in plan.jobs)
        units_done = []

        def on_outcome(job: WorkerJob, outcome: JobOutcome) -> None:
            if not job.is_unit:
                collector.add(job, outcome)
                return
            units_done.append(job)
            if unit_progress is not None:
                unit_progress(job, outcome, len(units_done), units_total)

        run_plan(config, plan, on_outcome, live, report_units=True)
    return collector.in_order()


# A float32 case that fails after the models agree (logits and activations within their
# bounds) is rerun in float64: if the two sides agree there, the float32 difference is rounding
# that the method amplifies (a division by a near-zero sum, a difference of close scores), not the
# port.  Such a case is reported as "float32 only": not counted as passed, and it does not fail the
# run (a case whose float64 rerun fails too, or could not run, stays failed).  Only cases that ran in
# seconds are rerun: float64 has no oneDNN path, and a full-size ScoreCAM would take hours.
#
# Float64 runs in Paddle's dynamic graph (its compiled engines are float32 only), so it cannot tell
# the engines' rounding (fused conv/batch-norm/ReLU kernels) from the dynamic graph's.  A case that
# float64 calls "float32 only" is therefore rerun once more, in float32 with the engines off: if that
# passes, the engines' rounding is what crosses the bound (the record and its message say so).
RECHECK_SKIPPED_STAGES = ("input", "targets", "logits", "activations")
RECHECK_MAX_SECONDS = 120.0  # of the float32 case, both sides together
FLOAT64_SLOWDOWN = 8.0
FLOAT64 = "float64"
ENGINES_OFF = "float32 with Paddle's compiled engines off"


def recheck_in_float64(config: RunConfig, records: List[Dict], live: LiveProcesses,
                       on_start: Optional[Callable[[int, str], None]] = None) -> None:
    """Add ``float64_check`` (and a line of the message) to each float32 case that failed after the models agreed.

    A case whose float64 rerun passes gets ``engines_off_check`` too: the
    same case in float32 with Paddle's compiled engines off.  ``on_start``
    hears how many cases each rerun takes, and which rerun (``FLOAT64`` or
    ``ENGINES_OFF``), before they run.
    """
    if config.dtype != "float32":
        return
    failed = [r for r in records if not r["passed"] and r["error"] is None and not r["architecture_differs"]
              and r["first_divergent_stage"] not in RECHECK_SKIPPED_STAGES]
    affordable = {}
    for record in failed:
        seconds = (record["torch_seconds"] or 0.0) + (record["paddle_seconds"] or 0.0)
        if seconds <= RECHECK_MAX_SECONDS:
            affordable[record["id"]] = record
        else:
            record["float64_check"] = {"skipped": f"the float32 case took {seconds:.0f} s; in float64 (no oneDNN) "
                                                  f"about {FLOAT64_SLOWDOWN:.0f} times that"}
    agreeing = {}
    for record, result in _rerun(config, affordable, live, on_start, FLOAT64, dtype="float64"):
        record["float64_check"] = _check_of(result)
        if result["passed"] and not result["error"]:
            agreeing[record["id"]] = record
        record["message"] += "\nRerun in float64: " + _rerun_verdict(
            result, passes="the two sides compute the same; the float32 difference is rounding the method amplifies, "
                           "not the port",
            fails="the difference is not float32 rounding")
    # upstream's side of this rerun is the float32 run's own, so the run's cache may answer it
    for record, result in _rerun(config, agreeing, live, on_start, ENGINES_OFF, compiled_engines=False,
                                 cache=config.cache):
        record["engines_off_check"] = _check_of(result)
        record["message"] += "\nRerun in float32 with Paddle's compiled engines off: " + _rerun_verdict(
            result, passes="the compiled engines' fused kernels round differently from the dynamic graph, and that is "
                           "what crosses the bound",
            fails="the dynamic graph's float32 rounding crosses the bound as well, not only the engines'")


def _rerun_verdict(result: Dict, passes: str, fails: str) -> str:
    """The message's sentence on one rerun: could not run, passes (and what that shows) or fails too (and what)."""
    if result["error"]:
        return f"could not run: {error_headline(result['error'])}."
    if result["passed"]:
        return f"passes (cam max|Δ| {result['cam_max_abs_diff']:.2e}): {passes}."
    return f"fails too, first at '{result['first_divergent_stage']}': {fails}."


def _rerun(config: RunConfig, records: Dict[str, Dict], live: LiveProcesses,
           on_start: Optional[Callable[[int, str], None]], what: str, **changes):
    """(record, result) for each of ``records`` run again with ``changes`` to the run's config (uncached unless
    ``changes`` names a cache)."""
    if not records:
        return
    if on_start is not None:
        on_start(len(records), what)
    with tempfile.TemporaryDirectory(prefix="parity-recheck-") as out:
        again = replace(config, cases=[c for c in config.cases if c.id in records], out=Path(out),
                        split_units=False, **{"cache": ResultCache(enabled=False), **changes})
        for result in run_matrix(again, live):
            yield records[result["id"]], result


def _check_of(result: Dict) -> Dict:
    return {"passed": result["passed"], "error": result["error"], "cam_max_abs_diff": result["cam_max_abs_diff"],
            "first_divergent_stage": result["first_divergent_stage"]}
