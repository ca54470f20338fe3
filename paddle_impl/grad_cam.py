"""Grad-CAM (Selvaraju et al., 2017, https://arxiv.org/abs/1610.02391).

    w_k = mean_{i,j} dy^c / dA^k_{ij}        L^c = ReLU(sum_k w_k A^k)
"""
from __future__ import annotations

import numpy as np

from paddle_impl.base_cam import BaseCAM

__all__ = ["GradCAM"]


class GradCAM(BaseCAM):
    def __init__(self, model, target_layers, reshape_transform=None) -> None:
        super().__init__(model, target_layers, reshape_transform)

    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads) -> np.ndarray:
        if grads.ndim != 4:
            raise ValueError(f"expected (B, C, H, W) gradients, got shape {grads.shape}")
        return np.mean(grads, axis=(2, 3))
