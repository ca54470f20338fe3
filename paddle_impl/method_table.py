"""The port's table of CAM methods: each name, its class, and how a user builds and calls it.

``paddle-gradcam`` reads its ``--method`` choices and its calls from here, and
the parity harness's registry (``parity.registry``) builds its entries on this
table, adding only what it measures (tolerances, timings), so a method's name
and call are written once.

A method's *recipe* is the constructor and call upstream's documentation gives
for its class; ``standard`` is every ``BaseCAM`` method, the others are named
after the classes that differ:

* ``fullgrad``: ``FullGrad`` takes every bias layer itself and warns when it
  is given target layers, so it is built with none;
* ``finer`` / ``refine`` / ``sess``: meta-methods around base CAMs, called as
  ``cam(input_tensor, targets, eigen_smooth)``: upstream's call has no
  ``aug_smooth`` for them;
* ``dff``: ``DeepFeatureFactorization(model, target_layer,
  computation_on_concepts=<classifier head>)``, called with a number of
  components (:data:`DFF_COMPONENTS`); it returns concepts, per-concept maps
  and the concepts' classifier scores.

The functions here take the CAM class and the classifier head as arguments
where those depend on the framework, so the harness calls upstream's classes
through exactly the same recipe.  Methods that draw random numbers get numpy's
global generator seeded with :data:`RANDOM_SEED` right before each call.
"""
from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

__all__ = [
    "Method", "METHODS", "ALL_SMOOTHS", "PLAIN_SMOOTHS", "RECIPES", "RANDOM_SEED", "DFF_COMPONENTS",
    "method_class", "construct_cam", "build_cam", "call_cam", "released", "picture_cam", "factorization_colors",
    "classifier_head",
]

ALL_SMOOTHS: Tuple[str, ...] = ("no_smooth", "aug_smooth", "eigen_smooth", "aug_eigen_smooth")
PLAIN_SMOOTHS: Tuple[str, ...] = ("no_smooth", "eigen_smooth")
RECIPES: Tuple[str, ...] = ("standard", "fullgrad", "finer", "refine", "sess", "dff")
RANDOM_SEED = 0
DFF_COMPONENTS = 5


@dataclass(frozen=True)
class Method:
    """One CAM method of grad-cam 1.5.7 as the port provides it.

    ``class_name`` is the same in the port and in upstream.  ``smooths`` are
    the smoothing modes upstream's call accepts for it.  The three booleans
    describe the algorithm: whether it reads gradients, whether it weights
    channels, and whether it reruns the network once per channel (ScoreCAM,
    AblationCAM: the slow ones).
    """

    name: str
    class_name: str
    uses_gradients: bool
    has_channel_weights: bool
    reruns_network_per_channel: bool
    recipe: str = "standard"
    smooths: Tuple[str, ...] = ALL_SMOOTHS
    draws_random: bool = False

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ValueError(f"{self.name}: recipe must be one of {RECIPES}, not {self.recipe!r}")

    @property
    def has_aug_smooth(self) -> bool:
        return "aug_smooth" in self.smooths

    @property
    def has_eigen_smooth(self) -> bool:
        return "eigen_smooth" in self.smooths


METHODS: Dict[str, Method] = {
    method.name: method
    for method in [
        Method("gradcam", "GradCAM", True, True, False),
        Method("gradcam++", "GradCAMPlusPlus", True, True, False),
        Method("xgradcam", "XGradCAM", True, True, False),
        Method("ablationcam", "AblationCAM", False, True, True),
        Method("scorecam", "ScoreCAM", False, True, True),
        Method("eigencam", "EigenCAM", False, False, False),
        Method("eigengradcam", "EigenGradCAM", True, False, False),
        Method("layercam", "LayerCAM", True, False, False),
        Method("hirescam", "HiResCAM", True, False, False),
        Method("gradcamelementwise", "GradCAMElementWise", True, False, False),
        Method("fullgrad", "FullGrad", True, False, False, recipe="fullgrad"),
        Method("shapleycam", "ShapleyCAM", True, True, False),
        Method("fem", "FEM", False, False, False),
        Method("kpca_cam", "KPCA_CAM", False, False, False),
        Method("randomcam", "RandomCAM", True, True, False, draws_random=True),
        Method("finercam", "FinerCAM", True, True, False, recipe="finer", smooths=PLAIN_SMOOTHS),
        Method("segeigencam", "SegEigenCAM", True, False, False),
        Method("refinecam", "RefineCAM", True, True, False, recipe="refine", smooths=PLAIN_SMOOTHS),
        Method("sess", "SESS", True, True, False, recipe="sess", smooths=PLAIN_SMOOTHS),
        Method("dff", "DeepFeatureFactorization", False, False, False, recipe="dff", smooths=("no_smooth",)),
    ]
}


def method_class(method: Method):
    """The port's class for ``method`` (imported on first use, like ``paddle_impl.<ClassName>``)."""
    return getattr(importlib.import_module("paddle_impl"), method.class_name)


def classifier_head(model: Any):
    """The Paddle model's last ``Linear`` layer, the scorer DeepFeatureFactorization gives its concepts to.

    DFF hands the concepts over as float32; a float64 model's head gets them
    cast to its own dtype first, as a user of a float64 model has to write it.
    """
    import paddle

    linear = [layer for layer in model.sublayers(include_self=True) if isinstance(layer, paddle.nn.Linear)]
    if not linear:
        raise ValueError("the model has no Linear layer to score DFF's concepts with")
    head = linear[-1]
    dtype = head.weight.dtype
    return head if dtype == paddle.float32 else (lambda concepts: head(concepts.astype(dtype)))


def construct_cam(method: Method, cls: Callable, model: Any, target_layers: List[Any],
                  reshape_transform: Optional[Callable] = None, head: Optional[Callable] = None,
                  extra: Optional[Dict[str, Any]] = None):
    """``cls`` built as the method's recipe says; ``head`` scores DFF's concepts, ``extra`` adds constructor
    arguments (e.g. ``ablation_layer=AblationLayerVit()`` for AblationCAM on a transformer)."""
    extra = dict(extra or {})
    if method.recipe == "fullgrad":
        return cls(model=model, target_layers=[], reshape_transform=reshape_transform, **extra)
    if method.recipe == "dff":
        return cls(model=model, target_layer=target_layers[-1], reshape_transform=reshape_transform,
                   computation_on_concepts=head, **extra)
    return cls(model=model, target_layers=target_layers, reshape_transform=reshape_transform, **extra)


def build_cam(method: Method, model: Any, target_layers: List[Any], reshape_transform: Optional[Callable] = None,
              extra: Optional[Dict[str, Any]] = None):
    """The port's CAM object for ``method`` on a Paddle ``model``, built as a user of the library builds it."""
    head = classifier_head(model) if method.recipe == "dff" else None
    return construct_cam(method, method_class(method), model, target_layers, reshape_transform, head, extra)


def _release(cam: Any) -> None:
    for base in getattr(cam, "base_cam_per_layer", None) or []:
        _release(base)
    if getattr(cam, "base_cam", None) is not None:
        _release(cam.base_cam)
    if getattr(cam, "activations_and_grads", None) is not None:
        cam.activations_and_grads.release()


@contextlib.contextmanager
def released(cam: Any) -> Iterator[Any]:
    """Use ``cam``, then remove its hooks.

    RefineCAM and DeepFeatureFactorization are not context managers in
    upstream, so the hooks are removed wherever they were registered: on the
    CAM itself or on its base CAMs.
    """
    try:
        yield cam
    finally:
        _release(cam)


def call_cam(method: Method, cam: Any, input_tensor: Any, targets: Optional[List[Any]], aug_smooth: bool,
             eigen_smooth: bool) -> Dict[str, np.ndarray]:
    """Call ``cam`` as the recipe says; returns ``cam`` (the maps) and, for DFF, its concepts and their scores."""
    if method.draws_random:
        np.random.seed(RANDOM_SEED)
    if method.recipe == "dff":
        concepts, explanations, scores = cam(input_tensor, DFF_COMPONENTS)
        return {"concepts": np.asarray(concepts), "concept_scores": np.asarray(scores),
                "cam": np.stack([np.asarray(e) for e in explanations])}
    if method.recipe in ("finer", "refine", "sess"):
        if aug_smooth:
            raise ValueError(f"{method.name} has no aug_smooth in upstream's API")
        grayscale = cam(input_tensor, targets, eigen_smooth)
    else:
        grayscale = cam(input_tensor=input_tensor, targets=targets, aug_smooth=aug_smooth, eigen_smooth=eigen_smooth)
    return {"cam": np.asarray(grayscale)}


def picture_cam(cam: np.ndarray) -> np.ndarray:
    """The (1, H, W) map a picture shows: the batch's first image (for DFF: each pixel's strongest concept)."""
    first = np.asarray(cam)[0]
    return (first.max(axis=0) if first.ndim == 3 else first)[None]


def factorization_colors(components: int) -> List[np.ndarray]:
    """The colour of each DFF concept in an overlay: gist_rainbow at i / k, upstream's default.

    Given explicitly because upstream's default reaches for
    ``plt.cm.get_cmap``, which matplotlib 3.11 removed.
    """
    import matplotlib

    cmap = matplotlib.colormaps["gist_rainbow"]
    return [np.array(cmap(i)) for i in np.arange(0, 1, 1.0 / components)]
