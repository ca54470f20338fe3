"""A PaddlePaddle port of pytorch-grad-cam (``grad-cam`` 1.5.7).

Names and call shapes follow upstream, so switching is one import line::

    from paddle_impl import GradCAM
    with GradCAM(model=model, target_layers=[model.layer4]) as cam:
        grayscale = cam(input_tensor=x, targets=None, aug_smooth=False, eigen_smooth=False)

The CAM classes are imported on first use, so the framework-free helpers
(``paddle_impl.atomic``, ``paddle_impl.errors``) can be used by the parity
harness's orchestrator without loading Paddle.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "AblationCAM": "paddle_impl.ablation_cam",
    "AblationLayer": "paddle_impl.ablation_layer",
    "ActivationsAndGradients": "paddle_impl.activations_and_gradients",
    "BaseCAM": "paddle_impl.base_cam",
    "EigenCAM": "paddle_impl.eigen_cam",
    "EigenGradCAM": "paddle_impl.eigen_grad_cam",
    "GradCAM": "paddle_impl.grad_cam",
    "GradCAMPlusPlus": "paddle_impl.grad_cam_plusplus",
    "GuidedBackpropReLUModel": "paddle_impl.guided_backprop",
    "LayerCAM": "paddle_impl.layer_cam",
    "ScoreCAM": "paddle_impl.score_cam",
    "XGradCAM": "paddle_impl.xgrad_cam",
}

__all__ = sorted(_EXPORTS) + ["utils"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name == "utils":
        return importlib.import_module("paddle_impl.utils")
    raise AttributeError(f"module 'paddle_impl' has no attribute {name!r}")


def __dir__():
    return __all__
