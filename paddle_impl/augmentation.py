"""The test-time augmentations behind ``aug_smooth``, in upstream's order.

Upstream composes ttach's ``HorizontalFlip()`` and ``Multiply([0.9, 1, 1.1])``;
ttach enumerates the product of their parameters, so the six variants run as
(no flip, 0.9), (no flip, 1), (no flip, 1.1), (flip, 0.9), (flip, 1), (flip, 1.1).
An image is flipped first and multiplied second; a factor of 1 is skipped;
a mask is un-flipped on the way back (multiplying leaves masks alone).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import List

import numpy as np
import paddle

__all__ = ["AugmentationVariant", "AUG_SMOOTH_VARIANTS"]


@dataclass(frozen=True)
class AugmentationVariant:
    flip: bool
    factor: float

    @property
    def name(self) -> str:
        return f"{'flip' if self.flip else 'noflip'}_x{self.factor:g}"

    def augment_image(self, image: paddle.Tensor) -> paddle.Tensor:
        if self.flip:
            image = paddle.flip(image, axis=[3])
        if self.factor != 1:
            image = image * self.factor
        return image

    def deaugment_cam(self, cam: np.ndarray) -> np.ndarray:
        """Undo the geometry on a (B, H, W) CAM."""
        return cam[:, :, ::-1] if self.flip else cam


AUG_SMOOTH_VARIANTS: List[AugmentationVariant] = [
    AugmentationVariant(flip, factor) for flip, factor in itertools.product([False, True], [0.9, 1, 1.1])
]
