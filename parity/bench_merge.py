"""Joining bench runs into one report, and planning a report's measurement again.

``merge_data`` joins parts (shards, separate runs, or a committed ``reports/bench_*.json`` that is itself a merge)
keeping every part's command, commit and date.  ``rerun_plan`` reads those commands back: after a port change a
report is measured again by running each of its parts' commands once more, in order, and merging what they write
(``python -m parity.bench rerun``), so the new report covers the same grid with the same settings, part by part.
"""
from __future__ import annotations

import shlex
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from parity.bench_report import merged_parts

__all__ = ["merge_data", "part_of", "without_unshown_parts", "RerunStep", "rerun_plan", "BENCH_PREFIX"]

BENCH_PREFIX = ["python", "-m", "parity.bench"]
# options of a part's command that say where its files go: a rerun writes elsewhere
_OUTPUT_OPTIONS = ("--out", "--name")


def part_of(cell: Dict) -> int:
    """The part that measured ``cell`` (1-based; a cell of an unmerged run has none recorded: its run's one part)."""
    return cell.get("part") or 1


def merge_data(parts: Sequence[Dict], command: str) -> Dict:
    """One report from several: cells, peaks and network throughputs joined (a later part's cell replaces an earlier
    one with the same key, and each cell records its part), the machine of the first part with the load before the
    first and after the last; each part's command, commit and date are kept.  A part that is itself a merge (a
    committed ``reports/bench_*.json``) brings its own parts, so a report grows by new parts without its older
    parts' JSON files and without losing which commit measured which row."""
    if not parts:
        raise ValueError("nothing to merge")
    first, last = parts[0], parts[-1]
    machine = dict(first["machine"])
    machine["load_average_after"] = last["machine"].get("load_average_after")
    threads = list(dict.fromkeys(t for part in parts for t in part["settings"].get("threads") or []))
    machine["threads"] = threads
    provenance: List[Tuple] = []  # (command, project, date) of every part, merged parts' own parts in their order
    merged = {"machine": machine, "cells": {}, "peak": {}, "network_throughput": {},
              "parity_run": next((part.get("parity_run") for part in parts if part.get("parity_run")), None)}
    for part in parts:
        if "cells" not in part:
            raise ValueError("a bench JSON from before cells (an older bench.json) cannot be merged; rerun it")
        offset, is_merge = len(provenance), _is_merge(part)
        provenance += _parts_of(part)
        # each cell remembers its part, so a table that mixes parts (a later one re-measured some cells) says so
        for key, cell in part["cells"].items():
            merged["cells"][key] = dict(cell, part=offset + (part_of(cell) if is_merge else 1))
        merged["peak"].update(part.get("peak") or {})
        merged["network_throughput"].update(part.get("network_throughput") or {})
    settings = dict(first["settings"])
    settings.update(threads=threads, command=command, shard=None,
                    models=list(dict.fromkeys(m for part in parts for m in part["settings"].get("models") or [])),
                    batches=list(dict.fromkeys(b for part in parts for b in part["settings"].get("batches") or [])),
                    merged_commands=[entry[0] for entry in provenance],
                    merged_projects=[entry[1] for entry in provenance],
                    merged_dates=[entry[2] for entry in provenance])
    merged["settings"] = settings
    return merged


def without_unshown_parts(merged: Dict) -> Dict:
    """``merged`` less the parts none of whose cells it still shows (a later part measured them all again), the
    others numbered anew in their order: what a report shows is what decides how stale it is, so a part that
    measured nothing it shows is no longer its provenance."""
    settings = merged["settings"]
    shown = sorted({part_of(cell) for cell in merged["cells"].values()})
    if shown == list(range(1, len(settings.get("merged_commands") or []) + 1)):
        return merged
    number = {old: new for new, old in enumerate(shown, 1)}
    cells = {key: dict(cell, part=number[part_of(cell)]) for key, cell in merged["cells"].items()}
    kept = {name: [settings[name][old - 1] for old in shown]
            for name in ("merged_commands", "merged_projects", "merged_dates")}
    return dict(merged, cells=cells, settings=dict(settings, **kept))


def _is_merge(part: Dict) -> bool:
    return bool(part["settings"].get("merged_commands"))


def _parts_of(part: Dict) -> List[Tuple]:
    """(command, project, date) of each part that measured ``part``'s cells: itself, or a merge's own parts."""
    settings = part["settings"]
    if not _is_merge(part):
        return [(settings.get("command"), part["machine"].get("project"), part["machine"].get("date"))]
    try:
        return merged_parts(settings, strict=True)
    except ValueError:
        raise ValueError("a merged bench JSON whose parts' commands, commits and dates do not match up; merge its "
                         "parts again") from None


class RerunStep(NamedTuple):
    part: int  # 1-based, as the report's "Part N" lines count
    command: str  # as recorded
    arguments: Optional[List[str]]  # the bench's arguments without --out/--name; None: skipped
    cells_shown: int  # cells of the report this part measured (a later part may have replaced others)
    seconds_shown: float  # worker wall time of those cells when they were measured


def rerun_plan(report: Dict) -> List[RerunStep]:
    """Each part of ``report`` (a bench JSON, merged or not) with the arguments that measure it again.

    A part none of whose cells the report still shows (a later part measured them all again) is skipped.
    ValueError where a part's command is not a recorded ``python -m parity.bench`` run.
    """
    parts = [entry[0] for entry in _parts_of(report)]
    shown = {i: [0, 0.0] for i in range(1, len(parts) + 1)}
    for cell in report["cells"].values():
        part = part_of(cell)
        if part in shown:
            shown[part][0] += 1
            shown[part][1] += sum(cell.get("paddle_wall_seconds") or []) + sum(cell.get("torch_wall_seconds") or [])
    steps = []
    for part, command in enumerate(parts, 1):
        count, seconds = shown[part]
        arguments = _bench_arguments(command, part) if count else None
        steps.append(RerunStep(part, command, arguments, count, seconds))
    return steps


def _bench_arguments(command: Optional[str], part: int) -> List[str]:
    """The arguments of a recorded ``python -m parity.bench ...`` command, less its output options."""
    words = shlex.split(command or "")
    if words[:3] != BENCH_PREFIX or words[3:4] in (["merge"], ["rerun"]):
        raise ValueError(f"part {part}'s command is not a bench run that can be run again: {command!r}")
    arguments, skip_value = [], False
    for word in words[3:]:
        if skip_value:
            skip_value = False
        elif word in _OUTPUT_OPTIONS:
            skip_value = True
        elif not word.startswith(tuple(option + "=" for option in _OUTPUT_OPTIONS)):
            arguments.append(word)
    return arguments
