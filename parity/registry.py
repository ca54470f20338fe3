"""The one registry of CAM methods, smoothing modes, setups and profiles.

Everything in the harness that enumerates methods reads this file: the
parity matrix and its pytest ids (``gradcam-aug_smooth``), the report rows and
the benchmarks.  A method's name, class, recipe and smoothing modes are the
port's (``paddle_impl.method_table``, which ``cam.py`` reads too); adding one
is an entry there, its port, and one ``_measured`` line here with its bounds.
How the worker builds and calls it is its ``recipe`` (``parity.recipes``).
Models come from the model zoo (``parity.model_zoo``); a ``Setup`` says
which model, layers, input size, batch and target a case runs on, and a
``Profile`` says which setups each method gets.

Tolerances are properties of a method measured on this machine (see
``tolerance_note``): float64 runs show the algorithm agrees to the last bits;
the float32 bound covers the float32 rounding of two different conv
libraries (oneDNN in torch, Paddle's own kernels), with the measured worst
case written next to it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Optional, Tuple

# The port's method table names each method, its class, recipe and modes; this registry adds what the
# harness measures about it.
from paddle_impl.method_table import ALL_SMOOTHS, PLAIN_SMOOTHS
from paddle_impl.method_table import METHODS as PORT_METHODS

__all__ = [
    "MethodSpec", "METHODS", "SEED_METHODS", "SmoothMode", "SMOOTH_MODES", "Setup", "Profile", "PROFILES",
    "STAGES", "Case", "all_cases", "method", "smooth_mode", "smooth_name", "resolve_methods",
]


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
    # matter: the runner uses them to order and group jobs, never to change a number.
    torch_seconds: float = 1.0
    paddle_seconds: float = 1.0
    # How a worker builds and calls the method (parity.recipes): "standard" is upstream's
    # ``Method(model=..., target_layers=...)`` and ``cam(input_tensor=..., targets=...,
    # aug_smooth=..., eigen_smooth=...)``; the others are named after the classes that differ.
    recipe: str = "standard"
    smooths: Tuple[str, ...] = ALL_SMOOTHS
    # Draws random numbers (numpy's global generator): both sides are seeded identically
    # right before each call, so both consume the same draws.
    draws_random: bool = False
    # One of the eight methods of the original reproduction (the seed matrix of `make parity`).
    seed_matrix: bool = False
    # float32 bounds of intermediate stages (parity.compare) that differ from the defaults for
    # this method, as (stage, rtol) pairs; the note says what was measured.
    stage_rtol_float32: Tuple[Tuple[str, float], ...] = ()

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
#
#   The methods beyond the seed matrix were measured by their unit tests
#   (tests/test_methods_gradient_family.py, test_finer_cam.py, test_meta_methods.py,
#   test_dff.py: seeded ResNet50, both.png at 64x64, layer3) and by the
#   all-methods profile; their notes give the numbers.
_F32_NOTE = (
    "float32: oneDNN (torch) and Paddle round convolutions differently (~1e-6 relative in the logits); "
    "measured CAM max|Δ| <= 3.6e-6 (quick profile); float64: <= 1.8e-7"
)

_ABLATION_NOTE = (
    "float32: weights (y - y_k) / y difference two close float32 scores; measured CAM max|Δ| 1.35e-4 "
    "(full profile, no_smooth); raw_cam = Σ_k w_k A_k sums that noise over every channel: measured "
    "1.04e-3 of max|raw_cam| (upstream-suite, vgg11, batch 2 at 32x32: a 1x1 map over 512 channels) and "
    "0.85e-3 (full profile, aug_smooth), so its bound is 2e-3; float64: <= 1.8e-7, the vgg11 case identical"
)

_XGRAD_NOTE = (
    "float32: the channel weights divide by the channel's activation sum, near zero where the target layer's "
    "output is not rectified (densenet121's dense block, mobilenet_v3_large's hardswish block): measured CAM max|Δ| "
    "1.27e-4 (mobilenet_v3_large) and 1.06e-4 (densenet121) in the zoo on torchvision's plain init; on the zoo's "
    "seeded weights 6.5e-5 (mobilenet_v3_large, class 111), 6.0e-5 (densenet121), 3.6e-5 (mobilenet_v2), "
    "<= 2.7e-6 on the ResNets and VGGs; float64: 2.4e-7"
)

_NEW_NOTE = (
    "unit tests (64x64, layer3): float32 CAM max|Δ| <= 2.0e-6, float64 identical to upstream "
    "(the all-methods report has the profile's own measurement)"
)

# Gradients far below the target layer.  A ReLU whose input is within one float32 ulp of 0 is
# cut on one side and passes on the other (measured: layer3's output has 62890 zeros in torch,
# 62892 in Paddle, on both.png at 224x224), so the two backward passes route a few gradients
# differently; below that layer the gradients differ by up to 3.7e-3 of their largest value at
# layer2's output and 1.0e-2 at the input, while float64 agrees to 1e-10.  A CAM that reads
# gradients at layer4 never sees it; FullGrad (the input gradient and every bias layer) and
# RefineCAM (layer2) do.
_FULLGRAD_NOTE = (
    "float32: the input gradient crosses every ReLU, and a few pre-activations within one ulp of 0 flip between "
    "the frameworks (see the comment above); measured on the quick/all-methods setup (224x224): CAM max|Δ| 4.0e-3 "
    "no_smooth, 1.1e-3 eigen_smooth, raw map 4.0e-3 of its max; float64: 2.3e-10 (the algorithm agrees)"
)

_REFINE_NOTE = (
    "float32: its first base CAM reads layer2's gradients, where ReLU flips at one-ulp pre-activations leave "
    "3.7e-3 of the largest gradient (see the comment above); CAM max|Δ| 5.7e-6; float64: 8.9e-8"
)

_FINER_NOTE = (
    "unit tests: float32 CAM max|Δ| 3.1e-5 (the weighted difference of close logits, like AblationCAM's "
    "ratio, amplifies float32 noise), float64 identical to upstream"
)

_RANDOM_NOTE = (
    "both sides draw from numpy's global generator seeded identically before each call, so they use the same "
    "weights; float32 CAM max|Δ| <= 5.1e-7, float64 identical"
)

def _measured(name: str, cam_atol_float32: float, cam_atol_float64: float, tolerance_note: str, torch_seconds: float,
              paddle_seconds: float, **measured) -> MethodSpec:
    """The harness's entry for the port's method ``name``: its class, recipe and modes from the port's
    table (``paddle_impl.method_table``), with what was measured here (bounds, timings, stage bounds)."""
    port = PORT_METHODS[name]
    return MethodSpec(name, port.class_name, port.class_name, port.uses_gradients, port.has_channel_weights,
                      port.reruns_network_per_channel, cam_atol_float32, cam_atol_float64, tolerance_note,
                      torch_seconds, paddle_seconds, recipe=port.recipe, smooths=port.smooths,
                      draws_random=port.draws_random, **measured)


METHODS: Dict[str, MethodSpec] = {
    spec.name: spec
    for spec in [
        _measured("gradcam", 1e-4, 1e-6, _F32_NOTE, 0.37, 0.22, seed_matrix=True),
        _measured("gradcam++", 1e-4, 1e-6, _F32_NOTE, 0.33, 0.22, seed_matrix=True),
        _measured("xgradcam", 5e-4, 1e-6, _XGRAD_NOTE, 0.33, 0.23, seed_matrix=True),
        _measured("ablationcam", 5e-4, 1e-6, _ABLATION_NOTE, 202.0, 1.55, seed_matrix=True, stage_rtol_float32=(("raw_cam", 2e-3),)),
        _measured("scorecam", 1e-4, 1e-6, _F32_NOTE, 200.0, 133.0, seed_matrix=True),
        _measured("eigencam", 1e-4, 1e-6, _F32_NOTE, 0.28, 0.26, seed_matrix=True),
        _measured("eigengradcam", 1e-4, 1e-6, _F32_NOTE, 0.53, 0.26, seed_matrix=True),
        _measured("layercam", 1e-4, 1e-6, _F32_NOTE, 0.37, 0.27, seed_matrix=True),
        # -- the rest of grad-cam 1.5.7's exported CAM classes --------------------------------------
        _measured("hirescam", 1e-4, 1e-6, _NEW_NOTE, 0.37, 0.22),
        _measured("gradcamelementwise", 1e-4, 1e-6, _NEW_NOTE, 0.37, 0.22),
        _measured("fullgrad", 2e-2, 1e-6, _FULLGRAD_NOTE, 1.2, 1.0, stage_rtol_float32=(("raw_cam", 2e-2),)),
        _measured("shapleycam", 1e-4, 1e-6, _NEW_NOTE, 1.0, 1.0),
        _measured("fem", 1e-4, 1e-6, _NEW_NOTE, 0.28, 0.26),
        _measured("kpca_cam", 1e-4, 1e-6, _NEW_NOTE, 0.4, 0.4),
        _measured("randomcam", 1e-4, 1e-6, _RANDOM_NOTE, 0.37, 0.22),
        _measured("finercam", 1e-4, 1e-6, _FINER_NOTE, 0.37, 0.22),
        _measured("segeigencam", 1e-4, 1e-6, _NEW_NOTE, 0.37, 0.22),
        _measured("refinecam", 1e-4, 1e-6, _REFINE_NOTE, 1.0, 0.7, stage_rtol_float32=(("gradients", 2e-2),)),
        _measured("sess", 1e-4, 1e-6, _NEW_NOTE, 40.0, 30.0),
        _measured("dff", 1e-4, 1e-6, _NEW_NOTE, 0.5, 0.5),
    ]
}
if list(METHODS) != list(PORT_METHODS):
    raise RuntimeError("parity.registry.METHODS must list the port's methods (paddle_impl.method_table), in its order")

SEED_METHODS: Tuple[str, ...] = tuple(name for name, spec in METHODS.items() if spec.seed_matrix)

SMOOTH_MODES: Dict[str, SmoothMode] = {
    mode.name: mode
    for mode in [
        SmoothMode("no_smooth", False, False),
        SmoothMode("aug_smooth", True, False),
        SmoothMode("eigen_smooth", False, True),
        SmoothMode("aug_eigen_smooth", True, True),
    ]
}


def resolve_methods(names: List[str]) -> List[str]:
    """``all`` -> every registry method, ``seed`` -> the eight of the seed matrix; registry order."""
    chosen = []
    for name in names:
        chosen += list(METHODS) if name == "all" else list(SEED_METHODS) if name == "seed" else [name]
    return list(dict.fromkeys(chosen))


# -- setups ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setup:
    """What a case runs on: a model of the zoo, target layers on each side, input size, batch, target.

    ``torch_layers`` / ``paddle_layers`` are comma-separated layer-path
    expressions (``paddle_impl.layer_paths``); empty means the architecture's
    default pair (``ArchSpec.parity_target_layers``).  ``size`` is (width,
    height), None for the image's own size.  A batch of B repeats the image B
    times, as upstream's own tests do.  ``name`` is empty for the one setup of
    the seed profiles (case ids ``gradcam-aug_smooth``), else a short label that
    prefixes the case id (``resnet18/gradcam-no_smooth``) and names the
    setup's directories.  ``cost_scale`` only weighs jobs against each other.
    """

    name: str = ""
    model: str = "resnet50"
    torch_layers: str = ""
    paddle_layers: str = ""
    size: Optional[Tuple[int, int]] = None
    batch: int = 1
    target_category: Optional[int] = None
    cost_scale: float = 1.0

    def layers(self) -> Tuple[str, str]:
        """(torch, paddle) layer expressions, the architecture's default pair where empty."""
        if self.torch_layers and self.paddle_layers:
            return self.torch_layers, self.paddle_layers
        from parity.model_zoo import arch

        default_torch, default_paddle = arch(self.model).parity_target_layers
        return self.torch_layers or default_torch, self.paddle_layers or self.torch_layers or default_paddle

    def describe(self) -> Dict:
        torch_layers, paddle_layers = self.layers()
        described = {"setup": self.name, "model": self.model,
                     "target_layers": {"torch": torch_layers, "paddle": paddle_layers},
                     "batch": self.batch, "size": None if self.size is None else list(self.size),
                     "target_category": self.target_category}
        # Part of the upstream cache key too: a changed reshape transform must not reuse old torch results.
        described.update(_reshape_declaration(self.model))
        return described


# The modules whose code a reshape transform declared "auto" runs (parity.hubs.resolve_reshape).
_AUTO_RESHAPE_MODULES = ("parity.hubs.reshape", "parity.torch_reshape_transforms", "paddle_impl.utils.reshape_transforms")


def _reshape_declaration(model: str) -> Dict:
    """{} for a model without reshape transforms, else what its zoo entry declares on each side and a digest of
    the code that runs them (the sources of the modules named), so that results made with other code do not match."""
    import hashlib
    import importlib.util

    from paddle_impl.errors import UserError
    from parity.model_zoo import arch

    try:
        spec = arch(model)
    except UserError:
        # compare_models' own model pair: not in the zoo, its transforms are passed in by the caller.
        return {}
    declared = {"torch": spec.torch_reshape, "paddle": spec.paddle_reshape}
    if not any(declared.values()):
        return {}
    modules = sorted({name for text in declared.values() if text
                      for name in (_AUTO_RESHAPE_MODULES if text == "auto" else (text.partition(":")[0],))})
    digest = hashlib.sha256()
    for name in modules:
        found = importlib.util.find_spec(name)
        if found is not None and found.origin:
            with open(found.origin, "rb") as source:
                digest.update(name.encode() + b"\0" + source.read())
    return {"reshape_transform": dict(declared, code=digest.hexdigest()[:16])}


def _pixels_scale(size: Optional[Tuple[int, int]]) -> float:
    return 1.0 if size is None else (size[0] * size[1]) / (224 * 224)


@dataclass(frozen=True)
class Profile:
    """How big a run is and what it covers: the methods and modes it selects, and each method's setups."""

    name: str
    description: str
    methods: Tuple[str, ...]
    smooths: Tuple[str, ...]
    setups_of: Callable[[MethodSpec], List[Setup]] = field(compare=False)

    def setups(self, spec: MethodSpec) -> List[Setup]:
        return self.setups_of(spec)


def _seed_profile(light: Setup, heavy: Setup) -> Callable[[MethodSpec], List[Setup]]:
    def setups(spec: MethodSpec) -> List[Setup]:
        if spec.recipe == "refine":
            # RefineCAM multiplies the maps of several layers: give it three of ResNet50's stages.
            base = heavy if spec.reruns_network_per_channel else light
            return [replace(base, torch_layers="layer2,layer3,layer4", paddle_layers="layer2,layer3,layer4")]
        if spec.recipe == "sess":
            # SESS runs its base method on every patch of twelve rescaled copies: a small image keeps it minutes.
            return [replace(light, size=(96, 96), cost_scale=_pixels_scale((96, 96)))]
        return [heavy if spec.reruns_network_per_channel else light]

    return setups


_QUICK_LIGHT = Setup(torch_layers="layer4", paddle_layers="layer4")
# ScoreCAM and AblationCAM rerun the network once per channel: at 64x64 and layer2 (512
# channels) they finish in seconds, yet still run every line of their code (and AblationCAM's
# shortcut has to replay layer3 and layer4, not just the classifier head).
_QUICK_HEAVY = Setup(torch_layers="layer2", paddle_layers="layer2", size=(64, 64), cost_scale=(64 / 224) ** 2 * (512 / 2048))
_FULL = Setup(torch_layers="layer4", paddle_layers="layer4")
# The fast test tier: every line of every seed method in every mode, at a size that keeps `make test` fast.
_TINY_LIGHT = Setup(torch_layers="layer4", paddle_layers="layer4", size=(112, 112), cost_scale=_pixels_scale((112, 112)))
_TINY_HEAVY = Setup(torch_layers="layer2", paddle_layers="layer2", size=(32, 32), cost_scale=(32 / 224) ** 2 * (512 / 2048))


# The zoo explains the argmax class, except where the seeded weights leave its maps flat.  mobilenet_v3_large's
# seeded classifier biases (std 0.1) outweigh its input-dependent logits (Linear weights of std 0.01), so the
# argmax (class 222) has no evidence in the image: its GradCAM, GradCAM++ and XGradCAM at features[-1] and its
# AblationCAM at 64x64 are all zeros on both sides (measured).  Of the classes 0, 37, 74, ..., 999 sampled, 11
# give the five gradient methods a map that is not flat at features[-1] (37, 111, 185, 296, ...); class 111 is
# one, and its ScoreCAM and AblationCAM at 64x64 are not flat either.
_ZOO_TARGETS = {"mobilenet_v3_large": 111}


def _zoo_setups(spec: MethodSpec) -> List[Setup]:
    from parity.model_zoo import arch_names

    size = (64, 64) if spec.reruns_network_per_channel else None
    return [Setup(name=model, model=model, size=size, target_category=_ZOO_TARGETS.get(model),
                  cost_scale=_pixels_scale(size)) for model in arch_names()]


def _hub_setups(spec: MethodSpec) -> List[Setup]:
    """Every timm <-> PaddleClas pair at its own input size; ScoreCAM/AblationCAM on the pairs that allow them."""
    from parity.model_zoo import HUB_PAIRS

    setups = []
    for name, pair in HUB_PAIRS.items():
        if spec.reruns_network_per_channel and not pair.heavy_methods:
            continue  # one ScoreCAM pass reruns the network per channel: small CNNs only
        if spec.name in dict(pair.skip_methods):
            continue
        size = pair.heavy_size if spec.reruns_network_per_channel else pair.input_size
        setups.append(Setup(name=name, model=name, size=size, cost_scale=_pixels_scale(size)))
    return setups


# Upstream's own tests/test_run_all_models.py: resnet18 with two target layers and vgg11, batch 2 at
# 32x32 and batch 1 at 32x40, the argmax and category 100, eigen_smooth on and off.
_UPSTREAM_MODELS = (("resnet18", "layer4[-1],layer4[-2]"), ("vgg11", "features[-1]"))
_UPSTREAM_INPUTS = ((2, (32, 32)), (1, (32, 40)))
_UPSTREAM_TARGETS = (None, 100)

# The same matrix where its maps have something to compare.  At 32x32 both models' target layers are 1x1, so
# every map is flat whatever the weights.  Measured on the seeded weights (resnet18_s2 / vgg11_s2, both.png),
# sizes 32, 64, ..., 224 with upstream's 4:5 aspect kept beside the square: up to 192x192 vgg11's XGradCAM of
# category 100 is all zeros (its weighted activations are negative everywhere; also GradCAM's on resnet18 at
# 64x64); 224x224 and 224x280 leave no map flat.
_INFORMATIVE_INPUTS = ((2, (224, 224)), (1, (224, 280)))
# ScoreCAM and AblationCAM rerun the whole network once per channel (1,024 passes of vgg11 per image at batch 2):
# at 224x224 one case takes ~8 min a side on one core, so they run the matrix at a smaller size that still
# leaves no map flat (measured as above).
_INFORMATIVE_HEAVY_INPUTS = ((2, (64, 64)), (1, (64, 80)))


def _upstream_matrix(inputs) -> List[Setup]:
    setups = []
    for model, layers in _UPSTREAM_MODELS:
        for batch, size in inputs:
            for target in _UPSTREAM_TARGETS:
                name = f"{model}-b{batch}-{size[0]}x{size[1]}" + ("" if target is None else f"-t{target}")
                setups.append(Setup(name=name, model=model, torch_layers=layers, paddle_layers=layers, size=size,
                                    batch=batch, target_category=target, cost_scale=batch * _pixels_scale(size) / 4))
    return setups


def _upstream_suite_setups(spec: MethodSpec) -> List[Setup]:
    return _upstream_matrix(_UPSTREAM_INPUTS)


def _upstream_suite_informative_setups(spec: MethodSpec) -> List[Setup]:
    return _upstream_matrix(_INFORMATIVE_HEAVY_INPUTS if spec.reruns_network_per_channel else _INFORMATIVE_INPUTS)


PROFILES: Dict[str, Profile] = {
    profile.name: profile
    for profile in [
        Profile("quick", "the 8 seed methods x 4 modes on ResNet50; ScoreCAM/AblationCAM on a 64x64 input at layer2 (minutes)",
                SEED_METHODS, ALL_SMOOTHS, _seed_profile(_QUICK_LIGHT, _QUICK_HEAVY)),
        Profile("full", "the 8 seed methods x 4 modes on ResNet50, every method on the image at its own size at layer4",
                SEED_METHODS, ALL_SMOOTHS, _seed_profile(_FULL, _FULL)),
        Profile("tiny", "the fast test tier's: the 8 seed methods x 4 modes on ResNet50 at 112x112 (layer4), "
                "ScoreCAM/AblationCAM at 32x32 (layer2)", SEED_METHODS, ALL_SMOOTHS, _seed_profile(_TINY_LIGHT, _TINY_HEAVY)),
        Profile("all-methods", "every other CAM class upstream exports, on ResNet50 as in the quick profile",
                tuple(name for name in METHODS if name not in SEED_METHODS), ALL_SMOOTHS,
                _seed_profile(_QUICK_LIGHT, _QUICK_HEAVY)),
        Profile("zoo", "every model of the zoo x the 8 seed methods, no smoothing, at each model's default target "
                "layer (ScoreCAM/AblationCAM at 64x64), the argmax class (mobilenet_v3_large: class 111)", SEED_METHODS, ("no_smooth",), _zoo_setups),
        Profile("upstream-suite", "upstream's tests/test_run_all_models.py matrix: resnet18 (two layers) and vgg11, "
                "batch 2 at 32x32 and 1 at 32x40, argmax and category 100, eigen_smooth on and off (1x1 target layers: most "
                "maps flat, shown as vacuous; upstream-suite-informative runs it where they are not)",
                SEED_METHODS, PLAIN_SMOOTHS, _upstream_suite_setups),
        Profile("upstream-suite-informative", "upstream-suite's matrix where its maps are not flat: the same models, "
                "layers, batches, targets and modes at 224x224 (batch 2) and 224x280 (batch 1); ScoreCAM/AblationCAM "
                "at 64x64 and 64x80", SEED_METHODS, PLAIN_SMOOTHS, _upstream_suite_informative_setups),
        Profile("hubs", "every timm <-> PaddleClas pair of the registry (parity.hubs: CNNs and transformers) x the 8 "
                "seed methods, no smoothing, at each pair's input size and default target layers; ScoreCAM/AblationCAM "
                "on the small CNN pairs only, at their smaller size", SEED_METHODS, ("no_smooth",), _hub_setups),
    ]
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
    "concepts",
    "concept_scores",
    "cam",
    "overlay",
)


@dataclass(frozen=True)
class Case:
    method: str
    smooth: str
    setup: Setup = Setup()

    @property
    def id(self) -> str:
        base = f"{self.method}-{self.smooth}"
        return f"{self.setup.name}/{base}" if self.setup.name else base

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


def all_cases(methods: Optional[List[str]] = None, smooths: Optional[List[str]] = None,
              profile: Optional[Profile] = None, transform: Callable[[Setup], Setup] = lambda s: s) -> List[Case]:
    """Every (setup, method, mode) case of a selection, in registry order; modes a method lacks are left out.

    ``transform`` lets the command line replace parts of every setup (``--model``, ``--size`` ...).
    """
    profile = profile or PROFILES["quick"]
    methods = list(profile.methods) if not methods else methods
    smooths = list(profile.smooths) if not smooths else smooths
    cases = []
    for name in methods:
        spec = METHODS[name]
        for setup in profile.setups(spec):
            setup = transform(setup)
            cases += [Case(name, s, setup) for s in smooths if s in spec.smooths]
    return cases


def smooth_name(aug_smooth: bool, eigen_smooth: bool) -> str:
    for mode in SMOOTH_MODES.values():
        if (mode.aug_smooth, mode.eigen_smooth) == (aug_smooth, eigen_smooth):
            return mode.name
    raise KeyError((aug_smooth, eigen_smooth))
