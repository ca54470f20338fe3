"""Find and swap sub-layers of a Paddle model.

Port of ``pytorch_grad_cam/utils/find_layers.py`` (grad-cam 1.5.7): the swap
helpers serve AblationCAM and guided backprop, the finders FullGrad.  Layers
are visited in registration order (``_sub_layers``), depth first, as upstream
walks ``_modules``, so a finder lists layers in the same order as upstream on
a model whose layers are registered in the same order.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, List, Tuple

import paddle

__all__ = [
    "replace_layer_recursive",
    "layer_references",
    "replace_all_layer_type_recursive",
    "find_layer_types_recursive",
    "find_layer_predicate_recursive",
]


def replace_layer_recursive(model: paddle.nn.Layer, old_layer: paddle.nn.Layer, new_layer: paddle.nn.Layer) -> bool:
    """Replace the first occurrence of ``old_layer`` (by identity) with ``new_layer``."""
    for name, layer in model._sub_layers.items():
        if layer is old_layer:
            model._sub_layers[name] = new_layer
            return True
        if layer is not None and replace_layer_recursive(layer, old_layer, new_layer):
            return True
    return False


def layer_references(model: paddle.nn.Layer, layer: paddle.nn.Layer) -> List[Tuple[Any, Any]]:
    """Every (container, key) through which ``model`` reaches ``layer``: ``container[key] is layer``.

    Not in upstream, whose ``replace_layer_recursive`` swaps the first
    registered reference only.  paddle.vision's models often reach one
    sub-layer in several ways (DenseNet registers each dense block as an
    attribute and calls it through a plain list that ``forward`` iterates), so
    a swap that must take effect swaps all of them: the ``_sub_layers`` entries
    of every layer, and the items of plain lists held in a layer's attributes.
    """
    found: List[Tuple[Any, Any]] = []
    seen = set()
    for parent in [model, *model.sublayers(include_self=False)]:
        if id(parent) in seen:
            continue
        seen.add(id(parent))
        found += [(parent._sub_layers, name) for name, child in parent._sub_layers.items() if child is layer]
        for value in vars(parent).values():
            if isinstance(value, list):
                found += [(value, index) for index, item in enumerate(value) if item is layer]
    return found


def replace_all_layer_type_recursive(
    model: paddle.nn.Layer, old_layer_type: type, make_new_layer: Callable[[], paddle.nn.Layer]
) -> None:
    """Replace every sub-layer of ``old_layer_type`` with ``make_new_layer()``."""
    for name, layer in list(model._sub_layers.items()):
        if isinstance(layer, old_layer_type):
            model._sub_layers[name] = make_new_layer()
        elif layer is not None:
            replace_all_layer_type_recursive(layer, old_layer_type, make_new_layer)


def find_layer_types_recursive(model: paddle.nn.Layer, layer_types: Iterable[type]) -> List[paddle.nn.Layer]:
    """Every sub-layer whose type is exactly one of ``layer_types`` (subclasses do not count, as upstream)."""
    layer_types = tuple(layer_types)
    return find_layer_predicate_recursive(model, lambda layer: type(layer) in layer_types)


def find_layer_predicate_recursive(
    model: paddle.nn.Layer, predicate: Callable[[paddle.nn.Layer], bool]
) -> List[paddle.nn.Layer]:
    """Every sub-layer, at any depth and depth first, for which ``predicate`` holds.

    A match's own sub-layers are searched too, as upstream does.
    """
    found = []
    for layer in model._sub_layers.values():
        if layer is None:
            continue
        if predicate(layer):
            found.append(layer)
        found.extend(find_layer_predicate_recursive(layer, predicate))
    return found
