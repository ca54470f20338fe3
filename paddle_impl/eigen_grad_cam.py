"""Eigen-Grad-CAM: Eigen-CAM (https://arxiv.org/abs/2008.00299) applied to A * dy^c/dA.

    L^c = first-principal-component projection of (A ⊙ dy^c/dA)
"""
from __future__ import annotations

import numpy as np

from paddle_impl.base_cam import BaseCAM
from paddle_impl.utils.svd_on_activations import get_2d_projection

__all__ = ["EigenGradCAM"]


class EigenGradCAM(BaseCAM):
    def __init__(self, model, target_layers, reshape_transform=None) -> None:
        super().__init__(model, target_layers, reshape_transform)

    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth) -> np.ndarray:
        return get_2d_projection(grads * activations)
