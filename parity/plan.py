"""Plan a parity run: which worker processes run, what each one covers, what it waits for, what the cache holds.

A *cases job* is one framework's run of one method in all its selected
smoothing modes: one process start, and for ScoreCAM and AblationCAM the
channel weights are computed once per augmentation variant and reused
(``parity.stages``) by the eigen_smooth cases and, through aug_smooth's
identity variant, by the plain ones.  A job still caches and pairs as its two
one-augmentation *views* (``job_views``).

A long aug_smooth job of those two methods is split further into six
*weights units*, one per augmentation variant, each a process of its own
that makes one plain call of the CAM on that variant's input (what the
variant's pass inside ``cam(aug_smooth=True)`` does) and keeps the channel
weights.  The cases job then runs every mode as before, with its weights
memo seeded from the units: each pass finds its weights there, provided its
arguments are the same to the last bit, which the worker counts.  Upstream
is called exactly as a user calls it; the split only decides which process
computes what.  Units make the longest jobs divisible: across two local
workers, and across the runners of a sharded run.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from parity.cache import ResultCache
from parity.config import RunConfig
from parity.registry import METHODS, SMOOTH_MODES, smooth_name
from parity.schedule import AUG_VARIANTS, WORKER_OVERHEAD_SECONDS, variant_cost
from parity.worker import WorkerJob

__all__ = ["plan_jobs", "job_views", "weights_units", "should_split", "cache_key", "Plan", "make_plan",
           "SPLIT_MIN_SECONDS", "view_cases"]

# A variant must take this long before it gets a process of its own: several times a worker's
# start-up, so that the split never costs more than it saves.
SPLIT_MIN_SECONDS = 8 * WORKER_OVERHEAD_SECONDS


def plan_jobs(config: RunConfig, work_dir: Path, combine: bool = True) -> List[WorkerJob]:
    """The cases jobs of a run, in registry order.

    With ``combine``, each method gets one job per framework covering all its
    selected modes: one process start instead of two, and for ScoreCAM and
    AblationCAM the plain cases reuse the channel weights of aug_smooth's
    identity variant.  Without it, one job per (framework, method, augmentation).
    """
    jobs = []
    for method in config.methods:
        spec = METHODS[method]
        modes = {aug: [SMOOTH_MODES[s].eigen_smooth for s in config.smooths if SMOOTH_MODES[s].aug_smooth == aug]
                 for aug in (False, True)}
        for framework in ("torch", "paddle"):
            base = WorkerJob(
                framework=framework,
                method=method,
                aug_smooth=False,
                eigen_modes=[],
                image=str(config.image),
                image_size=config.profile.image_size(spec),
                target_layer=config.profile.target_layer(spec),
                torch_weights=str(config.torch_weights),
                paddle_weights=str(config.paddle_weights),
                dtype=config.dtype,
                device=config.device,
                threads=config.threads,
                out_dir=str(work_dir / f"{framework}-{method}"),
                target_category=config.target_category,
                reuse_weights=config.reuse_weights,
                inject_fault=config.inject_fault.get(f"{framework}:{method}"),
            )
            if combine and modes[True] and modes[False]:
                jobs.append(replace(base, aug_smooth=True, eigen_modes=modes[True], plain_eigen_modes=modes[False]))
                continue
            for aug in (False, True):
                if modes[aug]:
                    out_dir = str(work_dir / f"{framework}-{method}-{'aug' if aug else 'plain'}")
                    jobs.append(replace(base, aug_smooth=aug, eigen_modes=modes[aug], out_dir=out_dir))
    return jobs


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


def view_cases(view: WorkerJob) -> List[str]:
    """The smoothing-mode names a one-augmentation view covers."""
    return [smooth_name(aug, eigen) for aug, eigen in view.modes]


def should_split(job: WorkerJob, config: RunConfig) -> bool:
    """Whether an aug_smooth ScoreCAM/AblationCAM job runs its variants as weights units."""
    if not (METHODS[job.method].reruns_network_per_channel and job.aug_smooth and config.reuse_weights):
        return False
    if config.split_units is not None:
        return config.split_units
    return variant_cost(job, config.profile) >= SPLIT_MIN_SECONDS


def weights_units(job: WorkerJob) -> List[WorkerJob]:
    """The six weights units of an aug_smooth cases job, one per augmentation variant."""
    return [
        replace(job, variant=index, eigen_modes=[], plain_eigen_modes=[], weights_from=[],
                out_dir=f"{job.out_dir}-variant{index}")
        for index in range(AUG_VARIANTS)
    ]


def cache_key(config: RunConfig, job: WorkerJob) -> str:
    """The upstream cache key of a one-augmentation view or a weights unit."""
    fields = dict(config.cache_fields)
    fields.update(
        method=job.method, aug_smooth=job.aug_smooth, eigen_modes=job.eigen_modes, dtype=job.dtype,
        device=job.device, image_size=job.image_size, target_layer=job.target_layer,
        target_category=job.target_category, reuse_weights=job.reuse_weights, threads=job.threads,
    )
    if job.is_unit:
        fields.update(kind="weights-unit", variant=job.variant, eigen_modes=None)
    return ResultCache.key(fields)


@dataclass
class Plan:
    """What a run will do: worker jobs to start and upstream results the cache already has.

    ``jobs`` holds weights units and cases jobs; a cases job with
    ``weights_from`` waits for those of its units that are in ``jobs`` (the
    others came from the cache).  ``cached`` pairs each cached one-augmentation
    view with its cache entry.
    """

    jobs: List[WorkerJob] = field(default_factory=list)
    cached: List[Tuple[WorkerJob, Path]] = field(default_factory=list)
    cached_units: int = 0

    def waits_for(self, job: WorkerJob) -> List[str]:
        running = {j.out_dir for j in self.jobs if j.is_unit}
        return [d for d in job.weights_from if d in running]

    def units(self) -> List[WorkerJob]:
        return [j for j in self.jobs if j.is_unit]


def make_plan(config: RunConfig, work_dir: Path) -> Plan:
    plan = Plan()
    cache: ResultCache = config.cache
    for job in plan_jobs(config, work_dir):
        if job.framework == "torch":
            views = job_views(job)
            hits: Dict[int, Optional[Path]] = {i: cache.lookup(cache_key(config, v)) for i, v in enumerate(views)}
            plan.cached += [(views[i], hit) for i, hit in hits.items() if hit is not None]
            missing = [views[i] for i, hit in hits.items() if hit is None]
            if not missing:
                continue
            # a combined job runs whole only if none of it is cached; a lone missing part runs alone
            job = job if len(missing) == len(views) else missing[0]
        if should_split(job, config):
            sources = []
            for unit in weights_units(job):
                hit = cache.lookup(cache_key(config, unit)) if unit.framework == "torch" else None
                if hit is None:
                    plan.jobs.append(unit)
                    sources.append(unit.out_dir)
                else:
                    plan.cached_units += 1
                    sources.append(str(hit))
            job = replace(job, weights_from=sources)
        plan.jobs.append(job)
    return plan
