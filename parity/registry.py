"""The one registry of CAM methods and smoothing modes.

Everything that enumerates methods reads this file: ``cam.py``'s choices, the
parity matrix and its pytest ids (``gradcam-aug_smooth``), the report rows and
the benchmarks.  Adding a method is one ``MethodSpec`` here plus its port.

Tolerances are properties of a method measured on this machine (see
``tolerance_note``): float64 runs show the algorithm agrees to the last bits;
the float32 bound covers the float32 rounding of two different conv
libraries (oneDNN in torch, Paddle's own kernels), with the measured worst
case written next to it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Dict, List, Tuple

__all__ = ["Profile", "PROFILES", "STAGES", "MethodSpec", "SmoothMode", "METHODS", "SMOOTH_MODES", "Case", "all_cases", "method", "smooth_mode"]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    paddle_class_name: str
    torch_class_name: str
    uses_gradients: bool
    has_channel_weights: bool
    reruns_network_per_channel: bool
    cam_atol_float32: float
    cam_atol_float64: float
    tolerance_note: str
    # Seconds one augmentation variant takes on each side (full profile, both.png,
    # 2 threads, this 2-core machine; the medians in reports/bench.md).  Only their proportions
    # matter: the runner uses them to decide how many workers to run at once.
    torch_seconds: float = 1.0
    paddle_seconds: float = 1.0

    def paddle_class(self):
        return getattr(importlib.import_module("paddle_impl"), self.paddle_class_name)

    def torch_class(self):
        return getattr(importlib.import_module("pytorch_grad_cam"), self.torch_class_name)


@dataclass(frozen=True)
class SmoothMode:
    name: str
    aug_smooth: bool
    eigen_smooth: bool


# Final-CAM tolerances, from measurement (python -m parity, both.png, seeded weights):
#
#   float64: every method's CAM agrees to <= 1.8e-7, one or two float32 ulps:
#   upstream's pipeline itself ends in float32 (scale_cam_image, the SVD
#   projection, ScoreCAM's torch.Tensor(scores), AblationCAM's np.float32), and
#   before those casts the stages agree to ~1e-12 relative.  Bound: 1e-6.
#
#   float32: torch (oneDNN) and Paddle round their convolutions differently,
#   ~1e-6 relative in the logits.  Max |Δ| of the final CAM, quick profile:
#   gradcam 3.6e-6, gradcam++ 1.1e-6, xgradcam 3.3e-6, eigencam 9.5e-7,
#   eigengradcam 7.8e-7, layercam 1.6e-6, scorecam 1.9e-6, ablationcam 4.2e-5.
#   Bound: 1e-4, >25x over the worst of these; a real error in a method moves
#   the CAM by 1e-3 or more (GradCAM++ with eps 1e-3 instead of 1e-6: 5.5e-3).
#
#   AblationCAM's float32 bound is 5e-4.  Its weights are (y - y_k) / y, the
#   difference of two close float32 scores (y = 42.6 on both.png at full size,
#   one ulp 3.8e-6) divided by the score, so each weight carries ~1e-5
#   relative noise that the other methods do not have; the 2048-channel sum
#   turns it into raw-CAM differences of 0.037 on a 20.6..66.6 range.  The full
#   profile measured CAM max |Δ| 1.35e-4 (no_smooth; every earlier stage
#   within its bound: logits 1% of theirs, weights 2%), 6.2e-5 with aug_smooth,
#   and 4.2e-5 on the quick profile; float64 agrees to 1.8e-7, so it is
#   float32 noise, not the algorithm.
_F32_NOTE = (
    "float32: oneDNN (torch) and Paddle round convolutions differently (~1e-6 relative in the logits); "
    "measured CAM max|Δ| <= 3.6e-6 (quick profile); float64: <= 1.8e-7"
)

_ABLATION_NOTE = (
    "float32: weights (y - y_k) / y difference two close float32 scores; measured CAM max|Δ| 1.35e-4 "
    "(full profile, no_smooth), earlier stages within their bounds; float64: <= 1.8e-7"
)

METHODS: Dict[str, MethodSpec] = {
    spec.name: spec
    for spec in [
        MethodSpec("gradcam", "GradCAM", "GradCAM", True, True, False, 1e-4, 1e-6, _F32_NOTE, 0.37, 0.22),
        MethodSpec("gradcam++", "GradCAMPlusPlus", "GradCAMPlusPlus", True, True, False, 1e-4, 1e-6, _F32_NOTE, 0.33, 0.22),
        MethodSpec("xgradcam", "XGradCAM", "XGradCAM", True, True, False, 1e-4, 1e-6, _F32_NOTE, 0.33, 0.23),
        MethodSpec("ablationcam", "AblationCAM", "AblationCAM", False, True, True, 5e-4, 1e-6, _ABLATION_NOTE, 202.0, 1.55),
        MethodSpec("scorecam", "ScoreCAM", "ScoreCAM", False, True, True, 1e-4, 1e-6, _F32_NOTE, 200.0, 133.0),
        MethodSpec("eigencam", "EigenCAM", "EigenCAM", False, False, False, 1e-4, 1e-6, _F32_NOTE, 0.28, 0.26),
        MethodSpec("eigengradcam", "EigenGradCAM", "EigenGradCAM", True, False, False, 1e-4, 1e-6, _F32_NOTE, 0.53, 0.26),
        MethodSpec("layercam", "LayerCAM", "LayerCAM", True, False, False, 1e-4, 1e-6, _F32_NOTE, 0.37, 0.27),
    ]
}

SMOOTH_MODES: Dict[str, SmoothMode] = {
    mode.name: mode
    for mode in [
        SmoothMode("no_smooth", False, False),
        SmoothMode("aug_smooth", True, False),
        SmoothMode("eigen_smooth", False, True),
        SmoothMode("aug_eigen_smooth", True, True),
    ]
}


@dataclass(frozen=True)
class Case:
    method: str
    smooth: str

    @property
    def id(self) -> str:
        return f"{self.method}-{self.smooth}"

    @property
    def spec(self) -> MethodSpec:
        return METHODS[self.method]

    @property
    def mode(self) -> SmoothMode:
        return SMOOTH_MODES[self.smooth]


def method(name: str) -> MethodSpec:
    return METHODS[name]


def smooth_mode(name: str) -> SmoothMode:
    return SMOOTH_MODES[name]


def all_cases(methods: List[str] = None, smooths: List[str] = None) -> List[Case]:
    methods = list(METHODS) if not methods else methods
    smooths = list(SMOOTH_MODES) if not smooths else smooths
    return [Case(m, s) for m in methods for s in smooths]


def smooth_name(aug_smooth: bool, eigen_smooth: bool) -> str:
    for mode in SMOOTH_MODES.values():
        if (mode.aug_smooth, mode.eigen_smooth) == (aug_smooth, eigen_smooth):
            return mode.name
    raise KeyError((aug_smooth, eigen_smooth))


# -- profiles -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    """How big a run is: the input size and target layer, per kind of method.

    ``image_size`` None keeps the image's own size.  The quick profile shrinks
    only the methods that rerun the network once per channel: at 64x64 and
    ``layer2`` (512 channels) ScoreCAM and AblationCAM finish in seconds, yet
    still run every line of their code (and AblationCAM's shortcut has to
    replay layer3 and layer4, not just the classifier head).
    """

    name: str
    light_image_size: int | None
    light_target_layer: str
    heavy_image_size: int | None
    heavy_target_layer: str
    # How much cheaper a heavy method's variant is than at full size and layer4
    # (pixels x channels); used only to weigh jobs against each other.
    heavy_cost_scale: float = 1.0

    def image_size(self, spec: MethodSpec) -> int | None:
        return self.heavy_image_size if spec.reruns_network_per_channel else self.light_image_size

    def target_layer(self, spec: MethodSpec) -> str:
        return self.heavy_target_layer if spec.reruns_network_per_channel else self.light_target_layer


PROFILES: Dict[str, Profile] = {
    "quick": Profile("quick", None, "layer4", 64, "layer2", (64 / 224) ** 2 * (512 / 2048)),
    "full": Profile("full", None, "layer4", None, "layer4"),
}

# Pipeline order of the recorded stages; the first one over its bound is reported.
STAGES: Tuple[str, ...] = (
    "input",
    "targets",
    "logits",
    "activations",
    "gradients",
    "weights",
    "raw_cam",
    "cam",
    "overlay",
)
