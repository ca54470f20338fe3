"""ShapleyCAM on real transformer hub pairs (timm against PaddleClas), seeded and transferred as the harness does.

ShapleyCAM differentiates twice; Paddle 3.3.1 has no second derivative of
LayerNorm, GELU, softmax or a concat with a frozen class token, which
``second_order_graph`` supplies.  On DeiT-tiny the target is the patch
embedding's conv, so every one of those ops lies between it and the score;
on ConvNeXt-tiny it is the last block's depthwise conv (an earlier one would
put a depthwise conv after the target, which Paddle cannot differentiate
twice on the CPU).  Upstream's ShapleyCAM needs (B, C, H, W) activations, so
both targets are convs.  Two things are set on the torch side so upstream
runs at all: timm's fused attention is switched off (torch has no double
backward for its CPU flash attention), and the gradients upstream stores are
swapped for detached copies before its ``release``, which calls
``detach_()`` and fails on a view.

Measured max|Δ| of the final CAM: DeiT-tiny 8.6e-7 (float32) and 0
(float64), ConvNeXt-tiny 1.1e-6 and 0; upstream's ShapleyCAM differs from its
GradCAM by 0.11 on DeiT-tiny.  Slow tier: about 25 s for the four cases.
"""
from __future__ import annotations

import numpy as np
import paddle
import pytest
import torch

pytest.importorskip("timm")

from parity.registry import METHODS  # noqa: E402
from test_transformer_pairs import _build_pair  # noqa: E402

# (pair, torch target layer, Paddle target layer)
PAIRS = [
    ("deit_tiny_patch16_224", "patch_embed.proj", "patch_embed.proj"),
    ("convnext_tiny", "stages[3].blocks[2].conv_dw", "stages[3][2].dwconv"),
]


@pytest.fixture(scope="module", autouse=True)
def _pinned_threads(one_thread):
    """One thread for the module (conftest.one_thread): float32 results depend on it."""


def _upstream_cam(torch_model, layer, x: np.ndarray, target: int) -> np.ndarray:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    for module in torch_model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    cam = pytorch_grad_cam.ShapleyCAM(model=torch_model, target_layers=[layer])
    try:
        return cam(input_tensor=torch.from_numpy(x), targets=[ClassifierOutputTarget(target)])
    finally:
        stored = cam.activations_and_grads
        stored.gradients = [g.detach() for g in stored.gradients]
        stored.activations = [a.detach() for a in stored.activations]
        stored.release()


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name,torch_layer,paddle_layer", PAIRS, ids=[pair[0] for pair in PAIRS])
def test_shapley_cam_on_a_hub_pair_matches_upstream(name, torch_layer, paddle_layer, dtype):
    import paddle_impl
    from paddle_impl.layer_paths import resolve_layer
    from paddle_impl.utils.model_targets import ClassifierOutputTarget

    _, torch_model, paddle_model, x, target = _build_pair(name, dtype)
    expected = _upstream_cam(torch_model, resolve_layer(torch_model, torch_layer), x, target)
    assert np.ptp(expected) > 1e-6, f"{name}: upstream's CAM is flat, the comparison would prove nothing"
    with paddle_impl.ShapleyCAM(model=paddle_model, target_layers=[resolve_layer(paddle_model, paddle_layer)]) as cam:
        got = cam(input_tensor=paddle.to_tensor(x), targets=[ClassifierOutputTarget(target)])
    bound = getattr(METHODS["shapleycam"], f"cam_atol_{dtype}")
    error = float(np.abs(got - expected).max())
    assert error <= bound, f"{name} ShapleyCAM {dtype}: max|Δ| {error:.3g} > bound {bound:g}"
