"""How a report writes things: file names, numbers, table cells, anchors, links and ``<img>`` tags.

Every rule that keeps a report readable on GitHub lives here: numbers never
wrap mid-token (their hyphens are U+2011), ``|Δ|`` never breaks after its
first pipe, table cells escape their pipes, and a picture that is not on disk
becomes a line of text rather than a broken image.
"""
from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote

from parity.report_cases import _case_id

REPORT_NAME = "parity.md"
SUMMARY_NAME = "parity_summary.md"
HTML_NAME = "parity.html"
LEGEND_PATH = "diff/legend.png"
GRID_PATH = "diff/grid.jpg"
TITLE = "Paddle vs PyTorch Grad-CAM parity"
DEFAULT_IMAGE = "fixtures/both.png"

# Display widths (px) of the pictures: one width per table, so columns do not follow header text.
# Four gallery pictures and a label column fit GitHub's 946 px content box: 4 x (180 + 26) + 96.
GALLERY_WIDTH = 180
CASE_WIDTH = 224
LEGEND_WIDTH = 600
GRID_WIDTH = 880  # the grid of every case's heatmap, at most 10 tiles a row

NB_HYPHEN = "\u2011"  # a hyphen the browser does not break a line at: "2.38e‑06" stays in one piece
SOFT_HYPHEN = "\u00ad"

def _sci_ascii(value) -> str:
    """3 significant digits, scientific notation: ``3.58e-06``; ``—`` for missing."""
    if value is None:
        return "—"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0.0:
        return "0"
    return f"{value:.2e}"


def _sci(value) -> str:
    """``_sci_ascii`` with non-breaking hyphens, for markdown: a number never wraps as ``2.38e-`` / ``06``."""
    return _sci_ascii(value).replace("-", NB_HYPHEN)


def _secs(value) -> str:
    if value is None:
        return "—"
    try:
        return f"{float(value):.2f}"
    except (TypeError, ValueError):
        return str(value)


def _percent_identical(value) -> str:
    """A fraction in [0, 1] as a percentage (no sign: the header says %) that never rounds up to 100."""
    if value is None:
        return "—"
    value = float(value)
    if math.isnan(value):
        return "nan"
    if value >= 1.0:
        return "100"
    return f"{math.floor(value * 10000) / 100:.2f}"


def _of_bound(case: Mapping) -> str:
    """max|Δ| of the final CAM as a share of the case's bound: ``2.4%``, ``27%``, ``0`` (identical)."""
    diff, bound = case.get("cam_max_abs_diff"), case.get("tolerance")
    if diff is None:
        return "—"
    diff = float(diff)
    if math.isnan(diff):
        return "nan"
    if diff == 0.0:
        return "0"
    if not bound:
        return _sci(diff)
    ratio = diff / float(bound)
    if math.isinf(ratio):
        return "∞"
    if ratio < 0.001:
        return "<0.1%"
    if ratio < 0.1:
        return f"{ratio * 100:.1f}%"
    if ratio < 10:
        return f"{ratio * 100:.0f}%"
    return f"{ratio:.3g}×"


def _int(value) -> str:
    if value is None:
        return "—"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(value):
        return _sci(value)
    return str(int(value))


def _cell(text) -> str:
    """Make ``text`` safe inside a markdown table cell."""
    text = "" if text is None else str(text)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def _code(text) -> str:
    """An inline code span for a table cell (pipes escaped, as GFM tables require)."""
    text = "" if text is None else str(text)
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}".replace("|", "\\|").replace("\n", " ")


WORD_JOINER = "\u2060"


def _keep_together(text: str) -> str:
    """Glue ``|Δ|`` so a line never breaks after its first pipe (``max|`` / ``Δ|``); fenced blocks stay verbatim."""
    out, fence = [], None
    for line in text.split("\n"):
        stripped = line.lstrip()
        if fence is None and re.match(r"`{3,}", stripped):
            fence = re.match(r"`+", stripped).group(0)
        elif fence is not None and stripped.startswith(fence) and not stripped[len(fence):].strip():
            fence = None
        elif fence is None:
            line = line.replace("\\|Δ\\|", "\\|" + WORD_JOINER + "Δ\\|").replace("|Δ|", "|" + WORD_JOINER + "Δ|")
        out.append(line)
    return "\n".join(out)


def _fenced(text: str, info: str = "text") -> List[str]:
    text = "" if text is None else str(text)
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{info}", text.rstrip("\n"), fence]


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], align: Optional[Sequence[str]] = None) -> List[str]:
    rule = {"l": ":---", "r": "---:", "c": ":---:"}
    marks = [rule.get(a, "---") for a in (align or ["-"] * len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _drop_empty_columns(header: List[str], rows: List[List[str]], keep: int = 1,
                        empty: Tuple[str, ...] = ("", "—")) -> Tuple[List[str], List[List[str]]]:
    """Leave out every column (after the first ``keep``) that is empty in every row."""
    columns = [i for i in range(len(header))
               if i < keep or any(row[i].strip() not in empty for row in rows)]
    return [header[i] for i in columns], [[row[i] for i in columns] for row in rows]


def _shape(shape) -> str:
    if shape is None:
        return "—"
    return "×".join(str(s) for s in shape) if len(shape) else "scalar"


def _breakable(name: str) -> str:
    """A method name that may wrap between its parts (``eigen­grad­cam``), for narrow matrix headers."""
    text = re.sub(r"(?<=[a-z]{3})(cam|grad|element)", SOFT_HYPHEN + r"\1", str(name))
    return _cell(text)


def _anchor(case_id: str) -> str:
    return "case-" + re.sub(r"[^a-z0-9_-]", "-", str(case_id).replace("+", "p").lower())


def _heading_anchor(anchor: str) -> str:
    """An explicit target for in-page links (GitHub keeps ``name``/``id`` on ``a``, prefixed ``user-content-``)."""
    return f'<a name="{anchor}" id="{anchor}"></a>'


def slug(text: str) -> str:
    """GitHub's heading anchor for ``text`` (github-slugger: lower case, punctuation out, spaces to '-')."""
    text = re.sub(r"<[^>]+>", "", str(text)).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


class _Links:
    """How a report links to a case: in-page anchors, a sibling report's anchors, or not at all."""

    def __init__(self, mode: str = "page", report: str = REPORT_NAME) -> None:
        self.mode, self.report = mode, report

    def anchor(self, anchor: str, text: str) -> str:
        if self.mode == "page":
            return f"[{text}](#{anchor})"
        if self.mode == "file":
            return f"[{text}]({quote(self.report)}#{anchor})"
        return text

    def case(self, case: Mapping, text: str) -> str:
        if self.mode == "page":
            return f"[{text}](#{_anchor(_case_id(case))})"
        if self.mode == "file":
            return f"[{text}]({quote(self.report)}#{_anchor(_case_id(case))})"
        return text


class _Images:
    """``<img>`` tags relative to DIR with one display width; a missing file (when DIR is known) becomes text."""

    def __init__(self, out_dir: Optional[Path]) -> None:
        self.out_dir = None if out_dir is None else Path(out_dir)

    def exists(self, relative: Optional[str]) -> bool:
        return bool(relative) and (self.out_dir is None or (self.out_dir / relative).is_file())

    def __call__(self, relative: Optional[str], alt: str, width: int) -> str:
        if not relative:
            return "—"
        if not self.exists(relative):
            return f"missing: {_code(relative)}"
        src = html.escape(quote(str(relative), safe="/+"), quote=True)
        # No '|' in the alt text: a table cell is split at pipes before any HTML is read.
        alt = html.escape(str(alt).replace("|", ""), quote=True)
        return f'<img src="{src}" width="{width}" alt="{alt}">'


def _setup_anchor(setup: str) -> str:
    return "setup-" + re.sub(r"[^a-z0-9_-]", "-", (setup or "default").lower())
