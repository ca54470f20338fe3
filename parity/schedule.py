"""How long a worker job is expected to take, and the wall time of running jobs side by side.

The estimates come from the registry's per-variant seconds (measured by the
bench) and decide only *order and grouping*: which job starts first, whether
a long aug_smooth job is worth splitting into one process per augmentation
variant, and how a run is cut into balanced shards.  They never change a
number: every job computes with the run's fixed thread count.
"""
from __future__ import annotations

import heapq
from typing import Dict, List, Sequence

from parity.registry import METHODS, Setup
from parity.worker import WorkerJob

__all__ = ["job_cost", "variant_cost", "method_variant_cost", "estimate_makespan", "schedule_in_words", "WORKER_OVERHEAD_SECONDS", "AUG_VARIANTS"]

# A worker's fixed price: interpreter start, importing torch or paddle, building
# ResNet50 and loading its weights (measured 6-12 s here, single-threaded).
WORKER_OVERHEAD_SECONDS = 8.0
# Speed-up from a second thread: ResNet50 forward passes, oneDNN, this machine
# (Paddle Inference 0.108 -> 0.057 s per 224x224 image: 1.88x).
SECOND_THREAD_SPEEDUP = 1.88
# aug_smooth's variant count.  paddle_impl.augmentation.AUG_SMOOTH_VARIANTS holds the variants
# themselves, but importing it loads Paddle, which the orchestrating process never does; a test
# checks that the two agree.
AUG_VARIANTS = 6
# One forward pass (plus the CAM's numpy tail) of a light method, for a cases job whose channel
# weights all come from weights units: it replays every pass, but scores no channel.
PASS_SECONDS = 0.3


def _thread_scale(threads: int) -> float:
    """Registry seconds are two-thread seconds; the factor that turns them into ``threads``-thread seconds."""
    # Beyond two threads (bigger machines) assume the same efficiency per doubling.
    speedup = SECOND_THREAD_SPEEDUP ** max(0.0, threads.bit_length() - 1) if threads > 1 else 1.0
    return SECOND_THREAD_SPEEDUP / speedup


def method_variant_cost(method: str, framework: str, setup: Setup, threads: int) -> float:
    """Seconds one augmentation variant of ``method`` takes on ``setup``, at ``threads`` threads."""
    spec = METHODS[method]
    per_variant = spec.torch_seconds if framework == "torch" else spec.paddle_seconds
    return per_variant * setup.cost_scale * _thread_scale(threads)


def variant_cost(job: WorkerJob) -> float:
    """Seconds one augmentation variant of every method of ``job`` takes together."""
    return sum(method_variant_cost(m, job.framework, job.setup, job.threads) for m in job.methods)


def job_cost(job: WorkerJob) -> float:
    """Estimated compute seconds of a job (overhead excluded)."""
    if job.is_unit:
        return variant_cost(job)
    total = 0.0
    for method in job.methods:
        spec = METHODS[method]
        per_variant = method_variant_cost(method, job.framework, job.setup, job.threads)
        if job.aug_smooth:
            aug_passes = AUG_VARIANTS * len(job.eigen_modes) if "aug_smooth" in spec.smooths else 0
            plain_passes = len(job.plain_eigen_modes)
        else:
            aug_passes, plain_passes = 0, len(job.eigen_modes)
        if job.weights_from:
            total += (aug_passes + plain_passes) * PASS_SECONDS * _thread_scale(job.threads)
        elif spec.reruns_network_per_channel and job.reuse_weights:
            # channel weights are computed once per variant; the other modes reuse them
            total += per_variant * (AUG_VARIANTS if aug_passes else 1)
        else:
            total += per_variant * (aug_passes + plain_passes)
    return total


def estimate_makespan(costs: Sequence[float], workers: int) -> float:
    """Wall time of longest-first list scheduling of independent jobs on ``workers`` workers."""
    finish: List[float] = [0.0] * max(1, workers)
    heapq.heapify(finish)
    for cost in sorted(costs, reverse=True):
        start = heapq.heappop(finish)
        heapq.heappush(finish, start + WORKER_OVERHEAD_SECONDS + cost)
    return max(finish) if finish else 0.0


def schedule_in_words(schedule: Dict) -> str:
    """``4 upstream results from the cache; 22 worker processes to run (12 weights units), 2 at a time, 1 thread each``."""
    def count(number: int, one: str, many: str) -> str:
        return f"{number} {one if number == 1 else many}"

    cached = schedule.get("cached_jobs", 0) + schedule.get("cached_units", 0)
    units = schedule.get("weights_units", 0)
    return (f"{count(cached, 'upstream result', 'upstream results')} from the cache; "
            f"{count(schedule.get('worker_jobs', 0), 'worker process', 'worker processes')} to run"
            + (f" ({count(units, 'weights unit', 'weights units')})" if units else "")
            + f", {schedule.get('workers', 1)} at a time, {count(schedule.get('threads_per_worker', 1), 'thread', 'threads')} each")
