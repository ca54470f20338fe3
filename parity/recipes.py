"""How each registry method is built, recorded and called, the same way on both sides.

A recipe is what a user of the library writes for that class: upstream's
constructor and call, nothing more.  ``standard`` covers every ``BaseCAM``
method; the others are the classes whose constructor or call differs:

* ``fullgrad``: ``FullGrad`` ignores ``target_layers`` (it takes every bias
  layer), so it is given none, as upstream's warning asks; it overrides
  ``compute_cam_per_layer``, so its recorded stages are that method's input
  and output;
* ``finer`` / ``refine`` / ``sess``: meta-methods wrapping base CAMs; called
  as ``cam(input_tensor, targets, eigen_smooth)`` (upstream's signature has no
  ``aug_smooth``), recorded through their base CAMs;
* ``dff``: ``DeepFeatureFactorization(model, target_layer,
  computation_on_concepts=<the classifier head>)`` called with 5 components;
  its stages are the concepts, their heatmaps and their classifier scores.

Methods that draw random numbers get numpy's global generator seeded with
``RANDOM_SEED`` right before each call, on both sides.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np

from parity.registry import MethodSpec

__all__ = ["build_cam", "attach_recorder", "call_cam", "released", "picture_cam", "classifier_head", "RANDOM_SEED", "DFF_COMPONENTS",
           "factorization_colors"]

RANDOM_SEED = 0
DFF_COMPONENTS = 5


def classifier_head(model: Any, framework: str):
    """The model's last Linear layer, found by type (``fc`` for ResNets, ``classifier[-1]`` elsewhere).

    DeepFeatureFactorization hands its ``computation_on_concepts`` the concepts as
    float32, upstream and port alike, so a float64 model's head gets them cast to
    its own dtype first, as a user of a float64 model would write it (upstream
    itself stops with "mat1 and mat2 must have the same dtype" otherwise).
    """
    if framework == "torch":
        import torch

        linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    else:
        import paddle

        linear = [m for m in model.sublayers(include_self=True) if isinstance(m, paddle.nn.Linear)]
    if not linear:
        raise ValueError("the model has no Linear layer to score DFF's concepts with")
    head = linear[-1]
    dtype = head.weight.dtype
    if framework == "torch":
        return head if dtype == torch.float32 else (lambda concepts: head(concepts.to(dtype)))
    return head if dtype == paddle.float32 else (lambda concepts: head(concepts.astype(dtype)))


def build_cam(spec: MethodSpec, library: Any, framework: str, model: Any, target_layers: List[Any],
              reshape_transform: Optional[Callable] = None, extra: Optional[Dict[str, Any]] = None):
    """The method's CAM object, as a user of that library builds it; ``extra`` are more constructor arguments
    (e.g. ``ablation_layer=AblationLayerVit()`` for AblationCAM on a transformer)."""
    cls = getattr(library, spec.torch_class_name if framework == "torch" else spec.paddle_class_name)
    extra = dict(extra or {})
    if spec.recipe == "fullgrad":
        return cls(model=model, target_layers=[], reshape_transform=reshape_transform, **extra)
    if spec.recipe == "dff":
        return cls(model=model, target_layer=target_layers[-1], reshape_transform=reshape_transform,
                   computation_on_concepts=classifier_head(model, framework), **extra)
    return cls(model=model, target_layers=target_layers, reshape_transform=reshape_transform, **extra)


def _release(cam: Any) -> None:
    for base in getattr(cam, "base_cam_per_layer", None) or []:
        _release(base)
    if getattr(cam, "base_cam", None) is not None:
        _release(cam.base_cam)
    if getattr(cam, "activations_and_grads", None) is not None:
        cam.activations_and_grads.release()


@contextlib.contextmanager
def released(cam: Any) -> Iterator[Any]:
    """Use ``cam`` and remove its hooks afterwards.

    Not every upstream class is a context manager (RefineCAM and
    DeepFeatureFactorization have no ``__enter__``), so the hooks are removed
    where they live: the CAM's own ``activations_and_grads`` or its base CAMs'.
    """
    try:
        yield cam
    finally:
        _release(cam)


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


def factorization_colors(components: int) -> List[np.ndarray]:
    """The colours DFF's overlay gives its concepts: upstream's default, gist_rainbow at i / k.

    Passed explicitly on both sides: upstream's own default calls
    ``plt.cm.get_cmap``, which matplotlib 3.11 no longer has.
    """
    import matplotlib

    cmap = matplotlib.colormaps["gist_rainbow"]
    return [np.array(cmap(i)) for i in np.arange(0, 1, 1.0 / components)]


def picture_cam(cam: np.ndarray) -> np.ndarray:
    """The (1, H, W) map the pictures show: the first image of a batch (DFF: its strongest concept per pixel)."""
    first = np.asarray(cam)[0]
    return (first.max(axis=0) if first.ndim == 3 else first)[None]


def call_cam(spec: MethodSpec, cam: Any, input_tensor: Any, targets: Optional[List[Any]], aug_smooth: bool,
             eigen_smooth: bool) -> Dict[str, np.ndarray]:
    """Run one case; return the stages only the call itself yields: ``cam`` (and DFF's concept stages)."""
    if spec.draws_random:
        np.random.seed(RANDOM_SEED)
    if spec.recipe == "dff":
        concepts, explanations, scores = cam(input_tensor, DFF_COMPONENTS)
        return {"concepts": np.asarray(concepts), "concept_scores": np.asarray(scores),
                "cam": np.stack([np.asarray(e) for e in explanations])}
    if spec.recipe in ("finer", "refine", "sess"):
        if aug_smooth:
            raise ValueError(f"{spec.name} has no aug_smooth in upstream's API")
        grayscale = cam(input_tensor, targets, eigen_smooth)
    else:
        grayscale = cam(input_tensor=input_tensor, targets=targets, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
    return {"cam": np.asarray(grayscale)}
