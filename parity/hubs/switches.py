"""Switches: documented settings that make a PaddleClas model compute what its timm twin computes.

Each function takes the built Paddle model, changes it in place and returns
how many layers it changed (a switch that changes nothing is refused by
``ArchSpec.apply_switches``).  A factory (``add_conv_bias("last_conv")``)
returns such a function for one layer path.  Each is the smallest change that
makes the two models the same function; what it changes, and why that is
the same network, is in the entry's ``Switch.reason``.
"""
from __future__ import annotations

from typing import Any, Callable

from paddle_impl.errors import UserError

__all__ = ["dropout_scale_in_train", "add_conv_bias", "torch_hard_sigmoid"]


def dropout_scale_in_train(model: Any) -> int:
    """Every ``Dropout(mode="downscale_in_infer")`` becomes ``upscale_in_train``: the identity at inference.

    PaddleClas's heads use Paddle's ``downscale_in_infer`` Dropout, which
    multiplies by ``1 - p`` at inference; torch's Dropout (and the same
    Paddle layer in ``upscale_in_train`` mode) is the identity there.  Both
    modes train the same network up to that constant factor.
    """
    import paddle

    changed = 0
    for _, layer in model.named_sublayers(include_self=True):
        if isinstance(layer, paddle.nn.Dropout) and layer.mode == "downscale_in_infer" and float(layer.p) > 0:
            layer.mode = "upscale_in_train"
            changed += 1
    return changed


def torch_hard_sigmoid(model: Any) -> int:
    """Every ``paddle.nn.Hardsigmoid`` becomes :class:`parity.hubs.paddle_layers.TorchHardsigmoid`: relu6(x + 3) / 6.

    Paddle's layer multiplies by the literal 0.1666667 where torch divides by
    6; the sub-layer keeps its name, so the weight transfer and the target
    layers see the same model.
    """
    import paddle

    from parity.hubs.paddle_layers import TorchHardsigmoid

    changed = 0
    parents = [layer for _, layer in model.named_sublayers(include_self=True)]
    for parent in parents:
        for name, child in list(parent.named_children()):
            if type(child) is paddle.nn.Hardsigmoid:
                setattr(parent, name, TorchHardsigmoid())
                changed += 1
    return changed


def add_conv_bias(path: str) -> Callable[[Any], int]:
    """A switch that gives the conv at ``path`` (built with ``bias_attr=False``) a bias, initialised to zero.

    With a zero bias the layer computes exactly what it computed before; the
    transfer then fills it with the timm conv's bias.
    """

    def apply(model: Any) -> int:
        import paddle

        from paddle_impl.layer_paths import resolve_layer

        layer = resolve_layer(model, path)
        if not isinstance(layer, paddle.nn.Conv2D):
            raise UserError(f"add_conv_bias({path!r}): {type(layer).__name__} is not a Conv2D")
        if layer.bias is not None:
            return 0
        layer.bias = layer.create_parameter(shape=[layer._out_channels], dtype=layer.weight.dtype, is_bias=True,
                                            default_initializer=paddle.nn.initializer.Constant(0.0))
        return 1

    apply.__name__ = f"add_conv_bias({path})"
    return apply
