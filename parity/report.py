"""The reviewer's report of a parity run: ``DIR/parity.md``, its short twin, its HTML twin and the |Δ| heatmaps.

This module is the entry point the harness calls (``render_all``,
``write_report``, ``rerender``, ``python -m parity.report DIR``); the work is
split by job into modules each read in one sitting:

- ``parity.report_verdict``: each case's status, the counts, the verdict line;
- ``parity.report_cases``: case ids, their order, the files each case wrote;
- ``parity.report_format``: numbers, cells, anchors, links and pictures in markdown;
- ``parity.report_pictures``: the |Δ| heatmaps on one log scale, their colour bar and grid;
- ``parity.report_tables``: the matrix, galleries, |Δ| scale and metrics;
- ``parity.report_case``: one case, folded, with the command that reruns it;
- ``parity.report_first_screen``: where not and how close, under the verdict;
- ``parity.report_index``: ``reports/README.md``, the one index of every report;
- ``parity.report_provenance``: the provenance table;
- ``parity.report_markdown``: the two markdown documents;
- ``parity.report_html``: the self-contained HTML page.

Everything works from the ``results`` dict the harness also writes as
``DIR/parity.json`` and from the files under ``DIR``; every path in a report
is relative to ``DIR``.  Counts are always taken from the cases, never from
``results["summary"]``.  This module runs in the orchestrating process, so it
imports neither torch nor paddle.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

from paddle_impl import atomic
from parity.report_cases import _case_id, _files, default_files
from parity.report_format import (
    HTML_NAME, LEGEND_PATH, NB_HYPHEN, REPORT_NAME, SUMMARY_NAME, TITLE, WORD_JOINER, slug,
)
from parity import report_html
from parity.report_index import INDEX_NAME
from parity.report_markdown import render_markdown, render_summary_markdown
from parity.report_pictures import write_diff_image, write_diff_images
from parity.report_verdict import case_counts, case_status, float64_agrees, summary_line, verdict_line

__all__ = [
    "write_diff_image",
    "write_diff_images",
    "render_markdown",
    "render_summary_markdown",
    "render_all",
    "summary_line",
    "verdict_line",
    "case_status",
    "case_counts",
    "float64_agrees",
    "write_report",
    "ensure_diff_images",
    "sibling_reports",
    "rerender",
    "default_files",
    "slug",
    "REPORT_NAME",
    "SUMMARY_NAME",
    "HTML_NAME",
    "LEGEND_PATH",
    "INDEX_NAME",
    "TITLE",
    "NB_HYPHEN",
    "WORD_JOINER",
]


def render_all(results: Dict, out_dir: Path, siblings: Optional[Mapping[str, str]] = None,
               html_report: bool = True) -> Dict[str, str]:
    """Every text file of the report, rendered in full before anything is written: name -> text.

    ``parity.md`` links ``parity_summary.md`` (and ``parity.html``), which are
    written with it, and the ``siblings`` that exist; call ``write_diff_images``
    first so the pictures and the stated scale agree.
    """
    out_dir = Path(out_dir)
    own = {"summary (no pictures)": SUMMARY_NAME}
    if html_report:
        own["HTML (self-contained)"] = HTML_NAME
    links = {**own, **dict(siblings or {})}
    texts = {
        REPORT_NAME: render_markdown(results, out_dir=out_dir, siblings=links, companions=own.values()),
        SUMMARY_NAME: render_summary_markdown(results, siblings=siblings, out_dir=out_dir),
    }
    if html_report:
        texts[HTML_NAME] = report_html.render_html(results, out_dir, siblings=siblings)
    return texts


# how a report names the one index of every report in its "Reports:" line
INDEX_LABEL = "index of every report"


def sibling_reports(out_dir: Path, root: Optional[Path] = None) -> Dict[str, str]:
    """What a report links beside its own twins: the one index of every report, ``root/README.md``.

    ``root`` (default: ``out_dir``) is where the committed reports live
    (``reports/``); the path is relative to ``out_dir``.  Reports link to the
    index, which lists each of them once (``python -m parity.report_index``),
    rather than to each other.
    """
    import os

    out_dir = Path(out_dir).resolve()
    root = Path(root).resolve() if root is not None else out_dir
    return {INDEX_LABEL: Path(os.path.relpath(root / INDEX_NAME, out_dir)).as_posix()}


def ensure_diff_images(results: Dict, out_dir: Path) -> List[Path]:
    """Draw the report's |Δ| heatmaps at one shared scale (``write_diff_images``); return the pictures written.

    Cases that errored are skipped (their .npy files, if any, are left over
    from an earlier run), and so are cases whose two CAM files are not there.
    """
    out_dir = Path(out_dir)
    info = write_diff_images(results, out_dir)
    by_id = {_case_id(c): c for c in results.get("cases") or []}
    return [out_dir / _files(by_id[case_id])["diff_jpg"] for case_id in info["cases"] if case_id in by_id]


def write_report(results: Dict, out_dir: Path, siblings: Optional[Mapping[str, str]] = None,
                 html_report: bool = False) -> Path:
    """Write ``out_dir/parity.md`` (and with ``html_report`` its summary and HTML twins) atomically.

    Everything is rendered before the first file is written, so a failure
    leaves the previous report in place.
    """
    out_dir = Path(out_dir)
    ensure_diff_images(results, out_dir)
    if html_report:
        texts = render_all(results, out_dir, siblings=siblings)
    else:
        texts = {REPORT_NAME: render_markdown(results, out_dir=out_dir, siblings=siblings)}
    for name, text in texts.items():
        atomic.write_text(out_dir / name, text)
    return out_dir / REPORT_NAME


def rerender(out_dir: Path, root: Optional[Path] = None) -> List[Path]:
    """Draw a finished run's pictures and write its reports again from its ``parity.json`` (no computing).

    For when the reports beside it changed (a sibling appeared) or the renderer
    did: the numbers, the provenance (the commit they came from) and the
    ``.npy`` files stay as the run left them.
    """
    import json

    out_dir = Path(out_dir)
    results = json.loads((out_dir / "parity.json").read_text(encoding="utf-8"))
    write_diff_images(results, out_dir)
    texts = render_all(results, out_dir, siblings=sibling_reports(out_dir, root))
    texts["parity.json"] = json.dumps(results, indent=1, allow_nan=True)
    for name, text in texts.items():
        atomic.write_text(out_dir / name, text)
    return [out_dir / name for name in texts]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m parity.report DIR... [--root reports]``: re-render finished runs' reports."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m parity.report", description=rerender.__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", help="output directories of finished runs (each with its parity.json)")
    parser.add_argument("--root", default=None, help="where the sibling reports to link live (default: each DIR)")
    args = parser.parse_args(argv)
    for directory in args.dirs:
        for path in rerender(Path(directory), None if args.root is None else Path(args.root)):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
