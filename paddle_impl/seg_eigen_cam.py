"""Seg-Eigen-CAM (Chung & Ying, 2025, https://doi.org/10.3390/app15137562).

Port of ``pytorch_grad_cam/seg_eigen_cam.py`` (grad-cam 1.5.7).  Eigen-CAM on
gradient-weighted activations, with the SVD's sign fixed:

    W = |dy^c / dA| ⊙ A                      (Eq. 10: per position, both signs of the gradient count)
    p = W_c V_1                              (first principal component of the centred W)
    L = -p if |min p| > |max p| else p       (Eq. 13)
"""
from __future__ import annotations

from typing import Callable, List, Optional

import numpy as np
import paddle

from paddle_impl.base_cam import BaseCAM
from paddle_impl.utils.svd_on_activations import get_2d_projection_with_sign_correction

__all__ = ["SegEigenCAM"]


class SegEigenCAM(BaseCAM):
    """Sign-corrected first principal component of |gradient| x activation."""

    def __init__(
        self,
        model: paddle.nn.Layer,
        target_layers: List[paddle.nn.Layer],
        reshape_transform: Optional[Callable] = None,
    ) -> None:
        """Same arguments as upstream's ``SegEigenCAM``."""
        super().__init__(model, target_layers, reshape_transform, uses_gradients=True)

    def get_cam_image(
        self,
        input_tensor: paddle.Tensor,
        target_layer: paddle.nn.Layer,
        targets: List[Callable],
        activations: np.ndarray,
        grads: np.ndarray,
        eigen_smooth: bool,
    ) -> np.ndarray:
        """The sign-corrected projection of ``|G| ⊙ A`` -> (B, H, W) float32.

        ``eigen_smooth`` is ignored, as upstream ignores it.
        """
        return get_2d_projection_with_sign_correction(np.abs(grads) * activations)
