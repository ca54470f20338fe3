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
double-differentiable in Paddle 3.3.1 (flatten, inference BatchNorm,
LayerNorm, GELU, softmax and a partly frozen concat have no second
derivative there) without changing its forward values on the CPU.
"""
from __future__ import annotations

import contextlib
import functools
import math
import re
from typing import Callable, Iterator, List, Optional

import numpy as np
import paddle
from paddle import _C_ops
from paddle.autograd import PyLayer

__all__ = [
    "ActivationsAndGradients",
    "frozen_parameters",
    "layer_norm_input_gradients",
    "second_order_graph",
    "second_derivative_errors_explained",
]


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
    derivative.  Where nothing of the call needs a gradient (every
    BatchNorm before the target layer, whose output is re-rooted) the
    layer's own fused kernel runs instead: the same bits, one pass over the
    tensor instead of two (ShapleyCAM on ResNet50 at batch 8: measured in
    ``BaseCAM``'s forward, 3.2 s a call with the ops everywhere).
    """
    kernel_forward = layer.forward

    def forward(x: paddle.Tensor) -> paddle.Tensor:
        if x.stop_gradient and all(p is None or p.stop_gradient for p in (layer.weight, layer.bias)):
            return kernel_forward(x)
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


# Paddle's CPU layer_norm sums a row of float32 in eight AVX lanes when the row has at least this many
# elements and the CPU has AVX; otherwise (float64, shorter rows, no AVX) it sums left to right.
_AVX_FLOAT32_LANES = 8


def _kernel_order_row_sum(rows: paddle.Tensor) -> paddle.Tensor:
    """Sum over the last axis (keepdim) with the value Paddle's CPU ``layer_norm`` kernel gets, and the gradient of a sum.

    The kernel's summation order decides the last bits of its mean and
    variance, so the value is recomputed in that order on a detached copy:
    in float32 with rows of 8 or more (and an AVX CPU) each of 8 lanes adds
    every 8th element left to right, the row's tail (``n % 8`` elements) is
    added to the top lanes, and the lanes are combined as
    ``((l0 + l4) + (l1 + l5)) + ((l2 + l6) + (l3 + l7))``; otherwise the
    row is added left to right.  ``cumsum`` adds in exactly these orders,
    but has no second derivative in Paddle 3.3.1, so the result carries the
    graph of an ordinary ``sum`` added as ``s - s.detach()`` (exactly zero):
    a sum is linear, so its derivatives do not depend on the order.
    """
    values = rows.detach()
    length = int(values.shape[-1])
    lead = list(values.shape[:-1])
    if values.dtype == paddle.float32 and length >= _AVX_FLOAT32_LANES and paddle.base.core.avx_supported():
        lanes = _AVX_FLOAT32_LANES
        rest = length % lanes
        full = length - rest
        blocks = values[..., :full].reshape(lead + [full // lanes, lanes])
        if rest:
            padding = paddle.zeros(lead + [1, lanes - rest], dtype=values.dtype)
            tail = paddle.concat([padding, values[..., full:].reshape(lead + [1, rest])], axis=-1)
            blocks = paddle.concat([blocks, tail], axis=-2)
        lane_sums = paddle.cumsum(blocks, axis=-2)[..., -1, :]
        halves = lane_sums[..., :4] + lane_sums[..., 4:]
        ordered = (halves[..., 0:1] + halves[..., 1:2]) + (halves[..., 2:3] + halves[..., 3:4])
    else:
        ordered = paddle.cumsum(values, axis=-1)[..., -1:]
    plain = rows.sum(axis=-1, keepdim=True)
    return ordered + (plain - plain.detach())


def _kernel_order_row_mean(rows: paddle.Tensor) -> paddle.Tensor:
    """Mean over the last axis as the kernel finishes it: times a float32 ``1/n`` on the AVX path, else over ``n``."""
    length = int(rows.shape[-1])
    total = _kernel_order_row_sum(rows)
    if rows.dtype == paddle.float32 and length >= _AVX_FLOAT32_LANES and paddle.base.core.avx_supported():
        return total * paddle.full([], float(np.float32(1.0) / np.float32(length)), dtype=rows.dtype)
    return total / paddle.full([], float(length), dtype=rows.dtype)


def _correctly_rounded_sqrt(x: paddle.Tensor) -> paddle.Tensor:
    """``sqrt`` rounded to nearest, as the kernel's ``std::sqrt`` and AVX ``sqrt_ps`` are.

    Paddle's float32 ``sqrt`` op is off by one ulp in about a third of its
    results on the CPU; a float64 square root rounded to float32 is
    correctly rounded (float64 carries more than twice float32's precision).
    """
    if x.dtype == paddle.float32:
        return paddle.sqrt(x.astype(paddle.float64)).astype(paddle.float32)
    return paddle.sqrt(x)


def _layer_norm_as_ops(kernel: Callable) -> Callable:
    """``_C_ops.layer_norm`` written with elementwise ops that have second derivatives, in the CPU kernel's order.

    Paddle 3.3.1 has no grad op for ``layer_norm_grad``, so a second
    derivative through LayerNorm fails.  This computes what the CPU kernel
    computes, step by step: the mean over the normalised axes, the biased
    variance ``mean((x - mean)^2)`` (divided by ``n``, as torch's LayerNorm
    does too), ``(x - mean) / sqrt(var + eps)`` with ``eps`` held as the
    op's float32 attribute, then times the weight and plus the bias.  With
    the kernel's summation order for the two means
    (``_kernel_order_row_sum``) and a correctly rounded square root
    (``_correctly_rounded_sqrt``) the result is the kernel's bit for bit on
    the CPU: max|Δ| 0 in float32 and float64 on DeiT-tiny and ViT-B token
    rows (192, 768), Swin's and ConvNeXt's channels-last maps (96, 768),
    rows of 5, 13 and 100 and a LayerNorm over (4, 25), with and without
    weight and bias, eps 1e-6 and 1e-5 (``tests/test_second_order_layernorm.py``).
    Plain ops (``mean``, ``mean((x - mean)^2)``, ``rsqrt``) on the same
    cases differ from the kernel by up to 5.2e-6 in float32 (outputs up to
    8.9 in magnitude) and 2.7e-15 in float64.  On other devices the values
    agree to rounding, not to the bit.

    A call none of whose inputs needs a gradient goes to ``kernel`` (the
    same values, and faster).
    """

    def layer_norm(x, weight=None, bias=None, epsilon=1e-5, begin_norm_axis=1):
        inputs = [t for t in (x, weight, bias) if t is not None]
        if all(t.stop_gradient for t in inputs):
            return kernel(x, weight, bias, epsilon, begin_norm_axis)
        shape = list(x.shape)
        axis = begin_norm_axis % len(shape) if shape else 0
        length = int(np.prod(shape[axis:], dtype=np.int64))
        for name, tensor in (("weight", weight), ("bias", bias)):
            if tensor is not None and int(np.prod(tensor.shape, dtype=np.int64)) != length:
                raise ValueError(
                    f"layer_norm {name} has {int(np.prod(tensor.shape))} elements, but the normalised "
                    f"dimensions {shape[axis:]} of the input hold {length}"
                )
        rows = x.reshape(shape[:axis] + [length])
        mean = _kernel_order_row_mean(rows)
        centred = rows - mean
        variance = _kernel_order_row_mean(centred * centred)
        eps = paddle.full([], float(np.float32(epsilon)), dtype=x.dtype)
        out = centred / _correctly_rounded_sqrt(variance + eps)
        if weight is not None:
            out = out * weight.reshape([length])
        if bias is not None:
            out = out + bias.reshape([length])
        return out.reshape(shape)

    return layer_norm


def _gelu_derivative(x: paddle.Tensor, tanh_form: bool) -> paddle.Tensor:
    """d gelu / dx written with ops that can be differentiated once more (``erf``, ``exp``, ``tanh``)."""
    if tanh_form:
        # gelu(x) = x / 2 * (1 + tanh(k (x + c x^3))), Paddle's and torch's constants
        k, c = math.sqrt(2.0 / math.pi), 0.044715
        t = paddle.tanh(k * (x + c * x * x * x))
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * c * x * x)
    cdf = 0.5 * (1.0 + paddle.erf(x * (1.0 / math.sqrt(2.0))))
    pdf = paddle.exp(-0.5 * x * x) * (1.0 / math.sqrt(2.0 * math.pi))
    return cdf + x * pdf


class _GeluWithSecondDerivative(PyLayer):
    """Paddle's gelu kernel forward (its values, bit for bit); a backward built of differentiable ops.

    Paddle 3.3.1's ``gelu_grad`` (and ``erf_grad``) have no grad op; a
    PyLayer's backward, run with ``create_graph=True``, is recorded like any
    other ops, so it can be differentiated again.
    """

    @staticmethod
    def forward(ctx, x, tanh_form, run_kernel):
        ctx.save_for_backward(x)
        ctx.tanh_form = tanh_form
        return run_kernel(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensor()
        return grad * _gelu_derivative(x, ctx.tanh_form)


class _SoftmaxWithSecondDerivative(PyLayer):
    """Paddle's softmax kernel forward; backward ``y * (g - sum(g * y))`` with ``y`` recomputed from differentiable ops."""

    @staticmethod
    def forward(ctx, x, axis, run_kernel):
        ctx.save_for_backward(x)
        ctx.axis = axis
        return run_kernel(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensor()
        # softmax does not change when its input is shifted: the max only keeps exp in range
        shifted = paddle.exp(x - paddle.max(x, axis=ctx.axis, keepdim=True).detach())
        y = shifted / shifted.sum(axis=ctx.axis, keepdim=True)
        return y * (grad - (grad * y).sum(axis=ctx.axis, keepdim=True))


def _input_and_rerun(args: tuple, kwargs: dict):
    """The op's input tensor and a function running the same kernel call on another tensor in its place."""
    if args:
        return args[0], lambda kernel, tensor: kernel(tensor, *args[1:], **kwargs)
    for name in ("x", "input"):
        if name in kwargs:
            return kwargs[name], lambda kernel, tensor: kernel(**{**kwargs, name: tensor})
    return None, None


def _argument(args: tuple, kwargs: dict, position: int, name: str, default):
    return args[position] if len(args) > position else kwargs.get(name, default)


def _gelu_with_second_derivative(kernel: Callable) -> Callable:
    """``_C_ops.gelu`` that can be differentiated twice, with the kernel's forward values."""

    def gelu(*args, **kwargs):
        x, rerun = _input_and_rerun(args, kwargs)
        if x is None or x.stop_gradient or kwargs.get("out") is not None:
            return kernel(*args, **kwargs)
        approximate = _argument(args, kwargs, 1, "approximate", False)
        tanh_form = approximate is True or approximate == "tanh"
        return _GeluWithSecondDerivative.apply(x, tanh_form, functools.partial(rerun, kernel))

    return gelu


def _softmax_with_second_derivative(kernel: Callable) -> Callable:
    """``_C_ops.softmax`` that can be differentiated twice, with the kernel's forward values."""

    def softmax(*args, **kwargs):
        x, rerun = _input_and_rerun(args, kwargs)
        if x is None or x.stop_gradient or kwargs.get("out") is not None:
            return kernel(*args, **kwargs)
        axis = int(_argument(args, kwargs, 1, "axis", -1))
        return _SoftmaxWithSecondDerivative.apply(x, axis, functools.partial(rerun, kernel))

    return softmax


def _concat_with_second_derivative(kernel: Callable) -> Callable:
    """``_C_ops.concat`` whose double grad works when only some of its inputs need a gradient.

    Paddle 3.3.1's concat double grad fails ("Unable to fill empty grad
    inputs due to empty GradSlotMeta") when an input is ``stop_gradient``,
    as a ViT's frozen class token is when concatenated with the patch
    tokens.  Such an input is passed as a throwaway alias that needs a
    gradient (the same memory, a fresh leaf nobody reads), so every slot is
    filled; the values and the other inputs' gradients are unchanged.
    """

    def concat(*args, **kwargs):
        tensors = _argument(args, kwargs, 0, "x", None)
        if (
            not isinstance(tensors, (list, tuple))
            or kwargs.get("out") is not None
            or all(t.stop_gradient for t in tensors)
            or not any(t.stop_gradient for t in tensors)
        ):
            return kernel(*args, **kwargs)
        aliases = []
        for tensor in tensors:
            if tensor.stop_gradient:
                tensor = tensor.detach()
                tensor.stop_gradient = False
            aliases.append(tensor)
        if args:
            return kernel(aliases, *args[1:], **kwargs)
        return kernel(**{**kwargs, "x": aliases})

    return concat


@contextlib.contextmanager
def second_order_graph(model: paddle.nn.Layer) -> Iterator[None]:
    """Make ``model``'s forward pass differentiable twice, with the same forward values.

    Paddle 3.3.1 cannot take a second derivative through these (the first
    two are in every ResNet):

    * ``flatten`` (``flatten_grad`` has no grad op): for the duration,
      ``paddle.flatten`` and ``Tensor.flatten`` are routed through
      ``reshape``, which moves no numbers and has one;
    * BatchNorm in inference mode: the double-grad kernel refuses
      ``is_test=True``, and in the global-statistics training mode it fails
      ("Required tensor shall not be nullptr") whenever the incoming gradient
      does not itself depend on the activations, which is the case for a
      logit target.  Each channel-first BatchNorm in eval mode that
      normalises with its stored statistics is therefore run as the
      elementwise ops of ``_inference_batch_norm_as_ops``;
    * LayerNorm (``layer_norm_grad`` has no grad op): ``paddle._C_ops.layer_norm``,
      which ``nn.LayerNorm`` and ``F.layer_norm`` both call, is replaced by
      the elementwise ops of ``_layer_norm_as_ops``, which give the CPU
      kernel's values bit for bit.  The ops take a frozen weight as a
      constant, so ``layer_norm_input_gradients``' alias is not needed on
      this path;
    * GELU and softmax (``gelu_grad``, ``erf_grad`` and ``softmax_grad``
      have no grad op): ``_C_ops.gelu`` and ``_C_ops.softmax`` (the route of
      ``nn.GELU``, ``F.gelu``, ``nn.Softmax`` and ``F.softmax``) keep their
      kernels' forward values and get a backward written with
      differentiable ops (``_GeluWithSecondDerivative``,
      ``_SoftmaxWithSecondDerivative``);
    * ``concat`` of tensors only some of which need a gradient (a ViT's
      frozen class token and its patch tokens): the double grad fails on the
      empty slot, so ``_concat_with_second_derivative`` passes such inputs
      as throwaway aliases that need one.

    Each replacement runs the original kernel when nothing of its call needs
    a gradient, and a model without these ops runs exactly the same ops
    (ResNet50's numbers are unchanged).  Still without a second derivative
    in Paddle 3.3.1, and not handled here: hard-swish, hard-sigmoid,
    max-pooling, bilinear interpolation, depthwise convolution (CPU) and
    strided slicing after the target layer
    (``second_derivative_errors_explained`` names them).

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
    saved_layer_norm, saved_gelu, saved_softmax = _C_ops.layer_norm, _C_ops.gelu, _C_ops.softmax
    saved_concat = _C_ops.concat
    try:
        for layer in norms:
            layer.forward = _inference_batch_norm_as_ops(layer)
        paddle.flatten = _flatten_by_reshape
        paddle.Tensor.flatten = _flatten_by_reshape
        _C_ops.layer_norm = _layer_norm_as_ops(saved_layer_norm)
        _C_ops.gelu = _gelu_with_second_derivative(saved_gelu)
        _C_ops.softmax = _softmax_with_second_derivative(saved_softmax)
        _C_ops.concat = _concat_with_second_derivative(saved_concat)
        yield
    finally:
        _C_ops.concat = saved_concat
        _C_ops.softmax = saved_softmax
        _C_ops.gelu = saved_gelu
        _C_ops.layer_norm = saved_layer_norm
        paddle.flatten = saved_flatten
        paddle.Tensor.flatten = saved_tensor_flatten
        for layer, saved_forward in zip(norms, saved_forwards):
            if saved_forward is None:
                layer.__dict__.pop("forward", None)
            else:
                layer.forward = saved_forward


_SECOND_ORDER_ROUTES = "flatten, BatchNorm in eval mode, LayerNorm, GELU, softmax and concat"


@contextlib.contextmanager
def second_derivative_errors_explained() -> Iterator[None]:
    """Turn Paddle's refusal to differentiate an op twice into an error that names the op and what to do.

    Paddle says "The Op hardswish_grad doesn't have any grad op" (or "The
    kernel `depthwise_conv2d_double_grad` is not registered" on the CPU, or
    for max-pooling "Pool op grad grad only supports avgpool"), which does not
    say that the method needs a second derivative or which ops the port
    supplies one for.
    """
    try:
        yield
    except (RuntimeError, ValueError, SystemError) as error:
        message = str(error)
        missing = re.search(r"The Op (\w+?)(?:_grad)+ doesn't have any grad op", message) or re.search(
            r"The kernel `(\w+?)_double_grad` is not registered", message
        )
        if missing:
            op = missing.group(1)
        elif "grad grad only supports avgpool" in message:
            op = "max-pooling"
        else:
            raise
        raise NotImplementedError(
            f"this method differentiates the model twice between the target layer and the score, and Paddle "
            f"3.3.1 has no second derivative of {op}; the port supplies one for {_SECOND_ORDER_ROUTES} only. "
            f"Choose a target layer after the last {op}, or a method that needs only gradients (e.g. GradCAM)"
        ) from error


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
        with second_derivative_errors_explained():
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
