"""Eigen-CAM (Muhammad & Yeasin, 2020, https://arxiv.org/abs/2008.00299).

    L = A V_1   (projection of the centred activations onto their first principal component)

No gradients and no class: the map is the same whatever the target.
"""
from __future__ import annotations

import numpy as np

from paddle_impl.base_cam import BaseCAM
from paddle_impl.utils.svd_on_activations import get_2d_projection

__all__ = ["EigenCAM"]


class EigenCAM(BaseCAM):
    compiled_forward = True  # reads only the forward pass: see BaseCAM.forward_through_engine

    def __init__(self, model, target_layers, reshape_transform=None) -> None:
        super().__init__(model, target_layers, reshape_transform, uses_gradients=False)

    def get_cam_image(self, input_tensor, target_layer, targets, activations, grads, eigen_smooth) -> np.ndarray:
        return get_2d_projection(activations)
