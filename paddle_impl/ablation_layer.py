"""The stand-in layer AblationCAM swaps in for its target layer.

It ignores its input and returns a batch of the cached target-layer
activations in which sample i has channel ``indices[i]`` ablated.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import paddle

from paddle_impl.utils.svd_on_activations import get_2d_projection

__all__ = ["AblationLayer", "AblationLayerVit", "ablation_values"]

ABLATION_OFFSET = 1e7


def ablation_values(initial_min: np.generic, count: int) -> np.ndarray:
    """The value upstream writes into each ablated channel of a batch of ``count``.

    Upstream loops over the batch and, for sample i, reads the minimum of the
    *whole* batch tensor as modified so far: 0 stays 0 when that minimum is 0
    (post-ReLU layers), otherwise it writes ``min - 1e7``, which becomes the new
    minimum, so the value drops by another 1e7 for every later sample.  Writing
    a value no larger than the current minimum makes that value the new
    minimum, so the sequence follows from the initial minimum alone, in the
    activations' own dtype.
    """
    offset = initial_min.dtype.type(ABLATION_OFFSET)
    values = np.empty(count, dtype=initial_min.dtype)
    current = initial_min
    for i in range(count):
        if current == 0:
            values[i] = 0
        else:
            current = current - offset
            values[i] = current
    return values


class AblationLayer(paddle.nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        self.activations: Optional[paddle.Tensor] = None
        self.indices: np.ndarray = np.zeros(0, dtype=np.int32)

    def objectiveness_mask_from_svd(self, activations: np.ndarray, threshold: float = 0.01) -> np.ndarray:
        """Binary mask of the positions EigenCAM finds salient (for ``ratio_channels_to_ablate`` < 1)."""
        projection = get_2d_projection(activations[None, :])[0, :]
        projection = np.abs(projection)
        projection = projection - projection.min()
        projection = projection / projection.max()
        return projection > threshold

    def activations_to_be_ablated(self, activations: np.ndarray, ratio_channels_to_ablate: float = 1.0) -> np.ndarray:
        """Channel indices to ablate: all of them, or the top and bottom scorers against the SVD mask."""
        if ratio_channels_to_ablate == 1.0:
            self.indices = np.int32(range(activations.shape[0]))
            return self.indices
        projection = self.objectiveness_mask_from_svd(activations)
        scores = []
        for channel in activations:
            normalized = np.abs(channel)
            normalized = normalized - normalized.min()
            normalized = normalized / np.max(normalized)
            scores.append((projection * normalized).sum() / normalized.sum())
        order = list(np.argsort(np.float32(scores)))
        keep = int(len(order) * ratio_channels_to_ablate)
        self.indices = np.int32(order[::-1][:keep] + order[:keep])
        return self.indices

    def set_next_batch(self, sample_activations: np.ndarray, channels: np.ndarray) -> None:
        """Prepare ``len(channels)`` copies of one sample, copy i with channel ``channels[i]`` ablated."""
        count = len(channels)
        batch = np.repeat(sample_activations[None], count, axis=0)
        values = ablation_values(sample_activations.min(), count)
        batch[np.arange(count), channels] = values[:, None, None]
        self.activations = paddle.to_tensor(batch)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.activations


class AblationLayerVit(AblationLayer):
    """The ablation stand-in for transformer layers, whose output is tokens with the channels last.

    Same method as ``AblationLayer`` (Ablation-CAM, Desai & Ramaswamy, WACV
    2020: ``w_k = (y^c - y^c_k) / y^c`` with channel k of the target layer
    ablated), for a target layer whose output is (B, tokens, C) or
    (B, H, W, C).  A channel is ablated in *every* token, the class token
    included, with the same running-minimum values as ``AblationLayer``
    (see ``ablation_values``); upstream's ``AblationLayerVit`` in
    ``pytorch_grad_cam/ablation_layer.py`` does the same by moving the
    channel axis next to the batch axis and back.

    ``activations_to_be_ablated`` is inherited: it chooses channels from the
    reshape-transformed (C, h, w) activations, as upstream does.
    ``set_next_batch`` instead needs the target layer's *raw* output for the
    sample, because the reshape transform drops the class token, and the
    layers after the target read it.
    """

    def set_next_batch(self, sample_activations: np.ndarray, channels: np.ndarray) -> None:
        """Prepare ``len(channels)`` copies of one sample's raw tokens, copy i with channel ``channels[i]`` ablated.

        ``sample_activations`` is the target layer's output for one sample,
        channels last: (tokens, C) or (H, W, C).
        """
        if len(channels) and int(np.max(channels)) >= sample_activations.shape[-1]:
            raise ValueError(
                f"AblationLayerVit got channel {int(np.max(channels))} for activations of shape "
                f"{sample_activations.shape}, whose last (channel) axis is shorter: it needs the target "
                "layer's raw output for one sample, channels last, not reshape-transformed (C, h, w) maps, "
                "which have lost the class token that the layers after the target read"
            )
        count = len(channels)
        batch = np.repeat(sample_activations[None], count, axis=0)
        values = ablation_values(sample_activations.min(), count)
        channels_first = np.moveaxis(batch, -1, 1)
        channels_first[np.arange(count), np.asarray(channels)] = values.reshape((count,) + (1,) * (batch.ndim - 2))
        self.activations = paddle.to_tensor(batch)
