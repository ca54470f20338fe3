"""Plan a parity run: which worker processes run, what each one covers, what it waits for, what the cache holds.

A *cases job* is one framework's run of some methods on one setup, in all
their selected smoothing modes.  Methods that take seconds share one process
per (framework, setup), so a run starts few processes; a method expected to
take long (ScoreCAM and AblationCAM at full size) gets a process of its own,
so that long jobs can run side by side.  Within a job, ScoreCAM's and
AblationCAM's channel weights are computed once per augmentation variant and
reused (``parity.stages``) by the eigen_smooth cases and, through
aug_smooth's identity variant, by the plain ones.  A job still caches and
pairs as its one-method, one-augmentation *views* (``job_views``).

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

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Tuple

from parity.cache import ResultCache
from parity.config import RunConfig
from parity.registry import METHODS, SMOOTH_MODES, Case, Setup, smooth_name
from parity.schedule import AUG_VARIANTS, WORKER_OVERHEAD_SECONDS, method_variant_cost
from parity.worker import WorkerJob

__all__ = ["plan_jobs", "job_views", "weights_units", "should_split", "stands_alone", "cache_key", "Plan",
           "make_plan", "SPLIT_MIN_SECONDS", "view_cases", "setup_slug"]

# A method (or one augmentation variant of it) must take this long before it gets a process of
# its own: several times a worker's start-up, so that a split never costs more than it saves.
SPLIT_MIN_SECONDS = 8 * WORKER_OVERHEAD_SECONDS


def setup_slug(setup: Setup) -> str:
    """A file-name-safe name for a setup's directories ("main" for the unnamed one)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", setup.name) or "main"


def _setups_in_order(cases: List[Case]) -> List[Tuple[Setup, List[Case]]]:
    grouped: Dict[Setup, List[Case]] = {}
    for case in cases:
        grouped.setdefault(case.setup, []).append(case)
    return list(grouped.items())


def stands_alone(method: str, setup: Setup, config: RunConfig, framework: str) -> bool:
    """Whether a method gets a process of its own instead of sharing one with the setup's other methods.

    A long method does; so does every ScoreCAM/AblationCAM when weights units are forced, since
    only a one-method job is split into units.
    """
    if config.split_units and METHODS[method].reruns_network_per_channel:
        return True
    return method_variant_cost(method, framework, setup, config.threads) >= SPLIT_MIN_SECONDS


def _base_job(config: RunConfig, setup: Setup, framework: str, methods: List[str], out_dir: Path) -> WorkerJob:
    torch_weights, paddle_weights, _ = config.weights[setup.model]
    return WorkerJob(
        framework=framework, methods=methods, aug_smooth=False, eigen_modes=[], image=str(Path(config.image).resolve()),
        setup=setup, torch_weights=str(Path(torch_weights).resolve()), paddle_weights=str(Path(paddle_weights).resolve()), dtype=config.dtype, device=config.device,
        threads=config.threads, out_dir=str(out_dir), reuse_weights=config.reuse_weights,
        compiled_engines=config.compiled_engines,
        # "raise" is aimed at one method of a shared worker: the worker raises in that method only
        inject_fault=next((f"raise:{m}" if config.inject_fault[f"{framework}:{m}"] == "raise"
                           else config.inject_fault[f"{framework}:{m}"] for m in methods
                           if f"{framework}:{m}" in config.inject_fault), None),
    )


def _with_modes(job: WorkerJob, cases: List[Case], work_dir: Path, combine: bool) -> List[WorkerJob]:
    """The job(s) covering ``cases`` (all of ``job.methods`` on one setup): one, or one per augmentation."""
    modes = {aug: sorted({SMOOTH_MODES[c.smooth].eigen_smooth for c in cases if SMOOTH_MODES[c.smooth].aug_smooth == aug})
             for aug in (False, True)}
    if combine and modes[True] and modes[False]:
        return [replace(job, aug_smooth=True, eigen_modes=modes[True], plain_eigen_modes=modes[False])]
    return [replace(job, aug_smooth=aug, eigen_modes=modes[aug], out_dir=f"{job.out_dir}-{'aug' if aug else 'plain'}")
            for aug in (False, True) if modes[aug]]


def plan_jobs(config: RunConfig, work_dir: Path, combine: bool = True) -> List[WorkerJob]:
    """The cases jobs of a run, setup by setup, torch before paddle, in registry order.

    With ``combine`` a job covers all the selected modes of its methods and
    short methods share a process; without it every (framework, setup,
    method, augmentation) is a process of its own.
    """
    jobs: List[WorkerJob] = []
    setups = _setups_in_order([c for c in config.cases if c.setup.model not in config.unavailable])
    for index, (setup, cases) in enumerate(setups):
        methods = list(dict.fromkeys(case.method for case in cases))
        slug = f"{index}-{setup_slug(setup)}"  # unnamed setups (light and heavy in quick) share "main"
        for framework in ("torch", "paddle"):
            if combine:
                shared = [m for m in methods if not stands_alone(m, setup, config, framework)]
                groups = ([(shared, "shared")] if shared else []) + [
                    ([m], m) for m in methods if m not in shared]
            else:
                groups = [([m], m) for m in methods]
            for group, label in groups:
                base = _base_job(config, setup, framework, group, work_dir / f"{framework}-{slug}-{_safe(label)}")
                jobs += _with_modes(base, [c for c in cases if c.method in group], work_dir, combine)
    return jobs


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "p", text)


def job_views(job: WorkerJob) -> List[WorkerJob]:
    """The one-method, one-augmentation jobs ``job`` stands for: the unit of caching and of case pairing.

    The views share the job's ``out_dir``: a worker writes each case under its method's and mode's names.
    """
    views = []
    for method in job.methods:
        single = replace(job, methods=[method])
        if not job.plain_eigen_modes:
            views.append(single)
            continue
        views.append(replace(single, plain_eigen_modes=[]))
        views.append(replace(single, aug_smooth=False, eigen_modes=list(job.plain_eigen_modes), plain_eigen_modes=[]))
    # a method without aug_smooth (FinerCAM, RefineCAM, SESS, DFF) has no cases in an augmented view
    return [view for view in views if view_cases(view)]


def view_cases(view: WorkerJob) -> List[str]:
    """The smoothing-mode names a one-method, one-augmentation view covers (modes its method has)."""
    spec = METHODS[view.method]
    return [name for name in (smooth_name(aug, eigen) for aug, eigen in view.modes) if name in spec.smooths]


def should_split(job: WorkerJob, config: RunConfig) -> bool:
    """Whether an aug_smooth ScoreCAM/AblationCAM job runs its variants as weights units."""
    if len(job.methods) != 1 or not job.aug_smooth or not config.reuse_weights:
        return False
    if not METHODS[job.method].reruns_network_per_channel:
        return False
    if config.split_units is not None:
        return config.split_units
    return method_variant_cost(job.method, job.framework, job.setup, job.threads) >= SPLIT_MIN_SECONDS


def weights_units(job: WorkerJob) -> List[WorkerJob]:
    """The six weights units of an aug_smooth cases job, one per augmentation variant."""
    return [
        replace(job, variant=index, eigen_modes=[], plain_eigen_modes=[], weights_from=[],
                out_dir=f"{job.out_dir}-variant{index}")
        for index in range(AUG_VARIANTS)
    ]


def cache_key(config: RunConfig, job: WorkerJob) -> str:
    """The upstream cache key of a one-method, one-augmentation view or of a weights unit."""
    fields = dict(config.cache_fields)
    fields.update(
        layout=2, method=job.method, aug_smooth=job.aug_smooth, eigen_modes=job.eigen_modes, dtype=job.dtype,
        device=job.device, setup=job.setup.describe(), weights=config.weights[job.setup.model][2],
        reuse_weights=job.reuse_weights, threads=job.threads,
    )
    if job.is_unit:
        fields.update(kind="weights-unit", variant=job.variant, eigen_modes=None)
    return ResultCache.key(fields)


@dataclass
class Plan:
    """What a run will do: worker jobs to start and upstream results the cache already has.

    ``jobs`` holds weights units and cases jobs; a cases job with
    ``weights_from`` waits for those of its units that are in ``jobs`` (the
    others came from the cache).  ``cached`` pairs each cached view with its
    cache entry.
    """

    jobs: List[WorkerJob] = field(default_factory=list)
    cached: List[Tuple[WorkerJob, Path]] = field(default_factory=list)
    cached_units: int = 0

    def waits_for(self, job: WorkerJob) -> List[str]:
        running = {j.out_dir for j in self.jobs if j.is_unit}
        return [d for d in job.weights_from if d in running]

    def units(self) -> List[WorkerJob]:
        return [j for j in self.jobs if j.is_unit]


def _to_run(job: WorkerJob, config: RunConfig, plan: Plan) -> List[WorkerJob]:
    """``job`` minus the views the cache already holds (those go to ``plan.cached``).

    Only upstream (torch) results are cached.  A job runs whole if none of it
    is cached; otherwise each method's missing views run on their own (both
    views of a method in one process), each in a directory of its own.
    """
    if job.framework != "torch":
        return [job]
    views = job_views(job)
    hits = [config.cache.lookup(cache_key(config, view)) for view in views]
    plan.cached += [(view, hit) for view, hit in zip(views, hits) if hit is not None]
    missing = [view for view, hit in zip(views, hits) if hit is None]
    if len(missing) == len(views):
        return [job]
    jobs = []
    for method in dict.fromkeys(view.method for view in missing):
        mine = [view for view in missing if view.method == method]
        if len(mine) == len(job_views(replace(job, methods=[method]))):
            jobs.append(replace(job, methods=[method], out_dir=f"{job.out_dir}-{_safe(method)}"))
        else:
            jobs += [replace(view, out_dir=f"{job.out_dir}-{_safe(method)}-{'aug' if view.aug_smooth else 'plain'}")
                     for view in mine]
    return jobs


def make_plan(config: RunConfig, work_dir: Path) -> Plan:
    plan = Plan()
    for planned in plan_jobs(config, work_dir):
        for job in _to_run(planned, config, plan):
            if should_split(job, config):
                sources = []
                for unit in weights_units(job):
                    hit = config.cache.lookup(cache_key(config, unit)) if unit.framework == "torch" else None
                    if hit is None:
                        plan.jobs.append(unit)
                        sources.append(unit.out_dir)
                    else:
                        plan.cached_units += 1
                        sources.append(str(hit))
                job = replace(job, weights_from=sources)
            plan.jobs.append(job)
    return plan
