"""The two markdown documents of a run: the full report (``parity.md``) and its short twin."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple

from parity.registry import METHODS, SMOOTH_MODES
from parity.report_cases import _in_order, _ordered_cases, _setups
from parity.report_format import (
    HTML_NAME, REPORT_NAME, TITLE, _cell, _heading_anchor, _Images, _keep_together, _Links, _setup_anchor,
)
from parity.report_first_screen import computed_at_line, moved_lines, where_not_lines, worst_lines
from parity.report_provenance import _fallback_lines, _provenance_lines, switch_line, switch_lines
from parity.report_case import _case_lines, _failure_lines
from parity.report_tables import (
    _ablation_lines, _architecture_lines, _matrix_lines, _methods_lines, _metrics_lines, _scale_info, _scale_lines,
    _siblings_line,
)
from parity.report_verdict import case_status, verdict_line

# A metrics table longer than this is folded: the first screen already names what matters, and a
# report stays within about ten printed pages.
_FOLD_METRICS_ROWS = 24

def _title(results: Mapping) -> str:
    prov = results.get("provenance") or {}
    subtitle = " · ".join(str(prov[k]) for k in ("dtype", "profile", "device") if prov.get(k))
    return f"# {TITLE}" + (f" ({subtitle})" if subtitle else "")


def _first_screen(results: Mapping, cases: Sequence[Mapping], links: _Links) -> List[str]:
    """Does it pass (verdict and counts), where not (every failure and where it parted), how close (worst margins)."""
    lines = [_title(results), "", verdict_line(results), "", computed_at_line(results, links.mode != "none"), ""]
    lines += _fallback_lines(results)
    lines += where_not_lines(cases, links)
    lines += worst_lines(cases, links, results.get("diff_images"))
    lines += moved_lines(results, links)
    lines += _matrix_lines(cases, links) + [""]
    return lines


def _setup_counts(cases: Sequence[Mapping]) -> str:
    """``8 cases: 6 passed, 2 vacuous``."""
    statuses = [case_status(c) for c in cases]
    counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
    return f"{len(cases)} case{'s' if len(cases) != 1 else ''}: {counts}"


def _metrics_section(results: Mapping, cases: Sequence[Mapping], links: _Links) -> List[str]:
    table = _metrics_lines(cases, links, _scale_info(results))
    head = [f"## {_heading_anchor('metrics-all-cases')}Metrics, all cases", ""]
    if len(cases) <= _FOLD_METRICS_ROWS:
        return head + table
    return head + [f"<details><summary>The metrics of all {len(cases)} cases</summary>", ""] + table + ["", "</details>"]


def _contents_line(sections: Sequence[Tuple[str, str]]) -> str:
    return "**Contents:** " + " · ".join(f"[{title}](#{anchor})" for anchor, title in sections)



def render_markdown(results: Mapping, out_dir: Optional[Path] = None,
                    siblings: Optional[Mapping[str, str]] = None, companions: Iterable[str] = ()) -> str:
    """The full reviewer report (``DIR/parity.md``); image paths are relative to DIR.

    The first screen: title, verdict, commit, where not, how close, what moved,
    the verdict matrix, the table of contents and the ``siblings`` (label ->
    path relative to the report: its twins and ``reports/README.md``, the index
    of every report).  With ``out_dir`` given, a sibling that is not there is
    left out (unless it is one of ``companions``, files written together with
    this report), and a picture that is not there is written as
    ``missing: `path` `` instead of a broken image.
    """
    img = _Images(out_dir)
    links = _Links("page")
    cases = _ordered_cases(results)
    setups = _setups(cases)
    one_setup = len(setups) == 1
    scale = _scale_info(results)
    by_key = {(c.get("setup") or "", c.get("method"), c.get("smooth")): c for c in cases}
    methods = _in_order([c.get("method") for c in cases], METHODS)

    sections: List[Tuple[str, str]] = [("provenance", "Provenance")]
    body: List[str] = _provenance_lines(results) + [""]
    if cases:
        sections.append(("heatmap-scale", "|Δ| scale"))
        body += _scale_lines(results, cases, img) + [""]
    if one_setup and any((setups[0], "ablationcam", m) in by_key for m in SMOOTH_MODES):
        sections.append(("ablationcam-across-the-smoothing-modes", "AblationCAM across the modes"))
        body += _ablation_lines(by_key, setups[0], img, scale) + [""]
    if one_setup and any(key[2] == "no_smooth" for key in by_key):
        sections.append(("methods-no-smoothing", "Methods, no smoothing"))
        body += _methods_lines(by_key, setups[0], methods, img, scale, links) + [""]
    sections.append(("metrics-all-cases", "Metrics"))
    body += _metrics_section(results, cases, links) + [""]
    sections.append(("cases", "Cases"))
    body += [f"## {_heading_anchor('cases')}Cases", "",
             "Each case is folded under one line: open it for its facts, the command that reruns it alone, "
             "its pictures and every stage compared.", ""]
    for setup in setups:
        level = "###"
        of_setup = [case for case in cases if (case.get("setup") or "") == setup]
        if not one_setup:
            # one folded line per setup: its counts; its cases, each folded too, inside
            body += [f"### {_heading_anchor(_setup_anchor(setup))}Setup {_cell(setup or '(default)')}", ""]
            switches = switch_line(results, str(of_setup[0].get("model") or ""))
            if switches:
                body += [switches, ""]
            body += [f"<details><summary>{_setup_counts(of_setup)}</summary>", ""]
            level = "####"
        for case in of_setup:
            body += _case_lines(case, img, scale, level, results.get("provenance"))
        if not one_setup:
            body += ["</details>", ""]

    lines = _first_screen(results, cases, links)
    lines += [_contents_line(sections), ""]
    other = _siblings_line(siblings, out_dir, companions)
    if other:
        lines += [other, ""]
    lines += _architecture_lines(cases)
    lines += switch_lines(results, cases)
    lines += body
    return _keep_together("\n".join(lines).rstrip("\n") + "\n")


def render_summary_markdown(results: Mapping, siblings: Optional[Mapping[str, str]] = None,
                            report: str = REPORT_NAME, out_dir: Optional[Path] = None) -> str:
    """A short report without images: verdict, matrix, provenance, metrics, failure messages.

    Its matrix and metrics link to the cases in ``report`` (the full report
    beside it, written with it); ``siblings`` as in ``render_markdown``.
    """
    links = _Links("file", report)
    cases = _ordered_cases(results)
    lines = _first_screen(results, cases, links)
    other = {"full report, with pictures": report, **dict(siblings or {})}
    lines += [_siblings_line(other, out_dir, companions=(report, HTML_NAME)), ""]
    lines += _architecture_lines(cases)
    lines += _provenance_lines(results) + [""]
    lines += _metrics_section(results, cases, links)
    failures = _failure_lines(cases)
    if failures:
        lines += [""] + failures
    return _keep_together("\n".join(lines).rstrip("\n") + "\n")
