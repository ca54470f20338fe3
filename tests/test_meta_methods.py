"""RefineCAM and SESS against upstream's, on the seeded ResNet50 and a small both.png.

Both meta-methods are compared end to end (the final CAM) in float64, where
the algorithm must agree to float32 rounding, and in float32 against a
measured bound.  SESS's resampling, torchvision's antialiased tensor
``resize``, is also compared with torchvision directly.  SESS and RefineCAM
draw no random numbers.
"""
from __future__ import annotations

import numpy as np
import paddle
import pytest
import torch

from paddle_impl import sess as paddle_sess
from closeness import assert_close as _close
from closeness import assert_float32_close_to_exact

SIZE = 64

# float64: upstream ends in float32 (scale_cam_image), so equal algorithms agree
# to a float32 ulp or two of values in [0, 1] (measured: 0.0 for both methods).
CAM_ATOL_FLOAT64 = 1e-6
# float32, measured on this machine (64x64 both.png, seeded ResNet50; torch's oneDNN and
# Paddle round convolutions differently, ~1e-6 relative):
#   RefineCAM (layer2..layer4, GradCAM++) 1.4e-6, with eigen_smooth=True 6.0e-7;
#   SESS (layer3, 3 scales) 1.0e-6; test_sess_options_match_upstream 5.5e-6 (max pooling,
#   raw scores) and 5.3e-6 (mean pooling, theta 0.2, no blur).  Bound ~9x the worst;
#   the breakage tests below must exceed it.
CAM_ATOL_FLOAT32 = 5e-5


def _assert_cam_close(what: str, got: np.ndarray, expected: np.ndarray, bound: float) -> float:
    return _close(what, got, expected, bound, check_dtype=True)

@pytest.fixture(scope="module", autouse=True)
def _pinned_threads(one_thread):
    """Every test of this module on one thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def models(weights_pair):
    from parity.weights import load_paddle_state_dict, load_torch_state_dict, paddle_resnet50, torch_resnet50

    torch_path, paddle_path, _ = weights_pair
    torch_state, paddle_state = load_torch_state_dict(torch_path), load_paddle_state_dict(paddle_path)
    return {
        dtype: (torch_resnet50(torch_state, dtype), paddle_resnet50(paddle_state, dtype))
        for dtype in ("float32", "float64")
    }


@pytest.fixture(scope="module")
def rgb(reference_image):
    from parity.worker import load_input_image

    return {dtype: load_input_image(str(reference_image), SIZE, dtype) for dtype in ("float32", "float64")}


def _inputs(rgb_image: np.ndarray):
    from pytorch_grad_cam.utils.image import preprocess_image as torch_preprocess

    from paddle_impl.utils.image import preprocess_image as paddle_preprocess
    from parity.worker import IMAGENET_MEAN, IMAGENET_STD

    return torch_preprocess(rgb_image, IMAGENET_MEAN, IMAGENET_STD), paddle_preprocess(rgb_image, IMAGENET_MEAN, IMAGENET_STD)


# -- the resampling ---------------------------------------------------------------

UPSAMPLING = [(48, 48, 62), (64, 64, 82), (64, 64, 262), (33, 47, 61), (47, 33, 50), (7, 9, 100)]
DOWNSAMPLING = [(64, 64, 30), (50, 37, 23), (224, 224, 97)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("height,width,size", UPSAMPLING)
def test_resize_is_torchvisions_antialiased_resize_when_enlarging(dtype, height, width, size):
    """SESS only enlarges (every scale >= the window): there the numpy resize is bit-identical."""
    from torchvision.transforms.functional import resize as torchvision_resize

    image = np.random.RandomState(height * width + size).randn(2, 3, height, width).astype(dtype)
    expected = torchvision_resize(torch.from_numpy(image), size).numpy()
    got = paddle_sess.resize(image, size)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    mismatched = int((got != expected).sum())
    assert mismatched == 0, (
        f"resize {image.shape} -> {size}: {mismatched} of {got.size} values differ from torchvision, "
        f"max|Δ| = {np.abs(got - expected).max():.3g} (bound: identical)"
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("height,width,size", DOWNSAMPLING)
def test_resize_is_within_ulps_of_torchvision_when_shrinking(dtype, height, width, size):
    """Shrinking (not used by SESS's defaults) agrees to a few ulps: torch fuses only some multiply-adds."""
    from torchvision.transforms.functional import resize as torchvision_resize

    image = np.random.RandomState(size).randn(2, 3, height, width).astype(dtype)
    expected = torchvision_resize(torch.from_numpy(image), size).numpy()
    got = paddle_sess.resize(image, size)
    assert got.shape == expected.shape
    # Measured: float32 1.2e-7, float64 2.2e-16 on N(0, 1) data (|values| < 4).
    bound = 1e-6 if dtype == np.float32 else 4e-15
    _assert_cam_close(f"resize {image.shape} -> {size}", got, expected, bound)


def test_resize_returns_the_input_when_the_size_is_unchanged():
    image = np.random.RandomState(0).randn(1, 3, 40, 56).astype(np.float32)
    assert paddle_sess.resize(image, 40) is image


def test_resize_breakage_is_detected(monkeypatch):
    """Rounding each product separately (no fused multiply-add) must already break bit parity."""
    from torchvision.transforms.functional import resize as torchvision_resize

    monkeypatch.setattr(paddle_sess, "_fused_multiply_add", lambda a, b, c: a * b + c)
    image = np.random.RandomState(1).randn(2, 3, 48, 48).astype(np.float32)
    expected = torchvision_resize(torch.from_numpy(image), 62).numpy()
    assert (paddle_sess.resize(image, 62) != expected).any()


@pytest.mark.parametrize(
    "length,step,window", [(64, 64, 64), (82, 64, 64), (262, 64, 64), (100, 30, 48), (40, 8, 48), (97, 13, 20)]
)
def test_window_starts_match_upstream(length, step, window):
    from pytorch_grad_cam import sess as torch_sess

    assert paddle_sess.window_starts(length, step, window) == torch_sess.window_starts(length, step, window)
    assert paddle_sess.sliding_window(length, length + 7, step, window) == torch_sess.sliding_window(
        length, length + 7, step, window
    )


# -- RefineCAM --------------------------------------------------------------------

def _refine_cams(models, rgb, dtype, **call):
    import pytorch_grad_cam

    import paddle_impl

    torch_model, paddle_model = models[dtype]
    torch_x, paddle_x = _inputs(rgb[dtype])
    torch_layers = [torch_model.layer2, torch_model.layer3, torch_model.layer4]
    paddle_layers = [paddle_model.layer2, paddle_model.layer3, paddle_model.layer4]
    expected = pytorch_grad_cam.RefineCAM(torch_model, torch_layers)(torch_x, None, **call)
    with paddle_impl.RefineCAM(paddle_model, paddle_layers) as cam:
        got = cam(paddle_x, None, **call)
    return got, expected


@pytest.mark.parametrize("dtype,bound", [("float64", CAM_ATOL_FLOAT64), ("float32", CAM_ATOL_FLOAT32)])
def test_refine_cam_matches_upstream(models, rgb, dtype, bound):
    got, expected = _refine_cams(models, rgb, dtype)
    _assert_cam_close(f"RefineCAM {dtype}", got, expected, bound)


def test_refine_cam_eigen_smooth_does_what_upstream_does(models, rgb):
    """Upstream passes eigen_smooth into the base CAM's aug_smooth slot; the port makes the same call."""
    got, expected = _refine_cams(models, rgb, "float32", eigen_smooth=True)
    _assert_cam_close("RefineCAM eigen_smooth=True", got, expected, CAM_ATOL_FLOAT32)
    plain, _ = _refine_cams(models, rgb, "float32")
    assert np.abs(got - plain).max() > 1e-3, "eigen_smooth=True should differ from the plain call (it smooths)"


def test_refine_cam_breakage_is_detected(models, rgb, monkeypatch):
    """The final min-max scaling with epsilon 1e-3 instead of 1e-7 must fail the float32 comparison."""
    from paddle_impl import refine_cam

    def scale_with_wrong_epsilon(cam: np.ndarray) -> np.ndarray:
        return np.float32([(img - img.min()) / (1e-3 + (img - img.min()).max()) for img in cam])

    monkeypatch.setattr(refine_cam, "scale_cam_image", scale_with_wrong_epsilon)
    got, expected = _refine_cams(models, rgb, "float32")
    with pytest.raises(AssertionError, match="exceeds the bound"):
        _assert_cam_close("RefineCAM float32 (broken)", got, expected, CAM_ATOL_FLOAT32)


# -- SESS -------------------------------------------------------------------------

SESS_FAST = dict(num_scales=3, batch_size=8)


def _sess_cams(models, rgb_image, dtype, layer="layer3", **options):
    import pytorch_grad_cam

    import paddle_impl

    torch_model, paddle_model = models[dtype]
    torch_x, paddle_x = _inputs(rgb_image)
    expected = pytorch_grad_cam.SESS(torch_model, [getattr(torch_model, layer)], **options)(torch_x)
    with paddle_impl.SESS(paddle_model, [getattr(paddle_model, layer)], **options) as cam:
        got = cam(paddle_x)
    return got, expected


@pytest.mark.parametrize("dtype,bound", [("float64", CAM_ATOL_FLOAT64), ("float32", CAM_ATOL_FLOAT32)])
def test_sess_matches_upstream(models, rgb, dtype, bound):
    got, expected = _sess_cams(models, rgb[dtype], dtype, **SESS_FAST)
    _assert_cam_close(f"SESS {dtype}", got, expected, bound)


def test_sess_options_match_upstream(models, rgb):
    """Max pooling, theta, pre-filtering, raw scores, an explicit target, GradCAM++, eigen_smooth,
    a smaller window with an overlapping step, two images and a non-square input."""
    import pytorch_grad_cam
    from pytorch_grad_cam import GradCAMPlusPlus as TorchGradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget as TorchTarget

    import paddle_impl
    from paddle_impl import GradCAMPlusPlus
    from paddle_impl.utils.model_targets import ClassifierOutputTarget

    image = np.concatenate([rgb["float32"][:40], rgb["float32"][24:, :24]], axis=1)  # 40 x 88
    torch_x, paddle_x = _inputs(image)
    # Two images, the second mirrored, with their own targets (3, and the argmax).
    torch_x, paddle_x = torch.cat([torch_x, torch_x.flip(-1)]), paddle.concat([paddle_x, paddle_x.flip(-1)])
    torch_model, paddle_model = models["float32"]
    options = dict(
        scales=[32, 44], window_size=32, step_size=20, pre_filter_ratio=0.3, theta=0.05, pool="max",
        use_softmax_scores=False, batch_size=5,
    )
    expected = pytorch_grad_cam.SESS(
        torch_model, [torch_model.layer3], base_method=TorchGradCAMPlusPlus, **options
    )(torch_x, [TorchTarget(3), None], eigen_smooth=True)
    with paddle_impl.SESS(paddle_model, [paddle_model.layer3], base_method=GradCAMPlusPlus, **options) as cam:
        got = cam(paddle_x, [ClassifierOutputTarget(3), None], eigen_smooth=True)
    _assert_cam_close("SESS with options", got, expected, CAM_ATOL_FLOAT32)

    # Mean pooling with a theta: a pixel whose patch CAM sits near theta enters or leaves the mean by float32
    # rounding, and the normalised fusion moves with it.  On an AVX2 EPYC (Zen 3) upstream's float32 is 5.9e-2
    # from its own float64 result there, the port's 7.2e-6 (closeness.assert_float32_close_to_exact): the
    # algorithm is compared in float64, the port's float32 against that exact answer.
    mean = dict(theta=0.2, smooth=False, **SESS_FAST)
    results = {}
    for dtype in ("float64", "float32"):
        torch_model, paddle_model = models[dtype]
        image = np.concatenate([rgb[dtype][:40], rgb[dtype][24:, :24]], axis=1)
        torch_x, paddle_x = _inputs(image)
        results["upstream", dtype] = pytorch_grad_cam.SESS(torch_model, [torch_model.layer3], **mean)(torch_x)
        with paddle_impl.SESS(paddle_model, [paddle_model.layer3], **mean) as cam:
            results["port", dtype] = cam(paddle_x)
    _assert_cam_close("SESS mean pooling, theta 0.2, no blur (float64)", results["port", "float64"],
                      results["upstream", "float64"], CAM_ATOL_FLOAT64)
    assert_float32_close_to_exact("SESS mean pooling, theta 0.2, no blur (float32)", results["port", "float32"],
                                  results["upstream", "float32"], results["upstream", "float64"], CAM_ATOL_FLOAT32)


def test_sess_refuses_what_upstream_refuses(models):
    import paddle_impl

    _, paddle_model = models["float32"]
    for bad in (dict(pool="median"), dict(pre_filter_ratio=1.0), dict(num_scales=0)):
        with pytest.raises(ValueError):
            paddle_impl.SESS(paddle_model, [paddle_model.layer4], **bad)
    cam = paddle_impl.SESS(paddle_model, [paddle_model.layer4], scales=[16])
    with pytest.raises(ValueError, match="at least the window size"):
        cam(paddle.zeros([1, 3, 32, 32]))
    with pytest.raises(ValueError, match="one target per image"):
        cam(paddle.zeros([2, 3, 32, 32]), [None])
    cam.release()


def test_sess_breakage_is_detected(models, rgb, monkeypatch):
    """Scoring patches on the raw logits instead of their softmax must fail the float32 comparison."""
    import types

    monkeypatch.setattr(paddle_sess, "F", types.SimpleNamespace(softmax=lambda x, axis: x))
    got, expected = _sess_cams(models, rgb["float32"], "float32", **SESS_FAST)
    with pytest.raises(AssertionError, match="exceeds the bound"):
        _assert_cam_close("SESS float32 (broken)", got, expected, CAM_ATOL_FLOAT32)


@pytest.mark.slow
def test_sess_default_scales_match_upstream(models, rgb):
    """Upstream's defaults: 12 scales from the window (64) up, 122 patches, GradCAM at layer4.

    float32 only (measured 8.3e-7; float64 measured 0.0 but takes ~3 min here).
    """
    got, expected = _sess_cams(models, rgb["float32"], "float32", layer="layer4")
    _assert_cam_close("SESS defaults float32", got, expected, CAM_ATOL_FLOAT32)
