"""FEM, the Feature Explanation Method (Fuad et al., 2020, https://hal.science/hal-02963298/document).

Port of ``pytorch_grad_cam/fem.py`` (grad-cam 1.5.7).  Gradient-free: a
channel's weight is the fraction of its positions that stand out by the
k-sigma rule,

    w_k = mean_{ij} [ A^k_{ij} > mean(A^k) + k * std(A^k) ]        L = sum_k w_k A^k

(``std`` is numpy's population standard deviation, as upstream).
"""
from __future__ import annotations

from typing import Callable, List, Optional

import numpy as np
import paddle

from paddle_impl.base_cam import BaseCAM

__all__ = ["FEM"]


class FEM(BaseCAM):
    """Channels weighted by how many of their positions exceed mean + k std."""
    compiled_forward = True  # reads only the forward pass: see BaseCAM.forward_through_engine


    def __init__(
        self,
        model: paddle.nn.Layer,
        target_layers: List[paddle.nn.Layer],
        reshape_transform: Optional[Callable] = None,
        k: float = 2,
    ) -> None:
        """Same arguments as upstream's ``FEM``; ``k`` is the number of standard deviations of the threshold."""
        super().__init__(model, target_layers, reshape_transform, uses_gradients=False)
        self.k = k

    def get_cam_image(
        self,
        input_tensor: paddle.Tensor,
        target_layer: paddle.nn.Layer,
        targets: List[Callable],
        activations: np.ndarray,
        grads: Optional[np.ndarray],
        eigen_smooth: bool,
    ) -> np.ndarray:
        """``sum_k w_k A^k`` with the k-sigma weights above -> (B, H, W) (or (B, D, H, W) for volumes).

        ``eigen_smooth`` is ignored, as upstream ignores it.
        """
        if activations.ndim == 4:
            axis = (2, 3)
        elif activations.ndim == 5:
            axis = (2, 3, 4)
        else:
            raise ValueError(
                f"FEM expects (B, C, H, W) or (B, C, D, H, W) activations, got shape {activations.shape}"
            )
        means = np.mean(activations, axis=axis)
        stds = np.std(activations, axis=axis)
        per_channel_shape = list(means.shape) + [1] * len(axis)
        threshold = (means + self.k * stds).reshape(per_channel_shape)
        weights = (activations > threshold).mean(axis=axis)
        return (weights.reshape(per_channel_shape) * activations).sum(axis=1)
