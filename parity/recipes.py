"""How the harness builds, records and calls each registry method, the same way on both sides.

The recipes themselves (which constructor and call each class gets) are the
port's: :mod:`paddle_impl.method_table`, which ``paddle-gradcam`` uses too.
This module runs them on either library, giving upstream's class and a torch
classifier head where the torch side is built, and adds what only the harness
does: attaching the stage recorder where each method's numbers pass.

* ``fullgrad`` overrides ``compute_cam_per_layer``, so its recorded stages
  are that method's input and output;
* ``finer`` / ``refine`` / ``sess`` are recorded through their base CAMs;
* ``dff``'s stages are the concepts, their heatmaps and their classifier
  scores, all returned by the call itself.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from paddle_impl import method_table
from paddle_impl.method_table import DFF_COMPONENTS, RANDOM_SEED, call_cam, factorization_colors, picture_cam, released
from parity.registry import MethodSpec

__all__ = ["build_cam", "compiled_prefix_from_the_first_call", "dynamic_graph_only", "attach_recorder", "call_cam", "released", "picture_cam", "classifier_head", "RANDOM_SEED", "DFF_COMPONENTS",
           "factorization_colors"]


def classifier_head(model: Any, framework: str):
    """The model's last Linear layer, found by type (``fc`` for ResNets, ``classifier[-1]`` elsewhere).

    On the Paddle side this is the port's :func:`paddle_impl.method_table.classifier_head`;
    the torch side casts a float64 model's float32 concepts the same way (upstream
    itself stops with "mat1 and mat2 must have the same dtype" otherwise).
    """
    if framework != "torch":
        return method_table.classifier_head(model)
    import torch

    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not linear:
        raise ValueError("the model has no Linear layer to score DFF's concepts with")
    head = linear[-1]
    dtype = head.weight.dtype
    return head if dtype == torch.float32 else (lambda concepts: head(concepts.to(dtype)))


def build_cam(spec: MethodSpec, library: Any, framework: str, model: Any, target_layers: List[Any],
              reshape_transform: Optional[Callable] = None, extra: Optional[Dict[str, Any]] = None):
    """The method's CAM object, as a user of that library builds it; ``extra`` are more constructor arguments
    (e.g. ``ablation_layer=AblationLayerVit()`` for AblationCAM on a transformer)."""
    cls = getattr(library, spec.torch_class_name if framework == "torch" else spec.paddle_class_name)
    head = classifier_head(model, framework) if spec.recipe == "dff" else None
    return method_table.construct_cam(spec, cls, model, target_layers, reshape_transform, head, extra)


def compiled_prefix_from_the_first_call(cam: Any) -> None:
    """Have every BaseCAM in ``cam`` (its base CAMs too) build its compiled prefix on its first call.

    A gradient method builds ``paddle_impl.prefix_engine`` on its second call
    for an input shape, so a comparison that calls it once per case would
    only ever see the dynamic graph.  The parity runs compare the path a
    user's repeated calls take; the first call's dynamic graph is what the
    unit tests (tests/test_methods_gradient_family.py and others) compare.
    A torch CAM has no such attribute and is left alone.
    """
    for each in _cam_and_its_bases(cam):
        if hasattr(each, "prefix_engine_on_call"):
            each.prefix_engine_on_call = 1


def dynamic_graph_only(cam: Any) -> None:
    """Turn off every compiled engine of ``cam`` (its base CAMs too): each forward runs in Paddle's dynamic graph.

    What a float32 recheck needs to tell an engine's rounding (its fused
    kernels) from the dynamic graph's; a torch CAM has no such attribute.
    """
    for each in _cam_and_its_bases(cam):
        if hasattr(each, "inference_engine"):
            each.inference_engine = False


def _cam_and_its_bases(cam: Any) -> List[Any]:
    """``cam`` and the CAMs it calls (FinerCAM's and SESS's base CAM, RefineCAM's one per layer)."""
    bases = (getattr(cam, "base_cam", None), *(getattr(cam, "base_cam_per_layer", None) or []))
    return [cam] + [each for each in bases if each is not None]


def attach_recorder(spec: MethodSpec, cam: Any, recorder) -> None:
    """Attach the stage recorder where the method's numbers pass (see the module docstring)."""
    if spec.recipe == "fullgrad":
        recorder.attach_per_layer(cam)
    elif spec.recipe == "finer":
        recorder.attach(cam.base_cam, logits=False)
    elif spec.recipe == "sess":
        recorder.attach(cam.base_cam)
    elif spec.recipe == "refine":
        for index, base in enumerate(cam.base_cam_per_layer):
            recorder.attach(base, prefix=f"layer{index}.")
    elif spec.recipe != "dff":  # DFF has no per-pass stages beyond what call_cam returns
        recorder.attach(cam)
