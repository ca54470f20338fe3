"""Finer-CAM (Zhang et al., 2025, https://arxiv.org/abs/2501.11309).

Port of ``pytorch_grad_cam/finer_cam.py`` (grad-cam 1.5.7).  Finer-CAM keeps a
base CAM method (Grad-CAM by default) and changes only *what* it explains:
instead of the target logit ``y_n`` it explains its margin over the classes
the model finds most similar,

    T = sum_k p_k (y_n - alpha * y_k) / (sum_k p_k + 1e-9),   p = softmax(y)

(``FinerWeightedTarget``).  Without explicit targets, per image: ``n`` is the
class whose logit is closest to the reference logit (the maximum, or the
logit of ``target_idx``), and the ``k`` are the classes at positions
``comparison_categories`` (default 1, 2, 3) of the classes sorted by
``|y_j - y_ref|``, i.e. the runners-up in similarity.

Upstream writes the base method's forward pass out again inside FinerCAM,
because the targets depend on the outputs of the same pass that records the
activations and gradients; the port calls the base method's
``BaseCAM.forward_and_backward`` with Finer-CAM's target choice instead, so
hooks, frozen parameters, ``compute_input_gradient`` and ``detach=False``
behave exactly as in the base method.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import numpy as np
import paddle

from paddle_impl.grad_cam import GradCAM
from paddle_impl.utils.model_targets import FinerWeightedTarget

__all__ = ["FinerCAM", "DEFAULT_COMPARISON_CATEGORIES", "finer_targets"]

DEFAULT_COMPARISON_CATEGORIES = (1, 2, 3)


def finer_targets(
    output_data: np.ndarray,
    alpha: float = 1,
    comparison_categories: Optional[Sequence[int]] = None,
    target_idx: Optional[int] = None,
) -> List[FinerWeightedTarget]:
    """One ``FinerWeightedTarget`` per row of the ``(B, num_classes)`` logits, chosen as upstream does.

    Classes are ranked by ``|y_j - y_ref|`` with numpy's default ``argsort``
    (upstream's call, so equal distances are ordered the same way).  Requested
    positions past the number of classes are dropped; the default positions
    are clipped to ``num_classes - 1`` so that small heads do not fail.
    """
    num_classes = output_data.shape[-1]
    if comparison_categories is None:
        max_comparisons = max(num_classes - 1, 0)
        comparison_categories = list(DEFAULT_COMPARISON_CATEGORIES[:max_comparisons])
    else:
        comparison_categories = [c for c in comparison_categories if c < num_classes]

    target_logits = np.max(output_data, axis=-1) if target_idx is None else output_data[:, target_idx]
    sorted_indices = np.argsort(np.abs(output_data - target_logits[:, None]), axis=-1)
    return [
        FinerWeightedTarget(
            int(sorted_indices[i, 0]),
            [int(sorted_indices[i, position]) for position in comparison_categories],
            alpha,
        )
        for i in range(output_data.shape[0])
    ]


class FinerCAM:
    """A base CAM method explaining ``FinerWeightedTarget`` instead of the top logit.

    ``cam(input_tensor, targets=None, eigen_smooth=False, alpha=1,
    comparison_categories=None, target_idx=None)`` returns ``(B, H, W)``
    float32 maps in [0, 1], like the base method.  ``alpha`` is the comparison
    strength (0 gives, up to the 1e-9 eps, the base method's map of ``y_n``).
    """

    def __init__(
        self,
        model: paddle.nn.Layer,
        target_layers: List[paddle.nn.Layer],
        reshape_transform: Optional[Callable] = None,
        base_method: type = GradCAM,
    ) -> None:
        self.base_cam = base_method(model, target_layers, reshape_transform)
        self.compute_input_gradient = self.base_cam.compute_input_gradient
        self.uses_gradients = self.base_cam.uses_gradients

    def __call__(self, *args, **kwargs) -> np.ndarray:
        """Same as ``forward``."""
        return self.forward(*args, **kwargs)

    def forward(
        self,
        input_tensor: paddle.Tensor,
        targets: Optional[List[Callable]] = None,
        eigen_smooth: bool = False,
        alpha: float = 1,
        comparison_categories: Optional[List[int]] = None,
        target_idx: Optional[int] = None,
        aug_smooth: bool = False,
    ) -> np.ndarray:
        """One forward (and backward) pass of the base method with Finer-CAM's targets.

        ``aug_smooth`` exists only so that the common CAM call shape is
        accepted; upstream's FinerCAM has no test-time augmentation, so
        ``aug_smooth=True`` is refused rather than silently ignored.
        """
        if aug_smooth:
            raise ValueError("FinerCAM has no aug_smooth (upstream's FinerCAM.forward takes no such argument)")
        base = self.base_cam

        def choose_targets(logits: np.ndarray) -> List[FinerWeightedTarget]:
            return finer_targets(logits, alpha, comparison_categories, target_idx)

        # The base method's own forward and backward, with Finer-CAM's choice of
        # targets from the logits of that same pass.
        input_tensor, targets = base.forward_and_backward(input_tensor, targets, default_targets=choose_targets)
        cam_per_layer = base.compute_cam_per_layer(input_tensor, targets, eigen_smooth)
        return base.aggregate_multi_layers(cam_per_layer)

    def release(self) -> None:
        """Remove the base method's hooks."""
        self.base_cam.release()

    def __enter__(self) -> "FinerCAM":
        return self

    def __exit__(self, exc_type, exc_value, exc_tb) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.base_cam.release()
        except Exception:
            pass
