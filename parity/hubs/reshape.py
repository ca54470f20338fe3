"""``reshape_transform="auto"`` for a hub pair's entry: the right side's transform, told the model's patch size.

The layout rules are the port's (``paddle_impl.utils.reshape_transforms.infer_layout``),
the same on both sides; this module only picks the framework's transform and
reads the patch size off the model (timm's and PaddleClas's ``patch_embed``
both carry one), which narrows the grids a token count is matched against.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

from paddle_impl.errors import UserError

__all__ = ["auto_reshape_transform", "model_patch_size"]


def model_patch_size(model: Any) -> Optional[Tuple[int, int]]:
    """``model.patch_embed.patch_size`` as (height, width), or None when the model has no patch embedding."""
    size = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    size = tuple(int(s) for s in size)
    return size if len(size) == 2 else None


def auto_reshape_transform(framework: str, model: Any, input_size: Optional[Tuple[int, int]]):
    """The "auto" reshape transform of ``framework`` ("torch" or "paddle") for ``model`` fed (width, height) images."""
    if input_size is None:
        raise UserError("reshape transform 'auto' needs the entry's input_size (the token grid depends on it)")
    width, height = input_size
    patch_size = model_patch_size(model)
    if framework == "torch":
        from parity.torch_reshape_transforms import auto_reshape_transform as torch_auto

        return torch_auto((height, width), patch_size)
    if framework == "paddle":
        from paddle_impl.utils.reshape_transforms import auto_reshape_transform as paddle_auto

        return paddle_auto((height, width), patch_size)
    raise ValueError(f"framework must be 'torch' or 'paddle', not {framework!r}")
