"""The transformer pairs of the hubs profile (and ConvNeXt, whose LayerNorms put it with them).

Target layers follow upstream's documentation: a ViT/DeiT is explained at
its last block's ``norm1`` (the class token reaches the head through the
attention after it), a Swin at its last block's ``norm1``; a ConvNeXt, which
upstream does not cover, at its last block's LayerNorm (see its note).  Reshape transforms are "auto"
(``parity.hubs.reshape``): the two sides may hand out different layouts for
the same tensor (timm's Swin blocks (B, H, W, C), PaddleClas's (B, L, C)),
and both come to the same (B, C, H, W).

ViT-B/16 at 224x224 is ~17.5 GFLOP a forward pass: it runs the gradient
family only (no ScoreCAM/AblationCAM on any of these).  PaddleClas's ViT
patch embedding refuses any input size but the one it was built for, so
every pair here runs and is verified at 224x224.
"""
from __future__ import annotations

from typing import Any

from parity.arch_spec import Switch
from parity.hubs.pair_spec import HubPair

__all__ = ["ENTRIES", "swin_unshifted_at_window_resolution"]

_SIZE = (224, 224)


def swin_unshifted_at_window_resolution(model: Any) -> int:
    """Set ``shift_size = 0`` on every Swin block whose feature map is no larger than its window.

    The Swin paper's rule (and timm's, and the original implementation's):
    when the window covers the whole map there is nothing to shift, the
    block attends over the one window.  PaddleClas's SwinTransformer keeps
    the shift of 3 (and the attention mask it implies) in the odd blocks of
    the last stage of a 224x224 model, where the map is 7x7 and the window
    7: the masked attention is another function.  Returns how many blocks
    were changed.
    """
    changed = 0
    for layer in getattr(model, "layers", ()):
        for block in getattr(layer, "blocks", ()):
            if block.shift_size > 0 and min(block.input_resolution) <= block.window_size:
                block.shift_size = 0
                changed += 1
    return changed


_SWIN_SHIFT = Switch(
    "no shift where the window covers the map",
    "PaddleClas's Swin keeps a cyclic shift of 3 with its attention mask in the last stage's second block, "
    "where the 7x7 map is one 7x7 window; timm (like the Swin paper and Microsoft's code) does not shift a "
    "window that covers the whole map. Setting that block's shift_size to 0 applies the paper's rule there; "
    "no weight and no other block changes",
    swin_unshifted_at_window_resolution,
)


def _transformer(name, family, timm_name, paddleclas_name, torch_layer, paddle_layer, note, **extra) -> HubPair:
    extra.setdefault("torch_reshape", "auto")
    extra.setdefault("paddle_reshape", "auto")
    return HubPair(
        name=name, family=family, torch_builder=f"timm:{timm_name}", paddle_builder=f"paddleclas:{paddleclas_name}",
        transfer="generic", torch_target_layer=torch_layer, paddle_target_layer=paddle_layer,
        input_size=_SIZE, verify_size=_SIZE, heavy_methods=False, note=note, **extra,
    )


ENTRIES = (
    _transformer(
        "deit_tiny_patch16_224", "vit", "deit_tiny_patch16_224", "DeiT_tiny_patch16_224",
        "blocks[-1].norm1", "blocks[-1].norm1",
        "DeiT-tiny/16 (no distillation token): timm's deit_tiny_patch16_224 and PaddleClas's DeiT_tiny_patch16_224; "
        "same names and order, Linear weights transposed; tokens (B, 1 + 14x14, 192) on both sides",
    ),
    _transformer(
        "vit_base_patch16_224", "vit", "vit_base_patch16_224", "ViT_base_patch16_224",
        "blocks[-1].norm1", "blocks[-1].norm1",
        "ViT-B/16: timm's vit_base_patch16_224 and PaddleClas's ViT_base_patch16_224; same names and order; "
        "tokens (B, 1 + 14x14, 768) on both sides",
    ),
    _transformer(
        "swin_tiny_patch4_window7_224", "swin", "swin_tiny_patch4_window7_224", "SwinTransformer_tiny_patch4_window7_224",
        "layers[-1].blocks[-1].norm1", "layers[-1].blocks[-1].norm1",
        "Swin-T: timm's swin_tiny_patch4_window7_224 and PaddleClas's SwinTransformer_tiny_patch4_window7_224. "
        "timm puts each patch merging at the start of the next stage (layers.1.downsample merges stage 0's map), "
        "PaddleClas at the end of its own (layers.0.downsample): same-named tensors of another shape, paired by "
        "execution order. The target's output is (B, 7, 7, 768) in timm and (B, 49, 768) in PaddleClas",
        switches=(_SWIN_SHIFT,),
    ),
    _transformer(
        "convnext_tiny", "convnext", "convnext_tiny", "ConvNeXt_tiny",
        "stages[-1].blocks[-1].norm", "stages[-1][-1].norm",
        "ConvNeXt-T: timm's convnext_tiny and PaddleClas's ConvNeXt_tiny; the downsampling layers sit in "
        "timm's stages (stem, stages.N.downsample) and in PaddleClas's downsample_layers, paired by execution "
        "order; layer-scale gammas (1e-6 at init) seeded. Target: the last block's LayerNorm, channels-last "
        "(B, 7, 7, 768) on both sides. The CNN habit, the last stage's output, feeds the head through a global "
        "average pool, so its gradient is the same at every position; on the seeded weights and both.png the "
        "positive-gradient sums of GradCAM++ and LayerCAM are then negative everywhere and both CAMs are flat "
        "(nothing compared)",
    ),
)
