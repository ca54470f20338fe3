"""The transformer hub pairs (parity/hubs/transformers.py) against upstream, seeded and transferred as the harness does.

Each pair is built the harness's way: timm's model with seeded noise on every
constant-initialised tensor (``parity.hubs.seeding``: LayerNorm weights and
biases, layer-scale gammas, zero biases), the PaddleClas twin with the
entry's switches, ``parity.transfer_weights`` (which checks the logits), and
the entry's target layers and reshape transforms.  Then upstream's method and
the port's explain the torch model's top class, and the CAMs must agree
within the registry's bound for the method and dtype.

The fast tier keeps GradCAM on DeiT-tiny in float32: with Paddle 3.3.1's
LayerNorm input gradient wrong under frozen weights (see
``paddle_impl/activations_and_gradients.py``) its CAM is off by ~0.1-0.5;
the seeded LayerNorm weights are what make that visible (weight 1, bias 0
hide it).  The slow tier runs the gradient family and EigenCAM on every pair
in float32 and float64.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import paddle
import pytest
import torch

pytest.importorskip("timm")

from parity.hubs import resolve_reshape  # noqa: E402
from parity.model_zoo import arch  # noqa: E402
from parity.registry import METHODS  # noqa: E402

GRADIENT_METHODS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigengradcam", "gradcamelementwise"]
SLOW_METHODS = GRADIENT_METHODS + ["eigencam"]
# ViT-B/16 at 224 is ~17.5 GFLOP a pass: the GradCAM family's core only.
VIT_B_METHODS = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam"]


@pytest.fixture(scope="module", autouse=True)
def _pinned_threads(one_thread):
    """Every test of this module on one thread (conftest.one_thread): float32 results depend on it."""


def _skip_without_paddleclas() -> None:
    # find_spec, not import: PaddleClas's package __init__ pulls in its training code (parity.hubs never runs it).
    if importlib.util.find_spec("paddleclas") is None:
        pytest.skip("PaddleClas is not installed (the hubs extra)")


def _build_pair(name: str, dtype: str):
    """The pair as the harness builds it: (spec, torch model, Paddle model, input, target class)."""
    _skip_without_paddleclas()
    from parity.hubs.seeding import seeded_hub_state
    from parity.transfer import transfer_weights

    spec = arch(name)
    torch_model = spec.new_torch_model()
    torch_model.load_state_dict(seeded_hub_state(spec, 0))
    torch_model = (torch_model.double() if dtype == "float64" else torch_model.float()).eval()
    paddle_model = spec.new_paddle_model(dtype)
    paddle_model.eval()
    width, height = spec.input_size
    x = np.random.RandomState(3).randn(1, 3, height, width).astype(dtype)
    transfer_weights(torch_model, paddle_model, [x], direction="torch_to_paddle")
    with torch.no_grad():
        target = int(torch_model(torch.from_numpy(x)).argmax())
    return spec, torch_model, paddle_model, x, target


def _cams(pair, method_name: str):
    """(upstream's CAM, the port's CAM) of ``method_name`` on the pair, explaining the torch model's top class."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget as TorchTarget

    import paddle_impl
    from paddle_impl.layer_paths import resolve_layer
    from paddle_impl.utils.model_targets import ClassifierOutputTarget

    spec, torch_model, paddle_model, x, target = pair
    method = METHODS[method_name]
    torch_reshape = resolve_reshape(spec.torch_reshape, "torch", torch_model, spec.input_size)
    paddle_reshape = resolve_reshape(spec.paddle_reshape, "paddle", paddle_model, spec.input_size)
    torch_layer = resolve_layer(torch_model, spec.torch_target_layer)
    paddle_layer = resolve_layer(paddle_model, spec.paddle_target_layer)
    with getattr(pytorch_grad_cam, method.torch_class_name)(torch_model, [torch_layer], reshape_transform=torch_reshape) as cam:
        expected = cam(torch.from_numpy(x), [TorchTarget(target)])
    with getattr(paddle_impl, method.paddle_class_name)(paddle_model, [paddle_layer], reshape_transform=paddle_reshape) as cam:
        got = cam(paddle.to_tensor(x), [ClassifierOutputTarget(target)])
    return expected, got


# A CAM whose max - min is below this is flat (the harness's "vacuous"): two flat maps agree whatever the port does.
FLAT = 1e-6


def _assert_cam_agrees(pair, method_name: str, dtype: str) -> None:
    expected, got = _cams(pair, method_name)
    assert float(expected.max() - expected.min()) > FLAT, f"{pair[0].name} {method_name}: upstream's CAM is flat"
    bound = getattr(METHODS[method_name], f"cam_atol_{dtype}")
    difference = float(np.abs(got - expected).max())
    assert difference <= bound, (
        f"{pair[0].name} {method_name} {dtype}: CAM max|Δ| {difference:.3g} > bound {bound:g} "
        f"(upstream's CAM spans {expected.min():.3g}..{expected.max():.3g})"
    )


def _layer_norm_weights_seeded(paddle_model) -> bool:
    """Whether every LayerNorm of the Paddle model has a weight other than all ones (so the frozen-weight bug can show)."""
    norms = [layer for layer in paddle_model.sublayers() if isinstance(layer, paddle.nn.LayerNorm)]
    return bool(norms) and all(not np.allclose(norm.weight.numpy(), 1.0) for norm in norms)


def test_gradcam_on_deit_tiny_agrees_with_upstream_in_float32():
    pair = _build_pair("deit_tiny_patch16_224", "float32")
    assert _layer_norm_weights_seeded(pair[2]), "the LayerNorm weights must carry seeded noise, or the bug hides"
    _assert_cam_agrees(pair, "gradcam", "float32")


# -- slow tier ------------------------------------------------------------------

_PAIRS_CACHE = {}


def _cached_pair(name: str, dtype: str):
    key = (name, dtype)
    if key not in _PAIRS_CACHE:
        _PAIRS_CACHE.clear()  # one pair in memory at a time (ViT-B is 86M parameters a side)
        _PAIRS_CACHE[key] = _build_pair(name, dtype)
    return _PAIRS_CACHE[key]


_SLOW_CASES = [
    (name, dtype, method)
    for name, methods in (
        ("deit_tiny_patch16_224", SLOW_METHODS),
        ("swin_tiny_patch4_window7_224", SLOW_METHODS),
        ("convnext_tiny", SLOW_METHODS),
        ("vit_base_patch16_224", VIT_B_METHODS),
    )
    for dtype in ("float32", "float64")
    for method in methods
]


@pytest.mark.slow
@pytest.mark.parametrize("name, dtype, method_name", _SLOW_CASES)
def test_transformer_pair_agrees_with_upstream(name, dtype, method_name):
    _assert_cam_agrees(_cached_pair(name, dtype), method_name, dtype)


@pytest.mark.slow
def test_swin_without_its_switch_is_another_network():
    """PaddleClas's Swin as shipped (a shifted window in the last stage) is refused; the switch changes that block only."""
    _skip_without_paddleclas()
    from parity.hubs.seeding import seeded_hub_state
    from parity.hubs.transformers import swin_unshifted_at_window_resolution
    from parity.transfer import TransferError, transfer_weights

    spec = arch("swin_tiny_patch4_window7_224")
    torch_model = spec.new_torch_model()
    torch_model.load_state_dict(seeded_hub_state(spec, 0))
    torch_model.eval()
    shipped = spec.new_paddle_model("float32", switches=False)
    shipped.eval()
    x = np.random.RandomState(3).randn(1, 3, 224, 224).astype("float32")
    with pytest.raises(TransferError, match=r"outputs differ on example input \(1, 3, 224, 224\)"):
        transfer_weights(torch_model, shipped, [x], direction="torch_to_paddle")

    shifts = {(i, j): block.shift_size for i, layer in enumerate(shipped.layers) for j, block in enumerate(layer.blocks)}
    assert swin_unshifted_at_window_resolution(shipped) == 1
    changed = {key for key, shift in shifts.items()
               if shipped.layers[key[0]].blocks[key[1]].shift_size != shift}
    assert changed == {(3, 1)}, changed
    transfer_weights(torch_model, shipped, [x], direction="torch_to_paddle")
