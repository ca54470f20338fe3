"""SESS's cheaper paths give the same numbers as the ones they replace.

* Patch scores read from the base CAM's own forward pass (one network pass
  per patch instead of upstream's two) equal the scores of a separate
  scoring pass, so the fused CAM is the same, bit for bit.
* The vectorised, cached antialiasing weights equal the per-index scalar
  arithmetic they replace (ATen's float/double mix), bit for bit.

The end-to-end comparison with upstream stays in tests/test_meta_methods.py.
"""
from __future__ import annotations

import math

import numpy as np
import paddle
import pytest

from paddle_impl import sess as paddle_sess

SIZE = 32
SESS_FAST = dict(num_scales=3, batch_size=8)


@pytest.fixture(scope="module", autouse=True)
def _pinned_threads(one_thread):
    """Every test of this module on one thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def paddle_models(weights_pair):
    """The seeded ResNet50 per dtype, built on first use (the float64 one only for the slow test)."""
    from parity.weights import load_paddle_state_dict, paddle_resnet50

    _, paddle_path, _ = weights_pair
    built = {}

    def model(dtype: str) -> paddle.nn.Layer:
        if dtype not in built:
            built[dtype] = paddle_resnet50(load_paddle_state_dict(paddle_path), dtype)
        return built[dtype]

    return model


def _input(reference_image, dtype: str) -> paddle.Tensor:
    from paddle_impl.utils.image import preprocess_image
    from parity.worker import IMAGENET_MEAN, IMAGENET_STD, load_input_image

    rgb = load_input_image(str(reference_image), SIZE, dtype)
    return preprocess_image(rgb, IMAGENET_MEAN, IMAGENET_STD).astype(dtype)


class _ImageCounter:
    """Counts the images the model is run on (the sum of the batch sizes of its forward calls)."""

    def __init__(self, model: paddle.nn.Layer) -> None:
        self.images = 0
        self.handle = model.register_forward_pre_hook(self._count)

    def _count(self, layer, inputs):
        self.images += int(inputs[0].shape[0])

    def remove(self) -> None:
        self.handle.remove()


def _sess(model, x, separate_scoring: bool, monkeypatch, engine: bool = True, **options):
    import paddle_impl

    with monkeypatch.context() as patch:
        if separate_scoring:
            patch.setattr(paddle_sess.SESS, "scores_come_with_cams", lambda self: False)
        counter = _ImageCounter(model)
        try:
            with paddle_impl.SESS(model, [model.layer3], **options) as cam:
                cam.base_cam.inference_engine = engine
                result = cam(x)
        finally:
            counter.remove()
    return result, counter.images


def _patch_count(height: int, width: int, window: int, scales) -> int:
    count = 0
    for scale in scales:
        short, long = min(height, width), max(height, width)
        scaled_long = int(scale * long / short)
        count += len(paddle_sess.window_starts(scale, window, window)) * len(
            paddle_sess.window_starts(scaled_long, window, window)
        )
    return count


@pytest.mark.parametrize("dtype", [pytest.param("float64", marks=pytest.mark.slow), "float32"])
def test_scores_from_the_base_pass_give_the_same_cam(paddle_models, reference_image, dtype, monkeypatch):
    """One pass per patch (scores read from the base CAM) equals upstream's two passes, bit for bit.

    Both on the dynamic graph: with the base's compiled prefix
    (``paddle_impl.prefix_engine``, from its second batch of patches) the
    scores are that forward's, within float32 rounding of a separate pass.
    """
    model, x = paddle_models(dtype), _input(reference_image, dtype)
    shared, shared_images = _sess(model, x, False, monkeypatch, engine=False, **SESS_FAST)
    separate, separate_images = _sess(model, x, True, monkeypatch, engine=False, **SESS_FAST)
    patches = _patch_count(SIZE, SIZE, SIZE, [SIZE + round(SIZE * 2 / 7) * i for i in range(3)])
    # Each path: one forward for the image's target, then one per patch for the CAMs, and
    # upstream's separate scoring adds one more per patch.
    assert shared_images == patches + 1
    assert separate_images == 2 * patches + 1
    np.testing.assert_array_equal(shared, separate)


def test_pre_filtering_keeps_the_separate_scoring_pass(paddle_models, reference_image, monkeypatch):
    """With pre-filtering the scores choose which patches get a CAM, so they come first, as upstream."""
    model, x = paddle_models("float32"), _input(reference_image, "float32")
    options = dict(SESS_FAST, pre_filter_ratio=0.5)
    _, images = _sess(model, x, False, monkeypatch, **options)
    patches = _patch_count(SIZE, SIZE, SIZE, [SIZE + round(SIZE * 2 / 7) * i for i in range(3)])
    assert images == 1 + patches + (patches - int(patches * 0.5))


def test_only_plain_base_forwards_lend_their_scores(paddle_models):
    """A base CAM with its own forward, a second-order graph or an input gradient keeps upstream's scoring pass."""
    from paddle_impl import FullGrad, GradCAM, ScoreCAM, ShapleyCAM

    model = paddle_models("float32")
    for base, shared in ((GradCAM, True), (ScoreCAM, False), (ShapleyCAM, False), (FullGrad, False)):
        cam = paddle_sess.SESS(model, [] if base is FullGrad else [model.layer4], base_method=base)
        try:
            assert cam.scores_come_with_cams() is shared, base.__name__
        finally:
            cam.release()


# -- the antialiasing weights -------------------------------------------------------------


def _scalar_antialias_weights(input_size: int, output_size: int, dtype):
    """The weights index by index, in numpy scalars: the C++ loop of ``_compute_indices_min_size_weights_aa``."""
    real = np.dtype(dtype).type
    scale = real(input_size) / real(output_size)
    support = real(np.float64(scale)) if scale >= 1.0 else real(1.0)
    taps = int(math.ceil(float(support))) * 2 + 1
    inverse_scale = real(1.0 / np.float64(scale)) if scale >= 1.0 else real(1.0)
    starts = np.zeros(output_size, dtype=np.int64)
    weights = np.zeros((output_size, taps), dtype=dtype)
    for i in range(output_size):
        center = real(np.float64(scale) * (i + 0.5))
        first = max(int(np.float64(real(center - support)) + 0.5), 0)
        count = min(max(min(int(np.float64(real(center + support)) + 0.5), input_size) - first, 0), taps)
        row, total = [], real(0.0)
        for j in range(count):
            distance = abs(real((np.float64(real(real(j + first) - center)) + 0.5) * np.float64(inverse_scale)))
            w = real(1.0 - np.float64(distance)) if distance < 1.0 else real(0.0)
            row.append(w)
            total = real(total + w)
        if total != 0.0:
            row = [real(w / total) for w in row]
        starts[i] = first
        weights[i, :count] = row
    return starts, weights


SIZES = [1, 2, 3, 7, 13, 32, 47, 64, 96, 224]
TARGETS = [1, 5, 30, 62, 82, 100, 262, 288, 928]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vectorised_antialias_weights_equal_the_scalar_loop(dtype):
    for input_size in SIZES:
        for output_size in TARGETS:
            expected_starts, expected_weights = _scalar_antialias_weights(input_size, output_size, dtype)
            starts, weights = paddle_sess._antialias_weights(input_size, output_size, np.dtype(dtype))
            np.testing.assert_array_equal(starts, expected_starts, err_msg=f"{input_size} -> {output_size}")
            assert weights.dtype == expected_weights.dtype
            np.testing.assert_array_equal(weights, expected_weights, err_msg=f"{input_size} -> {output_size}")
            # The cached arrays are shared between calls: nobody may change them.
            assert not weights.flags.writeable and not starts.flags.writeable


def test_antialias_weights_comparison_catches_a_different_rounding():
    """The same weights computed all in double, rounded once at the end, differ: the check sees the mix."""
    differing = 0
    for input_size in SIZES:
        for output_size in TARGETS:
            _, weights = paddle_sess._antialias_weights(input_size, output_size, np.dtype(np.float32))
            _, in_double = _scalar_antialias_weights(input_size, output_size, np.float64)
            differing += int(not np.array_equal(weights, in_double.astype(np.float32)))
    assert differing > 0
