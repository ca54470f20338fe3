"""Capture target-layer activations and their gradients with Paddle hooks.

Upstream records gradients with a tensor hook registered from a forward hook
(full backward hooks misbehave on in-place ops); this does the same with
``register_forward_post_hook`` and ``Tensor.register_hook``.

Doing less work than upstream: while gradients are wanted, every parameter of
the model is frozen and the *first* target-layer output is re-rooted as a
leaf.  Backward then runs only from the target score down to that layer,
which is all a CAM reads, instead of through the whole network and into
every weight.  The gradient values are unchanged: they are produced by the
same ops between the target layer and the output.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, List, Optional

import paddle

__all__ = ["ActivationsAndGradients", "frozen_parameters"]


@contextlib.contextmanager
def frozen_parameters(model: paddle.nn.Layer) -> Iterator[None]:
    """Temporarily mark every parameter ``stop_gradient`` and restore the flags after."""
    params = model.parameters()
    saved = [p.stop_gradient for p in params]
    for p in params:
        p.stop_gradient = True
    try:
        yield
    finally:
        for p, flag in zip(params, saved):
            p.stop_gradient = flag


class ActivationsAndGradients:
    """Forward-post hooks that store each target layer's output and, on backward, its gradient.

    ``activations`` are in the order the layers ran; ``gradients`` are stored
    in reverse arrival order, which for a chain puts them in the same order.
    """

    def __init__(
        self,
        model: paddle.nn.Layer,
        target_layers: List[paddle.nn.Layer],
        reshape_transform: Optional[Callable] = None,
    ) -> None:
        self.model = model
        self.reshape_transform = reshape_transform
        self.activations: List[paddle.Tensor] = []
        self.gradients: List[paddle.Tensor] = []
        self.capture_gradients = False
        self.handles = [layer.register_forward_post_hook(self._on_forward) for layer in target_layers]

    def _on_forward(self, layer: paddle.nn.Layer, inputs, output: paddle.Tensor):
        replacement = None
        if self.capture_gradients:
            if output.stop_gradient:
                # Nothing upstream of here needs a gradient: start the graph at this output.
                output = output.detach()
                output.stop_gradient = False
                replacement = output
            output.register_hook(self._on_gradient)
        activation = output.detach()
        if self.reshape_transform is not None:
            activation = self.reshape_transform(activation)
        self.activations.append(activation)
        return replacement

    def _on_gradient(self, grad: paddle.Tensor) -> None:
        grad = grad.detach()
        if self.reshape_transform is not None:
            grad = self.reshape_transform(grad)
        self.gradients = [grad] + self.gradients

    def __call__(self, x: paddle.Tensor, capture_gradients: bool) -> paddle.Tensor:
        self.activations = []
        self.gradients = []
        self.capture_gradients = capture_gradients
        return self.model(x)

    def release(self) -> None:
        self.activations = []
        self.gradients = []
        for handle in self.handles:
            handle.remove()
        self.handles = []
