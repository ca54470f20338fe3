"""Cut a parity run into N cost-balanced shards for N machines, and merge their partial results into one report.

    python -m parity --profile full --shard 3/8 --out shards/3     # on each of 8 runners
    python -m parity merge shards/* --out reports                  # once all have finished

The *items* of a run are the worker processes its plan starts
(``parity.plan``): weights units and cases jobs, with the cache ignored, so
that every shard of one command sees the same items whatever its cache
holds.  Items are dealt to shards longest first, each to the shard with the
least estimated work so far (``parity.schedule``), which is deterministic.
A shard runs its items (taking upstream's from the cache where it has them)
and keeps each item's output under ``DIR/items/ITEM`` with a manifest,
``DIR/shard.json``.

The merge checks that it has every shard of one plan exactly once, then runs
what no shard could: the cases jobs whose weights units ended up on several
shards (each only replays its passes with the units' weights), compares
every case and writes the report, exactly as an unsharded run would.  It also
stores the upstream results into the local cache, so a CI cache saved after
the merge lets the next run's shards skip upstream.
"""
from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from paddle_impl.errors import UserError
from parity.cache import ResultCache
from parity.config import RunConfig
from parity.outcome import JobOutcome
from parity.plan import Plan, cache_key, job_views, make_plan, view_cases
from parity.provenance import project_state
from parity.schedule import WORKER_OVERHEAD_SECONDS, job_cost
from parity.worker import WorkerJob, method_error

__all__ = ["shard_items", "assign_shards", "plan_fingerprint", "run_shard", "merge", "build_merge_parser", "MANIFEST"]

MANIFEST = "shard.json"
FORMAT = 1


def _full_plan(config: RunConfig, work: Path) -> Plan:
    """The run's plan as if the cache were empty: the same for every shard of one command."""
    return make_plan(replace(config, cache=ResultCache(enabled=False)), work)


def item_id(job: WorkerJob) -> str:
    return Path(job.out_dir).name


def shard_items(plan: Plan) -> List[WorkerJob]:
    """What shards run: the weights units and every cases job that waits for none (the others run at the merge)."""
    return [job for job in plan.jobs if not job.weights_from]


def assign_shards(items: List[WorkerJob], shards: int) -> List[int]:
    """The 0-based shard of each item: longest first, each to the least loaded shard (ties: the lower index)."""
    order = sorted(range(len(items)), key=lambda i: (-job_cost(items[i]), i))
    loads = [(0.0, shard) for shard in range(shards)]
    heapq.heapify(loads)
    assignment = [0] * len(items)
    for index in order:
        load, shard = heapq.heappop(loads)
        assignment[index] = shard
        heapq.heappush(loads, (load + WORKER_OVERHEAD_SECONDS + job_cost(items[index]), shard))
    return assignment


def _portable(job: WorkerJob, work: Path) -> Dict:
    """A job as JSON without what differs between machines (work directory, absolute paths)."""
    data = json.loads(job.to_json())
    data["out_dir"] = Path(job.out_dir).name
    data["weights_from"] = [Path(d).name for d in job.weights_from]
    for key in ("image", "torch_weights", "paddle_weights", "inject_fault"):
        data.pop(key, None)
    return data


def plan_fingerprint(config: RunConfig, plan: Plan) -> str:
    """A digest of everything the shards must agree on: the jobs, the cases, versions, weights and image."""
    digest = hashlib.sha256()
    digest.update(json.dumps({
        "jobs": [_portable(job, Path(job.out_dir).parent) for job in plan.jobs],
        "cases": [case.id for case in config.cases],
        "fields": config.cache_fields,
        "weights": {model: pair[2] for model, pair in sorted(config.weights.items())},
        "unavailable": sorted(config.unavailable),
        "dtype": config.dtype, "device": config.device,
    }, sort_keys=True).encode())
    return digest.hexdigest()[:32]


# -- one shard ----------------------------------------------------------------------------------
def _copy_cached(config: RunConfig, job: WorkerJob, target: Path) -> bool:
    """Fill ``target`` with an upstream item's output from the cache, if the cache holds all of it."""
    if job.framework != "torch" or not config.cache.enabled:
        return False
    if job.is_unit:
        hit = config.cache.lookup(cache_key(config, job))
        if hit is None:
            return False
        shutil.copytree(hit, target)
        return True
    views = job_views(job)
    hits = [config.cache.lookup(cache_key(config, view)) for view in views]
    if any(hit is None for hit in hits):
        return False
    result = None
    for view, hit in zip(views, hits):
        cached = json.loads((hit / "result.json").read_text())
        for case in view_cases(view):
            shutil.copytree(hit / view.method / case, target / view.method / case)
        if result is None:
            result = dict(cached, methods=list(job.methods), cases={})
        result["cases"].setdefault(view.method, {}).update(cached["cases"][view.method])
    (target / "result.json").write_text(json.dumps(result, indent=1))
    return True


def run_shard(config: RunConfig, provenance: Dict, shard: Tuple[int, int], argv: List[str], live) -> int:
    """Run shard K of N into ``config.out`` (items and manifest); 0 when every item of it succeeded."""
    from parity.runner import run_plan

    number, count = shard
    out = Path(config.out)
    items_dir = out / "items"
    if items_dir.exists():
        shutil.rmtree(items_dir)
    items_dir.mkdir(parents=True)
    started = time.perf_counter()
    plan = _full_plan(config, items_dir)
    items = shard_items(plan)
    assignment = assign_shards(items, count)
    mine = [job for job, shard_index in zip(items, assignment) if shard_index == number - 1]
    manifest: Dict = {"format": FORMAT, "shard": number, "shards": count, "fingerprint": plan_fingerprint(config, plan),
                      "argv": [a for a in argv if not a.startswith("--shard") and a != f"{number}/{count}"],
                      "items": {}, "all_items": [item_id(job) for job in items],
                      "estimated_seconds": round(sum(WORKER_OVERHEAD_SECONDS + job_cost(j) for j in mine), 1)}
    to_run = []
    for job in mine:
        if _copy_cached(config, job, Path(job.out_dir)):
            manifest["items"][item_id(job)] = {"ok": True, "cached": True, "seconds": 0.0, "error": None}
        else:
            to_run.append(job)
    print(f"python -m parity: shard {number}/{count}: {len(mine)} of {len(items)} worker processes "
          f"({len(mine) - len(to_run)} from the cache), estimated {manifest['estimated_seconds']:.0f} s",
          file=sys.stderr, flush=True)

    def on_outcome(job: WorkerJob, outcome: JobOutcome) -> None:
        manifest["items"][item_id(job)] = {"ok": outcome.ok, "cached": False, "seconds": round(outcome.seconds, 2),
                                           "error": outcome.error}
        status = "done" if outcome.ok else "FAILED"
        print(f"[{len(manifest['items']):2d}/{len(mine)}] {item_id(job):<40s} {status} {outcome.seconds:.1f} s",
              file=sys.stderr, flush=True)

    run_plan(config, Plan(jobs=to_run), on_outcome, live, report_units=True)
    manifest["wall_seconds"] = round(time.perf_counter() - started, 1)
    # the commit the shard ran at, so a merge or reports/shards.md can say which code the times measure
    manifest["provenance"] = dict(provenance, project=project_state())
    from paddle_impl.atomic import write_text

    write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    failed = [name for name, info in manifest["items"].items() if not info["ok"]]
    print(f"shard {number}/{count}: {len(mine) - len(failed)}/{len(mine)} worker processes succeeded "
          f"in {manifest['wall_seconds']:.0f} s; merge with: python -m parity merge DIR... --out DIR")
    return 0 if not failed else 1


# -- the merge ------------------------------------------------------------------------------------
def build_merge_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Combine the partial results of a sharded run (python -m parity --shard K/N --out DIR) into "
                    "one report: checks that every shard of one plan is there exactly once, runs the cases that "
                    "waited for weights units from several shards, compares every case and writes the report.",
    )
    parser.add_argument("shards", nargs="+", metavar="DIR", help="the --out directories of the N shards")
    parser.add_argument("--out", required=True, help="directory for the merged report")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes at once for the cases run at the merge")
    parser.add_argument("--no-cache", action="store_true", help="do not store the shards' upstream results in the local cache")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    return parser


def _manifests(directories: List[str]) -> List[Tuple[Path, Dict]]:
    found = []
    for text in directories:
        directory = Path(text)
        path = directory / MANIFEST
        if not path.is_file():
            raise UserError(f"{directory} is not a shard's output: it has no {MANIFEST} (did its run finish?)")
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise UserError(f"{path} cannot be read: {error}") from None
        if manifest.get("format") != FORMAT:
            raise UserError(f"{path} has format {manifest.get('format')!r}; this harness reads format {FORMAT}")
        found.append((directory, manifest))
    counts = {manifest["shards"] for _, manifest in found}
    if len(counts) != 1:
        raise UserError(f"the directories are shards of runs cut into different numbers of parts: {sorted(counts)}")
    count = counts.pop()
    fingerprints = {manifest["fingerprint"] for _, manifest in found}
    if len(fingerprints) != 1:
        raise UserError("the shards come from different runs (their plans differ: other options, versions, "
                        "weights or image); merge only the shards of one command")
    seen: Dict[int, List[str]] = {}
    for directory, manifest in found:
        seen.setdefault(manifest["shard"], []).append(str(directory))
    duplicated = {k: dirs for k, dirs in seen.items() if len(dirs) > 1}
    if duplicated:
        detail = "; ".join(f"{k}/{count} in {', '.join(dirs)}" for k, dirs in sorted(duplicated.items()))
        raise UserError(f"shard given more than once: {detail}")
    missing = sorted(set(range(1, count + 1)) - set(seen))
    if missing:
        raise UserError(f"missing shard(s) {', '.join(f'{k}/{count}' for k in missing)}: "
                        f"got {len(seen)} of {count}; nothing was merged")
    return sorted(found, key=lambda pair: pair[1]["shard"])


@dataclass(frozen=True)
class RunCommand:
    """What the merge borrows from the command line that runs it (``parity.cli``).

    Passed in rather than imported: the command line sits above this module
    and imports it, so an import back would make a cycle.  ``parse_run_args``
    reads a shard's recorded argv as the run's options.
    """

    parse_run_args: Callable[[List[str]], argparse.Namespace]
    prepare_run: Callable
    write_results: Callable
    print_progress: Callable
    announce_recheck: Callable


def merge(args: argparse.Namespace, command: RunCommand) -> int:
    from parity.runner import CaseCollector, LiveProcesses, recheck_in_float64, run_plan

    shards = _manifests(args.shards)
    first = shards[0][1]
    run_args = command.parse_run_args(first["argv"] + ["--out", args.out, "--jobs", str(args.jobs)])
    run_args.no_cache = args.no_cache
    config, provenance = command.prepare_run(run_args)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="parity-merge-") as work:
        work = Path(work)
        plan = _full_plan(config, work)
        if plan_fingerprint(config, plan) != first["fingerprint"]:
            raise UserError("the shards' plan differs from the one this machine makes from the same options "
                            "(other versions, weights or image here?); merge on a machine set up like the shards")
        where: Dict[str, Tuple[Path, Dict]] = {}
        for directory, manifest in shards:
            for name, info in manifest["items"].items():
                where[name] = (directory / "items" / name, info)
        absent = [item_id(job) for job in shard_items(plan) if item_id(job) not in where]
        if absent:
            raise UserError(f"{len(absent)} worker process(es) of the plan are in no shard's output "
                            f"(an interrupted shard?): {', '.join(absent[:5])}")

        def outcome_of(job: WorkerJob) -> JobOutcome:
            directory, info = where[item_id(job)]
            moved = replace(job, out_dir=str(directory))
            if not info["ok"]:
                return JobOutcome(moved, False, info["seconds"], directory, error=info["error"])
            return JobOutcome(moved, True, info["seconds"], directory, cached=info["cached"],
                              result=json.loads((directory / "result.json").read_text()))

        collector = CaseCollector(config, command.print_progress)
        cache = ResultCache(config.cache.directory, enabled=not args.no_cache)
        for job in shard_items(plan):
            outcome = outcome_of(job)
            if outcome.ok and job.framework == "torch" and not outcome.cached:
                _store(config, cache, outcome.job)
            if not job.is_unit:
                collector.add(outcome.job, outcome)
        # the cases jobs whose weights units ran on several shards: replay them here, seeded from the units
        waiting = []
        for job in (j for j in plan.jobs if j.weights_from):
            units = [outcome_of(next(u for u in plan.jobs if u.out_dir == d)) for d in job.weights_from]
            broken = [u for u in units if not u.ok]
            if broken:
                collector.add(job, JobOutcome(job, False, 0.0, Path(job.out_dir), error=f"{job.framework} weights unit(s) "
                              "failed:\n" + "\n".join(u.error or "failed" for u in broken)))
            else:
                waiting.append(replace(job, weights_from=[str(u.out_dir) for u in units]))

        def on_outcome(job: WorkerJob, outcome: JobOutcome) -> None:
            if outcome.ok and job.framework == "torch":
                _store(config, cache, job)
            collector.add(job, outcome)

        live = LiveProcesses()
        run_plan(config, Plan(jobs=waiting), on_outcome, live)
        records = collector.in_order()
        recheck_in_float64(config, records, live, on_start=command.announce_recheck)
    shard_times = ", ".join(f"{m['shard']}: {m['wall_seconds']:.0f} s" for _, m in shards)
    provenance["schedule"] = (f"{len(shards)} shards ({shard_times}); merged in {time.perf_counter() - started:.0f} s, "
                              f"{len(waiting)} worker process(es) at the merge")
    provenance["shards"] = [{"shard": m["shard"], "wall_seconds": m["wall_seconds"],
                             "estimated_seconds": m.get("estimated_seconds"), "cpu": m["provenance"].get("cpu"),
                             "date": m["provenance"].get("date")} for _, m in shards]
    provenance["wall_seconds"] = max(m["wall_seconds"] for _, m in shards) + round(time.perf_counter() - started, 1)
    return command.write_results(Path(args.out), provenance, records)


def _store(config: RunConfig, cache: ResultCache, job: WorkerJob) -> None:
    """Keep a shard's upstream output in the local cache (a weights unit whole, a cases job view by view)."""
    if job.is_unit:
        cache.store(cache_key(config, job), Path(job.out_dir))
        return
    result_file = Path(job.out_dir) / "result.json"
    result = json.loads(result_file.read_text()) if result_file.is_file() else None
    for view in job_views(job):
        if method_error(result, view.method) is None:
            cache.store(cache_key(config, view), Path(job.out_dir), method=view.method, cases=view_cases(view))
