"""Image helpers with the same numerics as ``pytorch_grad_cam.utils.image``.

Every function here mirrors its upstream twin operation for operation (the
same float32 casts, the same epsilons, the same OpenCV calls), because the
parity harness compares the uint8 overlays byte for byte.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import paddle

__all__ = [
    "preprocess_image",
    "deprocess_image",
    "show_cam_on_image",
    "scale_cam_image",
    "scale_accross_batch_and_channels",
    "create_labels_legend",
    "show_factorization_on_image",
]


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


def create_labels_legend(concept_scores: np.ndarray, labels: Dict[int, str], top_k: int = 2) -> List[str]:
    """One legend string per concept: its ``top_k`` categories as ``"label:score"`` lines, best first.

    ``concept_scores`` is (concepts, categories); a label keeps at most its
    first three comma-separated names, and scores are printed with two
    decimals, as upstream's ``create_labels_legend``.
    """
    best_first = np.argsort(concept_scores, axis=1)[:, ::-1][:, :top_k]
    legend = []
    for concept, categories in enumerate(best_first):
        lines = []
        for category in categories:
            name = ",".join(labels[category].split(",")[:3])
            lines.append(f"{name}:{concept_scores[concept, category]:.2f}")
        legend.append("\n".join(lines))
    return legend


def _default_concept_colors(n_components: int) -> List[np.ndarray]:
    """RGBA colours spread over matplotlib's ``gist_rainbow``, as upstream picks them.

    Upstream asks ``plt.cm.get_cmap``, which matplotlib 3.9 removed; the
    colormap registry returns the same colormap.  ``np.arange`` may yield one
    colour more than needed (e.g. for 3 components); only the first
    ``n_components`` are used.
    """
    import matplotlib

    cmap = matplotlib.colormaps["gist_rainbow"]
    return [np.array(cmap(i)) for i in np.arange(0, 1, 1.0 / n_components)]


def show_factorization_on_image(
    img: np.ndarray,
    explanations: np.ndarray,
    colors: Optional[List[np.ndarray]] = None,
    image_weight: float = 0.5,
    concept_labels: Optional[list] = None,
) -> np.ndarray:
    """Colour each pixel by the concept whose heatmap is strongest there, over ``img``; optionally add a legend.

    Deep Feature Factorization (https://arxiv.org/abs/1806.10206) explains an
    image with k concept heatmaps E_k.  Pixel x gets concept
    ``k* = argmax_k E_k(x)``, drawn in that concept's colour with HSV value
    ``uint8(255 * E_k*(x))``; the result is
    ``uint8(255 * (image_weight * img + (1 - image_weight) * colours))``.

    ``img`` is RGB float in [0, 1]; ``explanations`` is (k, H, W) in [0, 1].
    Like upstream, the non-winning pixels of ``explanations`` are set to 0
    *in place*.  With ``concept_labels``, a matplotlib legend of the same
    height is rendered and appended on the right (``matplotlib`` must have a
    canvas with ``buffer_rgba``, e.g. the Agg backend); like upstream this
    sets ``plt.rcParams['legend.fontsize']``.
    """
    n_components = explanations.shape[0]
    if colors is None:
        colors = _default_concept_colors(n_components)
    concept_per_pixel = explanations.argmax(axis=0)
    masks = []
    for i in range(n_components):
        mask = np.zeros(shape=(img.shape[0], img.shape[1], 3))
        mask[:, :, :] = colors[i][:3]
        explanation = explanations[i]
        explanation[concept_per_pixel != i] = 0
        # The concept's hue and saturation, with its heatmap as the brightness.
        mask = cv2.cvtColor(np.uint8(mask * 255), cv2.COLOR_RGB2HSV)
        mask[:, :, 2] = np.uint8(255 * explanation)
        mask = cv2.cvtColor(mask, cv2.COLOR_HSV2RGB)
        masks.append(np.float32(mask) / 255)

    mask = np.sum(np.float32(masks), axis=0)
    result = np.uint8((img * image_weight + mask * (1 - image_weight)) * 255)

    if concept_labels is not None:
        result = np.hstack((result, _render_legend(result.shape[:2], colors, n_components, concept_labels)))
    return result


def _render_legend(size: Tuple[int, int], colors, n_components: int, concept_labels: list) -> np.ndarray:
    """An RGB uint8 legend image of ``size`` (H, W), drawn with the same matplotlib calls as upstream."""
    from matplotlib import pyplot as plt
    from matplotlib.lines import Line2D

    height, width = size
    pixel = 1 / plt.rcParams["figure.dpi"]
    fig = plt.figure(figsize=(width * pixel, height * pixel))
    plt.rcParams["legend.fontsize"] = int(14 * height / 256 / max(1, n_components / 6))
    line_width = 5 * height / 256
    lines = [Line2D([0], [0], color=colors[i], lw=line_width) for i in range(n_components)]
    plt.legend(lines, concept_labels, mode="expand", fancybox=True, shadow=True)
    plt.tight_layout(pad=0, w_pad=0, h_pad=0)
    plt.axis("off")
    fig.canvas.draw()
    data = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig=fig)
    return cv2.resize(data, (width, height))
