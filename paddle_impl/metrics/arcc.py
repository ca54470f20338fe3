"""Complexity, Coherency and their harmonic combination with ROAD, ARCC.

Port of ``pytorch_grad_cam/metrics/arcc.py`` (grad-cam 1.5.7).  Complexity
and Coherency are from Poppi et al., "Revisiting the evaluation of class
activation mapping for explainability" (https://arxiv.org/abs/2104.10252),
where ADCC combines them with Average Drop; ARCC (upstream cites
https://arxiv.org/abs/2605.14641) uses ROAD instead:

    Complexity(L)  = ||L||_1 / (H W)
    Coherency(L)   = (rho(L, L') + 1) / 2,   L' = CAM of x ⊙ L,  rho = Pearson correlation
    ARCC           = 3 / (1 / (Coherency + 1e-8) + 1 / ((1 - Complexity) + 1e-8) + 1 / (R + 1e-8)),
                     R = clip(2 * ROADCombined, 0, 1)

ARCC is as random as its ROAD term: ROAD adds ``0.01 * N(0, 1)`` to the pixels it
imputes, drawn from Paddle's generator here and from torch's upstream, so the
two give different ARCC for the same seed.  Where R is small ARCC is about
``3 R`` and keeps ROAD's relative noise in full: upstream's own ARCC moves by
3-9% between torch seeds on an untrained ResNet18 (``python -m
tools.metric_noise``).  With the same draws (``NoisyLinearImputer.draw_noise``
replaced, ``tests/test_metrics_batch.py``) the two agree to 3.4e-7 or better in float32
and exactly in float64.
"""
from __future__ import annotations

from typing import Callable, List, Sequence

import numpy as np
import paddle

from paddle_impl.base_cam import BaseCAM
from paddle_impl.metrics.cam_mult_image import multiply_tensor_with_cam
from paddle_impl.metrics.road import ROADCombined

__all__ = ["batch_pearson_coherency", "Complexity", "Coherency", "ARCC"]

# Keeps the correlation finite for a constant map (upstream's literal).
PEARSON_EPS = 1e-8
# Keeps each reciprocal in ARCC's harmonic mean finite (upstream's literal).
ARCC_EPS = 1e-8


def batch_pearson_coherency(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Per-item Pearson correlation ``cov(a, b) / (std(a) std(b) + 1e-8)`` of two ``(B, ...)`` batches.

    Covariance and standard deviations use the ``n - 1`` denominator.
    """
    a = A.reshape(A.shape[0], -1)
    b = B.reshape(B.shape[0], -1)
    a_centered = a - a.mean(axis=1, keepdims=True)
    b_centered = b - b.mean(axis=1, keepdims=True)
    dof = a.shape[1] - 1
    cov = (a_centered * b_centered).sum(axis=1) / dof
    std_a = np.sqrt((a_centered**2).sum(axis=1) / dof)
    std_b = np.sqrt((b_centered**2).sum(axis=1) / dof)
    return cov / (std_a * std_b + PEARSON_EPS)


class Complexity:
    """``||L||_1 / (number of pixels)`` per map, in [0, 1] for a [0, 1] CAM (lower is simpler).

    Paper: https://arxiv.org/abs/2104.10252.
    """

    def __call__(self, grayscale_cams: np.ndarray) -> np.ndarray:
        """The mean absolute CAM value of each map of a ``(B, H, W)`` batch."""
        flattened_cams = grayscale_cams.reshape(grayscale_cams.shape[0], -1)
        l1_norm = np.sum(np.abs(flattened_cams), axis=1)
        return l1_norm / flattened_cams.shape[1]


class Coherency:
    """``(rho(L, L') + 1) / 2`` with ``L'`` the CAM the same method gives for ``x ⊙ L``.

    A coherent explanation explains itself: masking the input with its CAM
    should not move the CAM.  Paper: https://arxiv.org/abs/2104.10252.
    """

    def __call__(
        self,
        input_tensor: paddle.Tensor,
        grayscale_cams: np.ndarray,
        targets: List[Callable],
        model: paddle.nn.Layer,
        base_method: BaseCAM,
    ) -> np.ndarray:
        """Coherency per image; ``base_method`` is the CAM object that produced ``grayscale_cams``."""
        tensor_cams = paddle.to_tensor(grayscale_cams).unsqueeze(1)
        mixed_images = multiply_tensor_with_cam(input_tensor, tensor_cams)
        mixed_cams = base_method(input_tensor=mixed_images, targets=targets)
        return (batch_pearson_coherency(mixed_cams, grayscale_cams) + 1) / 2


class ARCC:
    """The harmonic mean of Coherency, 1 - Complexity and the rescaled ROAD score (higher is better)."""

    def __init__(self, base_method: BaseCAM, road_percentiles: Sequence[float] = (20, 40, 60, 80)) -> None:
        self.complexity = Complexity()
        self.coherency = Coherency()
        self.road = ROADCombined(percentiles=list(road_percentiles))
        self.base_method = base_method

    def __call__(
        self, input_tensor: paddle.Tensor, grayscale_cams: np.ndarray, targets: List[Callable], model: paddle.nn.Layer
    ) -> np.ndarray:
        """ARCC per image (Complexity, then Coherency, then ROAD, as upstream, for the noise order)."""
        complexity = self.complexity(grayscale_cams)
        coherency = self.coherency(input_tensor, grayscale_cams, targets, model, self.base_method)
        road = self.road(input_tensor, grayscale_cams, targets, model)
        # ROADCombined lies in [-0.5, 0.5]; rescale to [0, 1] for the harmonic mean.
        road = (road * 2).clip(0, 1)
        return 3 * (
            (1 / (coherency + ARCC_EPS)) + (1 / ((1 - complexity) + ARCC_EPS)) + (1 / (road + ARCC_EPS))
        ) ** (-1)
