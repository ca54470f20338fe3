"""Guided backpropagation (Springenberg et al., 2015, https://arxiv.org/abs/1412.6806).

Every ReLU passes a gradient back only where both its input and the incoming
gradient are positive.  The result is d y^c / d input, as an (H, W, C) array.

The forward and backward pass run under ``frozen_parameters``, as the CAM
methods' do: only the input gradient is computed, the parameters' flags and
``.grad`` are left as found (upstream leaves the weight gradients of every
call in ``.grad``), and a LayerNorm whose weight is frozen (by us or by the
user) still passes its input the right gradient, which Paddle 3.3.1 gets
wrong otherwise (see ``activations_and_gradients.layer_norm_input_gradients``).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import paddle
from paddle.autograd import PyLayer

from paddle_impl.activations_and_gradients import frozen_parameters
from paddle_impl.utils.find_layers import replace_all_layer_type_recursive

__all__ = ["GuidedBackpropReLU", "GuidedBackpropReLUasModule", "GuidedBackpropReLUModel"]


class GuidedBackpropReLU(PyLayer):
    @staticmethod
    def forward(ctx, input_img: paddle.Tensor) -> paddle.Tensor:
        positive_mask = (input_img > 0).astype(input_img.dtype)
        output = input_img * positive_mask
        ctx.save_for_backward(input_img)
        return output

    @staticmethod
    def backward(ctx, grad_output: paddle.Tensor) -> paddle.Tensor:
        (input_img,) = ctx.saved_tensor()
        positive_input = (input_img > 0).astype(grad_output.dtype)
        positive_grad = (grad_output > 0).astype(grad_output.dtype)
        return grad_output * positive_input * positive_grad


class GuidedBackpropReLUasModule(paddle.nn.Layer):
    def forward(self, input_img: paddle.Tensor) -> paddle.Tensor:
        return GuidedBackpropReLU.apply(input_img)


class GuidedBackpropReLUModel:
    def __init__(self, model: paddle.nn.Layer, device: Optional[str] = None) -> None:
        self.model = model
        self.model.eval()
        if device is not None:
            paddle.set_device(device)

    def forward(self, input_img: paddle.Tensor) -> paddle.Tensor:
        return self.model(input_img)

    def __call__(self, input_img: paddle.Tensor, target_category: Optional[int] = None) -> np.ndarray:
        replace_all_layer_type_recursive(self.model, paddle.nn.ReLU, GuidedBackpropReLUasModule)
        try:
            input_img = input_img.detach()
            input_img.stop_gradient = False
            with frozen_parameters(self.model):
                output = self.forward(input_img)
                if target_category is None:
                    target_category = int(np.argmax(output.numpy()))
                loss = output[0, target_category]
                loss.backward()
            gradient = input_img.grad.numpy()[0, :, :, :]
        finally:
            replace_all_layer_type_recursive(self.model, GuidedBackpropReLUasModule, paddle.nn.ReLU)
        return gradient.transpose((1, 2, 0))
