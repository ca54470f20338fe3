"""Image helpers with the same numerics as ``pytorch_grad_cam.utils.image``.

Every function here mirrors its upstream twin operation for operation (the
same float32 casts, the same epsilons, the same OpenCV calls), because the
parity harness compares the uint8 overlays byte for byte.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import paddle

__all__ = ["preprocess_image", "deprocess_image", "show_cam_on_image", "scale_cam_image", "scale_accross_batch_and_channels"]


def preprocess_image(
    img: np.ndarray,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
) -> paddle.Tensor:
    """HWC image in [0, 1] -> normalised NCHW Paddle tensor.

    torchvision's ``ToTensor`` keeps a float array's dtype and only moves the
    channel axis; ``Normalize`` then subtracts and divides per channel in that
    dtype.  Doing the same two elementwise operations in numpy gives the same
    bits.
    """
    chw = np.ascontiguousarray(np.asarray(img).transpose(2, 0, 1))
    mean_arr = np.asarray(mean, dtype=chw.dtype)[:, None, None]
    std_arr = np.asarray(std, dtype=chw.dtype)[:, None, None]
    normalised = (chw - mean_arr) / std_arr
    return paddle.to_tensor(normalised[None])


def deprocess_image(img: np.ndarray) -> np.ndarray:
    """Contrast-stretch a guided-backprop gradient into a displayable uint8 image."""
    img = img - np.mean(img)
    img = img / (np.std(img) + 1e-5)
    img = img * 0.1
    img = img + 0.5
    img = np.clip(img, 0, 1)
    return np.uint8(img * 255)


def show_cam_on_image(
    img: np.ndarray,
    mask: np.ndarray,
    use_rgb: bool = False,
    colormap: int = cv2.COLORMAP_JET,
    image_weight: float = 0.5,
) -> np.ndarray:
    """Blend a [0, 1] CAM, coloured with an OpenCV colormap, over ``img``.

    ``img`` must be float in [0, 1]; the heatmap is BGR unless ``use_rgb``.
    Returns ``uint8`` ``image_weight * img + (1 - image_weight) * heatmap``,
    renormalised by its maximum as upstream does.
    """
    heatmap = cv2.applyColorMap(np.uint8(255 * mask), colormap)
    if use_rgb:
        heatmap = cv2.cvtColor(heatmap, cv2.COLOR_BGR2RGB)
    heatmap = np.float32(heatmap) / 255

    if np.max(img) > 1:
        raise ValueError("The input image should be np.float32 in the range [0, 1]")
    if image_weight < 0 or image_weight > 1:
        raise ValueError(f"image_weight should be in the range [0, 1], got {image_weight}")

    cam = (1 - image_weight) * heatmap + image_weight * img
    cam = cam / np.max(cam)
    return np.uint8(255 * cam)


def scale_cam_image(cam: np.ndarray, target_size: Optional[Tuple[int, ...]] = None) -> np.ndarray:
    """Min-max scale each map of ``cam`` to [0, 1], optionally resizing to (W, H) or (D, W, H).

    Like upstream, the resize runs on a float32 copy and the result is float32
    whatever the input dtype, so a float64 pipeline ends in float32 here too.
    2-D maps are resized with ``cv2.resize``; 3-D maps (volumes) with
    ``scipy.ndimage.zoom``, as upstream does.
    """
    result = []
    for img in cam:
        img = img - np.min(img)
        img = img / (1e-7 + np.max(img))
        if target_size is not None:
            if img.ndim > 2:
                from scipy.ndimage import zoom

                img = zoom(np.float32(img), [t / i for i, t in zip(img.shape, target_size[::-1])])
            else:
                img = cv2.resize(np.float32(img), target_size)
        result.append(img)
    return np.float32(result)


def scale_accross_batch_and_channels(tensor: np.ndarray, target_size: Tuple[int, int]) -> np.ndarray:
    """``scale_cam_image`` on every (batch, channel) map of a (B, C, H, W) array; returns (B, C, H', W').

    The name keeps upstream's spelling so code written against upstream finds it.
    """
    batch_size, channel_size = tensor.shape[:2]
    flat = tensor.reshape(batch_size * channel_size, *tensor.shape[2:])
    return scale_cam_image(flat, target_size).reshape(batch_size, channel_size, target_size[1], target_size[0])
