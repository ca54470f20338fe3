"""The report for ``$GITHUB_STEP_SUMMARY``: verdict first, no pictures, under the size limit.

A step summary cannot show the report's pictures (they are files of the run,
not of the repository) and GitHub refuses one over 1 MiB, so this variant
keeps what decides: the verdict, the matrix, what did not pass and why, the
metrics and the provenance, with links to the uploaded artifact that holds
the full report (``parity.md``, ``parity.html``).  It has no local paths at
all.  Sections are added in that order while they fit ``max_bytes``; a
section that does not fit is cut between rows or cases, and says so.
"""
from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path
from typing import List, Mapping, Optional, Sequence

from parity.report_cases import _case_id, _ordered_cases
from parity.report_format import _fenced, _Links
from parity.report_provenance import _fallback_lines, _provenance_lines
from parity.report_first_screen import computed_at_line, moved_lines, where_not_lines, worst_lines
from parity.report_tables import _architecture_lines, _matrix_lines, _metrics_lines
from parity.report_markdown import _title
from parity.report_verdict import _EMOJI, case_status, verdict_line

__all__ = ["render_step_summary", "DEFAULT_MAX_BYTES", "main"]

# GitHub's limit is 1 MiB per step; stay far below it so several jobs' summaries read well together.
DEFAULT_MAX_BYTES = 200_000
# One failure message is cut at this many characters (the artifact's parity_diff.log has them whole).
_MESSAGE_CHARS = 3000

Block = List[str]


def _size(lines: Sequence[str]) -> int:
    return len(("\n".join(lines) + "\n").encode("utf-8"))


def _table_blocks(lines: Sequence[str]) -> List[Block]:
    """A markdown table as blocks: what precedes it, its header, one block per row, what follows it."""
    rows = [i for i, line in enumerate(lines) if line.startswith("|")]
    if not rows:
        return [list(lines)]
    first, last = rows[0], rows[-1]
    before, table, after = list(lines[:first]), list(lines[first:last + 1]), list(lines[last + 1:])
    blocks = ([before] if any(line.strip() for line in before) else []) + [table[:2]] + [[row] for row in table[2:]]
    return blocks + ([after] if any(line.strip() for line in after) else [])


def _failure_blocks(cases: Sequence[Mapping]) -> List[Block]:
    bad = [c for c in cases if case_status(c) in ("failed", "error", "float32 only")]
    if not bad:
        return []
    blocks: List[Block] = [["## Failures and errors", ""]]
    for case in bad:
        status = case_status(case)
        text = str((case.get("error") if status == "error" else case.get("message")) or "(no message)")
        if len(text) > _MESSAGE_CHARS:
            text = text[:_MESSAGE_CHARS] + f"\n… cut at {_MESSAGE_CHARS} characters (parity_diff.log has it all)"
        summary = f"{_EMOJI[status]} {html.escape(_case_id(case))}"
        blocks.append([f"<details><summary>{summary}</summary>", ""] + _fenced(text) + ["", "</details>", ""])
    return blocks


def _artifact_line(artifact_url: Optional[str]) -> str:
    if artifact_url:
        return (f"The full report, with the Paddle and PyTorch CAMs and the |Δ| heatmaps, is in the "
                f"[run's artifact]({artifact_url}) (`parity.md`, or `parity.html` to open in a browser).")
    return ("The full report, with the Paddle and PyTorch CAMs and the |Δ| heatmaps, is in this run's artifact "
            "(`parity.md`, or `parity.html` to open in a browser).")


def render_step_summary(results: Mapping, artifact_url: Optional[str] = None,
                        max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """Markdown for ``$GITHUB_STEP_SUMMARY``: no pictures, no local paths, at most ``max_bytes`` bytes (UTF-8).

    ``artifact_url`` is where the uploaded report can be downloaded (e.g. the
    run's page, ``$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID``).
    """
    links = _Links("none")
    cases = _ordered_cases(results)
    head: Block = [_title(results), "", verdict_line(results), "", _artifact_line(artifact_url), ""]
    head += _fallback_lines(results)
    head += [computed_at_line(results, link=False), ""]
    head += where_not_lines(cases, links)
    head += worst_lines(cases, links, results.get("diff_images"))
    head += moved_lines(results, links)
    sections: List[List[Block]] = [
        [_matrix_lines(cases, links) + [""]],
        [_architecture_lines(cases)] if _architecture_lines(cases) else [],
        _failure_blocks(cases),
        [["## Metrics, all cases", ""]] + _table_blocks(_metrics_lines(cases, links, results.get("diff_images"))) + [[""]],
        [["## Provenance", ""]] + _table_blocks(_provenance_lines(results)[2 + len(_fallback_lines(results)):]),
    ]
    out: List[str] = list(head)
    reserve = 400  # room for the note that says what was cut
    budget = max(int(max_bytes), 2 * reserve)
    for blocks in sections:
        for i, block in enumerate(blocks):
            if _size(out + block) + reserve > budget:
                left = len(blocks) - i
                out += ["", f"_… {left} more part{'s' if left != 1 else ''} of this section left out to keep the "
                            f"summary under {budget // 1000} kB: see the full report in the artifact._", ""]
                break
            out += block
        if _size(out) + reserve > budget:
            break
    text = "\n".join(out).rstrip("\n") + "\n"
    if len(text.encode("utf-8")) > budget:  # the head alone is over a tiny budget: cut it hard
        text = text.encode("utf-8")[: budget - 80].decode("utf-8", "ignore") + "\n\n_… cut to the size limit._\n"
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m parity.step_summary DIR [--artifact-url URL]``: the step summary of ``DIR/parity.json`` on stdout.

    A run that wrote no ``parity.json`` gets one line saying so (exit 0), so a
    workflow step can append the output to ``$GITHUB_STEP_SUMMARY`` unconditionally.
    """
    parser = argparse.ArgumentParser(prog="python -m parity.step_summary", description=main.__doc__)
    parser.add_argument("out_dir", type=Path, help="the run's output directory (holds parity.json)")
    parser.add_argument("--artifact-url", default=None, help="where the uploaded report can be downloaded")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="size limit (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        results = json.loads((args.out_dir / "parity.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"No parity report in `{args.out_dir}` (the run failed before writing it: {error}).")
        return 0
    sys.stdout.write(render_step_summary(results, args.artifact_url, args.max_bytes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
