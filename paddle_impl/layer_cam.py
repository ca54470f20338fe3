"""LayerCAM (Jiang et al., 2021, https://ieeexplore.ieee.org/document/9462463).

    L^c_{ij} = sum_k ReLU(dy^c/dA^k_{ij}) * A^k_{ij}     (a weight per position, not per channel)
"""
from __future__ import annotations

import numpy as np

from paddle_impl.base_cam import BaseCAM
from paddle_impl.utils.svd_on_activations import get_2d_projection

__all__ = ["LayerCAM"]


class LayerCAM(BaseCAM):
    def __init__(self, model, target_layers, reshape_transform=None) -> None:
        super().__init__(model, target_layers, reshape_transform)

    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth) -> np.ndarray:
        spatial_weighted_activations = np.maximum(grads, 0) * activations
        if eigen_smooth:
            return get_2d_projection(spatial_weighted_activations)
        return spatial_weighted_activations.sum(axis=1)
