"""Read the input image for ``cam.py`` (and the parity harness) the one, checked way.

Both frameworks get their pixels from :func:`load_rgb_image`, so whatever
conversion an unusual file needs is applied identically on both sides.

For an 8-bit RGB image the result is exactly what upstream's examples compute::

    np.float32(cv2.imread(path, 1)[:, :, ::-1]) / 255

Every 8-bit image is decoded by OpenCV with ``IMREAD_COLOR`` (the flag
``cv2.imread(path, 1)`` uses), so the conversions below are OpenCV's own and
match upstream's example for the same file:

* grayscale (``L``, 1/2/4/8-bit)  -> RGB by replicating the one channel;
* RGBA / grayscale + alpha (``LA``) -> the colour channels, alpha dropped
  (no blending against any background);
* palette (``P``)                  -> RGB through its palette (any
  transparency dropped, as for alpha);
* EXIF orientation (JPEG)          -> applied, as ``cv2.imread`` does.

16-bit images (PNG/TIFF) are decoded at full depth (``IMREAD_COLOR |
IMREAD_ANYDEPTH``) and brought to 8 bits by rounding ``value / 257`` to the
nearest integer, i.e. ``(value + 128) // 257`` (65535 -> 255, exact ties
cannot occur).  ``cv2.imread(path, 1)`` instead keeps the high byte
(``value >> 8``), so for a 16-bit file the pixels can differ from upstream's
example by one level (1/255); 8-bit files are unaffected.

The function returns a short ``note`` naming the conversion ("" for a plain
8-bit RGB image) so the command line can say what happened.

Refused, with a one-line :class:`~paddle_impl.errors.UserError` naming the
path: a missing path, a directory, an unreadable or empty file, a file that is
not an image (or is in a format OpenCV cannot decode), a truncated or corrupt
file, an image wider or taller than :data:`MAX_IMAGE_SIDE` pixels (checked
from the header, before any pixel is decoded), and pixel depths other than 8
or 16 bits.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import List, Tuple, Union

import cv2
import numpy as np

from paddle_impl.errors import UserError, check_readable_file

__all__ = ["MAX_IMAGE_SIDE", "load_rgb_image"]

#: Largest width or height accepted, in pixels.
MAX_IMAGE_SIDE = 8192

_GRAY_MODES = {"1", "L", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _check_file(path: Path) -> None:
    check_readable_file(path, "image", directory_wording="image path")


def _inspect_header(path: Path, max_pixels: int) -> Tuple[str, str]:
    """Check size, integrity and kind with Pillow; return (PIL mode, format name)."""
    from PIL import Image, UnidentifiedImageError

    limit = f"the limit is {MAX_IMAGE_SIDE} pixels per side"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:  # reads the header only
                width, height = image.size
                mode, fmt = image.mode, image.format or "unknown"
        except UnidentifiedImageError:
            raise UserError(f"not an image (or not a format this tool can read): {path}") from None
        except Image.DecompressionBombError as error:
            raise UserError(f"image {path} is too large: {_first_line(error)}; {limit}") from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise UserError(f"image {path} is corrupt: {_first_line(error)}") from None

        if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE:
            raise UserError(f"image {path} is {width}x{height} pixels, too large: {limit}")
        if width * height > max_pixels:
            raise UserError(
                f"image {path} is {width}x{height} pixels, too large: the limit is {max_pixels} pixels in all"
            )
        if width == 0 or height == 0:
            raise UserError(f"image {path} has no pixels ({width}x{height})")

        # Integrity: verify() checks the structure (PNG chunk CRCs, a complete
        # stream); load() decodes and notices a stream that ends early, which
        # OpenCV would otherwise return half grey (JPEG) without complaint.
        try:
            with Image.open(path) as image:
                image.verify()
            with Image.open(path) as image:
                image.load()
        except Exception as error:  # Pillow's decoders raise many types here
            raise UserError(f"image {path} is truncated or corrupt: {_first_line(error)}") from None
    return mode, fmt


def load_rgb_image(
    path: Union[str, "os.PathLike[str]"], max_pixels: int = MAX_IMAGE_SIDE * MAX_IMAGE_SIDE
) -> Tuple[np.ndarray, str]:
    """Read ``path`` as an (H, W, 3) float32 RGB array in [0, 1], plus a note on any conversion.

    See the module docstring for the conversions and for what is refused.
    """
    path = Path(path)
    _check_file(path)
    mode, fmt = _inspect_header(path, max_pixels)

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as error:
        raise UserError(f"image cannot be read: {path} ({error.strerror or _first_line(error)})") from None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
    if bgr is None:
        raise UserError(f"image {path} ({fmt}) cannot be decoded by OpenCV (unsupported format or corrupt data)")

    notes: List[str] = []
    if mode in _GRAY_MODES or mode == "LA" or mode == "La":
        notes.append("grayscale -> RGB (channel replicated)")
    elif mode in ("P", "PA"):
        notes.append("palette -> RGB (via its palette)")
    elif mode == "CMYK":
        notes.append("CMYK -> RGB (OpenCV's conversion)")
    if mode in _ALPHA_MODES or (mode in ("P", "L", "RGB") and bgr.dtype == np.uint8 and _has_transparency(path)):
        notes.append("alpha dropped (not blended)")

    if bgr.dtype == np.uint16:
        bgr = ((bgr.astype(np.uint32) + 128) // 257).astype(np.uint8)
        notes.append("16-bit -> 8-bit (round(value / 257))")
    elif bgr.dtype != np.uint8:
        raise UserError(f"image {path} has {bgr.dtype} pixels; only 8- and 16-bit images are supported")

    if bgr.ndim != 3 or bgr.shape[2] != 3:
        raise UserError(f"image {path} decoded to an unexpected shape {bgr.shape}")
    rgb = np.float32(bgr[:, :, ::-1]) / 255
    return rgb, "; ".join(notes)


def _has_transparency(path: Path) -> bool:
    from PIL import Image

    with Image.open(path) as image:
        return "transparency" in image.info
