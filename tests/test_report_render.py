"""Every committed report, rendered as GitHub renders it: its pictures exist, its links land, its tables parse.

Two layers:

* the committed files as they are (``reports/**/parity.md``,
  ``parity_summary.md``, ``bench.md``), rendered with a GFM renderer
  (markdown-it-py with its table extension, inline HTML on, as on GitHub):
  every picture is a relative path to a file that exists, every in-page link
  has a target, every link to a sibling file lands, every table parses; and
  no empty header row, no sentence caught in a code span;
* every committed run (``reports/**/parity.json``) rendered again with
  today's renderer against its committed pictures, without writing anything:
  the same checks, plus the first screen (verdict, matrix, contents) and
  tables that fit GitHub's 946 px article.

So a report that would render broken on GitHub cannot be committed, and a
renderer change that would break a committed run's report fails here first.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("markdown_it", reason="markdown-it-py renders the reports as GitHub does (requirements.lock)")

from parity.report import render_markdown, render_summary_markdown  # noqa: E402
from parity.report_check import ARTICLE_WIDTH, check_markdown, render_gfm, table_widths  # noqa: E402
from parity.step_summary import render_step_summary  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
REPORTS = REPO / "reports"

COMMITTED = sorted({p for pattern in ("**/parity.md", "**/parity_summary.md", "**/bench.md")
                    for p in REPORTS.glob(pattern)})
RUNS = sorted(p.parent for p in REPORTS.glob("**/parity.json"))


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def _written_by_an_older_renderer(path: Path) -> str:
    """Why a committed file is known to predate its fix (empty string when it does not)."""
    text = path.read_text(encoding="utf-8")
    if path.name == "bench.md" and "Wall time of `make parity on this" in text:
        return "bench.md predates the fix of parity/bench.py's wall-time sentence (one backtick missing)"
    if path.name in ("parity.md", "parity_summary.md") and "\n|  |  |\n" in text and "**Contents:**" not in text \
            and "full report, with pictures" not in text:
        return f"{_rel(path)} predates the report layout of issue 13 (regenerated from a real run)"
    return ""


def test_there_are_committed_reports_to_check():
    assert COMMITTED and RUNS, "no committed report found under reports/"


@pytest.mark.parametrize("path", COMMITTED, ids=_rel)
def test_committed_report_renders_with_working_pictures_and_links(path):
    problems = check_markdown(path, style=False)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", COMMITTED, ids=_rel)
def test_committed_report_has_no_empty_header_or_prose_code_span(path, request):
    reason = _written_by_an_older_renderer(path)
    if reason:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))
    problems = check_markdown(path)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("run", RUNS, ids=_rel)
def test_committed_run_rerendered_reads_on_one_screen_and_fits(run):
    results = json.loads((run / "parity.json").read_text(encoding="utf-8"))
    text = render_markdown(results, out_dir=run, siblings={"summary": "parity_summary.md", "bench": "../bench.md"})
    problems = check_markdown(run / "parity.md", text=text)
    assert not problems, "\n".join(problems)
    first = text.split("\n## ", 1)[0]
    assert first.splitlines()[2].startswith(("✅ **PASS**", "❌ **FAIL**", "⚠️ **INCONCLUSIVE**")), first.splitlines()[2]
    assert "| method |" in first or "| setup |" in first
    assert "**Contents:** [Provenance](#provenance)" in first
    for head, width in table_widths(text):
        assert width <= ARTICLE_WIDTH, f"{_rel(run)}: table [{head.strip()[:40]}] needs ~{width:.0f} px"
    # the summary's cells link into the committed parity.md beside it
    summary = render_summary_markdown(results, out_dir=run)
    problems = check_markdown(run / "parity_summary.md", text=summary)
    assert not problems, "\n".join(problems)
    html = render_gfm(text)
    assert "<p>|" not in html


@pytest.mark.parametrize("run", RUNS, ids=_rel)
def test_committed_run_step_summary_has_no_local_paths(run):
    results = json.loads((run / "parity.json").read_text(encoding="utf-8"))
    text = render_step_summary(results, artifact_url="https://github.com/o/r/actions/runs/1")
    html = render_gfm(text)
    assert "<img" not in html and "](output_" not in text and "](diff/" not in text
    assert 'href="#' not in html  # a step summary has no page of its own to jump within
    assert len(text.encode("utf-8")) < 200_000
