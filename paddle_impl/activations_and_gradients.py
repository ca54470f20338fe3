"""Capture target-layer activations and their gradients with Paddle hooks.

Port of ``pytorch_grad_cam/activations_and_gradients.py`` (grad-cam 1.5.7).
Upstream records gradients with a tensor hook registered from a forward hook
(full backward hooks misbehave on in-place ops); this does the same with
``register_forward_post_hook`` and ``Tensor.register_hook``.

Doing less work than upstream: while gradients are wanted, every parameter of
the model is frozen and, when nothing before it needs a gradient, the *first*
target-layer output is re-rooted as a leaf.  Backward then runs only from the
target score down to that layer, which is all a CAM reads, instead of through
the whole network and into every weight.  The gradient values are unchanged:
they are produced by the same ops between the target layer and the output.
When the input itself asks for a gradient (``compute_input_gradient``, as
FullGrad does) no output is ``stop_gradient``, so nothing is re-rooted and the
graph reaches the input.

Freezing the parameters meets a Paddle 3.3.1 bug: when the scale (weight) of
``layer_norm`` is ``stop_gradient``, the gradient it passes back to its
*input* is computed as if the scale were all ones (CPU, float32 and float64
alike; whether the bias is frozen makes no difference).  A LayerNorm between
the target layer and the score therefore gave transformers and ConvNeXt
wrong gradients, and with them wrong GradCAM, GradCAM++, XGradCAM, LayerCAM,
HiResCAM...; a LayerNorm whose weight is still all ones (a fresh init) hid
it.  The same bug hits a user's model whose weights were frozen before it
came here.  GroupNorm, InstanceNorm, BatchNorm, Linear, Conv2D, GELU,
hard-swish, hard-sigmoid, softmax attention and an elementwise layer scale
give torch's input gradients frozen or not (``tests/test_frozen_gradients.py``
measures each against torch and fails once Paddle fixes the bug).
``layer_norm_input_gradients`` works around it where it matters and nowhere
else: a ``layer_norm`` whose input needs a gradient and whose weight is
frozen gets, instead of the weight, a trainable alias of it (the same
memory, a throwaway leaf).  The parameter's flag and ``.grad`` are left
alone, and since the output of such a call needs a gradient anyway, which
tensors are ``stop_gradient`` does not change, so the re-rooting above works
as before and models without LayerNorm run exactly the same ops.

Gradients are stored by the position of the forward call that produced them,
not by the order in which backward reaches them.  Upstream prepends each
gradient as it arrives, which puts them in forward order because torch's
engine runs the later-created node first; Paddle's engine reaches parallel
branches in the other order (in ResNet50, ``bn3`` before ``downsample.1``,
whose gradients are equal there because both feed one sum), so arrival order
could pair FullGrad's biases with another layer's gradient.  For a single
target layer, or a chain of them, both orders are the same list.

``detach=False`` (upstream's option, used by ShapleyCAM) keeps the activations
as live graph tensors and gets their gradients from
``paddle.grad(..., create_graph=True)``, so that a second derivative can be
taken; ``second_order_graph`` makes a model's forward pass
double-differentiable in Paddle 3.3.1 without changing its numbers on the
CPU.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator, List, Optional

import numpy as np
import paddle
from paddle import _C_ops

__all__ = ["ActivationsAndGradients", "frozen_parameters", "layer_norm_input_gradients", "second_order_graph"]


@contextlib.contextmanager
def layer_norm_input_gradients() -> Iterator[None]:
    """Give ``layer_norm`` its true input gradient also when its weight is frozen (see the module docstring).

    Every route to the op (``nn.LayerNorm``, ``F.layer_norm`` however it was
    imported) goes through ``paddle._C_ops.layer_norm``, which is replaced
    for the duration and restored on exit, also on error.
    """
    original = _C_ops.layer_norm

    def layer_norm(x, weight, bias, *args, **kwargs):
        if weight is not None and weight.stop_gradient and not x.stop_gradient:
            weight = weight.detach()
            weight.stop_gradient = False
        return original(x, weight, bias, *args, **kwargs)

    _C_ops.layer_norm = layer_norm
    try:
        yield
    finally:
        _C_ops.layer_norm = original


@contextlib.contextmanager
def frozen_parameters(model: paddle.nn.Layer) -> Iterator[None]:
    """Temporarily mark every parameter ``stop_gradient``, with LayerNorm input gradients kept right; restore after."""
    params = model.parameters()
    saved = [p.stop_gradient for p in params]
    for p in params:
        p.stop_gradient = True
    try:
        with layer_norm_input_gradients():
            yield
    finally:
        for p, flag in zip(params, saved):
            p.stop_gradient = flag


def _flatten_by_reshape(x: paddle.Tensor, start_axis: int = 0, stop_axis: int = -1, name: Optional[str] = None):
    """``paddle.flatten`` as a ``reshape``: the same values, but with a second-order gradient."""
    shape = list(x.shape)
    if not shape:
        return paddle.reshape(x, [1])
    start, stop = start_axis % len(shape), stop_axis % len(shape)
    return paddle.reshape(x, shape[:start] + [-1] + shape[stop + 1 :])


_CHANNEL_FIRST_FORMATS = ("NC", "NCL", "NCHW", "NCDHW")


def _inference_batch_norm_as_ops(layer: paddle.nn.Layer) -> Callable[[paddle.Tensor], paddle.Tensor]:
    """An inference BatchNorm written with elementwise ops, in the order of Paddle's CPU kernel.

    Paddle's kernel computes ``inv_std = 1 / sqrt(var + eps)`` with ``eps``
    held as a float32 attribute, folds ``scale = gamma * inv_std`` and
    ``shift = beta - mu * inv_std * gamma``, and returns ``x * scale + shift``.
    Doing the same steps with Paddle ops gives its bits on the CPU (checked
    on every BatchNorm of ResNet50, float32 and float64, by
    ``tests/test_methods_gradient_family.py``), and each op has a second
    derivative.
    """

    def forward(x: paddle.Tensor) -> paddle.Tensor:
        dtype = layer._variance.dtype
        eps = paddle.full([], float(np.float32(layer._epsilon)), dtype=dtype)
        inv_std = 1.0 / paddle.sqrt(layer._variance + eps)
        if layer.weight is None:
            scale = inv_std
            shift = -(layer._mean * inv_std) if layer.bias is None else layer.bias - layer._mean * inv_std
        else:
            scale = inv_std * layer.weight
            mean_term = layer._mean * inv_std * layer.weight
            shift = -mean_term if layer.bias is None else layer.bias - mean_term
        broadcast = [1, -1] + [1] * (len(x.shape) - 2)
        return x * scale.reshape(broadcast) + shift.reshape(broadcast)

    return forward


@contextlib.contextmanager
def second_order_graph(model: paddle.nn.Layer) -> Iterator[None]:
    """Make ``model``'s forward pass differentiable twice, with the same forward values.

    Paddle 3.3.1 cannot take a second derivative through two things every
    ResNet uses:

    * ``flatten`` (``flatten_grad`` has no grad op): for the duration,
      ``paddle.flatten`` and ``Tensor.flatten`` are routed through
      ``reshape``, which moves no numbers and has one;
    * BatchNorm in inference mode: the double-grad kernel refuses
      ``is_test=True``, and in the global-statistics training mode it fails
      ("Required tensor shall not be nullptr") whenever the incoming gradient
      does not itself depend on the activations, which is the case for a
      logit target.  Each channel-first BatchNorm in eval mode that
      normalises with its stored statistics is therefore run as the
      elementwise ops of ``_inference_batch_norm_as_ops``.

    Everything is restored on exit, also on error.
    """
    norms = [
        layer
        for layer in model.sublayers(include_self=True)
        if isinstance(layer, paddle.nn.layer.norm._BatchNormBase)
        and not layer.training
        and getattr(layer, "_use_global_stats", None) in (None, True)
        and getattr(layer, "_data_format", "NCHW") in _CHANNEL_FIRST_FORMATS
    ]
    saved_forwards = [layer.__dict__.get("forward") for layer in norms]
    saved_flatten, saved_tensor_flatten = paddle.flatten, paddle.Tensor.flatten
    try:
        for layer in norms:
            layer.forward = _inference_batch_norm_as_ops(layer)
        paddle.flatten = _flatten_by_reshape
        paddle.Tensor.flatten = _flatten_by_reshape
        yield
    finally:
        paddle.flatten = saved_flatten
        paddle.Tensor.flatten = saved_tensor_flatten
        for layer, saved_forward in zip(norms, saved_forwards):
            if saved_forward is None:
                layer.__dict__.pop("forward", None)
            else:
                layer.forward = saved_forward


class ActivationsAndGradients:
    """Forward-post hooks that store each target layer's output and, on backward, its gradient.

    ``activations`` are in the order the layers ran, and ``gradients`` in the
    same order (see the module docstring).  With ``detach=False`` both are
    live graph tensors and ``reshape_transform`` is not applied to them, as
    upstream does; the method applies it itself.
    """

    def __init__(
        self,
        model: paddle.nn.Layer,
        target_layers: List[paddle.nn.Layer],
        reshape_transform: Optional[Callable] = None,
        detach: bool = True,
    ) -> None:
        self.model = model
        self.reshape_transform = reshape_transform
        self.detach = detach
        self.activations: List[paddle.Tensor] = []
        self.gradients: List[paddle.Tensor] = []
        self._gradient_slots: List[Optional[paddle.Tensor]] = []
        self.capture_gradients = False
        self.handles = [layer.register_forward_post_hook(self._on_forward) for layer in target_layers]

    def _on_forward(self, layer: paddle.nn.Layer, inputs, output: paddle.Tensor):
        """Store the output; when gradients are wanted, make sure it is in the graph and hook its gradient."""
        replacement = None
        if self.capture_gradients:
            if output.stop_gradient:
                # Nothing upstream of here needs a gradient: start the graph at this output.
                output = output.detach()
                output.stop_gradient = False
                replacement = output
            if self.detach:
                self._gradient_slots.append(None)
                output.register_hook(functools.partial(self._on_gradient, len(self._gradient_slots) - 1))
        if self.detach:
            activation = output.detach()
            if self.reshape_transform is not None:
                activation = self.reshape_transform(activation)
        else:
            activation = output
        self.activations.append(activation)
        return replacement

    def _on_gradient(self, slot: int, grad: paddle.Tensor) -> None:
        """Store the gradient of the forward call number ``slot``."""
        grad = grad.detach()
        if self.reshape_transform is not None:
            grad = self.reshape_transform(grad)
        self._gradient_slots[slot] = grad
        self.gradients = [g for g in self._gradient_slots if g is not None]

    def second_order_gradients(self, loss: paddle.Tensor) -> None:
        """``detach=False``: d loss / d activation for each stored activation, keeping the graph.

        ``create_graph=True`` records the backward ops themselves, so the
        gradients can be differentiated again (ShapleyCAM's Hessian-vector
        product).  Upstream differentiates with respect to the input and
        collects these same values with its hooks; the input gradient it also
        computes is discarded there, so it is not computed here.
        An activation the loss does not depend on gets no gradient, as
        upstream's hook never fires for it.
        """
        grads = paddle.grad(loss, self.activations, create_graph=True, retain_graph=True, allow_unused=True)
        self.gradients = [g for g in grads if g is not None]

    def __call__(self, x: paddle.Tensor, capture_gradients: bool) -> paddle.Tensor:
        """Run the model on ``x`` with fresh activation and gradient lists."""
        self.activations = []
        self.gradients = []
        self._gradient_slots = []
        self.capture_gradients = capture_gradients
        return self.model(x)

    def release(self) -> None:
        """Drop the stored tensors (and with them any kept graph) and remove the hooks."""
        self.activations = []
        self.gradients = []
        self._gradient_slots = []
        for handle in self.handles:
            handle.remove()
        self.handles = []
