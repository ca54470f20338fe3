"""The reviewer's report of a parity run: ``DIR/parity.md`` and the |Δ| heatmaps.

Everything here works from the ``results`` dict the harness also writes as
``DIR/parity.json`` (provenance, summary, one record per case) and from the
files under ``DIR``; every path in the markdown is relative to ``DIR`` so the
report renders on a repository page when it sits at ``DIR/parity.md``.

This module runs in the orchestrating process, so it imports neither torch nor
paddle: numpy, OpenCV, the standard library and ``paddle_impl.atomic`` (the
``paddle_impl`` package loads Paddle only when a CAM class is first used).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence
from urllib.parse import quote

import cv2
import numpy as np

from paddle_impl import atomic
from parity.registry import METHODS, SMOOTH_MODES

__all__ = [
    "write_diff_image",
    "render_markdown",
    "render_summary_markdown",
    "summary_line",
    "write_report",
    "ensure_diff_images",
    "default_files",
    "REPORT_NAME",
]

REPORT_NAME = "parity.md"
TITLE = "Paddle vs PyTorch Grad-CAM parity report"
DEFAULT_IMAGE = "fixtures/both.png"

_STRIP_HEIGHT = 20
_MIN_WIDTH = 224  # small CAMs (the quick profile's 64x64) are enlarged so the legend text fits
_JPEG_QUALITY = 85
_FONT = cv2.FONT_HERSHEY_SIMPLEX


# -- the |Δ| heatmap ----------------------------------------------------------------------
def _as_2d(cam: np.ndarray) -> np.ndarray:
    cam = np.asarray(cam, dtype=np.float64)
    while cam.ndim > 2 and cam.shape[0] == 1:
        cam = cam[0]
    if cam.ndim != 2:
        raise ValueError(f"expected a (1, H, W) or (H, W) CAM, got shape {cam.shape}")
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


def _encode_jpeg(image: np.ndarray, path: Path) -> None:
    ok, encoded = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), _JPEG_QUALITY])
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")
    atomic.write_bytes(path, encoded.tobytes())


def write_diff_image(paddle_cam: np.ndarray, torch_cam: np.ndarray, path: Path) -> float:
    """Render |paddle - torch| of two (1, H, W) CAMs as a JPEG heatmap at ``path``; return max|Δ|.

    The colours span 0..max|Δ| (INFERNO), so the picture shows *where* the two
    differ; the strip underneath carries a colour bar and the max in absolute
    terms (``max|d| 3.58e-06``).  Identical CAMs give a black image that says
    ``identical``; CAMs of different shapes give one that says so (and inf is
    returned).  Pixels where exactly one side is NaN are drawn white.  CAMs
    narrower than 224 px are enlarged (nearest neighbour) so the text fits.
    """
    path = Path(path)
    p, t = _as_2d(paddle_cam), _as_2d(torch_cam)
    if p.shape != t.shape:
        height, width = t.shape
        factor = _upscale_factor(width)
        canvas = np.zeros((height * factor + _STRIP_HEIGHT, width * factor, 3), np.uint8)
        _put_text_fitting(canvas, "shapes differ", 6, (height * factor) // 2, width * factor - 12)
        canvas[height * factor:] = _legend_strip(width * factor, f"paddle {p.shape} torch {t.shape}", False)
        _encode_jpeg(canvas, path)
        return float("inf")

    diff = _abs_diff(p, t)
    height, width = diff.shape
    factor = _upscale_factor(width)
    finite = np.isfinite(diff)
    max_diff = float(diff.max()) if diff.size else 0.0
    if max_diff == 0.0:
        image = np.zeros((height, width, 3), np.uint8)
        image = cv2.resize(image, (width * factor, height * factor), interpolation=cv2.INTER_NEAREST)
        (tw, th), _ = cv2.getTextSize("identical", _FONT, 0.6, 1)
        x = max(2, (image.shape[1] - tw) // 2)
        _put_text_fitting(image, "identical", x, (image.shape[0] + th) // 2, image.shape[1] - 4, scale=0.6)
        strip = _legend_strip(image.shape[1], "max|d| 0", False)
    else:
        finite_max = float(diff[finite].max()) if finite.any() else 0.0
        scaled = np.zeros_like(diff)
        if finite_max > 0:
            scaled = np.where(finite, diff / finite_max, 0.0)
        gray = np.clip(np.round(scaled * 255.0), 0, 255).astype(np.uint8)
        image = cv2.applyColorMap(gray, cv2.COLORMAP_INFERNO)
        image[~finite] = 255
        image = cv2.resize(image, (width * factor, height * factor), interpolation=cv2.INTER_NEAREST)
        label = f"max|d| {_sci(max_diff)}"
        if not finite.all():
            label = f"max|d| inf (white); finite {_sci(finite_max)}"
        strip = _legend_strip(image.shape[1], label, finite_max > 0)
    _encode_jpeg(np.vstack([image, strip]), path)
    return max_diff


# -- formatting ---------------------------------------------------------------------------
def _sci(value) -> str:
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


def _secs(value) -> str:
    if value is None:
        return "—"
    try:
        return f"{float(value):.2f}"
    except (TypeError, ValueError):
        return str(value)


def _fraction(value) -> str:
    """A fraction in [0, 1] as a percentage that never rounds up to 100 %."""
    if value is None:
        return "—"
    value = float(value)
    if math.isnan(value):
        return "nan"
    if value >= 1.0:
        return "100%"
    return f"{math.floor(value * 10000) / 100:.2f}%"


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


def _fenced(text: str, info: str = "text") -> List[str]:
    text = "" if text is None else str(text)
    longest = max((len(run) for run in re.findall(r"`{3,}", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"{fence}{info}", text.rstrip("\n"), fence]


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _shape(shape) -> str:
    if shape is None:
        return "—"
    return "×".join(str(s) for s in shape) if len(shape) else "scalar"


def _anchor(case_id: str) -> str:
    return "case-" + re.sub(r"[^a-z0-9_-]", "-", str(case_id).replace("+", "p").lower())


# -- the data -----------------------------------------------------------------------------
def default_files(method: str, smooth: str) -> Dict[str, str]:
    """The files of one case, relative to DIR, as the harness lays them out."""
    mode_dir = f"log_{smooth}"
    return {
        "paddle_cam_jpg": f"output_paddle/{mode_dir}/{method}_cam.jpg",
        "torch_cam_jpg": f"output_torch/{mode_dir}/{method}_cam.jpg",
        "paddle_cam_npy": f"output_paddle/{mode_dir}/{method}_cam.npy",
        "torch_cam_npy": f"output_torch/{mode_dir}/{method}_cam.npy",
        "diff_jpg": f"diff/{mode_dir}/{method}_absdiff.jpg",
    }


def _files(case: Dict) -> Dict[str, str]:
    files = dict(default_files(case.get("method", ""), case.get("smooth", "")))
    files.update({k: v for k, v in (case.get("files") or {}).items() if v})
    return files


def _status(case: Dict) -> str:
    if case.get("error"):
        return "error"
    return "passed" if case.get("passed") else "failed"


_EMOJI = {"passed": "✅", "failed": "❌", "error": "💥"}


def _ordered_cases(results: Dict) -> List[Dict]:
    """Cases in registry order (methods outer, smooth modes inner); unknown ones after, as given."""
    cases = list(results.get("cases") or [])
    method_rank = {name: i for i, name in enumerate(METHODS)}
    smooth_rank = {name: i for i, name in enumerate(SMOOTH_MODES)}
    big = len(METHODS) + len(SMOOTH_MODES) + 1

    def key(indexed):
        index, case = indexed
        return (method_rank.get(case.get("method"), big), smooth_rank.get(case.get("smooth"), big), index)

    return [case for _, case in sorted(enumerate(cases), key=key)]


def _counts(results: Dict) -> Dict[str, int]:
    cases = list(results.get("cases") or [])
    return {
        "cases": len(cases),
        "passed": sum(1 for c in cases if _status(c) == "passed"),
        "failed": sum(1 for c in cases if _status(c) == "failed"),
        "errors": sum(1 for c in cases if _status(c) == "error"),
        "overlays_identical": sum(
            1 for c in cases if not c.get("error") and c.get("overlay_identical_fraction") is not None
            and float(c["overlay_identical_fraction"]) >= 1.0
        ),
    }


def summary_line(results: Dict) -> str:
    """``**31/32 cases passed** · overlays byte-identical: 20/32 · errors: 0`` (counted from the cases)."""
    n = _counts(results)
    return (
        f"**{n['passed']}/{n['cases']} cases passed** · overlays byte-identical: "
        f"{n['overlays_identical']}/{n['cases']} · errors: {n['errors']}"
    )


# -- markdown sections --------------------------------------------------------------------
class _Images:
    """Markdown image links relative to DIR; a missing file (when DIR is known) becomes text."""

    def __init__(self, out_dir: Optional[Path]) -> None:
        self.out_dir = None if out_dir is None else Path(out_dir)

    def __call__(self, relative: Optional[str], alt: str) -> str:
        if not relative:
            return "—"
        if self.out_dir is not None and not (self.out_dir / relative).is_file():
            return f"missing: {_code(relative)}"
        return f"![{_cell(alt)}]({quote(str(relative), safe='/+')})"


def _provenance_lines(results: Dict) -> List[str]:
    prov = dict(results.get("provenance") or {})
    lines = ["## Provenance", ""]
    image = dict(prov.pop("image", None) or {})
    weights = dict(prov.pop("weights", None) or {})

    if image.get("fallback"):
        requested = image.get("requested") or DEFAULT_IMAGE
        lines += [
            f"> ⚠️ **WARNING: `{requested}` was not used.** This run used the fallback image "
            f"`{image.get('path', '?')}` instead" + (f" ({image['note']})" if image.get("note") else "")
            + ", so its numbers are not comparable with the reference run.",
            "",
        ]

    rows: List[List[str]] = []

    def take(key: str, label: str, render=lambda v: _cell(v)) -> None:
        if key in prov:
            value = prov.pop(key)
            if value is not None and value != "":
                rows.append([label, render(value)])

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
        if image.get("note"):
            text += f"<br>note: {_cell(image['note'])}"
        if image.get("fallback"):
            text += "<br>**⚠️ fallback image, not the reference fixture**"
        for key, value in image.items():
            if key not in ("path", "sha256", "note", "fallback", "requested") and value not in (None, ""):
                text += f"<br>{_cell(key)}: {_cell(value)}"
        rows.append(["image", text])
    if weights:
        parts = [f"source: {_cell(weights.get('source', '?'))}"]
        for side in ("torch", "paddle"):
            if weights.get(f"{side}_path") or weights.get(f"{side}_sha256"):
                part = f"{side}: {_code(weights.get(f'{side}_path', '?'))}"
                if weights.get(f"{side}_sha256"):
                    part += f" sha256 {_code(weights[f'{side}_sha256'])}"
                parts.append(part)
        for key, value in weights.items():
            if key != "source" and not re.match(r"(torch|paddle)_(path|sha256)$", key) and value not in (None, ""):
                parts.append(f"{_cell(key)}: {_cell(value)}")
        rows.append(["weights", "<br>".join(parts)])
    take("target_rule", "target rule")
    take("jobs", "jobs")
    take("cache", "torch cache")
    take("wall_seconds", "wall time", lambda v: f"{_secs(v)} s")
    for key, value in prov.items():  # anything the harness adds later still shows up
        if value is None or value == "":
            continue
        rendered = _code(value) if isinstance(value, (dict, list)) else _cell(value)
        rows.append([_cell(key), rendered])
    lines += _table(["", ""], rows)
    return lines


def _metrics_lines(cases: List[Dict], link: bool) -> List[str]:
    header = ["case", "passed", "tolerance", "cam max\\|Δ\\|", "cam mean\\|Δ\\|", "overlay identical",
              "overlay max diff", "first divergent stage", "paddle s", "torch s", "flags"]
    rows = []
    for case in cases:
        case_id = str(case.get("id", f"{case.get('method')}-{case.get('smooth')}"))
        name = f"[{_cell(case_id)}](#{_anchor(case_id)})" if link else _cell(case_id)
        reused = case.get("weights_reused") or {}
        paddle_s = _secs(case.get("paddle_seconds")) + (" (reused)" if reused.get("paddle") else "")
        torch_s = _secs(case.get("torch_seconds")) + (" (reused)" if reused.get("torch") else "")
        if case.get("torch_cached"):
            torch_s += " (cached)"
        first = case.get("first_divergent_stage")
        rows.append([
            name,
            _EMOJI[_status(case)],
            _sci(case.get("tolerance")),
            _sci(case.get("cam_max_abs_diff")),
            _sci(case.get("cam_mean_abs_diff")),
            _fraction(case.get("overlay_identical_fraction")),
            _int(case.get("overlay_max_diff")),
            f"**{_cell(first)}**" if first else ("error" if case.get("error") else "—"),
            paddle_s,
            torch_s,
            _cell(", ".join(str(f) for f in case.get("flags") or [])),
        ])
    lines = _table(header, rows)
    if any(any((case.get("weights_reused") or {}).values()) for case in cases):
        lines += ["", "Seconds are the case's `cam(...)` call. _(reused)_: its channel weights came from an "
                  "earlier byte-identical pass in the same worker (the eigen_smooth twin, or aug_smooth's "
                  "identity variant), so that time is left out of this case."]
    return lines


def _ablation_lines(by_id: Dict[str, Dict], img: _Images) -> List[str]:
    modes = list(SMOOTH_MODES)
    lines = ["## AblationCAM across the smoothing modes", ""]
    cases = [by_id.get(f"ablationcam-{mode}") for mode in modes]
    if not any(cases):
        return lines + ["_AblationCAM was not part of this run._"]
    rows = {"Paddle": [], "PyTorch": [], "\\|Δ\\|": [], "max\\|Δ\\|": []}
    for mode, case in zip(modes, cases):
        if case is None:
            for row in rows.values():
                row.append("—")
            continue
        if case.get("error"):
            for row in rows.values():
                row.append("💥 error")
            continue
        files = _files(case)
        rows["Paddle"].append(img(files["paddle_cam_jpg"], f"Paddle ablationcam {mode}"))
        rows["PyTorch"].append(img(files["torch_cam_jpg"], f"PyTorch ablationcam {mode}"))
        rows["\\|Δ\\|"].append(img(files["diff_jpg"], f"|Δ| ablationcam {mode}"))
        rows["max\\|Δ\\|"].append(_sci(case.get("cam_max_abs_diff")))
    return lines + _table([""] + modes, [[name] + cells for name, cells in rows.items()])


def _methods_lines(by_id: Dict[str, Dict], img: _Images) -> List[str]:
    lines = ["## The 8 methods, no smoothing" if len(METHODS) == 8 else "## The methods, no smoothing", ""]
    rows = []
    for method in METHODS:
        case = by_id.get(f"{method}-no_smooth")
        if case is None:
            continue
        if case.get("error"):
            rows.append([f"💥 {_cell(method)}", "💥 error", "💥 error", "💥 error", "—"])
            continue
        files = _files(case)
        rows.append([
            f"{_EMOJI[_status(case)]} {_cell(method)}",
            img(files["paddle_cam_jpg"], f"Paddle {method}"),
            img(files["torch_cam_jpg"], f"PyTorch {method}"),
            img(files["diff_jpg"], f"|Δ| {method}"),
            _sci(case.get("cam_max_abs_diff")),
        ])
    if not rows:
        return lines + ["_No no_smooth case was part of this run._"]
    return lines + _table(["Method", "Paddle", "PyTorch", "\\|Δ\\|", "max\\|Δ\\|"], rows)


def _stage_lines(stages: List[Dict], first: Optional[str]) -> List[str]:
    header = ["stage", "shape", "max\\|Δ\\|", "mean\\|Δ\\|", "bound", "rule", "over / elements", "pass"]
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


def _case_lines(case: Dict, img: _Images) -> List[str]:
    case_id = str(case.get("id", f"{case.get('method')}-{case.get('smooth')}"))
    status = _status(case)
    lines = [f'<a id="{_anchor(case_id)}"></a>', "", f"### {_EMOJI[status]} {case_id}", ""]

    facts = [f"**{status}**"]
    for key, label in (("method", "method"), ("smooth", "smoothing"), ("dtype", "dtype"),
                       ("target_layer", "target layer")):
        if case.get(key):
            facts.append(f"{label} `{case[key]}`")
    if case.get("image_size"):
        facts.append("CAM " + "×".join(str(s) for s in case["image_size"]))
    facts.append(f"tolerance {_sci(case.get('tolerance'))}")
    facts.append(f"cam max|Δ| {_sci(case.get('cam_max_abs_diff'))}")
    facts.append(f"paddle {_secs(case.get('paddle_seconds'))} s")
    facts.append(f"torch {_secs(case.get('torch_seconds'))} s" + (" (cached)" if case.get("torch_cached") else ""))
    lines += [" · ".join(facts), ""]
    targets = case.get("target_categories") or {}
    if targets:
        lines += ["Target categories: " + ", ".join(f"{k} `{v}`" for k, v in targets.items()), ""]
    if case.get("flags"):
        lines += ["Flags: " + ", ".join(f"**{f}**" for f in case["flags"]), ""]

    # An errored case links no images: any files at its paths are left over from an earlier run.
    if not case.get("error"):
        files = _files(case)
        images = [
            img(files["paddle_cam_jpg"], f"Paddle {case_id}"),
            img(files["torch_cam_jpg"], f"PyTorch {case_id}"),
            img(files["diff_jpg"], f"|Δ| {case_id}"),
        ]
        lines += _table(["Paddle", "PyTorch", f"\\|Δ\\| (max {_sci(case.get('cam_max_abs_diff'))})"], [images])
        lines.append("")

    if case.get("stages"):
        lines += _stage_lines(case["stages"], case.get("first_divergent_stage"))
        lines.append("")
    if case.get("error"):
        lines += ["**Error:**", ""] + _fenced(case["error"]) + [""]
        message = case.get("message")
        if message and message.strip() != str(case["error"]).strip():
            lines += _fenced(message) + [""]
    elif not case.get("passed"):
        lines += _fenced(case.get("message") or "(no message)") + [""]
    return lines


def _failure_lines(cases: List[Dict]) -> List[str]:
    bad = [c for c in cases if _status(c) != "passed"]
    if not bad:
        return []
    lines = ["", "## Failures and errors", ""]
    for case in bad:
        status = _status(case)
        text = case.get("error") if status == "error" else case.get("message")
        lines += [f"<details><summary>{_EMOJI[status]} {case.get('id')}</summary>", ""]
        lines += _fenced(text or "(no message)") + ["", "</details>", ""]
    return lines


def _header_lines(results: Dict) -> List[str]:
    prov = results.get("provenance") or {}
    subtitle = " · ".join(str(prov[k]) for k in ("dtype", "profile", "device") if prov.get(k))
    lines = [f"# {TITLE}" + (f" ({subtitle})" if subtitle else ""), ""]
    lines += [summary_line(results), ""]
    bad = [c for c in _ordered_cases(results) if _status(c) != "passed"]
    if bad:
        lines += ["Not passing: " + ", ".join(
            f"{_EMOJI[_status(c)]} `{c.get('id')}`" + (f" (first divergent: {c['first_divergent_stage']})"
                                                       if c.get("first_divergent_stage") else "")
            for c in bad), ""]
    return lines


def render_markdown(results: Dict, out_dir: Optional[Path] = None) -> str:
    """The full reviewer report (``DIR/parity.md``); image paths are relative to DIR.

    With ``out_dir`` given, a link to a file that is not there is written as
    ``missing: `path` `` instead of a broken image.
    """
    img = _Images(out_dir)
    cases = _ordered_cases(results)
    by_id = {str(c.get("id")): c for c in cases}
    lines = _header_lines(results)
    lines += _provenance_lines(results) + [""]
    lines += _ablation_lines(by_id, img) + [""]
    lines += _methods_lines(by_id, img) + [""]
    lines += ["## Metrics, all cases", ""] + _metrics_lines(cases, link=True) + [""]
    lines += ["## Cases", ""]
    for case in cases:
        lines += _case_lines(case, img)
    return "\n".join(lines).rstrip("\n") + "\n"


def render_summary_markdown(results: Dict) -> str:
    """A short report without images: provenance, summary, metrics, failure messages."""
    cases = _ordered_cases(results)
    lines = _header_lines(results)
    lines += _provenance_lines(results) + [""]
    lines += ["## Metrics, all cases", ""] + _metrics_lines(cases, link=False)
    lines += _failure_lines(cases)
    return "\n".join(lines).rstrip("\n") + "\n"


# -- writing ------------------------------------------------------------------------------
def ensure_diff_images(results: Dict, out_dir: Path) -> List[Path]:
    """Write each case's |Δ| image that is missing but whose two CAM .npy files exist."""
    out_dir = Path(out_dir)
    written = []
    for case in results.get("cases") or []:
        if case.get("error"):
            continue  # its .npy files, if any, are left over from an earlier run
        files = _files(case)
        target = out_dir / files["diff_jpg"]
        paddle_npy, torch_npy = out_dir / files["paddle_cam_npy"], out_dir / files["torch_cam_npy"]
        if target.is_file() or not (paddle_npy.is_file() and torch_npy.is_file()):
            continue
        write_diff_image(np.load(paddle_npy, allow_pickle=False), np.load(torch_npy, allow_pickle=False), target)
        written.append(target)
    return written


def write_report(results: Dict, out_dir: Path) -> Path:
    """Write ``out_dir/parity.md`` atomically (rendered in full before anything is written)."""
    out_dir = Path(out_dir)
    ensure_diff_images(results, out_dir)
    text = render_markdown(results, out_dir=out_dir)
    return atomic.write_text(out_dir / REPORT_NAME, text)
