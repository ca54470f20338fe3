"""ShapleyCAM (Cai, 2025, https://arxiv.org/abs/2501.06261).

Port of ``pytorch_grad_cam/shapley_cam.py`` (grad-cam 1.5.7).  Reading CAMs
as Shapley values of the channels, a second-order expansion of the score
gives channel weights from the gradient *and* the Hessian-vector product
with the activations:

    w_k = mean_{ij} ( dy^c/dA^k_{ij} - 1/2 (H A)^k_{ij} ),   H = d^2 y^c / dA^2
    L^c = ReLU(sum_k w_k A^k)

``H A`` is taken as upstream takes it, by differentiating the gradient a
second time (``paddle.grad(grads, activations, grad_outputs=activations)``),
so the CAM runs with ``detach=False``: the gradients keep their graph
(``create_graph=True``) and the forward pass runs under
``activations_and_gradients.second_order_graph``, which supplies the second
derivatives Paddle 3.3.1 lacks for flatten, BatchNorm in eval mode,
LayerNorm, GELU, softmax and a partly frozen concat (so CNNs, ViTs and
ConvNeXts work); an op after the target layer with none (hard-swish,
hard-sigmoid, max-pooling, bilinear interpolation, depthwise convolution on
the CPU, strided slicing as in Swin's patch merging) raises a
``NotImplementedError`` that names it.  For a piecewise-linear
network explaining a logit (ResNet50 with ``ClassifierOutputTarget``) the
second derivative is zero and ShapleyCAM equals Grad-CAM; the term matters
for smooth targets such as a softmax probability.

Upstream also asks for the input gradient (``compute_input_gradient=True``)
but with ``detach=False`` takes it with ``autograd.grad`` and never reads it;
the port skips it (see ``BaseCAM.forward_and_backward``).
"""
from __future__ import annotations

from typing import Callable, List, Optional

import numpy as np
import paddle

from paddle_impl.activations_and_gradients import second_derivative_errors_explained
from paddle_impl.base_cam import BaseCAM

__all__ = ["ShapleyCAM"]


class ShapleyCAM(BaseCAM):
    """Channel weights from the gradient minus half the Hessian-vector product, averaged over positions."""

    def __init__(
        self,
        model: paddle.nn.Layer,
        target_layers: List[paddle.nn.Layer],
        reshape_transform: Optional[Callable] = None,
    ) -> None:
        """Same arguments as upstream's ``ShapleyCAM``."""
        super().__init__(
            model=model,
            target_layers=target_layers,
            reshape_transform=reshape_transform,
            compute_input_gradient=True,
            uses_gradients=True,
            detach=False,
        )

    def hessian_vector_product(self, activations: paddle.Tensor, grads: paddle.Tensor) -> Optional[paddle.Tensor]:
        """``H A = d/dA <dy/dA, A>`` with ``A`` held fixed, or None when the gradient does not depend on ``A``.

        None is upstream's ``allow_unused`` case, where it subtracts 0.  The
        graph is kept (upstream frees it here) so that a second target layer
        can take its own product.
        """
        if grads.stop_gradient:
            return None
        with second_derivative_errors_explained():
            return paddle.grad(
                outputs=grads, inputs=activations, grad_outputs=activations, retain_graph=True, allow_unused=True
            )[0]

    def get_cam_weights(
        self,
        input_tensor: paddle.Tensor,
        target_layer: paddle.nn.Layer,
        targets: List[Callable],
        activations: paddle.Tensor,
        grads: paddle.Tensor,
    ) -> np.ndarray:
        """(B, C) weights ``mean_{ij}(G - 0.5 * H A)`` (over (D, H, W) for volumes), computed in numpy as upstream."""
        hvp = self.hessian_vector_product(activations, grads)
        reshape = self.activations_and_grads.reshape_transform
        if reshape is not None:
            if hvp is not None:
                hvp = reshape(hvp)
            activations = reshape(activations)
            grads = reshape(grads)
        weight = grads.detach().numpy()
        if hvp is not None:
            weight = weight - 0.5 * hvp.detach().numpy()
        if len(activations.shape) == 4:
            return np.mean(weight, axis=(2, 3))
        if len(activations.shape) == 5:
            return np.mean(weight, axis=(2, 3, 4))
        raise ValueError(
            f"ShapleyCAM expects (B, C, H, W) or (B, C, D, H, W) gradients, got shape {list(activations.shape)}"
        )
