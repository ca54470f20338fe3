"""Swap sub-layers of a Paddle model in place (used by AblationCAM and guided backprop)."""
from __future__ import annotations

from typing import Callable

import paddle

__all__ = ["replace_layer_recursive", "replace_all_layer_type_recursive"]


def replace_layer_recursive(model: paddle.nn.Layer, old_layer: paddle.nn.Layer, new_layer: paddle.nn.Layer) -> bool:
    """Replace the first occurrence of ``old_layer`` (by identity) with ``new_layer``."""
    for name, layer in model._sub_layers.items():
        if layer is old_layer:
            model._sub_layers[name] = new_layer
            return True
        if layer is not None and replace_layer_recursive(layer, old_layer, new_layer):
            return True
    return False


def replace_all_layer_type_recursive(
    model: paddle.nn.Layer, old_layer_type: type, make_new_layer: Callable[[], paddle.nn.Layer]
) -> None:
    """Replace every sub-layer of ``old_layer_type`` with ``make_new_layer()``."""
    for name, layer in list(model._sub_layers.items()):
        if isinstance(layer, old_layer_type):
            model._sub_layers[name] = make_new_layer()
        elif layer is not None:
            replace_all_layer_type_recursive(layer, old_layer_type, make_new_layer)
