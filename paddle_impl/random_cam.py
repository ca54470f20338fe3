"""Random-CAM: channel weights drawn uniformly from [-1, 1] (upstream's sanity-check baseline; no paper).

Port of ``pytorch_grad_cam/random_cam.py`` (grad-cam 1.5.7).

    w_k ~ U(-1, 1)        L = ReLU(sum_k w_k A^k)

The weights come from ``np.random.uniform(-1, 1, size=(B, C))``, numpy's
global RNG, with the same call and the same size as upstream, so the port
draws exactly upstream's numbers when the global RNG is in the same state:
to compare the two, seed it identically (``np.random.seed(s)``) right before
each side's ``cam(...)`` call.  With ``aug_smooth`` the six passes draw one
after another from that same stream on both sides.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import numpy as np
import paddle

from paddle_impl.base_cam import BaseCAM

__all__ = ["RandomCAM"]


class RandomCAM(BaseCAM):
    """A CAM from random channel weights: what a method must beat to be informative."""

    def __init__(
        self,
        model: paddle.nn.Layer,
        target_layers: List[paddle.nn.Layer],
        reshape_transform: Optional[Callable] = None,
    ) -> None:
        """Same arguments as upstream's ``RandomCAM``; like upstream it runs the backward pass."""
        super().__init__(model, target_layers, reshape_transform)

    def get_cam_weights(
        self,
        input_tensor: paddle.Tensor,
        target_layer: paddle.nn.Layer,
        targets: List[Callable],
        activations: np.ndarray,
        grads: np.ndarray,
    ) -> np.ndarray:
        """(B, C) float64 weights from ``np.random.uniform(-1, 1)``, sized by the gradients as upstream."""
        return np.random.uniform(-1, 1, size=(grads.shape[0], grads.shape[1]))
