"""Grad-CAM with an element-wise product (upstream's ``GradCAMElementWise``; no paper of its own).

Port of ``pytorch_grad_cam/grad_cam_elementwise.py`` (grad-cam 1.5.7).  It is
HiResCAM (https://arxiv.org/abs/2011.08891) with a ReLU on every
gradient x activation term before the channels are summed:

    L^c_{ij} = sum_k ReLU( (dy^c / dA^k_{ij}) * A^k_{ij} )
"""
from __future__ import annotations

from typing import Callable, List, Optional

import numpy as np
import paddle

from paddle_impl.base_cam import BaseCAM
from paddle_impl.utils.svd_on_activations import get_2d_projection

__all__ = ["GradCAMElementWise"]


class GradCAMElementWise(BaseCAM):
    """Sum over channels of the positive part of gradient x activation."""

    def __init__(
        self,
        model: paddle.nn.Layer,
        target_layers: List[paddle.nn.Layer],
        reshape_transform: Optional[Callable] = None,
    ) -> None:
        """Same arguments as upstream's ``GradCAMElementWise``."""
        super().__init__(model, target_layers, reshape_transform)

    def get_cam_image(
        self,
        input_tensor: paddle.Tensor,
        target_layer: paddle.nn.Layer,
        targets: List[Callable],
        activations: np.ndarray,
        grads: np.ndarray,
        eigen_smooth: bool,
    ) -> np.ndarray:
        """``sum_k max(G^k ⊙ A^k, 0)`` -> (B, H, W); with ``eigen_smooth`` the first principal component instead."""
        elementwise_activations = np.maximum(grads * activations, 0)
        if eigen_smooth:
            return get_2d_projection(elementwise_activations)
        return elementwise_activations.sum(axis=1)
