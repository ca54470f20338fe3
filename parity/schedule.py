"""How many worker processes to run at once, and with how many threads each.

Two workers with one thread each keep both cores busy through the
single-threaded parts of a job (imports, model set-up, the numpy tail), so
they are the better split while there is a mix of long jobs.  But a job
cannot be split across processes: when one job is longer than everything
else put together (a warm rerun, where the upstream results come from the
cache and Paddle's aug_smooth ScoreCAM is most of what is left), a
one-thread worker leaves a core idle for most of the run, and one worker with
every core finishes sooner.  The choice is made by simulating both.
"""
from __future__ import annotations

import heapq
from typing import Iterable, List, Sequence, Tuple

from parity.registry import METHODS, Profile
from parity.worker import WorkerJob

__all__ = ["job_cost", "estimate_makespan", "choose_workers"]

# A worker's fixed price: interpreter start, importing torch or paddle, building
# ResNet50 and loading its weights (measured 6-12 s here, single-threaded).
WORKER_OVERHEAD_SECONDS = 8.0
# Speed-up from a second thread: ResNet50 forward passes, oneDNN, this machine
# (Paddle Inference 0.108 -> 0.057 s per 224x224 image: 1.88x).
SECOND_THREAD_SPEEDUP = 1.88
AUG_VARIANTS = 6


def job_cost(job: WorkerJob, profile: Profile) -> float:
    """Estimated compute seconds of a job with two threads, overhead excluded."""
    spec = METHODS[job.method]
    per_variant = spec.torch_seconds if job.framework == "torch" else spec.paddle_seconds
    if spec.reruns_network_per_channel:
        per_variant *= profile.heavy_cost_scale
        calls = 1  # the eigen modes reuse the channel weights
    else:
        calls = len(job.eigen_modes)
    return per_variant * calls * (AUG_VARIANTS if job.aug_smooth else 1)


def _speedup(threads: int) -> float:
    # Beyond two threads (bigger machines) assume the same efficiency per doubling.
    return SECOND_THREAD_SPEEDUP ** max(0.0, (threads.bit_length() - 1)) if threads > 1 else 1.0


def estimate_makespan(costs: Sequence[float], workers: int, cores: int) -> float:
    """Wall time of longest-first list scheduling with ``cores // workers`` threads per worker."""
    threads = max(1, cores // workers)
    # costs are two-thread seconds; scale to this worker's thread count
    scale = SECOND_THREAD_SPEEDUP / _speedup(threads)
    finish: List[float] = [0.0] * workers
    heapq.heapify(finish)
    for cost in sorted(costs, reverse=True):
        start = heapq.heappop(finish)
        heapq.heappush(finish, start + WORKER_OVERHEAD_SECONDS + cost * scale)
    return max(finish) if finish else 0.0


def choose_workers(jobs: Iterable[WorkerJob], profile: Profile, max_workers: int, cores: int) -> Tuple[int, int]:
    """(workers, threads per worker) with the smallest estimated wall time, at most ``max_workers``."""
    costs = [job_cost(job, profile) for job in jobs]
    if not costs:
        return 1, max(1, cores)
    best = None
    for workers in range(1, max(1, min(max_workers, len(costs))) + 1):
        makespan = estimate_makespan(costs, workers, cores)
        # ties go to more workers: they also overlap the single-threaded parts the model ignores
        if best is None or makespan <= best[0]:
            best = (makespan, workers)
    workers = best[1]
    return workers, max(1, cores // workers)
