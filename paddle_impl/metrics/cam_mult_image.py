"""Confidence change when the input is multiplied by its CAM (the Grad-CAM++ paper's metrics).

Port of ``pytorch_grad_cam/metrics/cam_mult_image.py`` (grad-cam 1.5.7).
Grad-CAM++ (Chattopadhyay et al., 2018, https://arxiv.org/abs/1710.11063,
section 5.1) scores an explanation by the model's confidence on the
"explanation map" ``E = L ⊙ x``, with ``Y = f(x)`` and ``O = f(E)``:

    CamMultImageConfidenceChange:  O - Y
    DropInConfidence:              max(0, Y - O)      (the paper's Average Drop % is
                                                        100 * mean(max(0, Y - O) / Y))
    IncreaseInConfidence:          1[O > Y]           (its % Increase in Confidence is
                                                        100 * mean of this)

As upstream, ``x`` is the *normalised* input tensor and the scores come from
the given targets (``ClassifierOutputSoftmaxTarget`` gives the paper's class
probabilities, ``ClassifierOutputTarget`` the logits); all are float32.
"""
from __future__ import annotations

import numpy as np
import paddle

from paddle_impl.metrics.perturbation_confidence import PerturbationConfidenceMetric

__all__ = [
    "multiply_tensor_with_cam",
    "CamMultImageConfidenceChange",
    "DropInConfidence",
    "IncreaseInConfidence",
]


def multiply_tensor_with_cam(input_tensor: paddle.Tensor, cam: paddle.Tensor) -> paddle.Tensor:
    """``x ⊙ L``: a ``(C, H, W)`` normalised image times its ``(H, W)`` CAM, broadcast over channels.

    The product takes the wider float dtype of the two, as torch's type
    promotion does (a float32 CAM on a float64 image gives float64).
    """
    image_dtype = np.dtype(str(input_tensor.dtype).split(".")[-1])
    cam_dtype = np.dtype(str(cam.dtype).split(".")[-1])
    dtype = str(np.result_type(image_dtype, cam_dtype)) if cam_dtype.kind == "f" else str(image_dtype)
    if image_dtype != dtype:
        input_tensor = input_tensor.astype(dtype)
    if cam_dtype != dtype:
        cam = cam.astype(dtype)
    return input_tensor * cam


def _map_scores(result, transform):
    """Apply ``transform`` to the scores, whether or not the perturbed batch came with them."""
    if isinstance(result, tuple):
        return (transform(result[0]),) + tuple(result[1:])
    return transform(result)


class CamMultImageConfidenceChange(PerturbationConfidenceMetric):
    """``f(L ⊙ x) - f(x)`` per image (float32)."""

    def __init__(self) -> None:
        super().__init__(multiply_tensor_with_cam)


class DropInConfidence(CamMultImageConfidenceChange):
    """``max(0, f(x) - f(L ⊙ x))`` per image: the un-normalised drop behind Average Drop %."""

    def __call__(self, *args, **kwargs):
        """The clipped drop; same arguments as ``PerturbationConfidenceMetric.__call__``."""
        return _map_scores(super().__call__(*args, **kwargs), lambda scores: np.maximum(-scores, 0))


class IncreaseInConfidence(CamMultImageConfidenceChange):
    """``1[f(L ⊙ x) > f(x)]`` per image as float32: the indicator behind % Increase in Confidence."""

    def __call__(self, *args, **kwargs):
        """The increase indicator; same arguments as ``PerturbationConfidenceMetric.__call__``."""
        return _map_scores(super().__call__(*args, **kwargs), lambda scores: np.float32(scores > 0))
