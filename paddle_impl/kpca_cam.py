"""KPCA-CAM (Karmani et al., 2024, https://arxiv.org/abs/2410.00267).

Port of ``pytorch_grad_cam/kpca_cam.py`` (grad-cam 1.5.7).  Eigen-CAM with
kernel PCA: the map is each position's score on the first kernel principal
component of the centred activations,

    K_{pq} = k(a_p, a_q)  (a_p: the C-vector at position p)    L = alpha_1^T K_c

computed with scikit-learn's ``KernelPCA`` exactly as upstream calls it.
Gradient-free and class-agnostic.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import numpy as np
import paddle

from paddle_impl.base_cam import BaseCAM
from paddle_impl.utils.svd_on_activations import get_2d_projection_kernel

__all__ = ["KPCA_CAM"]


class KPCA_CAM(BaseCAM):
    """Kernel-PCA projection of the target-layer activations (no gradients, no class)."""

    compiled_forward = True  # reads only the forward pass: see BaseCAM.forward_through_engine

    def __init__(
        self,
        model: paddle.nn.Layer,
        target_layers: List[paddle.nn.Layer],
        reshape_transform: Optional[Callable] = None,
        kernel: str = "sigmoid",
        gamma: Optional[float] = None,
    ) -> None:
        """Same arguments as upstream's ``KPCA_CAM``; ``kernel`` and ``gamma`` go to ``KernelPCA``."""
        super().__init__(model, target_layers, reshape_transform, uses_gradients=False)
        self.kernel = kernel
        self.gamma = gamma

    def get_cam_image(
        self,
        input_tensor: paddle.Tensor,
        target_layer: paddle.nn.Layer,
        targets: List[Callable],
        activations: np.ndarray,
        grads: Optional[np.ndarray],
        eigen_smooth: bool,
    ) -> np.ndarray:
        """First kernel-PC scores of each position -> (B, H, W) float32; ``eigen_smooth`` is ignored, as upstream."""
        return get_2d_projection_kernel(activations, self.kernel, self.gamma)
