"""HiResCAM (Draelos & Carin, 2020, https://arxiv.org/abs/2011.08891).

Port of ``pytorch_grad_cam/hirescam.py`` (grad-cam 1.5.7).

    L^c_{ij} = sum_k (dy^c / dA^k_{ij}) * A^k_{ij}

Grad-CAM averages the gradient over positions before weighting a channel;
HiResCAM keeps the gradient of every position, which makes the map exactly
the contribution of each position for models that end in a linear layer
after global average pooling.
"""
from __future__ import annotations

import warnings
from typing import Callable, List, Optional

import numpy as np
import paddle

from paddle_impl.base_cam import BaseCAM
from paddle_impl.utils.svd_on_activations import get_2d_projection

__all__ = ["HiResCAM"]


class HiResCAM(BaseCAM):
    """Element-wise gradient x activation, summed over channels (no pooling of the gradient)."""

    def __init__(
        self,
        model: paddle.nn.Layer,
        target_layers: List[paddle.nn.Layer],
        reshape_transform: Optional[Callable] = None,
    ) -> None:
        """Same arguments as upstream's ``HiResCAM``."""
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
        """``sum_k G^k ⊙ A^k`` -> (B, H, W); with ``eigen_smooth`` the first principal component of ``G ⊙ A``.

        Upstream prints a warning when smoothing; here it is a ``UserWarning``.
        """
        elementwise_activations = grads * activations
        if eigen_smooth:
            warnings.warn("HiResCAM's faithfulness guarantees do not hold if smoothing is applied", UserWarning)
            return get_2d_projection(elementwise_activations)
        return elementwise_activations.sum(axis=1)
