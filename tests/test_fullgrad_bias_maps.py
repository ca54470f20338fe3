"""FullGrad's streamed bias-gradient maps are upstream's formula, bit for bit.

``FullGrad.bias_gradient_map`` resizes one channel at a time into a reused
buffer and adds it to a running total, instead of upstream's
``scale_accross_batch_and_channels`` into a (B, C, H, W) array followed by
``np.sum(axis=1)``.  The reference here is upstream's own code.
"""
from __future__ import annotations

import numpy as np
import pytest

from paddle_impl.fullgrad_cam import FullGrad

SHAPES = [
    # (batch, channels, height, width, target (width, height))
    (1, 64, 56, 56, (224, 224)),
    (2, 300, 7, 7, (224, 224)),
    (3, 5, 14, 14, (96, 96)),
    (2, 1, 3, 3, (96, 96)),
    (1, 7, 10, 22, (88, 40)),
    (2, 4, 32, 32, (32, 32)),
]


def _upstream_bias_map(bias: np.ndarray, grads: np.ndarray, target_size) -> np.ndarray:
    from pytorch_grad_cam.utils.image import scale_accross_batch_and_channels

    per_channel = scale_accross_batch_and_channels(np.abs(bias[None, :, None, None] * grads), target_size)
    return np.sum(per_channel, axis=1)[:, None, :]


def _case(dtype, batch, channels, height, width, seed=0):
    rng = np.random.default_rng(seed)
    bias = rng.standard_normal(channels).astype(dtype)
    # Channels of very different magnitudes, and a flat one (min == max).
    magnitudes = 10.0 ** rng.integers(-8, 3, size=(1, channels, 1, 1))
    grads = (rng.standard_normal((batch, channels, height, width)) * magnitudes).astype(dtype)
    grads[:, 0] = 0
    return bias, grads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch,channels,height,width,target_size", SHAPES)
def test_bias_gradient_map_is_upstreams_bit_for_bit(dtype, batch, channels, height, width, target_size):
    bias, grads = _case(dtype, batch, channels, height, width)
    got = FullGrad.bias_gradient_map(bias, grads, target_size)
    expected = _upstream_bias_map(bias, grads, target_size)
    assert got.dtype == expected.dtype == np.float32
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_bias_map_comparison_catches_another_summation_order():
    """Adding the same resized channels in reverse order changes low bits: the exact check above sees order."""
    bias, grads = _case(np.float32, 1, 300, 7, 7, seed=1)
    expected = _upstream_bias_map(bias, grads, (224, 224))
    reversed_order = _upstream_bias_map(bias[::-1].copy(), grads[:, ::-1].copy(), (224, 224))
    assert not np.array_equal(reversed_order, expected)
