"""Check a markdown report as GitHub would render it: pictures that exist, links that land, tables that fit.

``check_markdown(path)`` renders one file with a GFM renderer (markdown-it-py:
CommonMark, inline HTML, the table extension) and returns a list of problems,
empty when the file is sound:

* every picture (``![..](..)`` or ``<img src>``) is a relative path to a file that exists;
* every in-page link (``#anchor``) has a target: an ``id``/``name`` in the page
  or a heading's GitHub anchor; a link to a sibling file points at a file that
  exists (and, for ``file.md#anchor``, at an anchor in it);
* every ``|`` table row parsed as a table (a broken delimiter row turns a table into text);
* no table has an empty header row (GitHub draws it as a grey strip);
* no code span holds prose (an unbalanced backtick turns a sentence into one long code span).

``table_widths(markdown)`` estimates each table's narrowest possible width
in px at GitHub's stylesheet (16 px text, 13 px cell padding): the width below
which the table scrolls sideways inside a 946 px article.  It is an estimate
from character counts, calibrated on headless Chromium, deliberately generous.

Run ``python -m parity.report_check FILE.md ...`` before committing a report.
"""
from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit

__all__ = ["render_gfm", "check_markdown", "page_targets", "github_slug", "table_widths", "ARTICLE_WIDTH", "main"]

# GitHub's markdown article: 1012 px wide, 32 px padding each side, a 1 px border.
ARTICLE_WIDTH = 946
_PROSE_CODE_CHARS = 120  # a code span this long with many spaces is a sentence caught between backticks


def render_gfm(text: str) -> str:
    """Markdown -> HTML as GitHub reads a repository file (CommonMark + inline HTML + tables + strikethrough)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(text)


def github_slug(text: str, seen: Dict[str, int]) -> str:
    """The anchor GitHub gives a heading (github-slugger: lower case, punctuation dropped, '-' for spaces)."""
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
    count = seen.get(text, 0)
    seen[text] = count + 1
    return text if count == 0 else f"{text}-{count}"


class _Collector(HTMLParser):
    """Pictures, links, targets, tables and code spans of a rendered page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images: List[str] = []
        self.links: List[str] = []
        self.targets: set = set()
        self.headings: List[str] = []
        self.header_cells: List[List[str]] = []
        self.code_spans: List[str] = []
        self.paragraphs: List[str] = []
        self._heading: Optional[List[str]] = None
        self._thead: Optional[List[str]] = None
        self._cell: Optional[List[str]] = None
        self._code: Optional[List[str]] = None
        self._in_pre = 0
        self._para: Optional[List[str]] = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key):
                self.targets.add(attrs[key])
        if tag == "img" and attrs.get("src") is not None:
            self.images.append(attrs["src"])
        elif tag == "a" and attrs.get("href") is not None:
            self.links.append(attrs["href"])
        elif tag in ("h1", "h2", "h3", "h4", "h5", "h6"):
            self._heading = []
        elif tag == "thead":
            self._thead = []
        elif tag == "th" and self._thead is not None:
            self._cell = []
        elif tag == "pre":
            self._in_pre += 1
        elif tag == "code" and not self._in_pre:
            self._code = []
        elif tag == "p":
            self._para = []

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3", "h4", "h5", "h6") and self._heading is not None:
            self.headings.append("".join(self._heading))
            self._heading = None
        elif tag == "th" and self._cell is not None and self._thead is not None:
            self._thead.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "thead" and self._thead is not None:
            self.header_cells.append(self._thead)
            self._thead = None
        elif tag == "pre":
            self._in_pre -= 1
        elif tag == "code" and self._code is not None:
            self.code_spans.append("".join(self._code))
            self._code = None
        elif tag == "p" and self._para is not None:
            self.paragraphs.append("".join(self._para))
            self._para = None

    def handle_data(self, data):
        for part in (self._heading, self._cell, self._code, self._para):
            if part is not None:
                part.append(data)


def _collect(text: str) -> _Collector:
    collector = _Collector()
    collector.feed(render_gfm(text))
    collector.close()
    return collector


def page_targets(text: str) -> set:
    """Every anchor a link into this markdown can land on: explicit ids/names and GitHub's heading anchors."""
    collector = _collect(text)
    seen: Dict[str, int] = {}
    return set(collector.targets) | {github_slug(h, seen) for h in collector.headings}


def _outside_fences(text: str) -> List[str]:
    lines, fence = [], None
    for line in text.splitlines():
        stripped = line.lstrip()
        match = re.match(r"(`{3,}|~{3,})", stripped)
        if fence is None and match:
            fence = match.group(1)
            continue
        if fence is not None:
            if stripped.startswith(fence) and not stripped[len(fence):].strip():
                fence = None
            continue
        lines.append(line)
    return lines


def check_markdown(path: Path, text: Optional[str] = None, style: bool = True) -> List[str]:
    """The problems of the markdown file at ``path`` (or of ``text``, read as if it were at ``path``).

    ``style=False`` checks only what breaks a page (pictures, links, tables
    that do not parse), not the empty header rows and prose code spans.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8") if text is None else text
    base = path.parent
    collector = _collect(text)
    problems: List[str] = []
    seen: Dict[str, int] = {}
    targets = set(collector.targets) | {github_slug(h, seen) for h in collector.headings}

    for src in collector.images:
        parts = urlsplit(src)
        if parts.scheme or parts.netloc or src.startswith("/"):
            problems.append(f"{path.name}: picture {src!r} is not a path relative to the report")
        elif not (base / unquote(parts.path)).is_file():
            problems.append(f"{path.name}: picture {src!r} does not exist")

    other_targets: Dict[Path, set] = {}
    for href in collector.links:
        parts = urlsplit(href)
        if parts.scheme or parts.netloc:
            continue  # the web: not this check's business
        if not parts.path:
            if unquote(parts.fragment) not in targets:
                problems.append(f"{path.name}: in-page link {href!r} has no target")
            continue
        target = base / unquote(parts.path)
        if not target.exists():
            problems.append(f"{path.name}: link {href!r} points at a file that does not exist")
        elif parts.fragment and target.suffix == ".md":
            if target not in other_targets:
                other_targets[target] = page_targets(target.read_text(encoding="utf-8"))
            if unquote(parts.fragment) not in other_targets[target]:
                problems.append(f"{path.name}: link {href!r} has no target in {parts.path}")

    for paragraph in collector.paragraphs:
        if paragraph.lstrip().startswith("|") and paragraph.count("|") >= 3:
            problems.append(f"{path.name}: a table did not parse: {paragraph[:80]!r}")
    if not style:
        return problems
    for header in collector.header_cells:
        if header and not any(cell for cell in header):
            problems.append(f"{path.name}: a table has an empty header row")
    for span in collector.code_spans:
        if _is_prose(span):
            problems.append(f"{path.name}: a {len(span)}-character code span holds prose (a backtick is missing?): "
                            f"{span[:60]!r}...")
    return problems


def _is_prose(span: str) -> bool:
    """A long code span made mostly of plain words (a sentence), not of a command line's options and paths."""
    words = span.split()
    plain = [w for w in words if re.fullmatch(r"[A-Za-z][a-z]+[,.;:)]?|[a-z]", w)]
    return len(span) > _PROSE_CODE_CHARS and len(plain) >= 12 and len(plain) >= 0.6 * len(words)


# -- table widths -------------------------------------------------------------------------
_CELL_PADDING = 2 * 13 + 1  # GitHub: td/th padding 6px 13px, 1 px border
_EMOJI_RE = re.compile("[\u2600-\u27bf\U0001f000-\U0001faff]\ufe0f?")


def _token_width(token: str, bold: bool) -> float:
    emoji = len(_EMOJI_RE.findall(token))
    plain = _EMOJI_RE.sub("", token)
    per_char = 9.6 if bold else 9.0  # 16 px sans: digits 8.9 px, lower case ~8 px, capitals ~10.5 px
    return emoji * 22 + len(plain) * per_char


def _cell_min_width(cell_html: str, bold: bool) -> float:
    """The widest unbreakable piece of one cell, in px."""
    widths = [float(w) for w in re.findall(r'<img\b[^>]*\bwidth="(\d+)"', cell_html)]
    if re.search(r"<img\b(?![^>]*\bwidth=)", cell_html):
        widths.append(224.0)
    for code in re.findall(r"<code>(.*?)</code>", cell_html, flags=re.S):
        # a line breaks inside code at a space or at a <wbr> (a long path's slashes)
        widths += [len(piece) * 8.2 + 11 for piece in re.split(r"\s+|<wbr\s*/?>", _unescape(code)) if piece]
    text = re.sub(r"<code>.*?</code>", " ", cell_html, flags=re.S)
    text = re.sub(r"<summary>.*?</summary>", " ", text, flags=re.S)
    text = _unescape(re.sub(r"<[^>]+>", " ", text))
    # Lines break at spaces, after a hyphen, at a soft hyphen; not at U+2011 or a word joiner.
    for token in re.split(r"[\s\u00ad]+|(?<=-)", text):
        if token:
            widths.append(_token_width(token, bold))
    return max(widths, default=0.0) + _CELL_PADDING


def _unescape(text: str) -> str:
    import html

    return html.unescape(text)


def table_widths(markdown: str) -> List[Tuple[str, float]]:
    """(first header cells, estimated narrowest width in px) for every table of ``markdown``."""
    rendered = render_gfm(markdown)
    result = []
    for table in re.findall(r"<table>(.*?)</table>", rendered, flags=re.S):
        columns: Dict[int, float] = {}
        for row in re.findall(r"<tr>(.*?)</tr>", table, flags=re.S):
            for i, (tag, cell) in enumerate(re.findall(r"<(th|td)[^>]*>(.*?)</\1>", row, flags=re.S)):
                columns[i] = max(columns.get(i, 0.0), _cell_min_width(cell, tag == "th"))
        head = re.sub(r"<[^>]+>", "", " | ".join(re.findall(r"<th[^>]*>(.*?)</th>", table, flags=re.S)[:3]))
        result.append((head, sum(columns.values()) + 1))
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m parity.report_check FILE.md ...``: print every problem; exit 1 if there is one."""
    problems = []
    for name in argv if argv is not None else sys.argv[1:]:
        problems += check_markdown(Path(name))
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
