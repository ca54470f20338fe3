"""Reshape transforms: both Swin layouts, prefix tokens, and reshape_transform="auto", on both sides.

The Paddle halves are the port's (``paddle_impl.utils.reshape_transforms``),
the torch halves the harness's (``parity.torch_reshape_transforms``); where
upstream has a transform for the layout (ViT tokens, Swin tokens) both must
give exactly what upstream's gives.
"""
from __future__ import annotations

import numpy as np
import paddle
import pytest
import torch
from pytorch_grad_cam.utils import reshape_transforms as upstream

from paddle_impl.utils import reshape_transforms as port
from paddle_impl.utils.reshape_transforms import Layout, auto_reshape_transform, infer_layout
from parity import torch_reshape_transforms as harness


def _array(*shape: int) -> np.ndarray:
    return np.random.RandomState(sum(shape)).randn(*shape).astype("float32")


def _both(transform_pair, array):
    """The Paddle and torch results of the same transform on the same array, as numpy."""
    paddle_fn, torch_fn = transform_pair
    return paddle_fn(paddle.to_tensor(array)).numpy(), torch_fn(torch.from_numpy(array)).numpy()


# -- upstream's layouts ----------------------------------------------------------

def test_vit_tokens_equal_upstreams():
    tokens = _array(2, 1 + 14 * 14, 8)
    expected = upstream.vit_reshape_transform(torch.from_numpy(tokens)).numpy()
    assert expected.shape == (2, 8, 14, 14)
    for got in _both((port.vit_reshape_transform, harness.vit_reshape_transform), tokens):
        np.testing.assert_array_equal(got, expected)
    for got in _both((auto_reshape_transform(224), harness.auto_reshape_transform(224)), tokens):
        np.testing.assert_array_equal(got, expected)


def test_swin_tokens_equal_upstreams():
    tokens = _array(2, 7 * 7, 12)
    expected = upstream.swinT_reshape_transform(torch.from_numpy(tokens)).numpy()
    for got in _both((port.swinT_reshape_transform, harness.swinT_reshape_transform), tokens):
        np.testing.assert_array_equal(got, expected)
    for got in _both((auto_reshape_transform(224, 4), harness.auto_reshape_transform(224, 4)), tokens):
        np.testing.assert_array_equal(got, expected)


def test_swin_channels_last_maps_give_what_upstream_gives_for_the_same_tokens():
    """timm >= 1.0 hands Swin's (B, H, W, C); it must come out as upstream's (B, L, C) reading of the same values."""
    maps = _array(2, 7, 7, 12)
    expected = upstream.swinT_reshape_transform(torch.from_numpy(maps.reshape(2, 49, 12))).numpy()
    for got in _both((port.swinT_reshape_transform, harness.swinT_reshape_transform), maps):
        np.testing.assert_array_equal(got, expected)
    for got in _both((auto_reshape_transform(224), harness.auto_reshape_transform(224)), maps):
        np.testing.assert_array_equal(got, expected)
    # A grid of another size needs no height/width: the map carries its own.
    big = _array(1, 14, 14, 6)
    for got in _both((port.swinT_reshape_transform, harness.swinT_reshape_transform), big):
        np.testing.assert_array_equal(got, big.transpose(0, 3, 1, 2))


def test_swin_map_with_a_contradicting_grid_is_refused():
    maps = _array(1, 7, 7, 4)
    with pytest.raises(ValueError, match=r"height 7, not the 14 given"):
        port.swinT_reshape_transform(paddle.to_tensor(maps), 14, 14)
    with pytest.raises(ValueError, match=r"height 7, not the 14 given"):
        harness.swinT_reshape_transform(torch.from_numpy(maps), 14, 14)


# -- beyond upstream -------------------------------------------------------------

def test_class_and_distillation_tokens_are_both_dropped():
    tokens = _array(2, 2 + 14 * 14, 8)
    expected = tokens[:, 2:, :].reshape(2, 14, 14, 8).transpose(0, 3, 1, 2)
    assert infer_layout(tokens.shape, 224) == Layout("tokens", 2, 14, 14, 8)
    for got in _both((auto_reshape_transform(224), harness.auto_reshape_transform(224)), tokens):
        np.testing.assert_array_equal(got, expected)
    paddle_fn = lambda t: port.vit_reshape_transform(t, 14, 14, prefix_tokens=2)  # noqa: E731
    torch_fn = lambda t: harness.vit_reshape_transform(t, 14, 14, prefix_tokens=2)  # noqa: E731
    for got in _both((paddle_fn, torch_fn), tokens):
        np.testing.assert_array_equal(got, expected)


def test_channels_first_maps_pass_through_unchanged():
    maps = _array(2, 768, 7, 7)
    assert infer_layout(maps.shape, 224).kind == "channels_first"
    for got in _both((auto_reshape_transform(224), harness.auto_reshape_transform((224, 224))), maps):
        np.testing.assert_array_equal(got, maps)


@pytest.mark.parametrize(
    "shape, input_size, patch_size, expected",
    [
        ((1, 197, 192), 224, 16, Layout("tokens", 1, 14, 14, 192)),  # ViT / DeiT
        ((1, 198, 192), 224, None, Layout("tokens", 2, 14, 14, 192)),  # DeiT distilled
        ((1, 1 + 12 * 8, 64), (192, 128), 16, Layout("tokens", 1, 12, 8, 64)),  # a non-square input
        ((1, 3136, 96), 224, 4, Layout("tokens", 0, 56, 56, 96)),  # Swin stage 1, PaddleClas layout
        ((1, 28, 28, 192), 224, 4, Layout("channels_last", 0, 28, 28, 192)),  # Swin stage 2, timm layout
        ((1, 2048, 7, 7), 224, None, Layout("channels_first", 0, 7, 7, 2048)),  # a CNN
        ((1, 2048, 10, 10), 299, None, Layout("channels_first", 0, 10, 10, 2048)),  # floor/ceil arithmetic
    ],
)
def test_layouts_are_recognised(shape, input_size, patch_size, expected):
    assert infer_layout(shape, input_size, patch_size) == expected


def test_an_ambiguous_map_is_a_one_line_error_naming_the_shape_and_the_readings():
    maps = _array(2, 14, 14, 14)
    for transform in (auto_reshape_transform(224), harness.auto_reshape_transform(224)):
        tensor = paddle.to_tensor(maps) if isinstance(transform, port.AutoReshapeTransform) else torch.from_numpy(maps)
        with pytest.raises(ValueError) as error:
            transform(tensor)
        message = str(error.value)
        assert "\n" not in message
        assert "[2, 14, 14, 14]" in message and "ambiguous" in message
        assert "channels-last 14x14 map of 14 channels" in message
        assert "channels-first 14x14 map of 14 channels" in message


def test_ambiguous_tokens_name_every_reading():
    # 64x32 input: 3 tokens are 3x1, or a class token + 2x1, or two prefix tokens + 1x1.
    with pytest.raises(ValueError, match=r"\[2, 3, 64\] is ambiguous .*0 prefix.*1 prefix.*2 prefix"):
        infer_layout((2, 3, 64), (64, 32))
    with pytest.raises(ValueError, match="pass patch_size or an explicit reshape_transform"):
        infer_layout((2, 3, 64), (64, 32))
    # 32x32 patches leave 2x1 (class token) and its halving 1x1 (two prefix tokens): still two readings,
    # and a patch size is no longer what to suggest.
    with pytest.raises(ValueError, match=r"ambiguous \(input 64x32, patch 32x32\).*; pass an explicit reshape_transform$"):
        infer_layout((2, 3, 64), (64, 32), 32)


def test_a_shape_that_fits_nothing_is_refused():
    with pytest.raises(ValueError, match=r"\[2, 3, 5, 7\] fits no layout"):
        infer_layout((2, 3, 5, 7), 224, 16)
    with pytest.raises(ValueError, match=r"\[1, 150, 8\] fits no layout"):
        infer_layout((1, 150, 8), 224, 16)
    with pytest.raises(ValueError, match=r"not shape \[4, 8\]"):
        infer_layout((4, 8), 224)
    with pytest.raises(ValueError, match="input_size"):
        auto_reshape_transform((224, 224, 3))


def test_auto_gives_upstreams_gradcam_on_a_vit():
    """Inside a CAM the activations and the gradients both go through it; same CAM as upstream's ViT transform."""
    from pytorch_grad_cam import GradCAM as TorchGradCAM

    from model_pairs import GRID, PATCH, make_vit_pair
    from paddle_impl import GradCAM

    torch_model, paddle_model = make_vit_pair("float64")
    x = np.random.RandomState(0).randn(2, 3, GRID * PATCH, GRID * PATCH)
    with TorchGradCAM(torch_model, [torch_model.blocks[-1].norm1],
                      reshape_transform=lambda t: upstream.vit_reshape_transform(t, GRID, GRID)) as cam:
        expected = cam(torch.from_numpy(x), None)
    with GradCAM(paddle_model, [paddle_model.blocks[-1].norm1],
                 reshape_transform=auto_reshape_transform(GRID * PATCH, PATCH)) as cam:
        got = cam(paddle.to_tensor(x), None)
        assert cam.reshape_transform.last_layout == Layout("tokens", 1, GRID, GRID, 16)
    np.testing.assert_allclose(got, expected, atol=1e-6)
