"""paddle_impl.image_io.load_rgb_image: the pixels upstream's examples read, and every refusal."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from paddle_impl.errors import UserError
from paddle_impl.image_io import MAX_IMAGE_SIDE, load_rgb_image

REPO_ROOT = Path(__file__).resolve().parent.parent
BOTH = REPO_ROOT / "fixtures" / "both.png"


@pytest.fixture(scope="module")
def both_bgr() -> np.ndarray:
    if not BOTH.exists():
        pytest.fail(f"{BOTH} is missing: run `make fixtures`")
    return cv2.imread(str(BOTH), 1)


def _refused(path, match: str, **kwargs) -> str:
    with pytest.raises(UserError, match=match) as info:
        load_rgb_image(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    return message


# -- the pixels --------------------------------------------------------------------


def test_both_png_equals_upstream_example(both_bgr):
    rgb, note = load_rgb_image(BOTH)
    expected = np.float32(cv2.imread(str(BOTH), 1)[:, :, ::-1]) / 255
    assert note == ""
    assert rgb.dtype == np.float32 and rgb.shape == (224, 224, 3)
    assert np.array_equal(rgb, expected)


def test_accepts_str_path():
    rgb, _ = load_rgb_image(str(BOTH))
    assert rgb.shape == (224, 224, 3)


def test_grayscale_is_replicated(tmp_path, both_bgr):
    gray = cv2.cvtColor(both_bgr, cv2.COLOR_BGR2GRAY)
    path = tmp_path / "gray.png"
    cv2.imwrite(str(path), gray)
    rgb, note = load_rgb_image(path)
    assert "grayscale" in note
    expected = np.float32(gray) / 255
    for channel in range(3):
        assert np.array_equal(rgb[:, :, channel], expected)
    assert np.array_equal(rgb, np.float32(cv2.imread(str(path), 1)[:, :, ::-1]) / 255)


def test_rgba_alpha_is_dropped_not_blended(tmp_path, both_bgr):
    bgra = cv2.cvtColor(both_bgr, cv2.COLOR_BGR2BGRA)
    bgra[:, :, 3] = np.linspace(0, 255, bgra.shape[1], dtype=np.uint8)[None, :]  # varied alpha
    path = tmp_path / "rgba.png"
    cv2.imwrite(str(path), bgra)
    rgb, note = load_rgb_image(path)
    assert "alpha" in note
    assert np.array_equal(rgb, np.float32(both_bgr[:, :, ::-1]) / 255)


def test_gray_alpha_is_replicated_and_alpha_dropped(tmp_path):
    image = Image.open(BOTH).convert("LA")
    path = tmp_path / "la.png"
    image.save(path)
    rgb, note = load_rgb_image(path)
    assert "grayscale" in note and "alpha" in note
    luminance = np.float32(np.asarray(image)[:, :, 0]) / 255
    for channel in range(3):
        assert np.array_equal(rgb[:, :, channel], luminance)


def test_palette_goes_through_its_palette(tmp_path):
    image = Image.open(BOTH).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    path = tmp_path / "palette.png"
    image.save(path)
    rgb, note = load_rgb_image(path)
    assert "palette" in note
    assert np.array_equal(rgb, np.float32(np.asarray(image.convert("RGB"))) / 255)


def test_sixteen_bit_rounds_value_over_257(tmp_path):
    values = np.array([0, 128, 129, 385, 386, 32767, 32896, 65406, 65407, 65535], dtype=np.uint16)
    bgr16 = np.stack([values, values[::-1], values], axis=-1)[None, :, :]  # 1 x 10 x 3
    path = tmp_path / "sixteen.png"
    cv2.imwrite(str(path), bgr16)
    rgb, note = load_rgb_image(path)
    assert "16-bit" in note
    expected8 = np.round(bgr16.astype(np.float64) / 257).astype(np.uint8)
    assert np.array_equal(expected8[0, :, 0], [0, 0, 1, 1, 2, 127, 128, 254, 255, 255])
    assert np.array_equal(rgb, np.float32(expected8[:, :, ::-1]) / 255)


def test_sixteen_bit_grayscale(tmp_path):
    gray16 = (np.arange(64, dtype=np.uint16) * 1000).reshape(8, 8)
    path = tmp_path / "gray16.png"
    cv2.imwrite(str(path), gray16)
    rgb, note = load_rgb_image(path)
    assert "grayscale" in note and "16-bit" in note
    expected = np.float32((gray16.astype(np.uint32) + 128) // 257) / 255
    for channel in range(3):
        assert np.array_equal(rgb[:, :, channel], expected)


# -- refusals ----------------------------------------------------------------------


def test_missing(tmp_path):
    _refused(tmp_path / "nope.png", "not found")


def test_directory(tmp_path):
    _refused(tmp_path, "directory")


def test_unreadable(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their permissions")
    path = tmp_path / "locked.png"
    path.write_bytes(BOTH.read_bytes())
    path.chmod(0)
    try:
        _refused(path, "cannot be read")
    finally:
        path.chmod(0o644)


def test_unreadable_message(tmp_path, monkeypatch):
    """The same branch as test_unreadable, reachable as root: open() fails with EACCES."""
    import builtins
    import errno

    path = tmp_path / "locked.png"
    path.write_bytes(BOTH.read_bytes())
    real_open = builtins.open

    def denying_open(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denying_open)
    message = _refused(path, "cannot be read")
    assert "Permission denied" in message


def test_zero_bytes(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    _refused(path, "empty")


def test_text_renamed_png(tmp_path):
    path = tmp_path / "text.png"
    path.write_text("this is not an image\n")
    _refused(path, "not an image")


def test_truncated_png_is_refused_not_half_decoded(tmp_path):
    data = BOTH.read_bytes()
    path = tmp_path / "half.png"
    path.write_bytes(data[: len(data) // 2])
    _refused(path, "truncated or corrupt")


def test_corrupt_png_crc(tmp_path):
    data = bytearray(BOTH.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 16] = bytes(255 - b for b in data[middle : middle + 16])
    path = tmp_path / "flipped.png"
    path.write_bytes(bytes(data))
    _refused(path, "truncated or corrupt")


def test_truncated_jpeg(tmp_path):
    path = tmp_path / "full.jpg"
    Image.open(BOTH).save(path, quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _refused(cut, "truncated or corrupt")


@pytest.mark.parametrize("size", [(9000, 9000), (9000, 1), (1, MAX_IMAGE_SIDE + 1)])
def test_oversized_refused_from_header(tmp_path, size):
    path = tmp_path / "big.png"
    Image.new("1", size).save(path)  # 1-bit: small on disk
    message = _refused(path, "too large")
    assert f"{size[0]}x{size[1]}" in message
    assert str(MAX_IMAGE_SIDE) in message


def test_largest_side_accepted_and_max_pixels_enforced(tmp_path):
    path = tmp_path / "edge.png"
    Image.new("L", (MAX_IMAGE_SIDE, 2)).save(path)
    rgb, _ = load_rgb_image(path)
    assert rgb.shape == (2, MAX_IMAGE_SIDE, 3)
    message = _refused(path, "too large", max_pixels=1000)
    assert "1000" in message


def test_oversized_not_decoded(tmp_path, monkeypatch):
    """The size check runs on the header: no pixel decoder is ever called."""
    path = tmp_path / "big.png"
    Image.new("1", (9000, 9000)).save(path)

    def no_decode(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(cv2, "imdecode", no_decode)
    monkeypatch.setattr(Image.Image, "load", no_decode)
    _refused(path, "too large")
