"""The |Δ| heatmaps: one picture per case of |Paddle − PyTorch| of the final CAM, and the report's legend.

This module runs in the orchestrating process: numpy, OpenCV and
``paddle_impl.atomic`` only (no torch, no paddle).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from paddle_impl import atomic
from parity.report_cases import _comparable, _files
from parity.report_format import LEGEND_PATH, LEGEND_WIDTH, _sci_ascii

_STRIP_HEIGHT = 20
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
