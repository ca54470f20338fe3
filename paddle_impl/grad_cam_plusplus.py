"""Grad-CAM++ (Chattopadhyay et al., 2018, https://arxiv.org/abs/1710.11063), eq. 19.

    a^k_{ij} = g^2 / (2 g^2 + sum_{ab} A^k_{ab} * g^3 + eps),  g = dy^c/dA^k_{ij}, eps = 1e-6
    a^k_{ij} = 0 where g = 0
    w_k = sum_{ij} a^k_{ij} ReLU(g)
"""
from __future__ import annotations

import numpy as np

from paddle_impl.base_cam import BaseCAM

__all__ = ["GradCAMPlusPlus"]


class GradCAMPlusPlus(BaseCAM):
    def __init__(self, model, target_layers, reshape_transform=None) -> None:
        super().__init__(model, target_layers, reshape_transform)

    def get_cam_weights(self, input_tensor, target_layers, targets, activations, grads) -> np.ndarray:
        grads_power_2 = grads**2
        grads_power_3 = grads_power_2 * grads
        spatial_axes = tuple(range(2, activations.ndim))
        sum_activations = np.sum(activations, axis=spatial_axes)
        sum_activations = sum_activations.reshape(sum_activations.shape + (1,) * len(spatial_axes))
        eps = 0.000001
        aij = grads_power_2 / (2 * grads_power_2 + sum_activations * grads_power_3 + eps)
        # The paper's ReLU on the gradient also zeroes alpha where the gradient is exactly 0.
        aij = np.where(grads != 0, aij, 0)
        weights = np.maximum(grads, 0) * aij
        return np.sum(weights, axis=spatial_axes)
