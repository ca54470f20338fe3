"""Reshape transforms for non-CNN target layers, the Paddle twins of
``pytorch_grad_cam/utils/reshape_transforms.py``.

A CAM method wants (B, C, H, W) activations.  Transformers hand out tokens
instead, and Faster R-CNN's backbone a dict of feature-pyramid levels; these
functions bring either into that layout.  They are applied to the activations
*and* to the gradients (``ActivationsAndGradients`` calls them on both), so
they only use differentiable tensor operations.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import paddle

__all__ = ["fasterrcnn_reshape_transform", "swinT_reshape_transform", "vit_reshape_transform"]


def _source_positions(input_size: int, output_size: int, dtype: np.dtype):
    """Per output index: the two source indices and their bilinear weights, as torch computes them.

    Half-pixel centres (``align_corners=False``): ``src = scale * (i + 0.5) - 0.5``
    clamped at 0, ``scale = input_size / output_size``, all in the data's own
    precision.  Paddle's ``interpolate`` keeps the scale in float32 even for
    float64 data, which moves float64 results by ~1e-6, hence this helper.
    """
    real = np.dtype(dtype).type
    index = np.arange(output_size)
    if input_size == output_size:
        return index, index, np.ones(output_size, dtype), np.zeros(output_size, dtype)
    scale = real(input_size) / real(output_size)
    source = scale * (index.astype(dtype) + real(0.5)) - real(0.5)
    source = np.where(source < 0, real(0), source).astype(dtype)
    first = source.astype(np.int64)
    second = first + (first < input_size - 1)
    lambda1 = np.clip(source - first.astype(dtype), 0, 1).astype(dtype)
    return first, second, (real(1) - lambda1).astype(dtype), lambda1


def _bilinear_resize(x: paddle.Tensor, size) -> paddle.Tensor:
    """torch's ``interpolate(x, size, mode='bilinear')`` on an (N, C, H, W) Paddle tensor.

    The four corner weights are the products of the row and column weights
    and the corners are summed in torch's order; only gathers, products and
    sums, so the result stays differentiable.
    """
    dtype = np.dtype(paddle.zeros([1], dtype=x.dtype).numpy().dtype)
    rows0, rows1, row_w0, row_w1 = _source_positions(int(x.shape[-2]), int(size[0]), dtype)
    cols0, cols1, col_w0, col_w1 = _source_positions(int(x.shape[-1]), int(size[1]), dtype)
    top = paddle.index_select(x, paddle.to_tensor(rows0), axis=2)
    bottom = paddle.index_select(x, paddle.to_tensor(rows1), axis=2)
    cols0_t, cols1_t = paddle.to_tensor(cols0), paddle.to_tensor(cols1)

    def weight(row_w: np.ndarray, col_w: np.ndarray) -> paddle.Tensor:
        return paddle.to_tensor(row_w[:, None] * col_w[None, :])

    return (
        paddle.index_select(top, cols0_t, axis=3) * weight(row_w0, col_w0)
        + paddle.index_select(top, cols1_t, axis=3) * weight(row_w0, col_w1)
        + paddle.index_select(bottom, cols0_t, axis=3) * weight(row_w1, col_w0)
        + paddle.index_select(bottom, cols1_t, axis=3) * weight(row_w1, col_w1)
    )


def fasterrcnn_reshape_transform(x: Mapping[str, paddle.Tensor]) -> paddle.Tensor:
    """Stack every pyramid level, in the dict's order, at the resolution of the ``'pool'`` level.

    Each level is made non-negative with ``abs`` and resized bilinearly with
    half-pixel centres (torch's ``interpolate`` default, see
    ``_bilinear_resize``), then the levels are concatenated along the channel
    axis.
    """
    target_size = list(x["pool"].shape[-2:])
    return paddle.concat([_bilinear_resize(paddle.abs(value), target_size) for value in x.values()], axis=1)


def swinT_reshape_transform(tensor: paddle.Tensor, height: int = 7, width: int = 7) -> paddle.Tensor:
    """(B, height*width, C) Swin tokens -> (B, C, height, width).

    Swin has no class token, so every token is a spatial position.
    """
    result = tensor.reshape([tensor.shape[0], height, width, tensor.shape[2]])
    return result.transpose([0, 3, 1, 2])


def vit_reshape_transform(tensor: paddle.Tensor, height: int = 14, width: int = 14) -> paddle.Tensor:
    """(B, 1 + height*width, C) ViT tokens -> (B, C, height, width).

    The first token is the class token, which has no position in the image,
    so it is dropped; the rest are the patches in row-major order.
    """
    result = tensor[:, 1:, :].reshape([tensor.shape[0], height, width, tensor.shape[2]])
    return result.transpose([0, 3, 1, 2])
