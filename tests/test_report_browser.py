"""Every committed report as a reviewer sees it: rendered and printed by headless Chromium.

``tests/test_report_render.py`` reads the reports with an HTML parser and
estimates widths from character counts; this module asks a real browser.
Each committed ``parity.md`` (through markdown-it-py with tables and raw HTML
on, inside a page styled as GitHub's 1012 px markdown article), each committed
``parity.html`` as it is, and the index ``reports/README.md`` are loaded in
headless Chromium at 1280x800, and:

* the verdict line is on the first screen (its bottom within 800 px of the
  top of the page) and says what the run's ``parity.json`` says;
* every ``<img>`` decoded (none broken), every ``#anchor`` link has an element
  with that id or name, every relative link points at a file that exists;
* no table is wider than the page's content box (none scrolls sideways inside
  itself, none reaches past the article), with every ``<details>`` opened;
* printed to PDF (Letter, Chromium's default paper) it takes at most 10 pages.

Chromium's own command line does the work (``--dump-dom`` after a small
injected script has written its measurements into the page,
``--print-to-pdf``), so no browser-driving package is needed.  The slow tier
runs it; without a browser (CI's ``.ci/run`` has none) it skips and says how
to get one: ``apt-get install -y chromium``, or ``CHROMIUM=/path/to/chrome``.

The fast tier checks the same things without a browser where that is
possible: ``test_report_render.py`` (every committed markdown report),
``test_report_index.py`` (the index) and, here, the smallest committed HTML
twin (``test_smallest_html_twin_resolves_without_a_browser``).
"""
from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Optional
from urllib.parse import unquote, urlsplit

import pytest

pytest.importorskip("markdown_it", reason="markdown-it-py renders the reports as GitHub does (requirements.lock)")

from parity.report_check import github_slug, page_targets, render_gfm  # noqa: E402
from parity.report_html import STYLE  # noqa: E402
from parity.report_verdict import verdict_line  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
REPORTS = REPO / "reports"

WINDOW = (1280, 800)
FIRST_SCREEN_PX = 800
MAX_PRINTED_PAGES = 10
# Letter in PostScript points; Chromium prints on it unless told otherwise, and the page count is asserted on it.
LETTER = (612, 792)
_BROWSER_TIMEOUT_S = 180
_VERDICT_WORDS = ("PASS", "FAIL", "INCONCLUSIVE")


def _committed(names) -> List[Path]:
    """The committed files under reports/ with one of these names (git's list; a plain glob without git)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "reports"], cwd=REPO, capture_output=True, check=True,
                                timeout=30).stdout.decode("utf-8").split("\0")
        paths = [REPO / p for p in listed if p]
    except (OSError, subprocess.SubprocessError):
        paths = list(REPORTS.rglob("*"))
    return sorted(p for p in paths if p.name in names and p.is_file())


MARKDOWN = [p for p in _committed({"parity.md", "README.md"}) if p.name == "parity.md" or p == REPORTS / "README.md"]
HTML_TWINS = _committed({"parity.html"})


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.as_posix()


def _browser() -> Optional[str]:
    wanted = os.environ.get("CHROMIUM")
    if wanted:
        return shutil.which(wanted)
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    found = _browser()
    if found is None:
        pytest.skip("no headless Chromium on PATH (Debian: apt-get install -y chromium; "
                    "or set CHROMIUM=/path/to/chrome): the reports cannot be rendered in a real browser here")
    return found


def _run_browser(browser: str, *args: str, work: Path) -> subprocess.CompletedProcess:
    # --no-sandbox: the pages are the repository's own files, and a container's root cannot start the sandbox.
    # A profile of its own keeps runs from sharing (or locking) the user's.
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
               "--no-first-run", "--disable-extensions", f"--user-data-dir={work / 'profile'}",
               f"--window-size={WINDOW[0]},{WINDOW[1]}", *args]
    return subprocess.run(command, capture_output=True, timeout=_BROWSER_TIMEOUT_S, cwd=work)


# -- the pages -----------------------------------------------------------------------------------------------

def _with_heading_ids(body: str) -> str:
    """Give headings the anchors GitHub gives them (markdown-it-py writes none), unless they have an id."""
    seen: Dict[str, int] = {}

    def add(match: re.Match) -> str:
        level, attrs, inner = match.group(1), match.group(2), match.group(3)
        slug = github_slug(html.unescape(inner), seen)
        if " id=" in attrs:
            return match.group(0)
        return f'<h{level}{attrs} id="{html.escape(slug, quote=True)}">{inner}</h{level}>'

    return re.sub(r"<h([1-6])([^>]*)>(.*?)</h\1>", add, body, flags=re.S)


def _markdown_page(path: Path) -> str:
    """``path`` as GitHub shows it: rendered GFM in a 1012 px article (946 px of content), pictures beside it."""
    body = _with_heading_ids(render_gfm(path.read_text(encoding="utf-8")))
    base = html.escape(path.parent.as_uri() + "/", quote=True)
    return ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<base href=\"{base}\">\n<title>{html.escape(_rel(path))}</title>\n<style>{STYLE}</style>\n"
            f"</head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n")


def _with_base(page: str, directory: Path) -> str:
    """``page`` read as if it lay in ``directory`` (its relative pictures and links resolve there)."""
    base = f"<base href=\"{html.escape(directory.as_uri() + '/', quote=True)}\">"
    head = re.search(r"<head[^>]*>", page, flags=re.I)
    if head is None:
        return base + page
    return page[:head.end()] + "\n" + base + page[head.end():]


# Runs once the page (and every picture in it) has loaded: measures, then replaces the page with the
# measurements so that --dump-dom returns a few kB rather than megabytes of embedded pictures.
_MEASURE = r"""
<script>
window.addEventListener("load", () => {
  const docTop = (el) => el.getBoundingClientRect().top + window.scrollY;
  const docBottom = (el) => el.getBoundingClientRect().bottom + window.scrollY;
  const words = new Set(%(words)s);
  const verdicts = [...document.querySelectorAll("strong")]
    .filter((el) => words.has(el.textContent.trim()))
    .map((el) => {
      const block = el.closest("p, li, td, h1, h2, h3, div") || el;
      return {word: el.textContent.trim(), top: docTop(el), bottom: docBottom(block),
              text: block.textContent.replace(/\s+/g, " ").trim()};
    });
  // A reviewer can open every collapsed section: widths and pictures are measured with all of them open.
  document.querySelectorAll("details").forEach((d) => { d.open = true; });
  const article = document.querySelector("main") || document.body;
  const style = getComputedStyle(article);
  const box = article.getBoundingClientRect();
  const contentLeft = box.left + parseFloat(style.borderLeftWidth) + parseFloat(style.paddingLeft);
  const contentRight = box.right - parseFloat(style.borderRightWidth) - parseFloat(style.paddingRight);
  const tables = [...document.querySelectorAll("table")].map((t, i) => {
    const r = t.getBoundingClientRect();
    const head = [...t.querySelectorAll("th")].slice(0, 3).map((c) => c.textContent.trim()).join(" | ");
    return {index: i, head: head.slice(0, 60), scrollWidth: t.scrollWidth, clientWidth: t.clientWidth,
            left: r.left, right: r.right};
  });
  const images = [...document.images].map((img) => {
    const src = img.getAttribute("src") || "";
    return {src: src.startsWith("data:") ? src.slice(0, 40) + "..." : src,
            ok: img.complete && img.naturalWidth > 0};
  });
  const missingAnchors = [];
  const relative = [];
  for (const a of document.querySelectorAll("a[href]")) {
    const href = a.getAttribute("href");
    if (href.startsWith("#")) {
      const id = decodeURIComponent(href.slice(1));
      if (!document.getElementById(id) && document.getElementsByName(id).length === 0) missingAnchors.push(href);
    } else if (!/^[a-z][a-z0-9+.-]*:/i.test(href)) {
      relative.push(href);
    }
  }
  const result = {
    innerWidth: window.innerWidth, pageScrollWidth: document.documentElement.scrollWidth,
    content: {left: contentLeft, right: contentRight, width: contentRight - contentLeft},
    verdicts, tables, images, missingAnchors, relative,
  };
  const out = document.createElement("pre");
  out.id = "browser-measurements";
  out.textContent = JSON.stringify(result);
  document.body.replaceChildren(out);
});
</script>
""" % {"words": json.dumps(list(_VERDICT_WORDS))}


def _measure(browser: str, page: str, work: Path) -> Dict:
    source = work / "measure.html"
    injected = re.sub(r"</body>", lambda _: _MEASURE + "</body>", page, count=1, flags=re.I)
    source.write_text(injected if injected != page else page + _MEASURE, encoding="utf-8")
    done = _run_browser(browser, "--virtual-time-budget=10000", "--dump-dom", source.as_uri(), work=work)
    dom = done.stdout.decode("utf-8", "replace")
    found = re.search(r'<pre id="browser-measurements">(.*?)</pre>', dom, flags=re.S)
    assert found, (f"Chromium returned no measurements (exit {done.returncode}): "
                   f"{done.stderr.decode('utf-8', 'replace')[-2000:]}")
    return json.loads(html.unescape(found.group(1)))


def _printed_pages(browser: str, page_file: Path, work: Path) -> int:
    pdf = work / "printed.pdf"
    done = _run_browser(browser, "--no-pdf-header-footer", f"--print-to-pdf={pdf}", page_file.as_uri(), work=work)
    assert pdf.is_file(), f"Chromium printed nothing (exit {done.returncode}): {done.stderr.decode()[-2000:]}"
    data = pdf.read_bytes()
    boxes = {tuple(round(float(v)) for v in box.split()[2:4])
             for box in re.findall(rb"/MediaBox\s*\[([^\]]*)\]", data) if len(box.split()) == 4}
    assert boxes == {LETTER}, f"printed on {boxes}, not on Letter {LETTER}"
    pages = len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))
    counts = [int(n) for n in re.findall(rb"/Type\s*/Pages\b[^>]*?/Count\s+(\d+)", data, flags=re.S)]
    counts += [int(n) for n in re.findall(rb"/Count\s+(\d+)[^>]*?/Type\s*/Pages\b", data, flags=re.S)]
    assert pages > 0 and (not counts or max(counts) == pages), (pages, counts)
    return pages


# -- the checks ----------------------------------------------------------------------------------------------

def _expected_verdict(report: Path) -> Optional[str]:
    """The verdict line of the run beside ``report``, as text (what the JSON says, or today's rule on its cases)."""
    run = report.parent / "parity.json"
    if report.name not in ("parity.md", "parity.html") or not run.is_file():
        return None
    results = json.loads(run.read_text(encoding="utf-8"))
    line = (results.get("summary") or {}).get("verdict_line") or verdict_line(results)
    text = html.unescape(re.sub(r"<[^>]+>", "", render_gfm(line)))
    return re.sub(r"\s+", " ", text).strip()


def _relative_link_problems(report: Path, hrefs: List[str]) -> List[str]:
    problems = []
    for href in hrefs:
        parts = urlsplit(href)
        target = report.parent / unquote(parts.path)
        if not target.exists():
            problems.append(f"link {href!r} points at a file that does not exist")
        elif parts.fragment and target.suffix == ".md" and \
                unquote(parts.fragment) not in page_targets(target.read_text(encoding="utf-8")):
            problems.append(f"link {href!r} has no target in {parts.path}")
    return problems


def _problems(report: Path, measured: Dict, pages: int) -> List[str]:
    problems: List[str] = []
    verdicts = measured["verdicts"]
    if not verdicts:
        problems.append("no verdict line (PASS / FAIL / INCONCLUSIVE) on the page")
    else:
        first = verdicts[0]
        if first["bottom"] > FIRST_SCREEN_PX:
            problems.append(f"the verdict line ends {first['bottom']:.0f} px down, past the first screen "
                            f"({FIRST_SCREEN_PX} px)")
        expected = _expected_verdict(report)
        if expected is not None and first["text"] != expected:
            problems.append(f"the verdict on screen {first['text']!r} is not the run's {expected!r}")
    broken = [image["src"] for image in measured["images"] if not image["ok"]]
    if broken:
        problems.append(f"{len(broken)} broken picture(s): {broken[:5]}")
    if measured["missingAnchors"]:
        problems.append(f"{len(measured['missingAnchors'])} #anchor link(s) without a target: "
                        f"{measured['missingAnchors'][:5]}")
    problems += _relative_link_problems(report, measured["relative"])
    content = measured["content"]
    for table in measured["tables"]:
        needed = max(table["scrollWidth"], table["right"] - table["left"])
        # One px of slack: layout widths are fractional, scrollWidth is rounded.
        if table["scrollWidth"] > table["clientWidth"] + 1 or table["right"] > content["right"] + 1:
            problems.append(f"table {table['index']} [{table['head']}] is {needed:.0f} px wide, the page's content "
                            f"{content['width']:.0f} px")
    if measured["pageScrollWidth"] > measured["innerWidth"]:
        problems.append(f"the page scrolls sideways: {measured['pageScrollWidth']} px in a "
                        f"{measured['innerWidth']} px window")
    if pages > MAX_PRINTED_PAGES:
        problems.append(f"prints on {pages} Letter pages (at most {MAX_PRINTED_PAGES})")
    return problems


def _check(browser: str, report: Path, page: str, print_file: Optional[Path], work: Path) -> List[str]:
    measured = _measure(browser, page, work)
    if print_file is None:
        print_file = work / "print.html"
        print_file.write_text(page, encoding="utf-8")
    pages = _printed_pages(browser, print_file, work)
    problems = _problems(report, measured, pages)
    verdict = f"verdict ends at {measured['verdicts'][0]['bottom']:.0f} px" if measured["verdicts"] else "no verdict"
    widest = max((t["scrollWidth"] for t in measured["tables"]), default=0)
    print(f"{_rel(report)}: {pages} Letter page(s), {verdict}, widest table {widest} px of "
          f"{measured['content']['width']:.0f}, {len(measured['images'])} picture(s)")
    return [f"{_rel(report)}: {p}" for p in problems]


def test_there_are_committed_reports_to_render():
    assert MARKDOWN and HTML_TWINS and REPORTS / "README.md" in MARKDOWN


@pytest.mark.slow
@pytest.mark.parametrize("report", MARKDOWN, ids=_rel)
def test_committed_markdown_report_in_a_browser(report, chromium, tmp_path):
    page = _markdown_page(report)
    problems = _check(chromium, report, page, None, tmp_path)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
@pytest.mark.parametrize("report", HTML_TWINS, ids=_rel)
def test_committed_html_report_in_a_browser(report, chromium, tmp_path):
    page = _with_base(report.read_text(encoding="utf-8"), report.parent)
    # printed as committed (from its own directory): the measuring script must not add to its length
    problems = _check(chromium, report, page, report, tmp_path)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_the_browser_checks_catch_a_broken_report(chromium, tmp_path):
    """A report with every fault the checks look for: each is named, so none of the checks above is vacuous."""
    report_dir = tmp_path / "broken"
    report_dir.mkdir()
    long_name = "layer_" + "x" * 150  # one unbreakable code span: the table cannot wrap inside 946 px
    filler = "\n\n".join(f"Paragraph {i} of text that pushes the rest of the page down." for i in range(400))
    report = report_dir / "parity.md"
    report.write_text(
        "# A broken report\n\n" + "\n\n".join(f"Preamble {i}." for i in range(30)) + "\n\n"
        "✅ **PASS** · **1/1 cases passed**\n\n"
        f"| case | layer |\n|---|---|\n| a | `{long_name}` |\n\n"
        "![gone](diff/missing.png) [to nowhere](#nowhere) [to no file](nothing.md)\n\n" + filler + "\n",
        encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    problems = "\n".join(_check(chromium, report, _markdown_page(report), None, work))
    assert "past the first screen" in problems, problems
    assert "1 broken picture(s): ['diff/missing.png']" in problems, problems
    assert "#anchor link(s) without a target: ['#nowhere']" in problems, problems
    assert "link 'nothing.md' points at a file that does not exist" in problems, problems
    assert re.search(r"table 0 \[case \| layer\] is \d+ px wide, the page's content 946 px", problems), problems
    assert re.search(r"prints on \d+ Letter pages", problems), problems


# -- without a browser -------------------------------------------------------------------------------------

class _Targets(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set = set()
        self.images: List[str] = []
        self.links: List[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.ids.update(attrs[key] for key in ("id", "name") if attrs.get(key))
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        elif tag == "a" and attrs.get("href") is not None:
            self.links.append(attrs["href"])


def test_smallest_html_twin_resolves_without_a_browser():
    """The fast tier's look at an HTML twin: pictures embedded and decodable, anchors and links that land."""
    import base64

    report = min(HTML_TWINS, key=lambda p: p.stat().st_size)
    text = report.read_text(encoding="utf-8")
    parser = _Targets()
    parser.feed(text)
    parser.close()
    assert parser.images, f"{_rel(report)} has no pictures"
    assert "<em>missing: " not in text, f"{_rel(report)} names a picture it could not embed"
    for src in parser.images:
        head, _, data = src.partition(",")
        assert head.startswith("data:image/") and head.endswith(";base64"), \
            f"{_rel(report)}: {src[:60]!r} is not embedded"
        raw = base64.b64decode(data, validate=True)
        assert raw[:3] == b"\xff\xd8\xff" or raw[:8] == b"\x89PNG\r\n\x1a\n", f"{_rel(report)}: {head} is no JPEG/PNG"
    missing = [h for h in parser.links if h.startswith("#") and unquote(h[1:]) not in parser.ids]
    assert not missing, f"{_rel(report)}: #anchor links without a target: {missing[:5]}"
    relative = [h for h in parser.links if not h.startswith("#") and not urlsplit(h).scheme]
    assert not _relative_link_problems(report, relative)
    assert _expected_verdict(report) in html.unescape(re.sub(r"<[^>]+>", "", text))


RUNS = [p.parent for p in _committed({"parity.json"})]


@pytest.mark.parametrize("run", RUNS, ids=_rel)
def test_step_summary_of_a_committed_run_opens_with_verdict_counts_and_worst_cases(run):
    """What the GitHub workflow appends to $GITHUB_STEP_SUMMARY: the verdict with its counts first, the cases
    closest to their bound next, and no picture (the step summary cannot show the run's files)."""
    from parity.step_summary import render_step_summary

    results = json.loads((run / "parity.json").read_text(encoding="utf-8"))
    text = render_step_summary(results, artifact_url="https://github.com/o/r/actions/runs/1")
    lines = text.splitlines()
    assert lines[2] == ((results.get("summary") or {}).get("verdict_line") or verdict_line(results))
    assert re.search(r"\*\*\d+/\d+ cases passed\*\*", lines[2]), lines[2]
    first_section = text.split("\n## ", 1)[0]
    assert "Closest to the bound" in first_section, first_section[:600]
    rendered = render_gfm(text)
    assert "<img" not in rendered and "![" not in text and "data:image" not in text
