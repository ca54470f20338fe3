"""ShapleyCAM on models with LayerNorm: a second derivative through ``layer_norm`` in Paddle 3.3.1.

Paddle 3.3.1 has no grad op for ``layer_norm_grad``, so the Hessian-vector
product ShapleyCAM takes failed on every model with a LayerNorm after its
target layer.  ``second_order_graph`` now runs ``_C_ops.layer_norm`` (the
route of ``nn.LayerNorm`` and ``F.layer_norm``) as elementwise ops in the CPU
kernel's order.  These tests check:

* the framework fact (fails, saying the replacement can go, once Paddle has
  the second derivative);
* the elementwise version gives the kernel's values bit for bit, float32 and
  float64, on realistic shapes, and is not a plain mean/rsqrt (which is not);
* its first and second derivatives equal torch's, frozen or trainable weight;
* the patch is undone on exit, also after an error, and composes with
  ``frozen_parameters``;
* ShapleyCAM on a small LayerNorm model pair equals upstream's within the
  registry's shapleycam bound, with its Hessian term large enough to matter.

The first pair is a small ConvNeXt-like network with SiLU; it uses both
LayerNorm routes (``F.layer_norm`` over channels, ``nn.LayerNorm`` over the
head's features and over a whole (C, H, W) map).  A transformer needs more:
GELU and softmax have no second derivative in Paddle 3.3.1 either, and the
double grad of a ``concat`` with a frozen input (the class token) fails;
``second_order_graph`` handles those too, checked op by op against torch and
with ShapleyCAM on the tiny ViT of ``test_frozen_gradients.py``.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Tuple

import numpy as np
import paddle
import pytest
import torch
from paddle import _C_ops

import paddle_impl
import paddle_impl.activations_and_gradients as port_aag
from paddle_impl.activations_and_gradients import frozen_parameters, second_order_graph
from paddle_impl.utils.model_targets import ClassifierOutputTarget as PaddleClassifierOutputTarget
from parity.registry import METHODS
from test_frozen_gradients import (
    VIT_GRID,
    VIT_PATCH,
    PaddleChannelsFirstLayerNorm,
    TorchChannelsFirstLayerNorm,
    _assign,
    _noise,
    _tiny_vit_pair,
)

DTYPES = ("float32", "float64")
PADDLE_FIXED_MESSAGE = (
    "Paddle now differentiates layer_norm twice: the LayerNorm-as-ops route in "
    "activations_and_gradients.second_order_graph can go"
)
# Derivatives of the elementwise LayerNorm vs torch's, relative to the largest element:
# measured <= 2.5e-7 (float32) and <= 2.2e-15 (float64), first and second order alike.
DERIVATIVE_RTOL = {"float32": 5e-6, "float64": 1e-12}

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the framework -----------------------------------------------------------------------------


def test_paddle_layer_norm_has_no_second_derivative():
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 3, 8)).astype("float32"))
    x.stop_gradient = False
    layer = paddle.nn.LayerNorm(8)
    y = layer(x)
    with pytest.raises(RuntimeError, match="layer_norm_grad doesn't have any grad op"):
        # Paddle refuses already when asked to record the backward for a second derivative.
        (gradient,) = paddle.grad((y * y).sum(), x, create_graph=True)
        paddle.grad(gradient.sum(), x)
        pytest.fail(PADDLE_FIXED_MESSAGE)


# -- the elementwise LayerNorm's values ----------------------------------------------------------

# (name, input shape, begin_norm_axis): token rows of DeiT-tiny and ViT-B, Swin's and ConvNeXt's
# channels-last maps, rows shorter than 8 (the kernel's plain loop), rows that are not a multiple
# of 8 (the AVX path's tail) and a LayerNorm over two axes.
KERNEL_SHAPES = [
    ("deit_tiny_tokens", (2, 197, 192), 2),
    ("vit_base_tokens", (1, 197, 768), 2),
    ("swin_stage1_nhwc", (1, 56, 56, 96), 3),
    ("convnext_stage4_nhwc", (2, 7, 7, 768), 3),
    ("rows_of_5", (4, 50, 5), 2),
    ("rows_of_13", (4, 50, 13), 2),
    ("rows_of_100", (4, 50, 100), 2),
    ("two_axes_4x25", (3, 10, 4, 25), 2),
]


def _kernel_and_ops(shape, axis, dtype, affine: bool, epsilon: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    length = int(np.prod(shape[axis:]))
    x = paddle.to_tensor(_noise(rng, shape, dtype, 2.0, 0.7))
    weight = paddle.to_tensor(_noise(rng, length, dtype, 0.5, 1.0)) if affine else None
    bias = paddle.to_tensor(_noise(rng, length, dtype, 0.5)) if affine else None
    expected = _C_ops.layer_norm(x, weight, bias, epsilon, axis).numpy()
    x.stop_gradient = False  # so that the elementwise route runs, not the kernel
    got = port_aag._layer_norm_as_ops(_C_ops.layer_norm)(x, weight, bias, epsilon, axis)
    assert not got.stop_gradient
    return got.numpy(), expected


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name,shape,axis", KERNEL_SHAPES, ids=[case[0] for case in KERNEL_SHAPES])
def test_layer_norm_as_ops_gives_the_kernels_values_bit_for_bit(name, shape, axis, dtype):
    for affine in (True, False):
        for epsilon in (1e-6, 1e-5):
            got, expected = _kernel_and_ops(shape, axis, dtype, affine, epsilon)
            max_delta = float(np.abs(got - expected).max())
            assert max_delta == 0.0, f"{name} affine={affine} eps={epsilon}: max|Δ| {max_delta:.3g}"


def test_layer_norm_as_ops_in_any_summation_order_would_not_be_exact(monkeypatch):
    """The bit-for-bit check can fail: a plain sum in place of the kernel's order differs in float32."""

    def plain_sum(rows):
        return rows.sum(axis=-1, keepdim=True)

    monkeypatch.setattr(port_aag, "_kernel_order_row_sum", plain_sum)
    got, expected = _kernel_and_ops((2, 197, 192), 2, "float32", True, 1e-6)
    assert np.abs(got - expected).max() > 0


def test_layer_norm_as_ops_checks_the_weight_size():
    x = paddle.ones([2, 6])
    x.stop_gradient = False
    with pytest.raises(ValueError, match="weight has 5 elements.*hold 6"):
        port_aag._layer_norm_as_ops(_C_ops.layer_norm)(x, paddle.ones([5]), None, 1e-5, 1)


# -- the elementwise LayerNorm's first and second derivatives vs torch --------------------------


def _layer_norm_pair(normalized_shape, dtype: str, rng):
    paddle_layer = paddle.nn.LayerNorm(normalized_shape, epsilon=1e-6)
    torch_module = torch.nn.LayerNorm(normalized_shape, eps=1e-6).to(getattr(torch, dtype))
    paddle_layer.to(dtype=dtype)
    weight, bias = _noise(rng, normalized_shape, dtype, 0.5, 1.0), _noise(rng, normalized_shape, dtype, 0.5)
    _assign(paddle_layer.weight, torch_module.weight, weight, weight.reshape(-1))
    _assign(paddle_layer.bias, torch_module.bias, bias, bias.reshape(-1))
    return paddle_layer, torch_module


def _torch_derivatives(module, x, upstream, direction) -> Tuple[np.ndarray, np.ndarray]:
    tx = torch.from_numpy(x).requires_grad_(True)
    (gradient,) = torch.autograd.grad((module(tx) * torch.from_numpy(upstream)).sum(), tx, create_graph=True)
    (hvp,) = torch.autograd.grad(gradient, tx, grad_outputs=torch.from_numpy(direction))
    return gradient.detach().numpy(), hvp.numpy()


def _paddle_derivatives(layer, x, upstream, direction) -> Tuple[np.ndarray, np.ndarray]:
    px = paddle.to_tensor(x)
    px.stop_gradient = False
    (gradient,) = paddle.grad((layer(px) * paddle.to_tensor(upstream)).sum(), px, create_graph=True)
    (hvp,) = paddle.grad(gradient, px, grad_outputs=paddle.to_tensor(direction))
    return gradient.numpy(), hvp.numpy()


def _relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weights", ["frozen", "trainable"])
@pytest.mark.parametrize("normalized_shape", [[16], [13], [4, 6]], ids=["16", "13", "4x6"])
def test_second_order_layer_norm_derivatives_match_torch(normalized_shape, weights, dtype):
    rng = np.random.default_rng(sum(normalized_shape))
    paddle_layer, torch_module = _layer_norm_pair(normalized_shape, dtype, rng)
    shape = (3, 5, *normalized_shape)
    x, upstream, direction = (_noise(rng, shape, dtype, 2.0, 0.5) for _ in range(3))
    for param in paddle_layer.parameters():
        param.stop_gradient = weights == "frozen"
    expected_gradient, expected_hvp = _torch_derivatives(torch_module, x, upstream, direction)
    with second_order_graph(paddle_layer):
        gradient, hvp = _paddle_derivatives(paddle_layer, x, upstream, direction)
    assert _relative_error(gradient, expected_gradient) < DERIVATIVE_RTOL[dtype]
    assert _relative_error(hvp, expected_hvp) < DERIVATIVE_RTOL[dtype]
    assert all(p.grad is None for p in paddle_layer.parameters())


@pytest.mark.parametrize("dtype", DTYPES)
def test_second_order_functional_layer_norm_with_frozen_parameters_matches_torch(dtype):
    """``F.layer_norm`` (ConvNeXt's channels-first norm) inside ``frozen_parameters``, as ShapleyCAM runs it."""
    rng = np.random.default_rng(11)
    paddle_layer, torch_module = PaddleChannelsFirstLayerNorm(6), TorchChannelsFirstLayerNorm(6)
    paddle_layer.to(dtype=dtype)
    torch_module.to(getattr(torch, dtype))
    weight, bias = _noise(rng, 6, dtype, 0.5, 1.0), _noise(rng, 6, dtype, 0.5)
    _assign(paddle_layer.weight, torch_module.weight, weight)
    _assign(paddle_layer.bias, torch_module.bias, bias)
    x, upstream, direction = (_noise(rng, (2, 6, 5, 5), dtype, 2.0, 0.5) for _ in range(3))
    expected_gradient, expected_hvp = _torch_derivatives(torch_module, x, upstream, direction)
    with frozen_parameters(paddle_layer), second_order_graph(paddle_layer):
        gradient, hvp = _paddle_derivatives(paddle_layer, x, upstream, direction)
    assert _relative_error(gradient, expected_gradient) < DERIVATIVE_RTOL[dtype]
    assert _relative_error(hvp, expected_hvp) < DERIVATIVE_RTOL[dtype]
    assert all(p.grad is None and not p.stop_gradient for p in paddle_layer.parameters())


def test_second_order_graph_restores_layer_norm_on_exit_also_after_an_error():
    original = _C_ops.layer_norm
    layer = paddle.nn.LayerNorm(4)
    with pytest.raises(RuntimeError, match="inside"):
        with frozen_parameters(layer), second_order_graph(layer):
            assert _C_ops.layer_norm is not original
            raise RuntimeError("inside")
    assert _C_ops.layer_norm is original


def test_second_order_graph_leaves_a_layer_norm_outside_the_graph_to_the_kernel(monkeypatch):
    """A LayerNorm before the re-rooted target layer (nothing needs a gradient) runs the kernel itself."""
    calls = []
    kernel = _C_ops.layer_norm

    def counting_kernel(*args):
        calls.append(args[0].stop_gradient)
        return kernel(*args)

    monkeypatch.setattr(_C_ops, "layer_norm", counting_kernel)
    layer = paddle.nn.LayerNorm(8)
    with frozen_parameters(layer), second_order_graph(layer):
        layer(paddle.ones([2, 8]))
        x = paddle.ones([2, 8])
        x.stop_gradient = False
        layer(x)
    assert calls == [True]


# -- ShapleyCAM on a LayerNorm model pair vs upstream ---------------------------------------------

CHANNELS, SIZE, CLASSES = 8, 8, 5


class PaddleTinyLayerNormNet(paddle.nn.Layer):
    """A ConvNeXt-like net: LayerNorm over channels (F.layer_norm), over a whole map and over the head's features."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = paddle.nn.Conv2D(3, CHANNELS, 3, padding=1)
        self.stem_norm = PaddleChannelsFirstLayerNorm(CHANNELS)
        self.target = paddle.nn.Conv2D(CHANNELS, CHANNELS, 3, padding=1)
        self.norm = PaddleChannelsFirstLayerNorm(CHANNELS)
        self.act = paddle.nn.Silu()
        self.pointwise = paddle.nn.Conv2D(CHANNELS, CHANNELS, 1)
        self.map_norm = paddle.nn.LayerNorm([CHANNELS, SIZE, SIZE], epsilon=1e-5)
        self.pool = paddle.nn.AdaptiveAvgPool2D(1)
        self.head_norm = paddle.nn.LayerNorm(CHANNELS, epsilon=1e-6)
        self.head = paddle.nn.Linear(CHANNELS, CLASSES)

    def forward(self, x):
        x = self.target(self.stem_norm(self.stem(x)))
        x = x + self.pointwise(self.act(self.norm(x)))
        x = self.pool(self.map_norm(x)).flatten(1)
        return self.head(self.head_norm(x))


class TorchTinyLayerNormNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, CHANNELS, 3, padding=1)
        self.stem_norm = TorchChannelsFirstLayerNorm(CHANNELS)
        self.target = torch.nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1)
        self.norm = TorchChannelsFirstLayerNorm(CHANNELS)
        self.act = torch.nn.SiLU()
        self.pointwise = torch.nn.Conv2d(CHANNELS, CHANNELS, 1)
        self.map_norm = torch.nn.LayerNorm([CHANNELS, SIZE, SIZE], eps=1e-5)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.head_norm = torch.nn.LayerNorm(CHANNELS, eps=1e-6)
        self.head = torch.nn.Linear(CHANNELS, CLASSES)

    def forward(self, x):
        x = self.target(self.stem_norm(self.stem(x)))
        x = x + self.pointwise(self.act(self.norm(x)))
        x = self.pool(self.map_norm(x)).flatten(1)
        return self.head(self.head_norm(x))


def tiny_layer_norm_pair(dtype: str):
    """The twins with the same seeded weights; every LayerNorm weight far from 1 and bias far from 0."""
    rng = np.random.default_rng(5)
    torch_model = TorchTinyLayerNormNet().to(getattr(torch, dtype)).eval()
    paddle_model = PaddleTinyLayerNormNet()
    paddle_model.to(dtype=dtype)
    paddle_model.eval()
    paddle_params = dict(paddle_model.named_parameters())
    torch_params = dict(torch_model.named_parameters())
    assert sorted(paddle_params) == sorted(torch_params)
    for key, torch_param in torch_params.items():
        shape = tuple(torch_param.shape)
        module = torch_model.get_submodule(key.rsplit(".", 1)[0])
        is_norm = isinstance(module, (torch.nn.LayerNorm, TorchChannelsFirstLayerNorm))
        if is_norm and key.endswith("weight"):
            value = _noise(rng, shape, dtype, 0.5, 1.0)
        else:
            value = _noise(rng, shape, dtype, 0.4 if len(shape) > 1 else 0.3)
        paddle_shape = tuple(paddle_params[key].shape)
        if key == "head.weight":
            paddle_value = value.T
        else:
            paddle_value = value.reshape(paddle_shape)
        _assign(paddle_params[key], torch_param, value, paddle_value)
    return paddle_model, torch_model


class _TorchSoftmaxOf:
    """Softmax probability of a class written with exp (Paddle's softmax has no second derivative)."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, output):
        exp = torch.exp(output - output.max().detach())
        return exp[..., self.category] / exp.sum(-1)


class _PaddleSoftmaxOf(_TorchSoftmaxOf):
    def __call__(self, output):
        exp = paddle.exp(output - output.max().detach())
        return exp[..., self.category] / exp.sum(-1)


def _targets(kind: str, framework: str):
    if kind == "logit":
        if framework == "torch":
            from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

            return [ClassifierOutputTarget(1), ClassifierOutputTarget(3)]
        return [PaddleClassifierOutputTarget(1), PaddleClassifierOutputTarget(3)]
    softmax = _TorchSoftmaxOf if framework == "torch" else _PaddleSoftmaxOf
    return [softmax(1), softmax(3)]


def _input(dtype: str) -> np.ndarray:
    return _noise(np.random.default_rng(3), (2, 3, SIZE, SIZE), dtype, 1.0)


def _upstream_cam(method_class_name: str, target_kind: str, dtype: str) -> np.ndarray:
    import pytorch_grad_cam

    _, torch_model = tiny_layer_norm_pair(dtype)
    with getattr(pytorch_grad_cam, method_class_name)(model=torch_model, target_layers=[torch_model.target]) as cam:
        return cam(input_tensor=torch.from_numpy(_input(dtype)), targets=_targets(target_kind, "torch"))


def _port_shapley_cam(target_kind: str, dtype: str, user_flags: str = "trainable") -> np.ndarray:
    paddle_model, _ = tiny_layer_norm_pair(dtype)
    for param in paddle_model.parameters():
        param.stop_gradient = user_flags == "frozen"
    flags = [p.stop_gradient for p in paddle_model.parameters()]
    with paddle_impl.ShapleyCAM(model=paddle_model, target_layers=[paddle_model.target]) as cam:
        got = cam(input_tensor=paddle.to_tensor(_input(dtype)), targets=_targets(target_kind, "paddle"))
    assert [p.stop_gradient for p in paddle_model.parameters()] == flags
    assert all(p.grad is None for p in paddle_model.parameters())
    assert _C_ops.layer_norm is _KERNEL
    return got


_KERNEL = _C_ops.layer_norm


def _shapley_tolerance(dtype: str) -> float:
    spec = METHODS["shapleycam"]
    return spec.cam_atol_float32 if dtype == "float32" else spec.cam_atol_float64


_UPSTREAM: Dict[Tuple[str, str, str], np.ndarray] = {}


def _cached_upstream(method_class_name: str, target_kind: str, dtype: str) -> np.ndarray:
    key = (method_class_name, target_kind, dtype)
    if key not in _UPSTREAM:
        _UPSTREAM[key] = _upstream_cam(method_class_name, target_kind, dtype)
    return _UPSTREAM[key]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("user_flags", ["trainable", "frozen"])
@pytest.mark.parametrize("target_kind", ["logit", "softmax"])
def test_shapley_cam_on_a_layer_norm_pair_matches_upstream(target_kind, user_flags, dtype):
    expected = _cached_upstream("ShapleyCAM", target_kind, dtype)
    assert np.ptp(expected) > 0, "upstream's CAM is flat: the comparison would prove nothing"
    got = _port_shapley_cam(target_kind, dtype, user_flags)
    error = float(np.abs(got - expected).max())
    assert error <= _shapley_tolerance(dtype), f"ShapleyCAM {target_kind} {dtype}: max|Δ| {error:.3g}"


@pytest.mark.parametrize("target_kind", ["logit", "softmax"])
def test_the_hessian_term_matters_on_the_layer_norm_pair(target_kind):
    """Upstream's ShapleyCAM and GradCAM differ here by far more than the bound: the comparison sees the term."""
    shapley = _cached_upstream("ShapleyCAM", target_kind, "float64")
    gradcam = _cached_upstream("GradCAM", target_kind, "float64")
    assert float(np.abs(shapley - gradcam).max()) > 1000 * _shapley_tolerance("float64")


def test_shapley_cam_on_the_layer_norm_pair_fails_without_the_layer_norm_route(monkeypatch):
    """Without the LayerNorm-as-ops route the second derivative is refused, as it was before."""
    monkeypatch.setattr(port_aag, "_layer_norm_as_ops", lambda kernel: kernel)
    with pytest.raises(NotImplementedError, match="no second derivative of layer_norm"):
        _port_shapley_cam("logit", "float64")


@pytest.mark.parametrize(
    "layer,op",
    [
        (paddle.nn.Hardswish(), "hardswish"),
        (paddle.nn.Hardsigmoid(), "hardsigmoid"),
        (paddle.nn.MaxPool2D(2), "max-pooling"),
        (paddle.nn.Conv2D(4, 4, 3, padding=1, groups=4), "depthwise_conv2d"),
    ],
    ids=["hardswish", "hardsigmoid", "max_pool", "depthwise_conv"],
)
def test_shapley_cam_names_an_op_without_a_second_derivative(layer, op):
    paddle.seed(0)
    target = paddle.nn.Conv2D(3, 4, 3, padding=1)
    model = paddle.nn.Sequential(
        target, layer, paddle.nn.Conv2D(4, 4, 1), paddle.nn.Tanh(), paddle.nn.AdaptiveAvgPool2D(1),
        paddle.nn.Flatten(), paddle.nn.Linear(4, 3),
    )
    with pytest.raises(NotImplementedError, match=f"no second derivative of {op};.*target layer after the last {op}"):
        with paddle_impl.ShapleyCAM(model=model, target_layers=[target]) as cam:
            cam(input_tensor=paddle.rand([1, 3, 8, 8]), targets=[PaddleClassifierOutputTarget(1)])


# -- GELU, softmax and a partly frozen concat ------------------------------------------------------


def _double_grad_of(forward: Callable) -> None:
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 3, 8)).astype("float32"))
    x.stop_gradient = False
    y = forward(x)
    (gradient,) = paddle.grad((y * y).sum(), x, create_graph=True)
    paddle.grad(gradient.sum(), x)


@pytest.mark.parametrize(
    "name,forward,message",
    [
        ("gelu", paddle.nn.functional.gelu, "gelu_grad doesn't have any grad op"),
        ("softmax", lambda x: paddle.nn.functional.softmax(x, -1), "softmax_grad doesn't have any grad op"),
        ("concat", lambda x: paddle.concat([paddle.ones([2, 1, 8]), x], axis=1) ** 2, "empty GradSlotMeta"),
    ],
    ids=["gelu", "softmax", "concat_with_a_constant"],
)
def test_paddle_has_no_second_derivative_of(name, forward, message):
    with pytest.raises((RuntimeError, SystemError), match=message):
        _double_grad_of(forward)
        pytest.fail(f"Paddle now differentiates {name} twice: its route in second_order_graph can go")


def _frozen_token_concat(framework):
    """A constant token joined to ``x`` in front and behind, through a non-linearity, cut back to ``x``'s shape."""

    def forward(x):
        if framework == "paddle":
            token = paddle.full([x.shape[0], 1, x.shape[2]], 0.7, dtype=x.dtype)
            return (paddle.tanh(paddle.concat([token, x], axis=1)) * paddle.concat([x, token], axis=1))[:, 1:]
        token = torch.full((x.shape[0], 1, x.shape[2]), 0.7, dtype=x.dtype)
        return (torch.tanh(torch.cat([token, x], dim=1)) * torch.cat([x, token], dim=1))[:, 1:]

    return forward


# (name, paddle op, torch op, float32 bound): derivatives relative to their largest element.
# Measured here (gradient / Hessian-vector product, float32): gelu 1.2e-7 / 1.0e-7, tanh-gelu
# 8.3e-7 / 2.7e-6 (9.8e-6 on another draw: torch writes its float32 double backward differently),
# softmax <= 2.2e-7, concat 1.8e-7 / 2.9e-7; float64 all <= 4.3e-15.
SECOND_ORDER_OPS = [
    ("gelu", paddle.nn.GELU(), torch.nn.GELU(), 5e-6),
    ("gelu_tanh", lambda x: paddle.nn.functional.gelu(x, approximate=True),
     lambda x: torch.nn.functional.gelu(x, approximate="tanh"), 5e-5),
    ("softmax_last_axis", lambda x: paddle.nn.functional.softmax(x, -1), lambda x: torch.softmax(x, -1), 5e-6),
    ("softmax_axis_1", paddle.nn.Softmax(axis=1), torch.nn.Softmax(dim=1), 5e-6),
    ("concat_with_a_frozen_token", _frozen_token_concat("paddle"), _frozen_token_concat("torch"), 5e-6),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "name,paddle_op,torch_op,float32_bound", SECOND_ORDER_OPS, ids=[case[0] for case in SECOND_ORDER_OPS]
)
def test_second_order_graph_op_keeps_its_values_and_has_torchs_derivatives(
    name, paddle_op, torch_op, float32_bound, dtype
):
    rng = np.random.default_rng(21)
    x, upstream, direction = (_noise(rng, (4, 6, 10), dtype, 2.0) for _ in range(3))
    kernel_values = paddle_op(paddle.to_tensor(x)).numpy()
    with second_order_graph(paddle.nn.Layer()):
        px = paddle.to_tensor(x)
        px.stop_gradient = False
        values = paddle_op(px)
        (gradient,) = paddle.grad((values * paddle.to_tensor(upstream)).sum(), px, create_graph=True)
        (hvp,) = paddle.grad(gradient, px, grad_outputs=paddle.to_tensor(direction))
    np.testing.assert_array_equal(values.numpy(), kernel_values)
    expected_gradient, expected_hvp = _torch_derivatives(torch_op, x, upstream, direction)
    bound = float32_bound if dtype == "float32" else DERIVATIVE_RTOL["float64"]
    assert _relative_error(gradient.numpy(), expected_gradient) < bound
    assert _relative_error(hvp.numpy(), expected_hvp) < bound


def test_second_order_graph_restores_gelu_softmax_and_concat():
    originals = (_C_ops.gelu, _C_ops.softmax, _C_ops.concat)
    with pytest.raises(RuntimeError, match="inside"):
        with second_order_graph(paddle.nn.Layer()):
            assert (_C_ops.gelu, _C_ops.softmax, _C_ops.concat) != originals
            raise RuntimeError("inside")
    assert (_C_ops.gelu, _C_ops.softmax, _C_ops.concat) == originals


# -- ShapleyCAM on the tiny ViT (LayerNorm, GELU, softmax attention, class token) vs upstream -------


def _vit_input(dtype: str) -> np.ndarray:
    return _noise(np.random.default_rng(3), (2, 3, VIT_GRID * VIT_PATCH, VIT_GRID * VIT_PATCH), dtype, 1.0)


def _upstream_vit_cam(method_class_name: str, dtype: str) -> np.ndarray:
    """Upstream on the patch embedding (a (B, C, H, W) output: upstream's ShapleyCAM cannot reshape tokens).

    Upstream's ``release`` calls ``detach_()`` on the stored gradients, which
    raises when a gradient is a view, as the one arriving through
    ``flatten(2)`` here is; out-of-place detached copies are stored before
    it runs.  The CAM is computed before that and is unaffected.
    """
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    key = ("vit", method_class_name, "logit", dtype)
    if key not in _UPSTREAM:
        _, torch_model = _tiny_vit_pair(dtype)
        cam = getattr(pytorch_grad_cam, method_class_name)(model=torch_model, target_layers=[torch_model.patch_embed])
        try:
            _UPSTREAM[key] = cam(
                input_tensor=torch.from_numpy(_vit_input(dtype)),
                targets=[ClassifierOutputTarget(2), ClassifierOutputTarget(4)],
            )
        finally:
            stored = cam.activations_and_grads
            stored.gradients = [g.detach() for g in stored.gradients]
            stored.activations = [a.detach() for a in stored.activations]
            stored.release()
    return _UPSTREAM[key]


@pytest.mark.parametrize("dtype", DTYPES)
def test_shapley_cam_on_the_tiny_vit_matches_upstream(dtype):
    expected = _upstream_vit_cam("ShapleyCAM", dtype)
    assert np.ptp(expected) > 0, "upstream's CAM is flat: the comparison would prove nothing"
    paddle_model, _ = _tiny_vit_pair(dtype)
    flags = [p.stop_gradient for p in paddle_model.parameters()]
    originals = (_C_ops.layer_norm, _C_ops.gelu, _C_ops.softmax, _C_ops.concat)
    with paddle_impl.ShapleyCAM(model=paddle_model, target_layers=[paddle_model.patch_embed]) as cam:
        got = cam(
            input_tensor=paddle.to_tensor(_vit_input(dtype)),
            targets=[PaddleClassifierOutputTarget(2), PaddleClassifierOutputTarget(4)],
        )
    assert (_C_ops.layer_norm, _C_ops.gelu, _C_ops.softmax, _C_ops.concat) == originals
    assert [p.stop_gradient for p in paddle_model.parameters()] == flags
    error = float(np.abs(got - expected).max())
    assert error <= _shapley_tolerance(dtype), f"ShapleyCAM tiny ViT {dtype}: max|Δ| {error:.3g}"


def test_the_hessian_term_matters_on_the_tiny_vit():
    shapley = _upstream_vit_cam("ShapleyCAM", "float64")
    gradcam = _upstream_vit_cam("GradCAM", "float64")
    assert float(np.abs(shapley - gradcam).max()) > 1000 * _shapley_tolerance("float64")
