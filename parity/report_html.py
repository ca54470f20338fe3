"""``DIR/parity.html``: the reviewer report as one self-contained HTML file.

For reviewers who open the report from a CI artifact or a mail rather than on
GitHub: the same document as ``parity.md`` (``parity.report_markdown.render_markdown``),
turned into HTML with a GFM renderer (markdown-it-py with its table plugin),
every picture embedded as a ``data:`` URI and a small stylesheet of its own
inlined, so the file needs nothing beside it: no network, no other file.

markdown-it-py is imported when a report is rendered, not when this module is
imported, so the orchestrating process stays light until it writes a report.
"""
from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Dict, Mapping, Optional
from urllib.parse import unquote, urlsplit

from parity.report_format import HTML_NAME, REPORT_NAME, SUMMARY_NAME, TITLE
from parity.report_markdown import render_markdown

__all__ = ["render_html", "markdown_to_html", "STYLE"]

_MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif", ".svg": "image/svg+xml"}

# A stylesheet written for this report (GitHub's look, roughly): a 1012 px article, bordered zebra
# tables that scroll inside themselves rather than widen the page, and numbers that keep together.
STYLE = """
:root { color-scheme: light; }
body { margin: 0; background: #f6f8fa; color: #1f2328;
  font: 16px/1.5 -apple-system, "Segoe UI", "Noto Sans", Helvetica, Arial, sans-serif,
        "Apple Color Emoji", "Segoe UI Emoji", "Noto Color Emoji"; }
main { box-sizing: border-box; max-width: 1012px; margin: 24px auto; padding: 32px;
  background: #fff; border: 1px solid #d0d7de; border-radius: 6px; }
h1, h2 { padding-bottom: .3em; border-bottom: 1px solid #d8dee4; }
h1 { font-size: 2em; margin: 0 0 16px; } h2 { font-size: 1.5em; margin: 24px 0 16px; }
h3 { font-size: 1.25em; margin: 24px 0 16px; } h4 { font-size: 1em; margin: 24px 0 16px; }
p, ul, ol, table, pre, details, blockquote { margin: 0 0 16px; }
a { color: #0969da; text-decoration: none; } a:hover { text-decoration: underline; }
code { font: 85%/1.4 ui-monospace, SFMono-Regular, "SF Mono", Menlo, Consolas, "Liberation Mono", monospace;
  background: rgba(175, 184, 193, .2); border-radius: 6px; padding: .2em .4em; }
pre { background: #f6f8fa; border-radius: 6px; padding: 16px; overflow: auto; }
pre code { background: none; padding: 0; font-size: 85%; white-space: pre; }
table { display: block; width: max-content; max-width: 100%; overflow: auto; border-collapse: collapse;
  border-spacing: 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 6px 13px; vertical-align: top; }
th { font-weight: 600; }
tr:nth-child(2n) { background: #f6f8fa; }
img { max-width: 100%; height: auto; vertical-align: middle; background: #fff; }
blockquote { border-left: .25em solid #d0d7de; color: #59636e; margin-left: 0; padding: 0 1em; }
details > summary { cursor: pointer; }
sup { line-height: 0; }
"""


def markdown_to_html(text: str) -> str:
    """GFM as GitHub reads a report: CommonMark, inline HTML, tables, strikethrough."""
    try:
        from markdown_it import MarkdownIt
    except ImportError as error:  # pragma: no cover - the lock installs it
        raise RuntimeError("rendering parity.html needs markdown-it-py (pip install markdown-it-py)") from error
    return MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"]).render(text)


def _data_uri(path: Path) -> Optional[str]:
    mime = _MIME.get(path.suffix.lower())
    if mime is None or not path.is_file():
        return None
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _embed_images(body: str, out_dir: Path) -> str:
    """Replace every relative ``<img src>`` with the file's bytes; a file that is not there becomes text."""
    cache: Dict[str, Optional[str]] = {}

    def replace(match: re.Match) -> str:
        tag, src = match.group(0), html.unescape(match.group(2))
        parts = urlsplit(src)
        if parts.scheme or parts.netloc or src.startswith("/"):
            return tag  # only the report's own files are embedded; nothing is fetched
        if src not in cache:
            cache[src] = _data_uri(out_dir / unquote(parts.path))
        if cache[src] is None:
            return f"<em>missing: <code>{html.escape(unquote(parts.path))}</code></em>"
        return tag[:match.start(2) - match.start(0)] + cache[src] + tag[match.end(2) - match.start(0):]

    return re.sub(r'<img\b[^>]*?\bsrc=(["\'])(.*?)\1[^>]*>', replace, body)


def _html_links(body: str, out_dir: Path) -> str:
    """Point links at a sibling's HTML twin (``f64/parity.md`` -> ``f64/parity.html``) where one exists."""
    def replace(match: re.Match) -> str:
        href = html.unescape(match.group(1))
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or not parts.path.endswith(REPORT_NAME):
            return match.group(0)
        twin = parts.path[: -len(REPORT_NAME)] + HTML_NAME
        if not (out_dir / unquote(twin)).is_file():
            return match.group(0)
        fragment = f"#{parts.fragment}" if parts.fragment else ""
        return f'href="{html.escape(twin + fragment, quote=True)}"'

    return re.sub(r'href="([^"#][^"]*)"', replace, body)


def render_html(results: Mapping, out_dir: Path, siblings: Optional[Mapping[str, str]] = None) -> str:
    """The report of ``results`` as one self-contained HTML page (pictures embedded); returns its text.

    ``out_dir`` is the report's directory: the pictures are read from it.
    ``siblings`` are linked as in ``render_markdown`` (to their ``.html`` twin
    when there is one); the markdown twins written with it are linked too.
    """
    out_dir = Path(out_dir)
    own = {"markdown": REPORT_NAME, "summary (no pictures)": SUMMARY_NAME}
    text = render_markdown(results, out_dir=out_dir, siblings={**own, **dict(siblings or {})},
                           companions=own.values())
    body = _html_links(_embed_images(markdown_to_html(text), out_dir), out_dir)
    prov = results.get("provenance") or {}
    subtitle = " · ".join(str(prov[k]) for k in ("dtype", "profile", "device") if prov.get(k))
    title = html.escape(TITLE + (f" ({subtitle})" if subtitle else ""))
    return (
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n"
    )
