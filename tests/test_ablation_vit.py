"""AblationLayerVit inside AblationCAM, and the reshape transforms, against upstream's.

The model pair is a small vision transformer written here in both frameworks
(patch-embedding convolution, class token, position embedding, two
pre-norm blocks with multi-head attention and a GELU MLP, final norm, head on
the class token), the Paddle one loaded with the torch one's weights.  The
target is the last block's ``norm1``, as in upstream's ViT example, with
``vit_reshape_transform``'s token layout.  Nothing here draws random numbers
after the weights are made (``torch.manual_seed(0)``).
"""
from __future__ import annotations

import numpy as np
import paddle
import pytest
import torch

from paddle_impl import ablation_layer as paddle_ablation_layer
from paddle_impl.utils import reshape_transforms as paddle_reshape

from model_pairs import CLASSES, GRID, PATCH, make_vit_pair
from closeness import assert_close

# Final-CAM bounds.  float64: upstream ends in float32 (its weights are np.float32),
# measured 0.0.  float32, measured on this machine: 4.5e-7 (2 images, 32x32).
# AblationCAM's weights are (y - y_k) / y of two close float32 scores, the
# noisiest of the methods (parity/registry.py allows it 5e-4 on ResNet50);
# bound here 1e-5, ~20x.
CAM_ATOL = {"float64": 1e-6, "float32": 1e-5}


@pytest.fixture(scope="module", autouse=True)
def _pinned_threads(one_thread):
    """Every test of this module on one thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def vit_pairs():
    return {dtype: make_vit_pair(dtype) for dtype in ("float32", "float64")}


def _images(dtype: str) -> np.ndarray:
    return np.random.RandomState(0).randn(2, 3, GRID * PATCH, GRID * PATCH).astype(dtype)


def test_the_vit_pair_agrees(vit_pairs):
    for dtype, bound in (("float64", 1e-12), ("float32", 1e-5)):
        torch_model, paddle_model = vit_pairs[dtype]
        x = _images(dtype)
        with torch.no_grad():
            expected = torch_model(torch.from_numpy(x)).numpy()
        got = paddle_model(paddle.to_tensor(x)).numpy()
        assert_close(f"ViT logits {dtype}", got, expected, bound * np.abs(expected).max())


# -- AblationCAM + AblationLayerVit ---------------------------------------------

def _ablation_cams(vit_pairs, dtype):
    from pytorch_grad_cam import AblationCAM as TorchAblationCAM
    from pytorch_grad_cam import AblationLayerVit as TorchAblationLayerVit
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform as torch_vit_reshape

    from paddle_impl import AblationCAM, AblationLayerVit

    torch_model, paddle_model = vit_pairs[dtype]
    x = _images(dtype)
    with TorchAblationCAM(
        torch_model, [torch_model.blocks[-1].norm1], reshape_transform=lambda t: torch_vit_reshape(t, GRID, GRID),
        ablation_layer=TorchAblationLayerVit(),
    ) as cam:
        expected = cam(torch.from_numpy(x), None)
    with AblationCAM(
        paddle_model, [paddle_model.blocks[-1].norm1],
        reshape_transform=lambda t: paddle_reshape.vit_reshape_transform(t, GRID, GRID),
        ablation_layer=AblationLayerVit(),
    ) as cam:
        got = cam(paddle.to_tensor(x), None)
        shortcut_used = cam.shortcut_used
    # The layers after norm1 read the block's residual input, which a run of only
    # those layers cannot provide: AblationCAM must have run the whole model.
    assert shortcut_used is False, "AblationCAM took its after-the-target-layer shortcut on a ViT"
    # The ablation layer is swapped back out.
    assert paddle_model.blocks[-1].norm1.__class__ is paddle.nn.LayerNorm
    return got, expected


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_ablation_cam_with_ablation_layer_vit_matches_upstream(vit_pairs, dtype):
    got, expected = _ablation_cams(vit_pairs, dtype)
    assert_close(f"AblationCAM + AblationLayerVit {dtype}", got, expected, CAM_ATOL[dtype])


def test_ablation_layer_vit_breakage_is_detected(vit_pairs, monkeypatch):
    """Ablating with 0 instead of upstream's (min - 1e7) must fail the float64 comparison."""
    monkeypatch.setattr(
        paddle_ablation_layer, "ablation_values", lambda initial_min, count: np.zeros(count, initial_min.dtype)
    )
    got, expected = _ablation_cams(vit_pairs, "float64")
    with pytest.raises(AssertionError, match="exceeds the bound"):
        assert_close("AblationCAM + AblationLayerVit (broken)", got, expected, CAM_ATOL["float64"])


@pytest.mark.parametrize("shape", [(2, 17, 8), (2, 4, 4, 8)])
@pytest.mark.parametrize("shift", [0.0, 0.3])
def test_ablation_layer_vit_batch_is_upstreams(shape, shift):
    """One batch of ablated tokens, (tokens, C) and (H, W, C), post-ReLU (min 0) and shifted (min > 0)."""
    from pytorch_grad_cam.ablation_layer import AblationLayerVit as TorchAblationLayerVit

    acts = (np.maximum(np.random.RandomState(len(shape)).randn(*shape), 0) + shift).astype(np.float32)
    channels = np.array([3, 0, 7, 5], dtype=np.int32)
    upstream = TorchAblationLayerVit()
    upstream.indices = channels
    upstream.set_next_batch(1, torch.from_numpy(acts), len(channels))
    expected = upstream(None).numpy()

    port = paddle_ablation_layer.AblationLayerVit()
    port.set_next_batch(acts[1], channels)
    np.testing.assert_array_equal(port(None).numpy(), expected)


def test_ablation_layer_vit_refuses_reshaped_activations():
    port = paddle_ablation_layer.AblationLayerVit()
    with pytest.raises(ValueError, match="class token"):
        port.set_next_batch(np.zeros((16, 4, 4), np.float32), np.arange(16, dtype=np.int32))


def _tiny_cnn_pair(dtype: str):
    """conv-ReLU-conv-ReLU-pool-linear in both frameworks, the torch weights copied over."""
    torch.manual_seed(1)
    torch_model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(6, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, CLASSES),
    )
    torch_model = (torch_model.double() if dtype == "float64" else torch_model.float()).eval()
    previous = paddle.get_default_dtype()
    paddle.set_default_dtype(dtype)
    try:
        paddle_model = paddle.nn.Sequential(
            paddle.nn.Conv2D(3, 6, 3, padding=1), paddle.nn.ReLU(), paddle.nn.Conv2D(6, 8, 3, stride=2, padding=1),
            paddle.nn.ReLU(), paddle.nn.AdaptiveAvgPool2D(1), paddle.nn.Flatten(), paddle.nn.Linear(8, CLASSES),
        )
    finally:
        paddle.set_default_dtype(previous)
    paddle_model.set_state_dict(
        {
            name: np.ascontiguousarray(value.detach().numpy().T if name == "6.weight" else value.detach().numpy())
            for name, value in torch_model.state_dict().items()
        }
    )
    paddle_model.eval()
    return torch_model, paddle_model


def test_ablation_cam_on_a_cnn_still_takes_its_shortcut_and_matches_upstream():
    """With the plain AblationLayer the shortened replay is exact, so the shortcut is taken (float64)."""
    from pytorch_grad_cam import AblationCAM as TorchAblationCAM

    from paddle_impl import AblationCAM

    torch_model, paddle_model = _tiny_cnn_pair("float64")
    x = np.random.RandomState(2).randn(2, 3, 12, 12)
    with TorchAblationCAM(torch_model, [torch_model[2]]) as cam:
        expected = cam(torch.from_numpy(x), None)
    with AblationCAM(paddle_model, [paddle_model[2]]) as cam:
        got = cam(paddle.to_tensor(x), None)
        assert cam.shortcut_used is True
    assert_close("AblationCAM on a CNN, float64", got, expected, CAM_ATOL["float64"])


# -- reshape transforms -----------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_token_reshape_transforms_are_upstreams(dtype):
    from pytorch_grad_cam.utils import reshape_transforms as torch_reshape

    rng = np.random.RandomState(5)
    tokens = rng.randn(2, 1 + 3 * 4, 6).astype(dtype)
    np.testing.assert_array_equal(
        paddle_reshape.vit_reshape_transform(paddle.to_tensor(tokens), 3, 4).numpy(),
        torch_reshape.vit_reshape_transform(torch.from_numpy(tokens), 3, 4).numpy(),
    )
    swin = rng.randn(2, 3 * 4, 6).astype(dtype)
    np.testing.assert_array_equal(
        paddle_reshape.swinT_reshape_transform(paddle.to_tensor(swin), 3, 4).numpy(),
        torch_reshape.swinT_reshape_transform(torch.from_numpy(swin), 3, 4).numpy(),
    )
    default = rng.randn(1, 1 + 14 * 14, 4).astype(dtype)
    np.testing.assert_array_equal(
        paddle_reshape.vit_reshape_transform(paddle.to_tensor(default)).numpy(),
        torch_reshape.vit_reshape_transform(torch.from_numpy(default)).numpy(),
    )


PYRAMIDS = {
    "odd": [(32, 40), (16, 20), (8, 10), (4, 5), (2, 3)],
    "detector": [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)],
}


def _pyramid(shapes, dtype, seed):
    rng = np.random.RandomState(seed)
    return {key: rng.randn(2, 3, *shape).astype(dtype) for key, shape in zip(["0", "1", "2", "3", "pool"], shapes)}


def _fasterrcnn_both(levels):
    from pytorch_grad_cam.utils.reshape_transforms import fasterrcnn_reshape_transform as torch_fasterrcnn

    expected = torch_fasterrcnn({k: torch.from_numpy(v) for k, v in levels.items()}).numpy()
    got = paddle_reshape.fasterrcnn_reshape_transform({k: paddle.to_tensor(v) for k, v in levels.items()}).numpy()
    return got, expected


# Measured: float32 2.4e-7 (values |x| < 5, 1-2 ulps), float64 4.4e-16.  Paddle's own
# bilinear interpolate keeps the scale in float32 and is 1.6e-6 off in float64.
FASTERRCNN_ATOL = {np.float32: 2e-6, np.float64: 4e-15}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pyramid", sorted(PYRAMIDS))
def test_fasterrcnn_reshape_transform_matches_upstream(dtype, pyramid):
    got, expected = _fasterrcnn_both(_pyramid(PYRAMIDS[pyramid], dtype, seed=len(pyramid)))
    assert got.dtype == expected.dtype
    assert_close(f"fasterrcnn_reshape_transform {pyramid} {dtype.__name__}", got, expected, FASTERRCNN_ATOL[dtype])


def test_fasterrcnn_reshape_transform_is_differentiable():
    levels = {k: paddle.to_tensor(v, stop_gradient=False) for k, v in _pyramid(PYRAMIDS["odd"], np.float64, 1).items()}
    paddle_reshape.fasterrcnn_reshape_transform(levels).sum().backward()
    assert all(level.grad is not None for level in levels.values())


def test_fasterrcnn_reshape_breakage_is_detected(monkeypatch):
    """Corner-aligned sampling (scale (in-1)/(out-1)) instead of half-pixel centres must fail."""
    original = paddle_reshape._source_positions

    def corner_aligned(input_size, output_size, dtype):
        first, second, w0, w1 = original(input_size, output_size, dtype)
        if output_size > 1 and input_size != output_size:
            source = np.arange(output_size) * (input_size - 1) / (output_size - 1)
            first = np.minimum(source.astype(np.int64), input_size - 1)
            second = np.minimum(first + 1, input_size - 1)
            w1 = (source - first).astype(dtype)
            w0 = (1 - w1).astype(dtype)
        return first, second, w0, w1

    monkeypatch.setattr(paddle_reshape, "_source_positions", corner_aligned)
    got, expected = _fasterrcnn_both(_pyramid(PYRAMIDS["odd"], np.float64, seed=3))
    with pytest.raises(AssertionError, match="exceeds the bound"):
        assert_close("fasterrcnn_reshape_transform (broken)", got, expected, FASTERRCNN_ATOL[np.float64])
