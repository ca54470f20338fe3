"""RefineCAM: fuse the CAMs of several layers by multiplying them (https://arxiv.org/abs/2605.14641).

    L = scale( prod_l  M_l ),    M_l = the base method's CAM at layer l, already min-max scaled to [0, 1]

Early layers give sharp but noisy maps and late layers coarse but clean
ones; the product keeps only what every layer agrees on.  Twin of
``pytorch_grad_cam/refine_cam.py``.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Type

import numpy as np
import paddle

from paddle_impl.base_cam import BaseCAM
from paddle_impl.grad_cam_plusplus import GradCAMPlusPlus
from paddle_impl.utils.image import scale_cam_image

__all__ = ["RefineCAM"]


class RefineCAM:
    """A meta-method: one ``base_method`` CAM per target layer, fused by their product.

    Paper: https://arxiv.org/abs/2605.14641.  Formula: ``L = scale(prod_l M_l)``
    where ``M_l`` is ``base_method``'s final CAM (ReLU'd, min-max scaled and
    resized to the input) computed with ``target_layers=[l]``, and ``scale``
    is ``scale_cam_image``.
    """

    def __init__(
        self,
        model: paddle.nn.Layer,
        target_layers: List[paddle.nn.Layer],
        reshape_transform: Optional[Callable] = None,
        base_method: Type[BaseCAM] = GradCAMPlusPlus,
        **kwargs,
    ) -> None:
        """Build one ``base_method(model, [layer], reshape_transform, **kwargs)`` per target layer.

        Extra keyword arguments go to every ``base_method``, as upstream.
        """
        self.base_cam_per_layer = [
            base_method(model, [target_layer], reshape_transform, **kwargs) for target_layer in target_layers
        ]

    def __call__(self, *args, **kwargs) -> np.ndarray:
        """Same as ``forward``."""
        return self.forward(*args, **kwargs)

    def forward(
        self,
        input_tensor: paddle.Tensor,
        targets: Optional[List[Callable]] = None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """The (B, H, W) float32 fused CAM: ``scale_cam_image(prod_l M_l)``.

        Upstream hands ``eigen_smooth`` to each base CAM as its *third
        positional* argument, which ``BaseCAM.__call__`` reads as
        ``aug_smooth``: ``eigen_smooth=True`` therefore runs test-time
        augmentation smoothing (without eigen smoothing).  The same call is
        made here so the two agree for either value.

        Upstream also loops over the per-layer maps to clip and renormalise
        them, but the loop only rebinds its loop variable and changes
        nothing; each map is already in [0, 1] from ``BaseCAM``, so that
        step is left out here.
        """
        cam_per_layer = np.array(
            [base_cam(input_tensor, targets, eigen_smooth) for base_cam in self.base_cam_per_layer]
        )
        fused = np.prod(cam_per_layer, axis=0)
        return scale_cam_image(fused)

    def release(self) -> None:
        """Remove every base CAM's hooks."""
        for base_cam in self.base_cam_per_layer:
            base_cam.release()

    def __enter__(self) -> "RefineCAM":
        return self

    def __exit__(self, exc_type, exc_value, exc_tb) -> None:
        self.release()
