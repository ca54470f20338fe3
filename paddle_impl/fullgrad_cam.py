"""FullGrad (Srinivas & Fleuret, 2019, https://arxiv.org/abs/1905.00780).

Port of ``pytorch_grad_cam/fullgrad_cam.py`` (grad-cam 1.5.7).  The full-gradient
decomposition explains the score with the input gradient plus the gradient
of every bias in the network:

    S = psi(|dy/dx ⊙ x|) + sum_{layers l} sum_c psi(|b_l^c ⊙ dy/dz_l^c|)

``psi`` min-max scales each map to [0, 1] and resizes it to the input
(``scale_accross_batch_and_channels``), ``z_l`` is the output of a Conv2D or
BatchNorm2D layer with a bias, and a BatchNorm's effective bias in inference
is ``beta - mu * gamma / sqrt(var + eps)`` (the official implementation's
rule, as upstream).  ``target_layers`` is ignored: every such layer is used.

The input gradient comes from ``compute_input_gradient=True``; the
bias-layer gradients are paired with their layers by forward position (see
``activations_and_gradients``), which is what upstream's list gives on torch.
"""
from __future__ import annotations

import warnings
from typing import Callable, List, Optional, Tuple

import cv2
import numpy as np
import paddle

from paddle_impl.base_cam import BaseCAM
from paddle_impl.utils.find_layers import find_layer_predicate_recursive
from paddle_impl.utils.image import scale_accross_batch_and_channels, scale_cam_image
from paddle_impl.utils.svd_on_activations import get_2d_projection

__all__ = ["FullGrad"]

# Upstream matches these exact classes (``type(layer) in [...]``), not subclasses.
_BIAS_LAYER_TYPES = (paddle.nn.Conv2D, paddle.nn.BatchNorm2D)


def _layer_with_2d_bias(layer: paddle.nn.Layer) -> bool:
    return type(layer) in _BIAS_LAYER_TYPES and getattr(layer, "bias", None) is not None


class FullGrad(BaseCAM):
    """Input-gradient map plus the bias-gradient maps of every Conv2D/BatchNorm2D with a bias."""

    def __init__(
        self,
        model: paddle.nn.Layer,
        target_layers: List[paddle.nn.Layer],
        reshape_transform: Optional[Callable] = None,
    ) -> None:
        """Same arguments as upstream's ``FullGrad``; ``target_layers`` is replaced by every layer with a 2-D bias.

        Upstream prints a warning when ``target_layers`` is not empty; here
        it is a ``UserWarning``.
        """
        if len(target_layers) > 0:
            warnings.warn("target_layers is ignored in FullGrad. All bias layers will be used instead", UserWarning)
        target_layers = find_layer_predicate_recursive(model, _layer_with_2d_bias)
        super().__init__(model, target_layers, reshape_transform, compute_input_gradient=True)
        self.bias_data = [self.get_bias_data(layer) for layer in target_layers]

    @staticmethod
    def get_bias_data(layer: paddle.nn.Layer) -> np.ndarray:
        """The bias a layer adds in inference: ``beta - mu * gamma / sqrt(var + eps)`` for BatchNorm, else ``b``.

        Evaluated in numpy in the parameters' dtype, in upstream's order of
        operations.  numpy's ``sqrt`` is correctly rounded and torch 2.14's
        CPU ``sqrt`` is not always (1 ulp), so a bias can differ from
        upstream's in its last bits; the other steps give torch's bits.
        """
        if isinstance(layer, paddle.nn.BatchNorm2D):
            mean, variance = layer._mean.numpy(), layer._variance.numpy()
            return -(mean * layer.weight.numpy() / np.sqrt(variance + layer._epsilon)) + layer.bias.numpy()
        return layer.bias.numpy()

    @staticmethod
    def input_gradient_map(input_tensor: paddle.Tensor, target_size: Tuple[int, int]) -> np.ndarray:
        """(B, C_in, H, W): ``psi(|dy/dx ⊙ x|)`` per input channel, the input-gradient term."""
        gradient_multiplied_input = np.abs(input_tensor.grad.numpy() * input_tensor.numpy())
        return scale_accross_batch_and_channels(gradient_multiplied_input, target_size)

    @staticmethod
    def bias_gradient_map(bias: np.ndarray, grads: np.ndarray, target_size: Tuple[int, int]) -> np.ndarray:
        """(B, 1, H, W): ``sum_c psi(|b^c ⊙ dy/dz^c|)`` for one bias layer.

        Upstream scales and resizes every channel into a (B, C, H, W) array
        (``scale_accross_batch_and_channels``) and sums it over C.  With
        ResNet50's 26,560 bias channels at 224x224 that is 5 GB of fresh
        float32 maps per call, and allocating them costs more than the
        resizing.  Here the channels are min-max scaled all at once (the
        same element-wise operations on the same values), each is resized
        into one reused buffer and added to a running total in channel
        order, which is the order ``np.sum(axis=1)`` adds them in: the same
        bits, without the big array.
        """
        # The paper takes the absolute value (keeping only positive gradients is an alternative).
        bias_grad = np.abs(bias[None, :, None, None] * grads)
        shifted = bias_grad - np.min(bias_grad, axis=(2, 3), keepdims=True)
        # As in scale_cam_image: the division in the data's dtype, the resize of a float32 copy.
        scaled = np.float32(shifted / (1e-7 + np.max(shifted, axis=(2, 3), keepdims=True)))
        width, height = target_size
        total = np.empty((scaled.shape[0], 1, height, width), dtype=np.float32)
        resized = np.empty((height, width), dtype=np.float32)
        for image, channels in enumerate(scaled):
            cv2.resize(channels[0], target_size, dst=total[image, 0])
            for channel in channels[1:]:
                cv2.resize(channel, target_size, dst=resized)
                total[image, 0] += resized
        return total

    def compute_cam_per_layer(
        self, input_tensor: paddle.Tensor, targets: List[Callable], eigen_smooth: bool
    ) -> np.ndarray:
        """(B, 1, H, W): the sum (or, with ``eigen_smooth``, the first principal component) of all maps.

        The maps are the input-gradient term's C_in maps, then one map per
        bias layer.  ``eigen_smooth`` first shrinks them to 1/8 of the input
        size, as upstream does to save memory, projects, and resizes back.
        """
        grads_list = [g.numpy() for g in self.activations_and_grads.gradients]
        if len(self.bias_data) != len(grads_list):
            raise RuntimeError(
                f"FullGrad got {len(grads_list)} bias-layer gradients for {len(self.bias_data)} bias layers"
            )
        target_size = self.get_target_width_height(input_tensor)
        maps = [self.input_gradient_map(input_tensor, target_size)]
        maps.extend(self.bias_gradient_map(bias, grads, target_size) for bias, grads in zip(self.bias_data, grads_list))
        stacked = np.concatenate(maps, axis=1)

        if eigen_smooth:
            small = scale_accross_batch_and_channels(stacked, (target_size[0] // 8, target_size[1] // 8))
            projected = get_2d_projection(small)[:, None, :, :]
            return scale_accross_batch_and_channels(projected, target_size)
        return np.sum(stacked, axis=1)[:, None, :]

    def aggregate_multi_layers(self, cam_per_target_layer: np.ndarray) -> np.ndarray:
        """Sum over the single map axis and min-max scale -> (B, H, W) float32 (no ReLU, as upstream)."""
        return scale_cam_image(np.sum(cam_per_target_layer, axis=1))
