"""``reports/shards.md``: what a sharded run costs, shard by shard, from the shards' own manifests.

    python -m tools.shards_report PROFILE=SHARDS_DIR:TIMES_FILE ... --out reports/shards.md

Each ``SHARDS_DIR`` holds the ``--out`` directories of one profile's N shards (``1/`` ..
``N/``, each with its ``shard.json``); ``TIMES_FILE`` has the measured wall time of each
whole command, one line each: ``PROFILE shard K/N rc=0 wall=SECONDS`` and
``PROFILE merge rc=0 wall=SECONDS``.  With one runner per shard, the run's wall time is the
longest shard plus the merge (the runners' own set-up excluded).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

from paddle_impl.atomic import write_text
from parity.provenance import portable


def _manifests(directory: Path) -> List[Dict]:
    found = [json.loads(path.read_text()) for path in sorted(directory.glob("*/shard.json"))]
    return sorted(found, key=lambda m: m["shard"])


def _times(path: Path) -> Dict[str, float]:
    """``{"1": seconds, ..., "merge": seconds}`` from the lines the run script wrote."""
    times = {}
    for line in path.read_text().splitlines():
        words = line.split()
        wall = float(next(w for w in words if w.startswith("wall="))[5:])
        times["merge" if words[1] == "merge" else words[2].split("/")[0]] = wall
    return times


def _minutes(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s"


def provenance_of(profiles: Dict[str, Dict]) -> Dict:
    """Date, CPU and the commit the shards ran at (from their manifests; None where they recorded none)."""
    manifests = [m for info in profiles.values() for m in info["manifests"]]
    prov = manifests[0]["provenance"]
    projects = [m["provenance"].get("project") for m in manifests if isinstance(m["provenance"].get("project"), dict)]
    commits = {p.get("commit") for p in projects}
    # one commit for every shard, or none: shards run at different commits have no single provenance
    project = projects[0] if projects and len(commits) == 1 and len(projects) == len(manifests) else None
    return {"date": prov.get("date"), "cpu": prov.get("cpu"), "project": project}


def render(profiles: Dict[str, Dict]) -> str:
    lines = ["# Sharded parity runs: time per shard", ""]
    any_manifest = next(iter(profiles.values()))["manifests"][0]
    prov = any_manifest["provenance"]
    project = provenance_of(profiles)["project"]
    if project and project.get("commit"):
        state = {True: "uncommitted changes", False: "clean tree"}.get(project.get("dirty"), "tree state unknown")
        lines += [f"Computed at commit `{project['commit'][:12]}` ({state}).", ""]
    else:
        lines += ["The shards did not record one commit they all ran at.", ""]
    lines += [
        f"Measured on {prov.get('cpu', '?')}, {prov.get('date', '?')[:10]}: the N shards of each profile ran one "
        "after another on this one machine, each as a runner of this size would run it "
        "(`python -m parity --profile P --shard K/N --no-cache --jobs 2`: two one-thread workers, nothing else "
        "running, no cached upstream results: a cold run), then `python -m parity merge`. The times are the whole "
        "commands' (interpreter, imports, each model's seeded weights made and converted if missing, the work). "
        "With one runner per shard, the wall time of the run is the longest shard plus the merge (the runners' "
        "own set-up, the venv from pip's cache, not counted).",
        "",
        "| profile | shards | worker processes | longest shard | merge | wall time on N runners | one runner (sum) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, info in profiles.items():
        manifests, times = info["manifests"], info["times"]
        walls = [times[str(m["shard"])] for m in manifests]
        items = sum(len(m["items"]) for m in manifests)
        lines.append(f"| {name} | {len(manifests)} | {items} | {_minutes(max(walls))} | {_minutes(times['merge'])} "
                     f"| **{_minutes(max(walls) + times['merge'])}** | {_minutes(sum(walls) + times['merge'])} |")
    for name, info in profiles.items():
        lines += ["", f"## {name}", "",
                  "| shard | worker processes | estimated work (1 thread, s) | its workers' wall (s) | whole command (s) |",
                  "|---:|---:|---:|---:|---:|"]
        for manifest in info["manifests"]:
            lines.append(f"| {manifest['shard']}/{manifest['shards']} | {len(manifest['items'])} "
                         f"| {manifest.get('estimated_seconds', 0):.0f} | {manifest['wall_seconds']:.0f} "
                         f"| {info['times'][str(manifest['shard'])]:.0f} |")
        units = [n for m in info["manifests"] for n in m["items"] if "-variant" in n]
        if units:
            lines += ["", f"{len(units)} of the processes are weights units (one aug_smooth variant of ScoreCAM or "
                      "AblationCAM each); the cases that need them are replayed at the merge."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.shards_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("profiles", nargs="+", metavar="PROFILE=DIR:TIMES_FILE")
    parser.add_argument("--out", default="reports/shards.md")
    args = parser.parse_args(argv)
    profiles = {}
    for spec in args.profiles:
        name, rest = spec.split("=", 1)
        directory, times = rest.rsplit(":", 1)
        profiles[name] = {"manifests": _manifests(Path(directory)), "times": _times(Path(times))}
    write_text(Path(args.out), render(profiles))
    # the JSON twin the index of reports reads (parity.report_index): when, where, at which commit
    summary = {name: {"shards": len(info["manifests"]), "times": info["times"]} for name, info in profiles.items()}
    write_text(Path(args.out).with_suffix(".json"),
               json.dumps(portable({"provenance": provenance_of(profiles), "profiles": summary}), indent=1))
    print(render(profiles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
