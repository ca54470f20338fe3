"""The torch halves of the harness's reshape transforms (the Paddle halves live in the port).

Upstream ships ``pytorch_grad_cam.utils.reshape_transforms``; what it lacks
and the hub pairs need is here, on the harness side because it is torch code:

* ``swinT_reshape_transform`` for both Swin layouts: upstream's assumes
  (B, L, C) tokens, while timm >= 1.0's Swin blocks give (B, H, W, C).
* ``vit_reshape_transform`` with a number of prefix tokens (DeiT distilled
  has a class and a distillation token).
* ``auto_reshape_transform(input_size, patch_size=None)``: the layout read
  from the activation's shape by the port's ``infer_layout``, so both sides
  of a pair make the same reading from the same rules.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from paddle_impl.utils.reshape_transforms import Layout, as_size_pair, infer_layout

__all__ = ["TorchAutoReshapeTransform", "auto_reshape_transform", "swinT_reshape_transform", "vit_reshape_transform"]


def swinT_reshape_transform(tensor: torch.Tensor, height: Optional[int] = None, width: Optional[int] = None) -> torch.Tensor:
    """Swin block activations, (B, L, C) tokens or (B, H, W, C) maps, -> (B, C, H, W).

    Tokens are reshaped as upstream's transform does (``height`` and
    ``width`` default to its 7); a channels-last map carries its grid, and
    ``height``/``width``, when given, must match it.
    """
    if tensor.dim() == 4:
        for name, given, actual in (("height", height, tensor.shape[1]), ("width", width, tensor.shape[2])):
            if given is not None and given != actual:
                raise ValueError(
                    f"a (B, H, W, C) activation of shape {list(tensor.shape)} has {name} {actual}, not the {given} given"
                )
        return tensor.permute(0, 3, 1, 2)
    if tensor.dim() != 3:
        raise ValueError(f"swinT_reshape_transform takes (B, L, C) tokens or (B, H, W, C) maps, not shape {list(tensor.shape)}")
    height = 7 if height is None else height
    width = 7 if width is None else width
    result = tensor.reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def vit_reshape_transform(tensor: torch.Tensor, height: int = 14, width: int = 14, prefix_tokens: int = 1) -> torch.Tensor:
    """(B, prefix_tokens + height*width, C) tokens -> (B, C, height, width), the prefix tokens dropped."""
    result = tensor[:, prefix_tokens:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


class TorchAutoReshapeTransform:
    """The torch twin of the port's ``AutoReshapeTransform``: same layout rules, torch tensor operations."""

    def __init__(self, input_size: Union[int, Sequence[int]], patch_size: Union[None, int, Sequence[int]] = None):
        self.input_size = as_size_pair(input_size, "input_size")
        self.patch_size = None if patch_size is None else as_size_pair(patch_size, "patch_size")
        self.last_layout: Optional[Layout] = None

    def layout(self, shape: Sequence[int]) -> Layout:
        return infer_layout(shape, self.input_size, self.patch_size)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        layout = self.last_layout = self.layout(tuple(tensor.shape))
        if layout.kind == "channels_first":
            return tensor
        if layout.kind == "channels_last":
            return tensor.permute(0, 3, 1, 2)
        return vit_reshape_transform(tensor, layout.height, layout.width, layout.prefix_tokens)

    def __repr__(self) -> str:
        patch = "" if self.patch_size is None else f", patch_size={self.patch_size}"
        return f"TorchAutoReshapeTransform(input_size={self.input_size}{patch})"


def auto_reshape_transform(
    input_size: Union[int, Sequence[int]], patch_size: Union[None, int, Sequence[int]] = None
) -> TorchAutoReshapeTransform:
    """``reshape_transform="auto"`` on the torch side; see ``paddle_impl.utils.reshape_transforms.infer_layout``."""
    return TorchAutoReshapeTransform(input_size, patch_size)
