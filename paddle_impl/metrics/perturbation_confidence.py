"""Confidence change under a CAM-driven perturbation of the input, and percentile removal.

Port of ``pytorch_grad_cam/metrics/perturbation_confidence.py`` (grad-cam 1.5.7).

For an image ``x`` with CAM ``L`` and target ``f`` (the model output followed
by a target callable) a perturbation ``P`` gives

    score(x, L) = f(P(x, L)) - f(x)            (return_diff=True)
    score(x, L) = f(P(x, L))                   (return_diff=False)

The scores are cast to float32 as upstream casts them, whatever the model's
dtype.  ``RemoveMostRelevantFirst`` / ``RemoveLeastRelevantFirst`` build the
binary keep-mask of ROAD (Rong et al., 2022, https://arxiv.org/abs/2202.00449)
from a percentile of the CAM and hand it to an imputer.
"""
from __future__ import annotations

from typing import Callable, List, Sequence, Union

import cv2
import numpy as np
import paddle

__all__ = [
    "PerturbationConfidenceMetric",
    "RemoveMostRelevantFirst",
    "RemoveLeastRelevantFirst",
    "AveragerAcrossThresholds",
    "DEFAULT_PERCENTILES",
]

DEFAULT_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def _scores(targets: Sequence[Callable], outputs: paddle.Tensor) -> np.ndarray:
    """``np.float32([target(row) for each row])``: upstream's per-image scores and cast."""
    return np.float32([target(output).numpy() for target, output in zip(targets, outputs)])


class PerturbationConfidenceMetric:
    """``f(P(x, L)) - f(x)`` per image (or ``f(P(x, L))`` without ``return_diff``).

    ``perturbation(image, cam)`` receives one ``(C, H, W)`` image and its
    ``(H, W)`` CAM as Paddle tensors and returns the perturbed image.
    """

    def __init__(self, perturbation: Callable[[paddle.Tensor, paddle.Tensor], paddle.Tensor]) -> None:
        self.perturbation = perturbation

    def __call__(
        self,
        input_tensor: paddle.Tensor,
        cams: np.ndarray,
        targets: List[Callable],
        model: paddle.nn.Layer,
        return_visualization: bool = False,
        return_diff: bool = True,
    ):
        """Score each image of the batch; with ``return_visualization`` also return the perturbed batch.

        Returns a float32 ``(B,)`` array (and a ``(B, C, H, W)`` tensor).
        """
        if return_diff:
            with paddle.no_grad():
                scores = _scores(targets, model(input_tensor))

        perturbed = []
        for i in range(int(input_tensor.shape[0])):
            tensor = self.perturbation(input_tensor[i], paddle.to_tensor(cams[i]))
            perturbed.append(tensor.unsqueeze(0))
        perturbed_tensors = paddle.concat(perturbed)

        with paddle.no_grad():
            scores_after_imputation = _scores(targets, model(perturbed_tensors))

        result = scores_after_imputation - scores if return_diff else scores_after_imputation
        if return_visualization:
            return result, perturbed_tensors
        return result


def keep_mask(mask: np.ndarray, percentile: Union[float, str]) -> np.ndarray:
    """1 where a pixel is kept, 0 where it is to be imputed: the pixels at or above the percentile go.

    ``percentile='auto'`` thresholds ``uint8(255 * mask)`` with Otsu's method
    instead, giving 0/255 (upstream's quirk: then the *high* values are the
    ones kept).  The percentile threshold is compared in the mask's dtype,
    as torch compares a tensor with a Python scalar.
    """
    if percentile != "auto":
        threshold = np.percentile(mask, percentile)
        return np.float32(mask < mask.dtype.type(threshold))
    _, binary_mask = cv2.threshold(np.uint8(mask * 255), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return binary_mask


class RemoveMostRelevantFirst:
    """MoRF: impute the pixels whose CAM value is at or above the ``percentile``-th percentile."""

    def __init__(self, percentile: Union[float, str], imputer: Callable) -> None:
        self.percentile = percentile
        self.imputer = imputer

    def __call__(self, input_tensor: paddle.Tensor, mask: paddle.Tensor) -> paddle.Tensor:
        """``imputer(image, keep_mask(cam))`` for one ``(C, H, W)`` image and its ``(H, W)`` CAM."""
        binary_mask = keep_mask(mask.numpy(), self.percentile)
        return self.imputer(input_tensor, paddle.to_tensor(binary_mask))


class RemoveLeastRelevantFirst(RemoveMostRelevantFirst):
    """LeRF: MoRF on ``1 - L``, so the least relevant pixels are imputed first."""

    def __call__(self, input_tensor: paddle.Tensor, mask: paddle.Tensor) -> paddle.Tensor:
        """MoRF applied to the inverted CAM ``1 - L``."""
        return super().__call__(input_tensor, 1 - mask)


class AveragerAcrossThresholds:
    """The mean over percentiles of a percentile metric: ``mean_p metric_p(x, L)`` (float32)."""

    def __init__(self, imputer: Callable, percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> None:
        self.imputer = imputer
        self.percentiles = list(percentiles)

    def __call__(
        self, input_tensor: paddle.Tensor, cams: np.ndarray, targets: List[Callable], model: paddle.nn.Layer
    ) -> np.ndarray:
        """Average ``imputer(p)(input_tensor, cams, targets, model)`` over ``percentiles``."""
        scores = []
        for percentile in self.percentiles:
            metric = self.imputer(percentile)
            scores.append(metric(input_tensor, cams, targets, model))
        return np.mean(np.float32(scores), axis=0)
