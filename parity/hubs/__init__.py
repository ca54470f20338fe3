"""Model pairs from the two hubs: timm (PyTorch) and PaddleClas (Paddle).

A pair is one :class:`HubPair` (:mod:`parity.hubs.pair_spec`, the zoo's
:class:`parity.arch_spec.ArchSpec` with hub builders) declared in a module of
this package (``cnns.py``, ``transformers.py``) and listed in that module's
``ENTRIES`` tuple; :func:`hub_entries` collects them and
``parity.model_zoo.HUB_PAIRS`` holds them by name.  This package imports
neither the zoo nor anything built on it (the weight transfer of a pair is
:mod:`parity.hub_transfer`, above the zoo).  From there the whole
harness treats a pair like any model of the zoo: seeded weights
(:mod:`parity.hubs.seeding`), the generic transfer and its forward check,
workers, diagnosis, reports, sharding.

Declaring a pair (see /work/notes/hub_schema.md for the full schema)::

    HubPair(
        name="resnet50d",                              # case ids, directories, weight files
        family="resnet",
        torch_builder="timm:resnet50d",                # timm.create_model(name, pretrained=False)
        paddle_builder="paddleclas:ResNet50_vd",       # parity.hubs.paddleclas_loader
        transfer="generic",
        torch_target_layer="layer4[-1]", paddle_target_layer="blocks[-1]",
        input_size=(224, 224), heavy_methods=False,
        switches=(Switch("...", "reason", apply_function),),
        torch_reshape="", paddle_reshape="",           # or "auto", or "module:function"
        note="...",
    )
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, List, Optional, Tuple

from paddle_impl.errors import UserError

from parity.hubs.pair_spec import HubPair

__all__ = ["HubPair", "hub_entries", "HUB_MODULES", "resolve_reshape"]

# The modules that declare pairs, in the order the hubs profile lists them.
HUB_MODULES: Tuple[str, ...] = ("parity.hubs.cnns", "parity.hubs.transformers")


def hub_entries() -> List[HubPair]:
    """Every declared pair, module by module, in declaration order.

    A module of ``HUB_MODULES`` that does not exist yet is skipped; one that
    fails to import for another reason is an error (a broken entry must not
    make its pairs vanish silently).
    """
    entries: List[HubPair] = []
    for name in HUB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name == name:
                continue
            raise
        entries += list(getattr(module, "ENTRIES", ()))
    return entries


def resolve_reshape(text: str, framework: str, model: Any, input_size: Optional[Tuple[int, int]]) -> Optional[Callable]:
    """An entry's reshape-transform declaration -> the callable the CAM gets (None for "").

    ``"module:function"`` names the function itself (it receives the target
    layer's output); ``"auto"`` asks :mod:`parity.hubs.reshape` to recognise
    the layout from the model and its (width, height) input size.
    """
    if not text:
        return None
    if text == "auto":
        try:
            from parity.hubs.reshape import auto_reshape_transform
        except ImportError:
            raise UserError("reshape transform 'auto' needs parity.hubs.reshape.auto_reshape_transform, "
                            "which is not available") from None
        return auto_reshape_transform(framework, model, input_size)
    module_name, _, attribute = text.partition(":")
    if not attribute:
        raise UserError(f"invalid reshape transform {text!r}: expected '', 'auto' or 'module:function'")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise UserError(f"reshape transform {text!r} cannot be imported: {error}") from None
