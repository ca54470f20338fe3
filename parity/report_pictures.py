"""The |Δ| heatmaps: |Paddle − PyTorch| of each case's final CAM, the report's colour bar and one grid.

Every picture uses one logarithmic colour scale, from ``LOG_FLOOR`` (1e-9,
black) to a decade or more past the largest bound of the report (bright
yellow): rounding noise, a difference near the bound and one over it are
three different colours, and the same colour means the same |Δ| in every
picture of every report.  Each picture carries a strip with the colour bar,
a white tick where its case's bound lies, and its max and 99.9th percentile.

This module runs in the orchestrating process: numpy, OpenCV and
``paddle_impl.atomic`` only (no torch, no paddle).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from paddle_impl import atomic
from parity.compare import percentile_999
from parity.report_cases import _comparable, _files
from parity.report_format import GRID_PATH, LEGEND_PATH, LEGEND_WIDTH, _sci_ascii

_STRIP_HEIGHT = 34  # a colour bar with the bound's tick, and one line of numbers under it
# The bottom of the colour scale: below it, |Δ| is float64 noise on a map in [0, 1].
LOG_FLOOR = 1e-9
_MIN_WIDTH = 224  # small CAMs (the quick profile's 64x64) are enlarged so they are not a blur of JPEG blocks
_JPEG_QUALITY = 85
_FONT = cv2.FONT_HERSHEY_SIMPLEX


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


def _log_top(bounds: Sequence[float], largest: float = 0.0) -> float:
    """The top of the colour scale: the decade above ten times the largest bound (``largest`` |Δ| without one)."""
    finite = [float(b) for b in bounds if b is not None and math.isfinite(float(b)) and float(b) > 0]
    reference = max(finite) if finite else (largest if largest > 0 else 1e-4)
    return float(10.0 ** math.ceil(math.log10(reference) + 1.0))


def _log_position(values: np.ndarray, top: float) -> np.ndarray:
    """Where each |Δ| lies on the scale, 0 (``LOG_FLOOR`` or less) .. 1 (``top`` or more)."""
    low, high = math.log10(LOG_FLOOR), math.log10(top)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(np.maximum(np.asarray(values, dtype=np.float64), LOG_FLOOR))
    return np.clip((logs - low) / (high - low), 0.0, 1.0)


def _colour_bar(width: int, height: int) -> np.ndarray:
    ramp = np.linspace(0, 255, max(width, 1)).astype(np.uint8)[None, :]
    return cv2.applyColorMap(np.repeat(ramp, height, axis=0), cv2.COLORMAP_INFERNO)


def _legend_strip(width: int, text: str, top: Optional[float] = None, bound: Optional[float] = None) -> np.ndarray:
    """A black strip: the colour bar (1e-9 .. ``top``) with a white tick at ``bound``, and ``text`` under it."""
    strip = np.zeros((_STRIP_HEIGHT, width, 3), np.uint8)
    if top is not None and width >= 24:
        x0, x1 = 3, width - 3
        strip[3:13, x0:x1] = _colour_bar(x1 - x0, 10)
        if bound:
            x = x0 + int(round(float(_log_position(np.array([bound]), top)[0]) * (x1 - x0 - 1)))
            cv2.line(strip, (x, 0), (x, 16), (255, 255, 255), 2)
    _put_text_fitting(strip, text, 3, _STRIP_HEIGHT - 5, width - 5)
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
        canvas[height * factor:] = _legend_strip(width * factor, label)
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
    """INFERNO colours of ``diff`` on the log scale ``LOG_FLOOR`` .. ``scale``, enlarged; +inf (NaN on one side) is white."""
    height, width = diff.shape
    finite = np.isfinite(diff)
    position = _log_position(np.where(finite, diff, 0.0), scale) if scale > LOG_FLOOR else np.zeros_like(diff)
    gray = np.round(position * 255.0).astype(np.uint8)
    image = cv2.applyColorMap(gray, cv2.COLORMAP_INFERNO)
    image[~finite] = 255
    factor = _upscale_factor(width)
    return cv2.resize(image, (width * factor, height * factor), interpolation=cv2.INTER_NEAREST)


def _numbers(diff: np.ndarray) -> str:
    finite = np.isfinite(diff)
    top = "inf (white)" if not finite.all() else _sci_ascii(float(diff.max()))
    return f"max {top}  p99.9 {_sci_ascii(percentile_999(diff))}"


def write_diff_image(paddle_cam: np.ndarray, torch_cam: np.ndarray, path: Path,
                     bound: Optional[float] = None) -> float:
    """Render |paddle - torch| of two (1, H, W) CAMs as a JPEG heatmap at ``path``; return max|Δ|.

    The colours are the report's log scale (``LOG_FLOOR`` up to a decade past
    ``bound``, or past the picture's own max|Δ| without one); the strip
    underneath draws that colour bar, ticks the bound, and states the max and
    the 99.9th percentile.  Identical CAMs give a black image that says
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
    max_diff = float(diff.max()) if diff.size else 0.0
    _encode(_case_picture(diff, _log_top([bound] if bound else [], _finite_max(diff)), bound), path)
    return max_diff


def _finite_max(diff: np.ndarray) -> float:
    finite = diff[np.isfinite(diff)]
    return float(finite.max()) if finite.size else 0.0


def _case_picture(diff: np.ndarray, top: float, bound: Optional[float]) -> np.ndarray:
    """One case's heatmap (or ``identical``) over its strip."""
    if float(diff.max() if diff.size else 0.0) == 0.0:
        image = _identical_image(*diff.shape)
        return np.vstack([image, _legend_strip(image.shape[1], "max 0", top, bound)])
    image = _heatmap(diff, top)
    label = _numbers(diff) + (f"  bound {_sci_ascii(bound)}" if bound and image.shape[1] >= 300 else "")
    return np.vstack([image, _legend_strip(image.shape[1], label, top, bound)])


def _legend_image(top: float, bounds: Sequence[float]) -> np.ndarray:
    """The report's colour bar: ``LOG_FLOOR`` .. ``top`` in decades, each bound marked, and white for NaN.

    Drawn at twice its display width (``LEGEND_WIDTH``) so its text stays sharp.
    """
    width, height = 2 * LEGEND_WIDTH, 214
    image = np.full((height, width, 3), 255, np.uint8)
    black = (0, 0, 0)
    cv2.putText(image, "|paddle - torch| of the final CAM, log scale", (12, 38), _FONT, 1.15, black, 2, cv2.LINE_AA)
    bar_x0, bar_x1, bar_y0, bar_y1 = 24, width - 250, 86, 140
    image[bar_y0:bar_y1, bar_x0:bar_x1] = _colour_bar(bar_x1 - bar_x0, bar_y1 - bar_y0)
    cv2.rectangle(image, (bar_x0, bar_y0), (bar_x1 - 1, bar_y1 - 1), black, 2)
    low, high = int(round(math.log10(LOG_FLOOR))), int(round(math.log10(top)))
    for exponent in range(low, high + 1):
        x = bar_x0 + int(round(float(_log_position(np.array([10.0 ** exponent]), top)[0]) * (bar_x1 - bar_x0 - 1)))
        cv2.line(image, (x, bar_y1), (x, bar_y1 + 10), black, 3)
        label = f"1e{exponent}"
        (tw, _), _ = cv2.getTextSize(label, _FONT, 0.9, 2)
        cv2.putText(image, label, (min(max(0, x - tw // 2), width - tw - 4), bar_y1 + 44), _FONT, 0.9, black, 2,
                    cv2.LINE_AA)
    for index, bound in enumerate(sorted(set(float(b) for b in bounds if b))):
        x = bar_x0 + int(round(float(_log_position(np.array([bound]), top)[0]) * (bar_x1 - bar_x0 - 1)))
        cv2.line(image, (x, bar_y0 - 12), (x, bar_y1 - 1), (255, 255, 255), 5)
        cv2.line(image, (x, bar_y0 - 12), (x, bar_y1 - 1), black, 2)
        label = f"bound {_sci_ascii(bound)}"
        (tw, _), _ = cv2.getTextSize(label, _FONT, 0.9, 2)
        # neighbouring bounds lie close: the first label ends at its tick, the next starts at its own,
        # and a third pair goes a row higher
        left = x - tw - 6 if index % 2 == 0 else x + 6
        baseline = bar_y0 - 18 - 30 * ((index // 2) % 2)
        cv2.putText(image, label, (min(max(0, left), width - tw - 4), baseline), _FONT, 0.9, black, 2, cv2.LINE_AA)
    swatch = bar_x1 + 36
    cv2.rectangle(image, (swatch, bar_y0), (swatch + 54, bar_y1 - 1), black, 2)
    cv2.putText(image, "NaN on", (swatch + 66, bar_y0 + 22), _FONT, 1.0, black, 2, cv2.LINE_AA)
    cv2.putText(image, "one side", (swatch + 66, bar_y1 - 2), _FONT, 1.0, black, 2, cv2.LINE_AA)
    return image


_TILE = 112  # px of one case's tile in the grid: a profile of 128 cases stays under 1200 px wide and legible
_GRID_COLUMNS = 10
_LABEL_HEIGHT = 30


def _tile(diff: Optional[np.ndarray], top: float, label: Tuple[str, str]) -> np.ndarray:
    tile = np.full((_TILE + _LABEL_HEIGHT, _TILE, 3), 40, np.uint8)
    if diff is not None and diff.size:
        picture = _heatmap(diff, top)
        height, width = picture.shape[:2]
        factor = min(_TILE / width, _TILE / height)
        size = (max(1, int(width * factor)), max(1, int(height * factor)))
        picture = cv2.resize(picture, size, interpolation=cv2.INTER_NEAREST)
        y, x = (_TILE - size[1]) // 2, (_TILE - size[0]) // 2
        tile[y:y + size[1], x:x + size[0]] = picture
    else:
        _put_text_fitting(tile, "shapes differ", 4, _TILE // 2, _TILE - 8)
    for row, text in enumerate(label):
        _put_text_fitting(tile, text, 2, _TILE + 12 + 14 * row, _TILE - 4, scale=0.35)
    return tile


def _grid_image(entries: Sequence[Tuple[Tuple[str, str], Optional[np.ndarray]]], top: float) -> np.ndarray:
    """Every case's heatmap as one tile of a grid, labelled, on the report's one scale."""
    columns = min(_GRID_COLUMNS, max(1, len(entries)))
    rows = math.ceil(len(entries) / columns)
    gap = 4
    width = columns * (_TILE + gap) + gap
    image = np.full((rows * (_TILE + _LABEL_HEIGHT + gap) + gap, width, 3), 255, np.uint8)
    for index, (label, diff) in enumerate(entries):
        row, column = divmod(index, columns)
        y, x = gap + row * (_TILE + _LABEL_HEIGHT + gap), gap + column * (_TILE + gap)
        image[y:y + _TILE + _LABEL_HEIGHT, x:x + _TILE] = _tile(diff, top, label)
    return image


def _grid_label(case: Mapping) -> Tuple[str, str]:
    setup = str(case.get("setup") or "")
    return (setup or str(case.get("method", "")), f"{case.get('method')} {case.get('smooth')}" if setup
            else str(case.get("smooth", "")))


def write_diff_images(results: Dict, out_dir: Path, scale: Optional[float] = None) -> Dict:
    """Redraw every case's |Δ| heatmap on the report's one log scale; write its colour bar and grid.

    Each case's ``diff_jpg`` is rendered from its two ``*_cam.npy`` files
    (cases that errored, and cases whose files are not there, are skipped).
    The scale runs from ``LOG_FLOOR`` to a decade past the largest bound of
    the cases that can pass (``_log_top``), or to ``scale`` when given.  The
    colour bar (every bound marked) goes to ``DIR/diff/legend.png`` and one
    grid of every case's heatmap to ``DIR/diff/grid.jpg``.  What was drawn is
    recorded in ``results["diff_images"]`` (scale, floor, bounds, the case ids
    drawn, each one's 99.9th percentile of |Δ|), which the renderers read;
    the same dict is returned.
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

    comparable = [c for c, *_ in drawn if _comparable(c)]
    bounds = sorted({float(c["tolerance"]) for c in comparable if c.get("tolerance")})
    largest = max((_finite_max(d) for c, _, d, _ in drawn if d is not None and _comparable(c)), default=0.0)
    if scale is None:
        top = _log_top(bounds, largest)
        rule = "log scale from 1e-9 to a decade past the largest bound"
    else:
        top = float(scale)
        rule = "a fixed top"
    percentiles: Dict[str, float] = {}
    for case, target, diff, (p, t) in drawn:
        if diff is None:
            image = _shapes_differ_image(p, t, with_strip=False)
        else:
            image = _case_picture(diff, top, case.get("tolerance"))
            percentiles[str(case.get("id"))] = percentile_999(diff)
        _encode(image, target)
    info = {"scale": top, "floor": LOG_FLOOR, "bounds": bounds, "rule": rule, "legend": LEGEND_PATH,
            "grid": GRID_PATH, "cases": [str(c.get("id")) for c, *_ in drawn], "p999": percentiles}
    if drawn:
        _encode(_legend_image(top, bounds), out_dir / LEGEND_PATH)
        grid = _grid_image([(_grid_label(c), d) for c, _, d, _ in drawn], top)
        legend = _legend_image(top, bounds)
        legend = cv2.resize(legend, (grid.shape[1], round(legend.shape[0] * grid.shape[1] / legend.shape[1])),
                            interpolation=cv2.INTER_AREA)
        _encode(np.vstack([grid, legend]), out_dir / GRID_PATH)
        results["diff_images"] = info
    return info
