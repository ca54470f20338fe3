"""``reports/README.md``: every committed report once, with its verdict, date and commit, stale ones marked.

``python -m parity.report_index reports/`` writes it.  A parity report's
verdict line is recomputed from its cases (``parity.report_verdict``), so the
index and the report cannot disagree; the timing and paper reports state
what they measured.  A report is **STALE** when the commit it was computed at
is unknown, is not in this repository, or precedes the last change to the
code that decides its numbers and verdicts (``parity.provenance.deciding_paths``: the
core's, plus the model registry of a profile that has its own).
Reports link to this one index instead of to each other.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from paddle_impl import atomic
from parity.provenance import DECIDING_PATHS, PROFILE_DECIDING_PATHS, deciding_paths, last_change, staleness
from parity.report_verdict import verdict_line

__all__ = ["collect", "render_index", "write_index", "main", "INDEX_NAME"]

INDEX_NAME = "README.md"
_SKIP_PARTS = ("stages", "output_paddle", "output_torch", "diff")


def _load(path: Path) -> Optional[Dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _project(data: Mapping) -> Mapping:
    project = data.get("project")
    return project if isinstance(project, Mapping) else {}


def _parity_entry(json_path: Path, root: Path) -> Optional[Dict]:
    results = _load(json_path)
    report = json_path.parent / "parity.md"
    if results is None or not report.is_file():
        return None
    prov = results.get("provenance") or {}
    title = " ".join(str(prov[k]) for k in ("dtype", "profile") if prov.get(k)) or json_path.parent.name
    return {"path": report.relative_to(root).as_posix(), "title": title, "verdict": verdict_line(results),
            "date": prov.get("date"), "project": _project(prov), "profile": prov.get("profile")}


def _bench_entry(json_path: Path, root: Path) -> Optional[Dict]:
    data = _load(json_path)
    report = json_path.with_suffix(".md")
    if data is None or not report.is_file():
        return None
    machine = data.get("machine") or {}
    settings = data.get("settings") if isinstance(data.get("settings"), Mapping) else {}
    # a merged report keeps each part's commit: the index judges every part, not only the first one's machine
    parts = [part if isinstance(part, Mapping) else {} for part in settings.get("merged_projects") or []]
    return {"path": report.relative_to(root).as_posix(), "title": f"timings: {json_path.stem.replace('_', ' ')}",
            "verdict": _bench_verdict(data, machine.get("cpu", "an unnamed CPU")),
            "date": machine.get("date"), "project": _project(machine) or _project(data), "parts": parts}


def _bench_verdict(data: Dict, cpu: str) -> str:
    """How many cells are at or below upstream's time, how many above, and the slowest; older files: methods only."""
    cells = data.get("cells")
    if not isinstance(cells, dict):  # the format before parity.bench's cells (2026-11)
        methods = data.get("methods") or {}
        return f"timings of {len(methods) if isinstance(methods, (dict, list)) else 0} method(s) on {cpu}"
    timed = {name: cell["ratio"] for name, cell in cells.items()
             if isinstance(cell, dict) and isinstance(cell.get("ratio"), (int, float))}
    slower = sorted((name for name, value in timed.items() if value > 1.0), key=lambda name: -timed[name])
    words = f"{len(timed)} cell(s) timed on {cpu}: {len(timed) - len(slower)} at or below upstream's time"
    if slower:
        words += f", {len(slower)} above (slowest: `{slower[0]}` {timed[slower[0]]:.2f}×)"
    untimed = len(cells) - len(timed)
    return words + (f", {untimed} without a ratio (an error)" if untimed else "")


def _paper_entry(json_path: Path, root: Path) -> Optional[Dict]:
    data = _load(json_path)
    report = json_path.with_suffix(".md")
    if data is None or not report.is_file():
        return None
    rows = data.get("rows") or []
    return {"path": report.relative_to(root).as_posix(), "title": "paper table",
            "verdict": f"upstream's paper table recomputed on both sides ({len(rows)} row(s))",
            "date": data.get("date"), "project": _project(data)}


def collect(root: Path) -> List[Dict]:
    """One entry per report under ``root``: path (relative to root), title, verdict, date, project."""
    root = Path(root)
    entries: List[Dict] = []
    covered = set()
    for json_path in sorted(root.rglob("parity.json")):
        if any(part in _SKIP_PARTS for part in json_path.relative_to(root).parts):
            continue
        entry = _parity_entry(json_path, root)
        if entry:
            entries.append(entry)
            covered.update({entry["path"], (json_path.parent / "parity_summary.md").relative_to(root).as_posix()})
    for json_path in sorted(root.glob("bench*.json")):
        entry = _bench_entry(json_path, root)
        if entry:
            entries.append(entry)
            covered.add(entry["path"])
    paper = root / "paper" / "paper.json"
    if paper.is_file():
        entry = _paper_entry(paper, root)
        if entry:
            entries.append(entry)
            covered.add(entry["path"])
    for other in sorted(root.glob("*.md")):  # a report without a JSON twin (shards.md): listed, provenance unknown
        relative = other.relative_to(root).as_posix()
        if relative in covered or other.name == INDEX_NAME:
            continue
        twin = _load(other.with_suffix(".json")) or {}
        prov = twin.get("provenance") if isinstance(twin.get("provenance"), Mapping) else {}
        entries.append({"path": relative, "title": other.stem.replace("_", " "),
                        "verdict": "timings, no verdict" if prov else "no JSON recorded",
                        "date": prov.get("date"), "project": _project(prov)})
    return entries


def _commit_text(project: Mapping) -> str:
    commit = project.get("commit")
    if not commit:
        return "commit unknown"
    state = {True: ", uncommitted changes", False: ", clean"}.get(project.get("dirty"), "")
    return f"commit `{str(commit)[:12]}`{state}"


def _distinct_part_commits(entry: Mapping) -> List[Optional[str]]:
    """Each part's commit once, in order; None for a part that recorded none."""
    return list(dict.fromkeys(part.get("commit") or None for part in entry.get("parts") or []))


def _entry_commit_text(entry: Mapping) -> str:
    commits = _distinct_part_commits(entry)
    if len(commits) > 1:
        return f"{len(entry['parts'])} parts at {len(commits)} commits (" + ", ".join(
            f"`{commit[:12]}`" if commit else "unknown" for commit in commits) + ")"
    return _commit_text(entry["project"] or {})


def _entry_staleness(entry: Mapping, repo: Optional[Path]) -> Optional[str]:
    """Why the entry is stale, or None; a merged report is as stale as its oldest part."""
    paths = deciding_paths(entry.get("profile"))
    parts = entry.get("parts") or [entry["project"] or {}]
    for number, part in enumerate(parts, 1):
        reason = staleness(part.get("commit"), repo, paths)
        if reason:
            return f"part {number}: {reason}" if len(parts) > 1 else reason
    return None


def render_index(root: Path, repo: Optional[Path] = None) -> str:
    """The index's markdown; ``repo`` is the git checkout whose history decides staleness (default: this one)."""
    root = Path(root)
    entries = collect(root)
    changed = last_change(DECIDING_PATHS, repo)
    paths = ", ".join(f"`{p}`" for p in DECIDING_PATHS)
    own = "; ".join(f"{profile}: " + ", ".join(f"`{p}`" for p in extra) for profile, extra in PROFILE_DECIDING_PATHS.items())
    lines = ["# Reports", "",
             f"Every committed report once: its verdict, when and at which commit its numbers were computed. A report "
             f"is **STALE** when that commit is unknown or older than the last change to {paths} (the code that "
             f"decides its numbers and verdicts" + (f"; last changed in `{changed[:12]}`" if changed else "") + ")"
             f", or to the model registry of its profile ({own}).",
             "", "Written by `python -m parity.report_index reports/`.", ""]
    stale_count = 0
    for entry in entries:
        reason = _entry_staleness(entry, repo)
        stale_count += bool(reason)
        date = str(entry["date"])[:10] if entry.get("date") else "date unknown"
        head = f"- **[{entry['title']}]({entry['path']})** · {date} · {_entry_commit_text(entry)}"
        if reason:
            head += f" · ⚠️ **STALE** ({reason})"
        lines += [head, f"  {entry['verdict']}"]
    lines += ["", f"{len(entries)} report(s), {stale_count} stale."]
    return "\n".join(lines) + "\n"


def write_index(root: Path, repo: Optional[Path] = None) -> Path:
    path = Path(root) / INDEX_NAME
    atomic.write_text(path, render_index(root, repo))
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m parity.report_index [ROOT]``: write ROOT/README.md (default ROOT: reports)."""
    parser = argparse.ArgumentParser(prog="python -m parity.report_index", description=main.__doc__)
    parser.add_argument("root", nargs="?", default="reports", help="the directory of the committed reports")
    args = parser.parse_args(argv)
    print(f"wrote {write_index(Path(args.root))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
