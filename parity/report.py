"""The reviewer's report of a parity run: ``DIR/parity.md``, its short twin and the |Δ| heatmaps.

Everything here works from the ``results`` dict the harness also writes as
``DIR/parity.json`` (provenance, summary, one record per case) and from the
files under ``DIR``; every path in the markdown is relative to ``DIR`` so the
report renders on a repository page when it sits at ``DIR/parity.md``.

The report is laid out for a reviewer who reads it on GitHub (a 1012 px
article, GitHub's stylesheet): the first screen holds the verdict, one compact
matrix (method x smoothing mode, or setup x method when the run has several
setups: models, inputs, targets) and a table of contents; every table fits the
article without scrolling, numbers never wrap mid-token (their hyphens are
U+2011, the non-breaking hyphen), and every |Δ| heatmap of a report shares one
stated colour scale, drawn once as a legend (``write_diff_images``).

Counts are always taken from the cases, never from ``results["summary"]``.  A
case whose ``architecture_differs`` is set is shown as "architectures differ"
(paddle.vision's model is not torchvision's, so it cannot pass): it is counted
neither as passed nor as failed.

This module runs in the orchestrating process, so it imports neither torch nor
paddle: numpy, OpenCV, the standard library and ``paddle_impl.atomic`` (the
``paddle_impl`` package loads Paddle only when a CAM class is first used).
"""
from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote

import cv2
import numpy as np

from paddle_impl import atomic
from parity.registry import METHODS, SMOOTH_MODES

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
    "write_report",
    "ensure_diff_images",
    "sibling_reports",
    "rerender",
    "default_files",
    "REPORT_NAME",
    "SUMMARY_NAME",
    "HTML_NAME",
    "LEGEND_PATH",
]

REPORT_NAME = "parity.md"
SUMMARY_NAME = "parity_summary.md"
HTML_NAME = "parity.html"
LEGEND_PATH = "diff/legend.png"
TITLE = "Paddle vs PyTorch Grad-CAM parity"
DEFAULT_IMAGE = "fixtures/both.png"

_STRIP_HEIGHT = 20
_MIN_WIDTH = 224  # small CAMs (the quick profile's 64x64) are enlarged so they are not a blur of JPEG blocks
_JPEG_QUALITY = 85
_FONT = cv2.FONT_HERSHEY_SIMPLEX

# Display widths (px) of the pictures: one width per table, so columns do not follow header text.
# Four gallery pictures and a label column fit GitHub's 946 px content box: 4 x (180 + 26) + 96.
GALLERY_WIDTH = 180
CASE_WIDTH = 224
LEGEND_WIDTH = 600

NB_HYPHEN = "\u2011"  # a hyphen the browser does not break a line at: "2.38e‑06" stays in one piece
SOFT_HYPHEN = "\u00ad"

# How many not-passing cases the first screen names before it points at the metrics table.
_FIRST_SCREEN_NAMES = 8


# -- the |Δ| heatmaps -----------------------------------------------------------------------
def _as_2d(cam: np.ndarray) -> np.ndarray:
    """A (H, W) float64 view of one CAM; a batch (B, H, W) becomes its B maps side by side."""
    cam = np.asarray(cam, dtype=np.float64)
    while cam.ndim > 2 and cam.shape[0] == 1:
        cam = cam[0]
    if cam.ndim == 3:
        # Batches (upstream's own tests use B = 2) are shown as one strip, left to right.
        cam = np.concatenate(list(cam), axis=1)
    if cam.ndim != 2:
        raise ValueError(f"expected a (1, H, W), (B, H, W) or (H, W) CAM, got shape {cam.shape}")
    return cam


def _abs_diff(paddle_cam: np.ndarray, torch_cam: np.ndarray) -> np.ndarray:
    """|paddle - torch|; NaN on both sides is agreement, NaN on one side is +inf (as in compare)."""
    p, t = _as_2d(paddle_cam), _as_2d(torch_cam)
    with np.errstate(invalid="ignore"):
        diff = np.abs(p - t)
    diff = np.where(np.isnan(p) & np.isnan(t), 0.0, diff)
    return np.where(np.isnan(diff), np.inf, diff)


def _upscale_factor(width: int) -> int:
    return max(1, math.ceil(_MIN_WIDTH / max(width, 1)))


def _put_text_fitting(image: np.ndarray, text: str, x: int, y_baseline: int, max_width: int,
                      colour=(255, 255, 255), scale: float = 0.4) -> int:
    """Draw ``text`` shrunk until it fits ``max_width``; return the width it took."""
    while True:
        (width, _), _ = cv2.getTextSize(text, _FONT, scale, 1)
        if width <= max_width or scale <= 0.25:
            break
        scale -= 0.05
    cv2.putText(image, text, (x, y_baseline), _FONT, scale, colour, 1, cv2.LINE_AA)
    return width


def _legend_strip(width: int, text: str, with_bar: bool) -> np.ndarray:
    """A black strip: ``0 [colour bar] max|d| 3.58e-06``."""
    strip = np.zeros((_STRIP_HEIGHT, width, 3), np.uint8)
    baseline = _STRIP_HEIGHT - 6
    (text_width, _), _ = cv2.getTextSize(text, _FONT, 0.4, 1)
    if with_bar:
        zero_width = _put_text_fitting(strip, "0", 3, baseline, 12)
        bar_x0 = 3 + zero_width + 3
        bar_x1 = width - min(text_width, width // 2) - 8
        if bar_x1 - bar_x0 >= 16:
            ramp = np.linspace(0, 255, bar_x1 - bar_x0).astype(np.uint8)[None, :]
            bar = cv2.applyColorMap(np.repeat(ramp, _STRIP_HEIGHT - 8, axis=0), cv2.COLORMAP_INFERNO)
            strip[4:_STRIP_HEIGHT - 4, bar_x0:bar_x1] = bar
            text_x = bar_x1 + 4
        else:
            text_x = bar_x0
    else:
        text_x = 3
    _put_text_fitting(strip, text, text_x, baseline, width - text_x - 2)
    return strip


def _encode(image: np.ndarray, path: Path) -> None:
    """Write ``image`` atomically as a JPEG (or PNG, by the suffix)."""
    if Path(path).suffix.lower() == ".png":
        ok, encoded = cv2.imencode(".png", image)
    else:
        ok, encoded = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), _JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")
    atomic.write_bytes(path, encoded.tobytes())


def _shapes_differ_image(p: np.ndarray, t: np.ndarray, with_strip: bool) -> np.ndarray:
    height, width = t.shape
    factor = _upscale_factor(width)
    canvas = np.zeros((height * factor + (_STRIP_HEIGHT if with_strip else 0), width * factor, 3), np.uint8)
    _put_text_fitting(canvas, "shapes differ", 6, (height * factor) // 2, width * factor - 12)
    label = f"paddle {p.shape} torch {t.shape}"
    if with_strip:
        canvas[height * factor:] = _legend_strip(width * factor, label, False)
    else:
        _put_text_fitting(canvas, label, 6, (height * factor) // 2 + 20, width * factor - 12)
    return canvas


def _identical_image(height: int, width: int) -> np.ndarray:
    factor = _upscale_factor(width)
    image = np.zeros((height * factor, width * factor, 3), np.uint8)
    (tw, th), _ = cv2.getTextSize("identical", _FONT, 0.6, 1)
    x = max(2, (image.shape[1] - tw) // 2)
    _put_text_fitting(image, "identical", x, (image.shape[0] + th) // 2, image.shape[1] - 4, scale=0.6)
    return image


def _heatmap(diff: np.ndarray, scale: float) -> np.ndarray:
    """INFERNO colours of ``diff / scale`` (clipped to [0, 1]), enlarged; +inf (NaN on one side) is white."""
    height, width = diff.shape
    finite = np.isfinite(diff)
    scaled = np.zeros_like(diff)
    if scale > 0:
        scaled = np.where(finite, diff / scale, 0.0)
    gray = np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)
    image = cv2.applyColorMap(gray, cv2.COLORMAP_INFERNO)
    image[~finite] = 255
    factor = _upscale_factor(width)
    return cv2.resize(image, (width * factor, height * factor), interpolation=cv2.INTER_NEAREST)


def write_diff_image(paddle_cam: np.ndarray, torch_cam: np.ndarray, path: Path) -> float:
    """Render |paddle - torch| of two (1, H, W) CAMs as a JPEG heatmap at ``path``; return max|Δ|.

    This is the per-case picture the harness draws as each case finishes: its
    colours span 0..its own max|Δ| (INFERNO), and the strip underneath carries
    a colour bar and the max in absolute terms (``max|d| 3.58e-06``).
    ``write_diff_images`` redraws every picture of a report at one shared
    scale once all cases are in.  Identical CAMs give a black image that says
    ``identical``; CAMs of different shapes give one that says so (and inf is
    returned).  Pixels where exactly one side is NaN are drawn white.  CAMs
    narrower than 224 px are enlarged (nearest neighbour).
    """
    path = Path(path)
    p, t = _as_2d(paddle_cam), _as_2d(torch_cam)
    if p.shape != t.shape:
        _encode(_shapes_differ_image(p, t, with_strip=True), path)
        return float("inf")

    diff = _abs_diff(p, t)
    height, width = diff.shape
    finite = np.isfinite(diff)
    max_diff = float(diff.max()) if diff.size else 0.0
    if max_diff == 0.0:
        image = _identical_image(height, width)
        strip = _legend_strip(image.shape[1], "max|d| 0", False)
    else:
        finite_max = float(diff[finite].max()) if finite.any() else 0.0
        image = _heatmap(diff, finite_max)
        label = f"max|d| {_sci_ascii(max_diff)}"
        if not finite.all():
            label = f"max|d| inf (white); finite {_sci_ascii(finite_max)}"
        strip = _legend_strip(image.shape[1], label, finite_max > 0)
    _encode(np.vstack([image, strip]), path)
    return max_diff


def _legend_image(scale: float) -> np.ndarray:
    """The one colour bar of a report: 0 .. ``scale`` in INFERNO with five labelled ticks, and white for NaN.

    Drawn at twice its display width (``LEGEND_WIDTH``) so its text stays sharp
    and about 14 px high where it is shown.
    """
    width, height = 2 * LEGEND_WIDTH, 178
    image = np.full((height, width, 3), 255, np.uint8)
    black = (0, 0, 0)
    cv2.putText(image, "|paddle - torch| of the final CAM, every heatmap", (12, 38), _FONT, 1.15, black, 2, cv2.LINE_AA)
    bar_x0, bar_x1, bar_y0, bar_y1 = 24, width - 250, 58, 112
    ramp = np.linspace(0, 255, bar_x1 - bar_x0).astype(np.uint8)[None, :]
    image[bar_y0:bar_y1, bar_x0:bar_x1] = cv2.applyColorMap(np.repeat(ramp, bar_y1 - bar_y0, axis=0),
                                                            cv2.COLORMAP_INFERNO)
    cv2.rectangle(image, (bar_x0, bar_y0), (bar_x1 - 1, bar_y1 - 1), black, 2)
    for i in range(5):
        x = bar_x0 + round(i * (bar_x1 - bar_x0 - 1) / 4)
        cv2.line(image, (x, bar_y1), (x, bar_y1 + 10), black, 3)
        label = "0" if i == 0 else _sci_ascii(scale * i / 4)
        (tw, _), _ = cv2.getTextSize(label, _FONT, 1.1, 2)
        x_text = min(max(0, x - tw // 2), width - tw - 4)
        cv2.putText(image, label, (x_text, bar_y1 + 50), _FONT, 1.1, black, 2, cv2.LINE_AA)
    swatch = bar_x1 + 36
    cv2.rectangle(image, (swatch, bar_y0), (swatch + 54, bar_y1 - 1), black, 2)
    cv2.putText(image, "NaN on", (swatch + 66, bar_y0 + 22), _FONT, 1.0, black, 2, cv2.LINE_AA)
    cv2.putText(image, "one side", (swatch + 66, bar_y1 - 2), _FONT, 1.0, black, 2, cv2.LINE_AA)
    return image


def _comparable(case: Mapping) -> bool:
    return not case.get("error") and not case.get("architecture_differs")


def write_diff_images(results: Dict, out_dir: Path, scale: Optional[float] = None) -> Dict:
    """Redraw every case's |Δ| heatmap at one shared scale, and the report's legend.

    Each case's ``diff_jpg`` is rendered from its two ``*_cam.npy`` files
    (cases that errored, and cases whose files are not there, are skipped).
    The scale is the report's largest finite |Δ| over the cases that can pass
    (not those whose architectures differ: their pictures saturate instead),
    or ``scale`` when given (a fixed bound).  The legend is written once to
    ``DIR/diff/legend.png``.  What was drawn is recorded in
    ``results["diff_images"]`` (scale, rule, legend path, the case ids drawn),
    which the renderers read to state the scale; the same dict is returned.
    """
    out_dir = Path(out_dir)
    drawn: List[Tuple[Dict, Path, Optional[np.ndarray], Tuple[np.ndarray, np.ndarray]]] = []
    for case in results.get("cases") or []:
        if case.get("error"):
            continue  # its .npy files, if any, are left over from an earlier run
        files = _files(case)
        paddle_npy, torch_npy = out_dir / files["paddle_cam_npy"], out_dir / files["torch_cam_npy"]
        if not (paddle_npy.is_file() and torch_npy.is_file()):
            continue
        p = _as_2d(np.load(paddle_npy, allow_pickle=False))
        t = _as_2d(np.load(torch_npy, allow_pickle=False))
        diff = _abs_diff(p, t) if p.shape == t.shape else None
        drawn.append((case, out_dir / files["diff_jpg"], diff, (p, t)))

    if scale is None:
        finite = [float(d[np.isfinite(d)].max()) for c, _, d, _ in drawn
                  if d is not None and _comparable(c) and np.isfinite(d).any()]
        value = max(finite, default=0.0)
        rule = "the largest finite |Δ| of this report's final CAMs"
    else:
        value = float(scale)
        rule = "a fixed bound"
    for case, target, diff, (p, t) in drawn:
        if diff is None:
            image = _shapes_differ_image(p, t, with_strip=False)
        elif float(diff.max() if diff.size else 0.0) == 0.0:
            image = _identical_image(*diff.shape)
        else:
            image = _heatmap(diff, value)
        _encode(image, target)
    info = {"scale": value, "rule": rule, "legend": LEGEND_PATH, "cases": [str(c.get("id")) for c, *_ in drawn]}
    if drawn:
        _encode(_legend_image(value), out_dir / LEGEND_PATH)
        results["diff_images"] = info
    return info


# -- formatting ---------------------------------------------------------------------------
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


# -- the data -----------------------------------------------------------------------------
def default_files(method: str, smooth: str, setup: str = "") -> Dict[str, str]:
    """The files of one case, relative to DIR, as the harness lays them out (a setup gets its own directory)."""
    mode_dir = f"log_{smooth}" if not setup else f"{_setup_slug(setup)}/log_{smooth}"
    return {
        "paddle_cam_jpg": f"output_paddle/{mode_dir}/{method}_cam.jpg",
        "torch_cam_jpg": f"output_torch/{mode_dir}/{method}_cam.jpg",
        "paddle_cam_npy": f"output_paddle/{mode_dir}/{method}_cam.npy",
        "torch_cam_npy": f"output_torch/{mode_dir}/{method}_cam.npy",
        "diff_jpg": f"diff/{mode_dir}/{method}_absdiff.jpg",
    }


def _setup_slug(name: str) -> str:
    # the same rule as parity.plan.setup_slug, which this module cannot import (it pulls in the workers)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "main"


def _files(case: Mapping) -> Dict[str, str]:
    files = dict(default_files(case.get("method", ""), case.get("smooth", ""), case.get("setup") or ""))
    files.update({k: v for k, v in (case.get("files") or {}).items() if v})
    return files


def float64_agrees(case: Mapping) -> bool:
    """True for a failed float32 case whose float64 rerun passed: the two sides compute the same."""
    check = case.get("float64_check") or {}
    return bool(check.get("passed")) and not check.get("error")


def case_status(case: Mapping) -> str:
    """``passed``, ``failed``, ``error``, ``architectures differ`` or ``float32 only``.

    The last two are neither passed nor failed: no port can pass a model whose
    ``paddle.vision`` twin computes another function, and a float32 case whose
    float64 rerun passes differs by rounding the method amplifies, not by the port.
    """
    if case.get("architecture_differs"):
        return "architectures differ"
    if case.get("error"):
        return "error"
    if case.get("passed"):
        return "passed"
    return "float32 only" if float64_agrees(case) else "failed"


_status = case_status
_EMOJI = {"passed": "✅", "failed": "❌", "error": "💥", "architectures differ": "🔶", "float32 only": "🟡"}


def _case_id(case: Mapping) -> str:
    return str(case.get("id") or f"{case.get('method')}-{case.get('smooth')}")


def _short_id(case: Mapping) -> str:
    """The case id without its setup prefix: ``gradcam-no_smooth``."""
    case_id = _case_id(case)
    setup = case.get("setup") or ""
    return case_id[len(setup) + 1:] if setup and case_id.startswith(setup + "/") else case_id


def _ordered_cases(results: Mapping) -> List[Dict]:
    """Cases by setup (first appearance), then registry order (methods outer, modes inner); unknown ones after."""
    cases = list(results.get("cases") or [])
    setup_rank: Dict[str, int] = {}
    for case in cases:
        setup_rank.setdefault(case.get("setup") or "", len(setup_rank))
    method_rank = {name: i for i, name in enumerate(METHODS)}
    smooth_rank = {name: i for i, name in enumerate(SMOOTH_MODES)}
    big = len(METHODS) + len(SMOOTH_MODES) + 1

    def key(indexed):
        index, case = indexed
        return (setup_rank[case.get("setup") or ""], method_rank.get(case.get("method"), big),
                smooth_rank.get(case.get("smooth"), big), index)

    return [case for _, case in sorted(enumerate(cases), key=key)]


def _setups(cases: Sequence[Mapping]) -> List[str]:
    return list(dict.fromkeys(case.get("setup") or "" for case in cases))


def _in_order(values: Iterable[str], order: Iterable[str]) -> List[str]:
    values = list(dict.fromkeys(v for v in values if v is not None))
    rank = {name: i for i, name in enumerate(order)}
    return sorted(values, key=lambda v: (rank.get(v, len(rank)), values.index(v)))


def case_counts(results: Mapping) -> Dict[str, int]:
    """The run's counts by ``case_status``: what ``parity.json``'s summary holds and the verdict line reads."""
    cases = list(results.get("cases") or [])
    statuses = [case_status(c) for c in cases]
    return {
        "cases": len(cases),
        "passed": statuses.count("passed"),
        "failed": statuses.count("failed"),
        "errors": statuses.count("error"),
        "architecture_differs": statuses.count("architectures differ"),
        "float32_only": statuses.count("float32 only"),
        # over the counted cases only, so the count never exceeds the cases it is "of"
        "overlays_identical": sum(
            1 for c, status in zip(cases, statuses) if status in ("passed", "failed")
            and c.get("overlay_identical_fraction") is not None and float(c["overlay_identical_fraction"]) >= 1.0
        ),
    }


def summary_line(results: Mapping) -> str:
    """``**31/32 cases passed** · overlays byte-identical: 20/32 · errors: 0`` (counted from the cases).

    Cases whose architectures differ, and float32 cases whose float64 rerun passed, are left
    out of both counts and named on their own.
    """
    n = case_counts(results)
    counted = n["cases"] - n["architecture_differs"] - n["float32_only"]
    line = f"**{n['passed']}/{counted} cases passed**"
    if n["architecture_differs"]:
        line += f" · architectures differ: {n['architecture_differs']} (not counted)"
    if n["float32_only"]:
        line += f" · float32 only, float64 agrees: {n['float32_only']} (not counted)"
    return line + f" · overlays byte-identical: {n['overlays_identical']}/{counted} · errors: {n['errors']}"


def verdict_line(results: Mapping) -> str:
    """The first line a reviewer reads: ``✅ **PASS** · 32/32 cases passed · ...``."""
    n = case_counts(results)
    if n["failed"] or n["errors"]:
        verdict = "❌ **FAIL**"
    elif n["passed"]:
        verdict = "✅ **PASS**"
    else:
        verdict = "⚪ **NO VERDICT** (no case that can pass was run)"
    return f"{verdict} · {summary_line(results)}"


# -- links --------------------------------------------------------------------------------
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


# -- the first screen ---------------------------------------------------------------------
def _bounds_note(cases: Sequence[Mapping]) -> str:
    """``bound 1.00e‑04 (ablationcam 5.00e‑04)``: the final-CAM bound, and the methods with another one."""
    by_bound: Dict[str, List[str]] = {}
    for case in cases:
        if case.get("tolerance") is not None:
            by_bound.setdefault(_sci(case["tolerance"]), []).append(str(case.get("method")))
    if not by_bound:
        return ""
    common = max(by_bound, key=lambda b: len(by_bound[b]))
    others = [f"{', '.join(dict.fromkeys(methods))} {bound}" for bound, methods in by_bound.items() if bound != common]
    return f"bound {common}" + (f" ({'; '.join(others)})" if others else "")


def _matrix_cell(case: Optional[Mapping], links: _Links) -> str:
    """``✅ 2.4%`` linked to its case; the space is a no-break space, so the pair never wraps apart."""
    if case is None:
        return "·"
    status = case_status(case)
    if status == "error":
        text = "💥\u00a0error"
    elif status == "architectures differ":
        text = "🔶\u00a0n/a"
    else:
        text = f"{_EMOJI[status]}\u00a0{_of_bound(case)}"
    return links.case(case, text)


def _common_divergence(cases: Sequence[Mapping]) -> Optional[str]:
    """``squeezenet1_1``'s "architectures differ at `features.0`" when every case of a row says so."""
    if not cases or not all(case_status(c) == "architectures differ" for c in cases):
        return None
    layers = {_json_key(c.get("first_divergent_layer")) for c in cases}
    if len(layers) != 1:
        return "🔶 architectures differ"
    layer = cases[0].get("first_divergent_layer") or {}
    where = layer.get("torch_path") or layer.get("paddle_path")
    return "🔶 architectures differ" + (f" at {_code(where)}" if where else "")


def _json_key(value) -> str:
    return repr(sorted(value.items())) if isinstance(value, dict) else repr(value)


def _matrix_lines(cases: Sequence[Mapping], links: _Links) -> List[str]:
    """The verdict matrix: method x smoothing mode for one setup; setup x method for several.

    With several setups and several modes, a cell holds one line per mode (in
    the order the note under the table names), so the matrix keeps one row
    per setup and fits the first screen.
    """
    if not cases:
        return ["_No case was run._"]
    setups = _setups(cases)
    methods = _in_order([c.get("method") for c in cases], METHODS)
    smooths = _in_order([c.get("smooth") for c in cases], SMOOTH_MODES)
    index = {(c.get("setup") or "", c.get("method"), c.get("smooth")): c for c in cases}
    lines: List[str] = []
    keys: List[str] = []
    if len(setups) == 1:
        setup = setups[0]
        rows = [[_cell(m)] + [_matrix_cell(index.get((setup, m, s)), links) for s in smooths] for m in methods]
        lines += _table(["method"] + [_cell(s) for s in smooths], rows)
    else:
        rows = []
        for setup in setups:
            row_cases = [c for c in cases if (c.get("setup") or "") == setup]
            label = links.anchor(_setup_anchor(setup), _cell(setup or "(default)"))
            common = _common_divergence(row_cases)
            if common:
                label += f"<br>{common}"
            cells = ["<br>".join(_matrix_cell(index.get((setup, m, s)), links) for s in smooths) for m in methods]
            rows.append([label] + cells)
        lines += _table(["setup"] + [_breakable(m) for m in methods], rows)
        if len(smooths) > 1:
            keys.append("one line per smoothing mode: " + ", then ".join(smooths))
    keys.insert(0, f"{_EMOJI['passed']} passed / {_EMOJI['failed']} failed, and the final CAM's max\\|Δ\\| as a "
                   f"percentage of its {_bounds_note(cases)}" + ("; a cell links to its case" if links.mode != "none" else ""))
    statuses = {case_status(c) for c in cases}
    if "error" in statuses:
        keys.append("💥 the case did not run to the end")
    if "architectures differ" in statuses:
        keys.append("🔶 paddle.vision's architecture differs from torchvision's: the case cannot pass and is "
                    "not a port failure (not counted)")
    if "float32 only" in statuses:
        keys.append("🟡 over its bound in float32, within every float64 bound when rerun: rounding that the "
                    "method amplifies, not the port (not counted; the case says why)")
    if any("·" in cell.split("<br>") for row in rows for cell in row):
        keys.append("· not part of this run")
    return lines + ["", "Cells: " + " · ".join(keys) + "."]


def _not_passing_lines(cases: Sequence[Mapping], links: _Links) -> List[str]:
    bad = [c for c in cases if case_status(c) in ("failed", "error", "float32 only")]
    if not bad:
        return []
    names = []
    for case in bad[:_FIRST_SCREEN_NAMES]:
        text = f"{_EMOJI[case_status(case)]} {_code(_case_id(case))}"
        if case.get("first_divergent_stage"):
            text += f" (first divergent: {case['first_divergent_stage']})"
        names.append(links.case(case, text) if links.mode != "none" else text)
    more = f", and {len(bad) - _FIRST_SCREEN_NAMES} more (see the metrics)" if len(bad) > _FIRST_SCREEN_NAMES else ""
    return ["Not passing: " + ", ".join(names) + more, ""]


def _architecture_lines(cases: Sequence[Mapping]) -> List[str]:
    """One line per setup (or case) whose architectures differ: where, and the harness's words."""
    differ = [c for c in cases if case_status(c) == "architectures differ"]
    if not differ:
        return []
    by_setup: Dict[str, List[Mapping]] = {}
    for case in differ:
        by_setup.setdefault(case.get("setup") or case.get("model") or "", []).append(case)
    lines = []
    for setup, group in by_setup.items():
        layer = group[0].get("first_divergent_layer") or {}
        where = ""
        if layer.get("torch_path") or layer.get("paddle_path"):
            where = f" at torch {_code(layer.get('torch_path', '?'))} / paddle {_code(layer.get('paddle_path', '?'))}"
        name = setup or "this run"
        lines.append(f"- 🔶 **{_cell(name)}**{where} ({len(group)} case{'s' if len(group) != 1 else ''}): "
                     f"{_cell(group[0]['architecture_differs'])}")
    return ["Architectures differ (not counted as passed or failed):", ""] + lines + [""]


def _siblings_line(siblings: Optional[Mapping[str, str]], out_dir: Optional[Path],
                   companions: Iterable[str] = ()) -> str:
    """``**Other reports:** [float64](f64/parity.md) · ...``: files that exist (or are written with this one)."""
    if not siblings:
        return ""
    companions = set(companions)
    links = []
    for label, path in siblings.items():
        if not path:
            continue
        if out_dir is not None and path not in companions and not (Path(out_dir) / path).is_file():
            continue
        links.append(f"[{_cell(label)}]({quote(str(path), safe='/#+')})")
    return ("**Other reports:** " + " · ".join(links)) if links else ""


# -- provenance ---------------------------------------------------------------------------
def _schedule_words(schedule) -> str:
    """The schedule as a sentence; older reports recorded a dict (the same words as parity.schedule's)."""
    if not isinstance(schedule, dict):
        return str(schedule)

    def count(number: int, one: str, many: str) -> str:
        return f"{number} {one if number == 1 else many}"

    cached = int(schedule.get("cached_jobs", 0)) + int(schedule.get("cached_units", 0))
    units = int(schedule.get("weights_units", 0))
    return (f"{count(cached, 'upstream result', 'upstream results')} from the cache; "
            f"{count(int(schedule.get('worker_jobs', 0)), 'worker process', 'worker processes')} to run"
            + (f" ({count(units, 'weights unit', 'weights units')})" if units else "")
            + f", {schedule.get('workers', 1)} at a time, "
            + count(int(schedule.get('threads_per_worker', 1)), "thread", "threads") + " each")


_FLAT_WEIGHT_KEYS = ("source", "identity", "torch_path", "torch_sha256", "paddle_path", "paddle_sha256")


def _weights_by_model(weights: Mapping) -> Dict[str, Dict]:
    """``{model: {source, identity, torch_path, ...}}``; an older report's one flat dict is keyed ``""``."""
    if not weights:
        return {}
    if any(key in weights and not isinstance(weights[key], dict) for key in _FLAT_WEIGHT_KEYS):
        return {"": dict(weights)}
    return {str(model): dict(info or {}) for model, info in weights.items()}


def _weights_text(weights: Mapping) -> str:
    models = _weights_by_model(weights)
    parts = []
    for model, info in models.items():
        head = [f"**{_cell(model)}**"] if model else []
        head.append(f"source: {_cell(info.get('source', '?'))}")
        if info.get("identity"):
            head.append(f"identity {_code(info['identity'])}")
        lines = [" · ".join(head)]
        for side in ("torch", "paddle"):
            if info.get(f"{side}_path") or info.get(f"{side}_sha256"):
                line = f"{side}: {_code(info.get(f'{side}_path', '?'))}"
                if info.get(f"{side}_sha256"):
                    line += f"<br>sha256 {_code(info[f'{side}_sha256'])}"
                lines.append(line)
        for key, value in info.items():
            if key not in _FLAT_WEIGHT_KEYS and value not in (None, ""):
                lines.append(f"{_cell(key)}: {_cell(value)}")
        parts.append("<br>".join(lines))
    text = "<br>".join(parts)
    if len(models) > 2:
        # A zoo run names a dozen models: keep the table short, the identities one click away.
        text = f"<details><summary>{len(models)} models: {_cell(', '.join(models))}</summary>{text}</details>"
    return text


def _project_text(project) -> str:
    if not isinstance(project, Mapping):
        return _cell(project)
    commit = project.get("commit")
    if not commit:
        return "not a git checkout (commit unknown)"
    dirty = project.get("dirty")
    state = ("**dirty**: uncommitted changes" if dirty else "clean") if dirty is not None else "state unknown"
    return f"commit {_code(commit)} · {state}"


def _fallback_lines(results: Mapping) -> List[str]:
    """The loud warning of a run that did not use the reference image (empty when it did)."""
    image = (results.get("provenance") or {}).get("image") or {}
    if not image.get("fallback"):
        return []
    requested = image.get("requested") or DEFAULT_IMAGE
    return [
        f"> ⚠️ **WARNING: `{requested}` was not used.** This run used the fallback image "
        f"`{image.get('path', '?')}` instead" + (f" ({image['note']})" if image.get("note") else "")
        + ", so its numbers are not comparable with the reference run.",
        "",
    ]


def _provenance_lines(results: Mapping) -> List[str]:
    prov = dict(results.get("provenance") or {})
    lines = [f"## {_heading_anchor('provenance')}Provenance", ""]
    image = dict(prov.pop("image", None) or {})
    weights = prov.pop("weights", None) or {}

    lines += _fallback_lines(results)

    rows: List[List[str]] = []

    def take(key: str, label: str, render: Callable = _cell) -> None:
        if key in prov:
            value = prov.pop(key)
            if value is not None and value != "" and value != {}:
                rows.append([label, render(value)])

    take("project", "project", _project_text)
    take("date", "date")
    take("command", "command", _code)
    versions = []
    for key in ("python", "torch", "torchvision", "paddlepaddle", "grad-cam", "numpy", "opencv"):
        if key in prov:
            versions.append(f"{key} {_cell(prov.pop(key))}")
    if versions:
        rows.append(["versions", " · ".join(versions)])
    take("platform", "platform")
    take("cpu", "cpu")
    take("device", "device")
    take("dtype", "dtype")
    take("profile", "profile")
    if image:
        text = _code(image.get("path", "?"))
        if image.get("sha256"):
            text += f"<br>sha256 {_code(image['sha256'])}"
        if image.get("size"):
            size = image["size"]
            text += "<br>size " + ("×".join(str(s) for s in size) if isinstance(size, (list, tuple)) else _cell(size))
        if image.get("note"):
            text += f"<br>note: {_cell(image['note'])}"
        if image.get("fallback"):
            text += "<br>**⚠️ fallback image, not the reference fixture**"
        for key, value in image.items():
            if key not in ("path", "sha256", "note", "fallback", "requested", "size") and value not in (None, ""):
                text += f"<br>{_cell(key)}: {_cell(value)}"
        rows.append(["image", text])
    if weights:
        rows.append(["weights", _weights_text(weights)])
    take("target_rule", "target rule")
    take("threads", "threads per worker")
    take("jobs", "jobs")
    take("cache", "upstream cache")
    take("schedule", "schedule", lambda v: _cell(_schedule_words(v)))
    take("wall_seconds", "wall time", lambda v: f"{_secs(v)} s")
    for key, value in prov.items():  # anything the harness adds later still shows up
        if value is None or value == "":
            continue
        rendered = _code(value) if isinstance(value, (dict, list)) else _cell(value)
        rows.append([_cell(key), rendered])
    lines += _table(["field", "value"], rows)
    return lines


# -- pictures -----------------------------------------------------------------------------
def _scale_info(results: Mapping) -> Optional[Mapping]:
    info = results.get("diff_images")
    return info if isinstance(info, Mapping) and info.get("cases") else None


def _own_scale(case: Mapping, scale: Optional[Mapping]) -> bool:
    return scale is None or _case_id(case) not in set(scale.get("cases") or ())


def _scale_lines(results: Mapping, cases: Sequence[Mapping], img: _Images) -> List[str]:
    lines = [f"## {_heading_anchor('heatmap-scale')}The \\|Δ\\| heatmaps", ""]
    scale = _scale_info(results)
    if scale is None:
        return lines + [
            "Each |Δ| heatmap (|Paddle − PyTorch| of the final CAM, INFERNO colours, white where one side "
            "is NaN) is scaled to **its own maximum**, written under it and beside it: compare the numbers, "
            "not the brightness.", ""]
    own = [c for c in cases if _comparable(c) and _own_scale(c, scale)]
    if not scale.get("scale"):
        return lines + ["Every CAM pair drawn is identical: every |Δ| heatmap is black and says `identical`.", ""]
    lines += [
        f"Every |Δ| heatmap of this report (|Paddle − PyTorch| of the final CAM) uses **one linear scale**: "
        f"black is 0, the brightest colour is {_sci(scale.get('scale'))} ({_cell(scale.get('rule'))}); "
        "larger values saturate, white marks a pixel that is NaN on one side only. Each picture's own "
        "max\\|Δ\\| is the number beside it.", ""]
    if own:
        lines += [f"{len(own)} picture(s) could not be redrawn (their CAM files were missing) and keep their own "
                  "scale; they are marked _own scale_.", ""]
    if img.exists(scale.get("legend")):
        lines += [img(scale.get("legend"), "colour scale of every |Δ| heatmap", LEGEND_WIDTH), ""]
    return lines


def _diff_note(case: Mapping, scale: Optional[Mapping]) -> str:
    text = _sci(case.get("cam_max_abs_diff"))
    return text + (" (own scale)" if scale is not None and _own_scale(case, scale) else "")


def _ablation_lines(by_key: Mapping, setup: str, img: _Images, scale: Optional[Mapping]) -> List[str]:
    modes = [m for m in SMOOTH_MODES if (setup, "ablationcam", m) in by_key]
    lines = [f"## {_heading_anchor('ablationcam-across-the-smoothing-modes')}AblationCAM across the smoothing modes", ""]
    rows: Dict[str, List[str]] = {"Paddle": [], "PyTorch": [], "\\|Δ\\|": [], "max\\|Δ\\|": []}
    for mode in modes:
        case = by_key[(setup, "ablationcam", mode)]
        if case.get("error"):
            for row in rows.values():
                row.append("💥 error")
            continue
        files = _files(case)
        rows["Paddle"].append(img(files["paddle_cam_jpg"], f"Paddle ablationcam {mode}", GALLERY_WIDTH))
        rows["PyTorch"].append(img(files["torch_cam_jpg"], f"PyTorch ablationcam {mode}", GALLERY_WIDTH))
        rows["\\|Δ\\|"].append(img(files["diff_jpg"], f"absolute difference ablationcam {mode}", GALLERY_WIDTH))
        rows["max\\|Δ\\|"].append(_diff_note(case, scale))
    return lines + _table([""] + modes, [[name] + cells for name, cells in rows.items()])


def _methods_lines(by_key: Mapping, setup: str, methods: Sequence[str], img: _Images,
                   scale: Optional[Mapping], links: _Links) -> List[str]:
    present = [m for m in methods if (setup, m, "no_smooth") in by_key]
    title = f"The {len(present)} methods, no smoothing" if len(present) != 1 else "The method, no smoothing"
    lines = [f"## {_heading_anchor('methods-no-smoothing')}{title}", ""]
    rows = []
    for method in present:
        case = by_key[(setup, method, "no_smooth")]
        label = links.case(case, f"{_EMOJI[case_status(case)]} {_cell(method)}")
        if case.get("error"):
            rows.append([label, "💥 error", "💥 error", "💥 error", "—"])
            continue
        files = _files(case)
        rows.append([
            label,
            img(files["paddle_cam_jpg"], f"Paddle {method}", GALLERY_WIDTH),
            img(files["torch_cam_jpg"], f"PyTorch {method}", GALLERY_WIDTH),
            img(files["diff_jpg"], f"absolute difference {method}", GALLERY_WIDTH),
            _diff_note(case, scale),
        ])
    return lines + _table(["method", "Paddle", "PyTorch", "\\|Δ\\|", "max\\|Δ\\|"], rows)


# -- metrics ------------------------------------------------------------------------------
def _seconds_cell(case: Mapping, side: str) -> str:
    text = _secs(case.get(f"{side}_seconds"))
    marks = []
    if (case.get("weights_reused") or {}).get(side):
        marks.append("r")
    if side == "torch" and case.get("torch_cached"):
        marks.append("c")
    return text + (f"<sup>{','.join(marks)}</sup>" if marks else "")


def _metrics_lines(cases: Sequence[Mapping], links: _Links) -> List[str]:
    """Every case in one table that fits the article; several setups are grouped under a row each."""
    multi = len(_setups(cases)) > 1
    header = ["case", "max\\|Δ\\|", "of bound", "pixels identical %", "max grey-level difference (0–255)",
              "first divergent stage", "paddle s", "torch s"]
    rows: List[List[str]] = []
    setup = None
    for case in cases:
        if multi and (case.get("setup") or "") != setup:
            setup = case.get("setup") or ""
            # A row that names the setup: a setup column would not fit beside the others.
            rows.append([f"_{_cell(setup or '(default)')}_"] + [""] * (len(header) - 1))
        status = case_status(case)
        first = case.get("first_divergent_stage")
        rows.append([
            links.case(case, f"{_EMOJI[status]} " + _cell(_short_id(case) if multi else _case_id(case))),
            _sci(case.get("cam_max_abs_diff")),
            "—" if status in ("error", "architectures differ") else _of_bound(case),
            _percent_identical(case.get("overlay_identical_fraction")),
            _int(case.get("overlay_max_diff")),
            f"**{_cell(first)}**" if first else ("error" if status == "error" else "—"),
            _seconds_cell(case, "paddle"),
            _seconds_cell(case, "torch"),
        ])
    header, rows = _drop_empty_columns(header, rows)
    lines = _table(header, rows)
    notes = [f"max\\|Δ\\| and its share of the bound ({_bounds_note(cases)}): the final CAM. Pixels identical: "
             "the share of the overlay's bytes (`show_cam_on_image`, uint8) that are the same on both sides; "
             "mean\\|Δ\\| and every stage are in each case's section."]
    if any("<sup>" in cell and "r" in cell.split("<sup>")[1] for row in rows for cell in row):
        notes.append("<sup>r</sup> the case's channel weights came from an earlier byte-identical pass in the same "
                     "worker (the eigen_smooth twin, or aug_smooth's identity variant), so that time is left out.")
    if any(case.get("torch_cached") for case in cases):
        notes.append("<sup>c</sup> upstream's result came from the cache; its seconds are those of the run that "
                     "filled it.")
    flagged = [case for case in cases if case.get("flags")]
    if flagged:
        # under the table, not as a column: a flag is a sentence, and most runs have none
        notes.append("Flags: " + "; ".join(
            links.case(case, _cell(_case_id(case))) + ": " + _cell(", ".join(str(f) for f in case["flags"]))
            for case in flagged) + ".")
    return lines + [""] + [" ".join(notes)]


# -- one case -----------------------------------------------------------------------------
def _stage_lines(stages: Sequence[Mapping], first: Optional[str]) -> List[str]:
    header = ["stage", "shape", "max\\|Δ\\|", "mean\\|Δ\\|", "bound", "rule", "over / elements", ""]
    rows = []
    for stage in stages:
        name = _cell(stage.get("stage"))
        if first and stage.get("stage") == first:
            name = f"**{name}** ⬅ first divergent"
        rule = _cell(stage.get("bound_rule"))
        if stage.get("note"):
            rule += f"; {_cell(stage['note'])}"
        rows.append([
            name,
            _shape(stage.get("shape")),
            _sci(stage.get("max_abs_diff")),
            _sci(stage.get("mean_abs_diff")),
            _sci(stage.get("bound")),
            rule,
            f"{_int(stage.get('elements_over'))} / {_int(stage.get('elements'))}",
            "✅" if stage.get("passed") else "❌",
        ])
    return _table(header, rows)


def _layer_text(layer: Mapping) -> str:
    parts = [f"torch {_code(layer.get('torch_path', '?'))} {_shape(layer.get('torch_shape'))}",
             f"paddle {_code(layer.get('paddle_path', '?'))} {_shape(layer.get('paddle_shape'))}"]
    text = f"**First divergent layer** ({_cell(layer.get('kind', '?'))}): " + " vs ".join(parts)
    if layer.get("max_abs_diff") is not None:
        text += f": max\\|Δ\\| {_sci(layer.get('max_abs_diff'))}, bound {_sci(layer.get('bound'))}"
    if layer.get("message"):
        text += f". {_cell(layer['message'])}"
    return text


def _case_facts(case: Mapping) -> str:
    status = case_status(case)
    facts = [f"**{status}**"]
    for key, label in (("setup", "setup"), ("model", "model"), ("method", "method"), ("smooth", "smoothing"),
                       ("dtype", "dtype")):
        if case.get(key):
            facts.append(f"{label} `{case[key]}`")
    layers = case.get("target_layers") or {}
    if isinstance(layers, Mapping) and layers:
        if len(set(map(str, layers.values()))) == 1:
            facts.append(f"target layer `{next(iter(layers.values()))}`")
        else:
            facts.append("target layers " + ", ".join(f"{side} `{value}`" for side, value in layers.items()))
    elif case.get("target_layer"):
        facts.append(f"target layer `{case['target_layer']}`")
    if case.get("batch") and case.get("batch") != 1:
        facts.append(f"batch {case['batch']}")
    if case.get("size"):
        facts.append("input " + "×".join(str(s) for s in case["size"]) + " (W×H)")
    if case.get("image_size"):
        facts.append("CAM " + "×".join(str(s) for s in case["image_size"]))
    facts.append(f"bound {_sci(case.get('tolerance'))}")
    facts.append(f"max\\|Δ\\| {_sci(case.get('cam_max_abs_diff'))}")
    facts.append(f"paddle {_secs(case.get('paddle_seconds'))} s")
    facts.append(f"torch {_secs(case.get('torch_seconds'))} s" + (" (cached)" if case.get("torch_cached") else ""))
    return " · ".join(facts)


def _case_lines(case: Mapping, img: _Images, scale: Optional[Mapping], level: str = "###") -> List[str]:
    case_id = _case_id(case)
    status = case_status(case)
    lines = [f"{level} {_heading_anchor(_anchor(case_id))}{_EMOJI[status]} {_cell(case_id)}", "", _case_facts(case), ""]
    targets = case.get("target_categories") or {}
    if targets:
        lines += ["Target categories: " + ", ".join(f"{k} `{v}`" for k, v in targets.items()), ""]
    if case.get("flags"):
        lines += ["Flags: " + ", ".join(f"**{_cell(f)}**" for f in case["flags"]), ""]
    if status == "architectures differ":
        lines += [f"🔶 **Architectures differ**: {_cell(case['architecture_differs'])} This case cannot pass "
                  "and is not a port failure; it is counted neither as passed nor as failed.", ""]
    if isinstance(case.get("first_divergent_layer"), Mapping):
        lines += [_layer_text(case["first_divergent_layer"]), ""]

    # An errored case links no images: any files at its paths are left over from an earlier run.
    files = _files(case)
    pictures = [files["paddle_cam_jpg"], files["torch_cam_jpg"], files["diff_jpg"]]
    if not case.get("error") and (status != "architectures differ" or any(img.exists(p) for p in pictures)):
        images = [
            img(files["paddle_cam_jpg"], f"Paddle {case_id}", CASE_WIDTH),
            img(files["torch_cam_jpg"], f"PyTorch {case_id}", CASE_WIDTH),
            img(files["diff_jpg"], f"absolute difference {case_id}", CASE_WIDTH),
        ]
        lines += _table(["Paddle", "PyTorch", f"\\|Δ\\| (max {_diff_note(case, scale)})"], [images])
        lines.append("")

    stages = case.get("stages") or []
    if stages:
        if status == "passed":
            # A passing case's stage table is one click away: the report stays short, nothing is hidden.
            lines += [f"<details><summary>{len(stages)} stages compared, all within their bounds</summary>", ""]
            lines += _stage_lines(stages, case.get("first_divergent_stage")) + ["", "</details>", ""]
        else:
            lines += _stage_lines(stages, case.get("first_divergent_stage")) + [""]
    if case.get("error"):
        lines += ["**Error:**", ""] + _fenced(case["error"]) + [""]
        message = case.get("message")
        if message and message.strip() != str(case["error"]).strip():
            lines += _fenced(message) + [""]
    elif status in ("failed", "float32 only"):
        lines += _fenced(case.get("message") or "(no message)") + [""]
    return lines


def _failure_lines(cases: Sequence[Mapping]) -> List[str]:
    bad = [c for c in cases if case_status(c) in ("failed", "error", "float32 only")]
    if not bad:
        return []
    lines = [f"## {_heading_anchor('failures-and-errors')}Failures and errors", ""]
    for case in bad:
        status = case_status(case)
        text = case.get("error") if status == "error" else case.get("message")
        lines += [f"<details><summary>{_EMOJI[status]} {html.escape(_case_id(case))}</summary>", ""]
        lines += _fenced(text or "(no message)") + ["", "</details>", ""]
    return lines


# -- the documents ------------------------------------------------------------------------
def _title(results: Mapping) -> str:
    prov = results.get("provenance") or {}
    subtitle = " · ".join(str(prov[k]) for k in ("dtype", "profile", "device") if prov.get(k))
    return f"# {TITLE}" + (f" ({subtitle})" if subtitle else "")


def _first_screen(results: Mapping, cases: Sequence[Mapping], links: _Links) -> List[str]:
    lines = [_title(results), "", verdict_line(results), ""]
    lines += _fallback_lines(results)
    lines += _not_passing_lines(cases, links)
    lines += _matrix_lines(cases, links) + [""]
    return lines


def _contents_line(sections: Sequence[Tuple[str, str]]) -> str:
    return "**Contents:** " + " · ".join(f"[{title}](#{anchor})" for anchor, title in sections)


def _setup_anchor(setup: str) -> str:
    return "setup-" + re.sub(r"[^a-z0-9_-]", "-", (setup or "default").lower())


def render_markdown(results: Mapping, out_dir: Optional[Path] = None,
                    siblings: Optional[Mapping[str, str]] = None, companions: Iterable[str] = ()) -> str:
    """The full reviewer report (``DIR/parity.md``); image paths are relative to DIR.

    The first screen: title, verdict, the verdict matrix, the table of contents
    and the links to ``siblings`` (label -> path relative to the report, e.g.
    ``{"float64": "f64/parity.md", "bench": "bench.md"}``).  With ``out_dir``
    given, a sibling that is not there is left out (unless it is one of
    ``companions``, files written together with this report), and a picture
    that is not there is written as ``missing: `path` `` instead of a broken image.
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
    body += [f"## {_heading_anchor('metrics-all-cases')}Metrics, all cases", ""] + _metrics_lines(cases, links) + [""]
    sections.append(("cases", "Cases"))
    body += [f"## {_heading_anchor('cases')}Cases", ""]
    for setup in setups:
        level = "###"
        if not one_setup:
            body += [f"### {_heading_anchor(_setup_anchor(setup))}Setup {_cell(setup or '(default)')}", ""]
            level = "####"
        for case in cases:
            if (case.get("setup") or "") == setup:
                body += _case_lines(case, img, scale, level)

    lines = _first_screen(results, cases, links)
    lines += [_contents_line(sections), ""]
    other = _siblings_line(siblings, out_dir, companions)
    if other:
        lines += [other, ""]
    lines += _architecture_lines(cases)
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
    lines += [f"## {_heading_anchor('metrics-all-cases')}Metrics, all cases", ""] + _metrics_lines(cases, links)
    failures = _failure_lines(cases)
    if failures:
        lines += [""] + failures
    return _keep_together("\n".join(lines).rstrip("\n") + "\n")


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
        from parity.report_html import render_html

        texts[HTML_NAME] = render_html(results, out_dir, siblings=siblings)
    return texts


def sibling_reports(out_dir: Path, root: Optional[Path] = None) -> Dict[str, str]:
    """The other reports under ``root`` (default: ``out_dir``), as ``siblings`` for ``render_markdown``.

    Every other ``parity.md`` under ``root`` is labelled by its run (``float64
    full``, from its ``parity.json``; its directory when that is missing or
    ambiguous); the timing reports ``root/bench*.md`` and ``root/shards.md`` and
    the paper's table ``root/paper/paper.md`` by their names; paths are relative
    to ``out_dir``.
    """
    import json
    import os

    out_dir = Path(out_dir).resolve()
    root = Path(root).resolve() if root is not None else out_dir
    found: List[Tuple[str, str]] = []
    for report in sorted(root.glob(f"**/{REPORT_NAME}")):
        if report.parent == out_dir or "stages" in report.relative_to(root).parts:
            continue
        label = report.parent.relative_to(root).as_posix() or "."
        try:
            prov = json.loads((report.parent / "parity.json").read_text(encoding="utf-8")).get("provenance") or {}
            label = " ".join(str(prov[k]) for k in ("dtype", "profile") if prov.get(k)) or label
        except (OSError, ValueError, AttributeError):
            pass
        found.append((label, os.path.relpath(report, out_dir)))
    labels = [label for label, _ in found]
    siblings = {}
    for label, path in found:
        if labels.count(label) > 1:
            label = f"{label} ({Path(path).parent.as_posix()})"
        siblings[label] = Path(path).as_posix()
    others = sorted(root.glob("bench*.md")) + [root / "shards.md", root / "paper" / "paper.md"]
    for other in others:
        if other.is_file():
            label = "paper table" if other.name == "paper.md" else other.stem.replace("_", " ")
            siblings[label] = Path(os.path.relpath(other, out_dir)).as_posix()
    return siblings


# -- writing ------------------------------------------------------------------------------
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
