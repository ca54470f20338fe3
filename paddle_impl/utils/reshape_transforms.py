"""Reshape transforms for non-CNN target layers, the Paddle twins of
``pytorch_grad_cam/utils/reshape_transforms.py``.

A CAM method wants (B, C, H, W) activations.  Transformers hand out tokens
instead, and Faster R-CNN's backbone a dict of feature-pyramid levels; these
functions bring either into that layout.  They are applied to the activations
*and* to the gradients (``ActivationsAndGradients`` calls them on both), so
they only use differentiable tensor operations.

Beyond upstream, ``auto_reshape_transform(input_size, patch_size=None)``
works the layout out from the activation's shape and the model's input size
(see ``infer_layout``), so a ViT, a DeiT with its distillation token, a Swin
of either token layout and a CNN all take the same argument.  The shape
reasoning is framework-free: the harness's torch twin uses the same
``infer_layout``.
"""
from __future__ import annotations

from typing import List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import paddle

__all__ = [
    "AutoReshapeTransform",
    "Layout",
    "auto_reshape_transform",
    "fasterrcnn_reshape_transform",
    "infer_layout",
    "swinT_reshape_transform",
    "vit_reshape_transform",
]


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


def swinT_reshape_transform(
    tensor: paddle.Tensor, height: Optional[int] = None, width: Optional[int] = None
) -> paddle.Tensor:
    """Swin block activations -> (B, C, height, width), from either layout Swin implementations use.

    * (B, L, C) tokens, as the original Swin and PaddleClas's blocks give:
      every token is a spatial position (Swin has no class token), in
      row-major order; ``height`` and ``width`` default to 7 as upstream's.
    * (B, H, W, C) channels-last maps, as timm >= 1.0's blocks give: the
      grid is read from the shape; ``height``/``width``, when given, must
      match it.
    """
    if tensor.ndim == 4:
        _check_grid(tensor.shape, height, width)
        return tensor.transpose([0, 3, 1, 2])
    if tensor.ndim != 3:
        raise ValueError(f"swinT_reshape_transform takes (B, L, C) tokens or (B, H, W, C) maps, not shape {list(tensor.shape)}")
    height = 7 if height is None else height
    width = 7 if width is None else width
    result = tensor.reshape([tensor.shape[0], height, width, tensor.shape[2]])
    return result.transpose([0, 3, 1, 2])


def vit_reshape_transform(
    tensor: paddle.Tensor, height: int = 14, width: int = 14, prefix_tokens: int = 1
) -> paddle.Tensor:
    """(B, prefix_tokens + height*width, C) ViT tokens -> (B, C, height, width).

    The leading tokens (the class token, and DeiT's distillation token when
    ``prefix_tokens=2``) have no position in the image, so they are dropped;
    the rest are the patches in row-major order.
    """
    result = tensor[:, prefix_tokens:, :].reshape([tensor.shape[0], height, width, tensor.shape[2]])
    return result.transpose([0, 3, 1, 2])


def _check_grid(shape: Sequence[int], height: Optional[int], width: Optional[int]) -> None:
    """A channels-last map's grid must be the one the caller named, if any."""
    for name, given, actual in (("height", height, shape[1]), ("width", width, shape[2])):
        if given is not None and given != actual:
            raise ValueError(f"a (B, H, W, C) activation of shape {list(shape)} has {name} {actual}, not the {given} given")


# -- reshape_transform="auto" ---------------------------------------------------

# Tokens in front of the patch tokens: none (Swin), a class token (ViT),
# class and distillation tokens (DeiT distilled).
PREFIX_TOKEN_COUNTS = (0, 1, 2)


class Layout(NamedTuple):
    """How an activation maps to (B, C, H, W): its ``kind``, the tokens to drop, and the spatial grid."""

    kind: str  # "tokens", "channels_last" or "channels_first"
    prefix_tokens: int
    height: int
    width: int
    channels: int

    def describe(self) -> str:
        if self.kind == "tokens":
            return f"{self.prefix_tokens} prefix token(s) + {self.height}x{self.width} patch tokens of {self.channels} channels"
        return f"a {self.kind.replace('_', '-')} {self.height}x{self.width} map of {self.channels} channels"


def as_size_pair(size: Union[int, Sequence[int]], what: str) -> Tuple[int, int]:
    """An int or a (height, width) pair as (height, width); anything else is a ValueError naming ``what``."""
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{what} must be a positive int or (height, width), not {size!r}")
    return size


def _strides(input_size: Tuple[int, int], patch_size: Optional[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """The (row, column) downsampling factors a feature grid of this model may have.

    With a patch size: the patch grid and its successive halvings (the
    stages of a hierarchical transformer).  Without: any common integer
    factor, which is what a CNN's stages come to.
    """
    longest = max(input_size)
    if patch_size is not None:
        strides, factor = [], 1
        while min(patch_size) * factor <= longest:
            strides.append((patch_size[0] * factor, patch_size[1] * factor))
            factor *= 2
        return strides
    return [(s, s) for s in range(1, longest + 1)]


def _grids(input_size: Tuple[int, int], patch_size: Optional[Tuple[int, int]]) -> set:
    """Every (height, width) a feature grid of the input may have: floor or ceil of size / stride (padding varies)."""
    grids = set()
    for row_stride, col_stride in _strides(input_size, patch_size):
        heights = {input_size[0] // row_stride, -(-input_size[0] // row_stride)}
        widths = {input_size[1] // col_stride, -(-input_size[1] // col_stride)}
        grids.update((h, w) for h in heights for w in widths if h > 0 and w > 0)
    return grids


def infer_layout(
    shape: Sequence[int],
    input_size: Union[int, Sequence[int]],
    patch_size: Union[None, int, Sequence[int]] = None,
) -> Layout:
    """The layout of an activation of ``shape`` in a model fed ``input_size`` images.

    * (B, N, C): tokens, when N is 0, 1 or 2 prefix tokens plus a grid the
      input can have (with ``patch_size``: the patch grid or one of its
      halvings; without: size / any integer stride, floor or ceil).
    * 4-D: channels-last (B, H, W, C) when dims 1-2 form such a grid and
      dims 2-3 do not; channels-first (B, C, H, W) in the opposite case.

    More than one reading, or none, is a one-line ValueError naming the
    shape and the readings considered.
    """
    shape = [int(s) for s in shape]
    input_hw = as_size_pair(input_size, "input_size")
    patch_hw = None if patch_size is None else as_size_pair(patch_size, "patch_size")
    grids = _grids(input_hw, patch_hw)
    where = f"input {input_hw[0]}x{input_hw[1]}" + (f", patch {patch_hw[0]}x{patch_hw[1]}" if patch_hw else "")
    if len(shape) == 3:
        tokens = shape[1]
        candidates = [
            Layout("tokens", prefix, h, w, shape[2])
            for prefix in PREFIX_TOKEN_COUNTS
            for h, w in sorted(grids)
            if h * w == tokens - prefix
        ]
        tried = f"{tokens} tokens = 0, 1 or 2 prefix tokens + a patch grid of the {where}"
    elif len(shape) == 4:
        candidates = []
        if (shape[1], shape[2]) in grids:
            candidates.append(Layout("channels_last", 0, shape[1], shape[2], shape[3]))
        if (shape[2], shape[3]) in grids:
            candidates.append(Layout("channels_first", 0, shape[2], shape[3], shape[1]))
        tried = f"channels-last (B, H, W, C) or channels-first (B, C, H, W) with a feature grid of the {where}"
    else:
        raise ValueError(f"reshape_transform='auto' takes (B, N, C) tokens or a 4-D map, not shape {shape}")
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ValueError(f"reshape_transform='auto': shape {shape} fits no layout ({tried}); pass an explicit reshape_transform")
    readings = " or ".join(c.describe() for c in candidates)
    hint = "pass patch_size or an explicit reshape_transform" if patch_hw is None else "pass an explicit reshape_transform"
    raise ValueError(f"reshape_transform='auto': shape {shape} is ambiguous ({where}): it reads as {readings}; {hint}")


class AutoReshapeTransform:
    """A reshape transform that reads the layout from each activation's shape (``infer_layout``).

    Activations and their gradients have the same shape, so both are brought
    to (B, C, H, W) the same way.  ``last_layout`` keeps the latest reading
    for whoever wants to report it.
    """

    def __init__(self, input_size: Union[int, Sequence[int]], patch_size: Union[None, int, Sequence[int]] = None):
        self.input_size = as_size_pair(input_size, "input_size")
        self.patch_size = None if patch_size is None else as_size_pair(patch_size, "patch_size")
        self.last_layout: Optional[Layout] = None

    def layout(self, shape: Sequence[int]) -> Layout:
        return infer_layout(shape, self.input_size, self.patch_size)

    def __call__(self, tensor: paddle.Tensor) -> paddle.Tensor:
        layout = self.last_layout = self.layout(tensor.shape)
        if layout.kind == "channels_first":
            return tensor
        if layout.kind == "channels_last":
            return tensor.transpose([0, 3, 1, 2])
        return vit_reshape_transform(tensor, layout.height, layout.width, layout.prefix_tokens)

    def __repr__(self) -> str:
        patch = "" if self.patch_size is None else f", patch_size={self.patch_size}"
        return f"AutoReshapeTransform(input_size={self.input_size}{patch})"


def auto_reshape_transform(
    input_size: Union[int, Sequence[int]], patch_size: Union[None, int, Sequence[int]] = None
) -> AutoReshapeTransform:
    """``reshape_transform="auto"`` for a model fed ``input_size`` (int or (H, W)) images; see ``infer_layout``."""
    return AutoReshapeTransform(input_size, patch_size)
