"""Guided backpropagation on a model with LayerNorm, its weights frozen by the user or not, against upstream.

Paddle 3.3.1 gives a ``layer_norm`` whose weight is ``stop_gradient`` the
input gradient of a unit weight (``tests/test_frozen_gradients.py``), so a
model fine-tuned with frozen LayerNorms got a wrong guided backprop until it
ran under ``frozen_parameters``.  The model is the tiny ViT of
``test_frozen_gradients.py`` (LayerNorm weights and layer scales far from 1)
with its MLP activations made ReLUs, so the guided ReLU rule is exercised
too.
"""
from __future__ import annotations

import contextlib
from typing import List

import numpy as np
import paddle
import pytest
import torch

import paddle_impl.guided_backprop as port_guided_backprop
from paddle_impl import GuidedBackpropReLUModel
from test_frozen_gradients import VIT_GRID, VIT_PATCH, _noise, _tiny_vit_pair

DTYPES = ("float32", "float64")
# Relative to the gradient's largest element; measured <= 7.6e-7 (float32) and <= 2.2e-14 (float64)
# over the 12 cases below; without the workaround a frozen model is off by 1.15, a half-frozen one by 0.80.
GRADIENT_RTOL = {"float32": 2e-6, "float64": 1e-12}

pytestmark = pytest.mark.usefixtures("one_thread")


def _relu_vit_pair(dtype: str):
    paddle_model, torch_model = _tiny_vit_pair(dtype)
    for paddle_block, torch_block in zip(paddle_model.blocks, torch_model.blocks):
        paddle_block.act = paddle.nn.ReLU()
        torch_block.act = torch.nn.ReLU()
    return paddle_model, torch_model


def _user_flags(pattern: str, count: int) -> List[bool]:
    if pattern == "trainable":
        return [False] * count
    if pattern == "frozen":
        return [True] * count
    return [index % 2 == 0 for index in range(count)]


def _input(dtype: str) -> np.ndarray:
    return _noise(np.random.default_rng(4), (1, 3, VIT_GRID * VIT_PATCH, VIT_GRID * VIT_PATCH), dtype, 1.0)


def _upstream(dtype: str, target_category) -> np.ndarray:
    from pytorch_grad_cam import GuidedBackpropReLUModel as TorchGuidedBackpropReLUModel

    _, torch_model = _relu_vit_pair(dtype)
    return TorchGuidedBackpropReLUModel(torch_model, device="cpu")(
        torch.from_numpy(_input(dtype)), target_category=target_category
    )


def _port(dtype: str, target_category, user_flags: str) -> np.ndarray:
    paddle_model, _ = _relu_vit_pair(dtype)
    params = paddle_model.parameters()
    flags = _user_flags(user_flags, len(params))
    for param, flag in zip(params, flags):
        param.stop_gradient = flag
    got = GuidedBackpropReLUModel(paddle_model)(paddle.to_tensor(_input(dtype)), target_category=target_category)
    assert [p.stop_gradient for p in params] == flags, "the user's stop_gradient flags were changed"
    assert all(p.grad is None for p in params), "guided backprop wrote into a parameter's .grad"
    assert all(type(layer) is not port_guided_backprop.GuidedBackpropReLUasModule for layer in paddle_model.sublayers())
    return got


def _relative_error(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("user_flags", ["trainable", "frozen", "mixed"])
@pytest.mark.parametrize("target_category", [None, 3], ids=["argmax", "class3"])
def test_guided_backprop_on_a_layer_norm_vit_matches_upstream(target_category, user_flags, dtype):
    expected = _upstream(dtype, target_category)
    got = _port(dtype, target_category, user_flags)
    assert got.shape == expected.shape == (VIT_GRID * VIT_PATCH, VIT_GRID * VIT_PATCH, 3)
    error = _relative_error(got, expected)
    assert error < GRADIENT_RTOL[dtype], f"{user_flags} {dtype}: max|Δ| / max {error:.3g}"


def test_guided_relu_rule_is_active_on_this_model():
    """The guided rule changes the result here: plain input gradients differ, so the ReLUs are exercised."""
    paddle_model, _ = _relu_vit_pair("float64")
    x = paddle.to_tensor(_input("float64"))
    x.stop_gradient = False
    paddle_model(x)[0, 3].backward()
    plain = x.grad.numpy()[0].transpose((1, 2, 0))
    guided = _upstream("float64", 3)
    assert _relative_error(plain, guided) > 1e-2


@pytest.mark.parametrize("dtype", DTYPES)
def test_guided_backprop_with_frozen_layer_norms_is_wrong_without_the_workaround(monkeypatch, dtype):
    """Without ``frozen_parameters`` (and its LayerNorm workaround) a user's frozen model gives another answer."""
    monkeypatch.setattr(port_guided_backprop, "frozen_parameters", lambda model: contextlib.nullcontext())
    error = _relative_error(_port(dtype, 3, "frozen"), _upstream(dtype, 3))
    assert error > 100 * GRADIENT_RTOL[dtype], f"max|Δ| / max {error:.3g}"
