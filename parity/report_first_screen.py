"""The first screen of a report: does it pass, where not, how close.

Under the verdict line come the run's commit, then every case that did not
pass with where it first parted (the stage, and the layer when the harness
found one), the vacuous cases grouped by setup, and the cases closest to
their bound.  Everything else of a report is below, most of it folded.
"""
from __future__ import annotations

import math
from typing import Dict, List, Mapping, Optional, Sequence

from parity.report_cases import _case_id, _comparable, _p999
from parity.report_format import _cell, _code, _drop_empty_columns, _Links, _of_bound, _sci, _table
from parity.report_verdict import _EMOJI, case_status

__all__ = ["margin", "worst_lines", "where_not_lines", "computed_at_line", "compare_with_previous", "moved_lines"]

# How many cases the "closest to the bound" table names.
WORST_COUNT = 5
# The statuses a first screen lists case by case: what a reader must look at.
_LISTED = ("failed", "error", "float32 only", "ill-conditioned")


def margin(case: Mapping) -> Optional[float]:
    """max|Δ| of the final CAM over the case's bound (1.0 is at the bound); None where there is nothing to rank."""
    diff, bound = case.get("cam_max_abs_diff"), case.get("tolerance")
    if diff is None or not bound:
        return None
    value = float(diff) / float(bound)
    return None if math.isnan(value) else value


def worst_lines(cases: Sequence[Mapping], links: _Links, p999: Optional[Mapping] = None,
                count: int = WORST_COUNT) -> List[str]:
    """The ``count`` cases nearest to (or furthest over) their bound, as a table: how close the run came."""
    ranked = [c for c in cases if _comparable(c) and case_status(c) != "vacuous" and margin(c) is not None]
    ranked.sort(key=lambda c: -margin(c))
    if not ranked:
        return []
    rows = []
    for case in ranked[:count]:
        status = case_status(case)
        rows.append([links.case(case, f"{_EMOJI[status]} {_cell(_case_id(case))}"), _of_bound(case),
                     _sci(case.get("cam_max_abs_diff")), _sci(_p999(case, p999)), _sci(case.get("tolerance"))])
    title = f"Closest to the bound ({min(count, len(ranked))} of {len(ranked)} ranked cases):"
    header, rows = _drop_empty_columns(["case", "of bound", "max\\|Δ\\|", "p99.9 \\|Δ\\|", "bound"], rows)
    return [title, ""] + _table(header, rows, ["l"] + ["r"] * (len(header) - 1)) + [""]


def _where(case: Mapping) -> str:
    """``first divergent stage `weights`, layer torch `layer4.1` / paddle `layer4.1```, or why none is known."""
    parts = []
    if case.get("first_divergent_stage"):
        parts.append(f"first divergent stage {_code(case['first_divergent_stage'])}")
    layer = case.get("first_divergent_layer")
    if isinstance(layer, Mapping) and (layer.get("torch_path") or layer.get("paddle_path")):
        parts.append(f"layer torch {_code(layer.get('torch_path', '?'))} / paddle {_code(layer.get('paddle_path', '?'))}")
    if case_status(case) == "error":
        first_line = str(case.get("error") or "").strip().splitlines()
        parts.append("did not finish" + (f": {_cell(first_line[-1][:120])}" if first_line else ""))
    if case.get("ill_conditioned"):
        parts.append(_cell(case["ill_conditioned"]))
    return "; ".join(parts) or "no stage over its bound recorded"


def where_not_lines(cases: Sequence[Mapping], links: _Links) -> List[str]:
    """Every case that failed, errored, passed in float64 only or was decided by a tie, with where; vacuous ones grouped."""
    lines: List[str] = []
    listed = [c for c in cases if case_status(c) in _LISTED]
    if listed:
        lines += ["Where not:", ""]
        for case in listed:
            status = case_status(case)
            lines.append(f"- {links.case(case, f'{_EMOJI[status]} {_code(_case_id(case))}')} ({status}): {_where(case)}")
        lines.append("")
    vacuous = [c for c in cases if case_status(c) == "vacuous"]
    if vacuous:
        by_setup: Dict[str, int] = {}
        for case in vacuous:
            key = case.get("setup") or case.get("method") or ""
            by_setup[key] = by_setup.get(key, 0) + 1
        groups = ", ".join(f"{_cell(name)} ({n})" for name, n in by_setup.items())
        lines += [f"{_EMOJI['vacuous']} **{len(vacuous)} vacuous** (both final CAMs flat for an image: nothing "
                  f"compared) in {groups}.", ""]
    return lines


def computed_at_line(results: Mapping, link: bool = True) -> str:
    """``Computed at commit `4a53b7f` (clean tree) on 2026-12-06``, from the run's provenance."""
    prov = results.get("provenance") or {}
    project = prov.get("project") if isinstance(prov.get("project"), Mapping) else {}
    commit = (project or {}).get("commit")
    if commit:
        dirty = (project or {}).get("dirty")
        state = {True: "uncommitted changes", False: "clean tree", None: "tree state unknown"}[dirty if dirty in (True, False) else None]
        text = f"Computed at commit {_code(str(commit)[:12])} ({state})"
    else:
        text = "Computed at an unknown commit"
    date = str(prov.get("date") or "")[:10]
    return text + (f" on {date}" if date else "") + (" · [provenance](#provenance)" if link else "")


# A case "moved" when its margin to the bound changed by more than this factor, either way.
MOVED_FACTOR = 2.0
# Margins below this (identical maps give 0) are taken as this, so 0 -> 1e-7 is not "infinitely" moved.
_MARGIN_FLOOR = 1e-3


def compare_with_previous(previous: Optional[Mapping], results: Mapping) -> Optional[Dict]:
    """What moved since ``previous`` (the last run of the same profile and dtype): cases whose status changed
    or whose margin changed by more than ``MOVED_FACTOR``; None when there is no comparable previous run."""
    if not isinstance(previous, Mapping):
        return None
    old_prov, new_prov = previous.get("provenance") or {}, results.get("provenance") or {}
    if any(old_prov.get(key) != new_prov.get(key) for key in ("profile", "dtype")):
        return None
    before = {_case_id(c): c for c in previous.get("cases") or []}
    moved, compared = [], 0
    for case in results.get("cases") or []:
        old = before.get(_case_id(case))
        if old is None:
            continue
        compared += 1
        old_margin, new_margin = margin(old), margin(case)
        status_changed = case_status(old) != case_status(case)
        ratio = None
        if old_margin is not None and new_margin is not None:
            low, high = sorted((max(old_margin, _MARGIN_FLOOR), max(new_margin, _MARGIN_FLOOR)))
            ratio = high / low
        if status_changed or (ratio is not None and ratio > MOVED_FACTOR):
            moved.append({"id": _case_id(case), "before": old_margin, "after": new_margin,
                          "status_before": case_status(old), "status_after": case_status(case)})
    project = old_prov.get("project") if isinstance(old_prov.get("project"), Mapping) else {}
    return {"commit": (project or {}).get("commit"), "date": old_prov.get("date"), "compared": compared,
            "moved": moved}


def _share(value: Optional[float]) -> str:
    return "—" if value is None else _of_bound({"cam_max_abs_diff": value, "tolerance": 1.0})


def moved_lines(results: Mapping, links: _Links, count: int = 8) -> List[str]:
    """One line on what moved since the previous run of this profile (``results["previous_run"]``)."""
    previous = results.get("previous_run")
    if not isinstance(previous, Mapping):
        return []
    where = f"commit {_code(str(previous['commit'])[:12])}" if previous.get("commit") else "an unknown commit"
    when = f", {str(previous['date'])[:10]}" if previous.get("date") else ""
    moved = list(previous.get("moved") or [])
    head = f"Since the previous run of this profile ({where}{when})"
    if not moved:
        return [f"{head}: no case of {previous.get('compared', 0)} changed status or moved more than "
                f"{MOVED_FACTOR:g}× in margin.", ""]
    by_id = {_case_id(c): c for c in results.get("cases") or []}
    named = []
    for item in moved[:count]:
        text = f"{_code(item['id'])} {_share(item['before'])} → {_share(item['after'])}"
        if item["status_before"] != item["status_after"]:
            text += f" ({item['status_before']} → {item['status_after']})"
        case = by_id.get(item["id"])
        named.append(links.case(case, text) if case is not None else text)
    more = f", and {len(moved) - count} more" if len(moved) > count else ""
    return [f"{head}, {len(moved)} of {previous.get('compared', 0)} cases moved (status, or margin more than "
            f"{MOVED_FACTOR:g}×): " + ", ".join(named) + more + ".", ""]
