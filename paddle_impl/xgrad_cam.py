"""XGrad-CAM (Fu et al., 2020, https://arxiv.org/abs/2008.02312).

    w_k = sum_{ij} (A^k_{ij} / (sum_{ab} A^k_{ab} + eps)) * dy^c/dA^k_{ij},   eps = 1e-7
"""
from __future__ import annotations

import numpy as np

from paddle_impl.base_cam import BaseCAM

__all__ = ["XGradCAM"]


class XGradCAM(BaseCAM):
    def __init__(self, model, target_layers, reshape_transform=None) -> None:
        super().__init__(model, target_layers, reshape_transform)

    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads) -> np.ndarray:
        spatial_axes = tuple(range(2, activations.ndim))
        sum_activations = np.sum(activations, axis=spatial_axes)
        sum_activations = sum_activations.reshape(sum_activations.shape + (1,) * len(spatial_axes))
        eps = 1e-7
        weights = grads * activations / (sum_activations + eps)
        return weights.sum(axis=spatial_axes)
