"""The model zoo: one declarative registry of the architectures both frameworks can build.

Each :class:`ArchSpec` says how to build the torchvision model and its
``paddle.vision.models`` counterpart, how a torchvision state dict becomes a
Paddle one (:mod:`parity.weight_transfer` does it), and upstream's
conventional target layer as an expression on each framework's model
(resolved by :mod:`paddle_impl.layer_paths`; the two models name their
sub-layers differently).

Transfer rules
--------------
``name``
    The Paddle model's parameter names are torchvision's after the batch-norm
    renames (``running_mean`` -> ``_mean``, ``running_var`` -> ``_variance``,
    ``num_batches_tracked`` dropped).
``execution_order``
    The names differ, so tensors are paired the way Paddle's PaDiff tool pairs
    layers: both models run once on a small input with a forward hook on every
    layer that owns parameters; the k-th such layer to run in torch is paired
    with the k-th in Paddle, and the pair must agree in kind (conv, batch norm,
    linear) and in every parameter's shape.  The pairing depends only on the
    architecture, so a wrong pairing shows up as a shape mismatch or, at the
    latest, in the forward verification that every transfer ends with.

Either way Linear weights are transposed (Paddle stores ``(in, out)``), found
by layer type, and every key and shape is checked.

Target layers
-------------
Upstream's README and example scripts name ``model.layer4[-1]`` for ResNets
and ``model.features[-1]`` for VGG and DenseNet; its tests use ResNet18's
``layer4[-1]`` and VGG11's ``features[-1]``.  For the MobileNets the same
``features[-1]`` convention picks the last conv block before the pooling.
SqueezeNet and ShuffleNet are not covered by upstream's docs or tests; we
apply upstream's stated rule ("usually the last convolutional layer"):
SqueezeNet's last Fire module, ``features[-1]`` (like VGG, its features end
right before the classifier), and ShuffleNet's last conv block, ``conv5``
(it has no ``features``).

Hub pairs
---------
Besides the torchvision <-> paddle.vision twins (``ARCHS``, the ``zoo``
profile), the zoo holds pairs of models from the two hubs, timm and
PaddleClas (``HUB_PAIRS``, the ``hubs`` profile; declared in
:mod:`parity.hubs`).  Each is a :class:`parity.hubs.HubPair`, the
:class:`ArchSpec` (:mod:`parity.arch_spec`) with builders that name a hub
(``timm:resnet50d``, ``paddleclas:ResNet50_vd``), the ``generic`` transfer
rule, the input size the pair runs at, a reshape transform per side, and
the :class:`Switch` es that make the Paddle model compute what the timm one
does.  The imports go one way: this module collects the hubs' entries,
:mod:`parity.hubs` never imports it.  :mod:`parity.hubs` says how to
declare a pair.
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping

from paddle_impl.errors import UserError
from parity.arch_spec import PADDLECLAS_PREFIX, TIMM_PREFIX, TRANSFER_RULES, ArchSpec, Switch
from parity.hubs import HubPair, hub_entries

__all__ = ["ArchSpec", "Switch", "HubPair", "SeededTwin", "ARCHS", "HUB_PAIRS", "DEFAULT_ARCH", "TRANSFER_RULES", "arch", "arch_names",
           "hub_pair_names", "pair_by_id", "unregistered_pair", "missing_builders"]

DEFAULT_ARCH = "resnet50"


class SeededTwin(ArchSpec):
    """A torchvision twin whose seeded weights also get noise on every tensor torchvision's init leaves constant.

    A fresh torchvision model has BatchNorm weight 1 / bias 0, running mean 0 /
    variance 1 and zero conv and Linear biases: nothing a trained network has,
    and at small inputs enough to leave a CAM flat (mobilenet_v3_large's
    ScoreCAM at 64x64 compared two all-zero maps).  The hub pairs' rule
    (:func:`parity.hubs.seeding.randomize_constant_tensors`) replaces each such
    tensor; the file name carries the rule's version, so that weights (and
    the upstream results cached for them) made by another rule are never
    reused.
    """

    @property
    def default_weights_name(self) -> str:
        """``resnet18_s2_seed0.pth``: the seeding rule's version, then the seed."""
        from parity.hubs.seeding import SEEDING_VERSION

        return f"{self.name}_s{SEEDING_VERSION}_seed0.pth"


def _resnet(name: str) -> ArchSpec:
    # ResNet50's seeded weights are those of the quick, full, tiny and all-methods profiles, whose committed numbers
    # and upstream caches were measured on them (none of their cases is vacuous): it keeps torchvision's plain init.
    kind = ArchSpec if name == DEFAULT_ARCH else SeededTwin
    return kind(name, "resnet", name, name, "name", "layer4[-1]", "layer4[-1]")


_DENSENET_TARGET_NOTE = (
    "torchvision's features[-1] is norm5, a BatchNorm2d whose ReLU is applied later in forward(); "
    "Paddle's batch_norm is a BatchNorm with act='relu' fused in, so it outputs relu(norm5). "
    "No layer of either model outputs the other's tensor, so the activations (and gradients) at this "
    "pair differ by that ReLU; the parity pair features.denseblock4 / db_conv_5 (the last dense block's "
    "concatenated output, just before it) is the same tensor on both sides"
)

_SQUEEZENET_DIFFERENCE = (
    "paddle.vision's squeezenet1_1 pads its first conv (3x3, stride 2) by 1 where torchvision pads by 0, "
    "its max-pools do not use ceil_mode, and its Dropout(p=0.5, mode='downscale_in_infer') halves the "
    "classifier's input at inference; with the same weights the first conv's output already has another "
    "shape, so no weight transfer can make the logits agree"
)

_ARCH_LIST: List[ArchSpec] = [
    _resnet("resnet18"),
    _resnet("resnet34"),
    _resnet("resnet50"),
    _resnet("resnet101"),
    _resnet("resnext50_32x4d"),
    _resnet("wide_resnet50_2"),
    SeededTwin("vgg11", "vgg", "vgg11", "vgg11", "name", "features[-1]", "features[-1]"),
    SeededTwin("vgg16", "vgg", "vgg16", "vgg16", "name", "features[-1]", "features[-1]"),
    SeededTwin("mobilenet_v2", "mobilenet", "mobilenet_v2", "mobilenet_v2", "name", "features[-1]", "features[-1]"),
    SeededTwin(
        "mobilenet_v3_large",
        "mobilenet",
        "mobilenet_v3_large",
        "mobilenet_v3_large",
        "execution_order",
        "features[-1]",
        "lastconv",
        target_note="torchvision keeps the last conv block as features[-1]; Paddle calls the same block lastconv",
    ),
    SeededTwin(
        "densenet121",
        "densenet",
        "densenet121",
        "densenet121",
        "execution_order",
        "features[-1]",
        "batch_norm",
        target_outputs_agree=False,
        target_note=_DENSENET_TARGET_NOTE,
        parity_torch_target_layer="features.denseblock4",
        parity_paddle_target_layer="db_conv_5",
    ),
    SeededTwin(
        "squeezenet1_1",
        "squeezenet",
        "squeezenet1_1",
        "squeezenet1_1",
        "execution_order",
        "features[-1]",
        "_conv8",
        target_note="the last Fire module: torchvision's features[-1], Paddle's _conv8",
        known_difference=_SQUEEZENET_DIFFERENCE,
        differs_at=("features.0", "_conv"),
    ),
    SeededTwin(
        "shufflenet_v2_x1_0",
        "shufflenet",
        "shufflenet_v2_x1_0",
        "shufflenet_v2_x1_0",
        "execution_order",
        "conv5",
        "_last_conv",
        target_note="the last conv block before the global pooling: torchvision's conv5, Paddle's _last_conv",
    ),
]

# The torchvision <-> paddle.vision twins: the zoo profile, --model, python -m parity.convert.
ARCHS: Mapping[str, ArchSpec] = {spec.name: spec for spec in _ARCH_LIST}


def _hub_pairs() -> Dict[str, ArchSpec]:
    pairs: Dict[str, ArchSpec] = {}
    for spec in hub_entries():
        if not isinstance(spec, HubPair):
            raise ValueError(f"hub entry {getattr(spec, 'name', spec)!r} is a {type(spec).__name__}, not a parity.hubs.HubPair")
        if spec.name in ARCHS or spec.name in pairs:
            raise ValueError(f"hub pair {spec.name!r} is declared twice (or clashes with a torchvision twin)")
        pairs[spec.name] = spec
    return pairs


# timm <-> PaddleClas pairs (parity.hubs): the hubs profile and --pair.
HUB_PAIRS: Mapping[str, ArchSpec] = _hub_pairs()


def arch_names() -> List[str]:
    """The torchvision twins, in registry order: ResNets, VGG, MobileNets, DenseNet, SqueezeNet, ShuffleNet."""
    return list(ARCHS)


def hub_pair_names() -> List[str]:
    """The timm <-> PaddleClas pairs, in declaration order (CNNs, then transformers)."""
    return list(HUB_PAIRS)


# A pair that is not in the registry is named timm-NAME__paddleclas-NAME (a file and directory name, so
# that a worker process can rebuild its spec from the setup's model name alone).
_UNREGISTERED = re.compile(r"^timm-(?P<timm>[A-Za-z0-9_.]+)__paddleclas-(?P<paddleclas>[A-Za-z0-9_.]+)$")
_PAIR_ID = re.compile(r"^timm/(?P<timm>[A-Za-z0-9_.]+):paddleclas/(?P<paddleclas>[A-Za-z0-9_.]+)$")
UNREGISTERED_FAMILY = "unregistered"


def unregistered_pair(timm_name: str, paddleclas_name: str) -> HubPair:
    """A timm <-> PaddleClas pair without a registry entry: the generic transfer, "auto" reshape, no switch.

    It has no default target layers (the caller names them on each side) and
    runs at 224x224, the light methods only; whether the two are the same
    network the transfer's forward check says.
    """
    return HubPair(
        name=f"timm-{timm_name}__paddleclas-{paddleclas_name}", family=UNREGISTERED_FAMILY,
        torch_builder=f"{TIMM_PREFIX}{timm_name}", paddle_builder=f"{PADDLECLAS_PREFIX}{paddleclas_name}",
        transfer="generic", torch_target_layer="", paddle_target_layer="", input_size=(224, 224),
        torch_reshape="auto", paddle_reshape="auto",
        note="not in the registry: no switches, target layers as given, reshape transforms recognised (auto)",
    )


def arch(name: str) -> ArchSpec:
    """The spec of ``name`` (a twin or a hub pair); an unknown name is a one-line :class:`UserError` listing the known ones."""
    if isinstance(name, str) and name not in ARCHS and name not in HUB_PAIRS:
        match = _UNREGISTERED.match(name)
        if match:
            return unregistered_pair(match.group("timm"), match.group("paddleclas"))
    try:
        return ARCHS[name] if name in ARCHS else HUB_PAIRS[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown architecture {name!r} (known: {', '.join([*ARCHS, *HUB_PAIRS])})") from None


def pair_by_id(pair_id: str) -> ArchSpec:
    """The pair ``timm/NAME:paddleclas/NAME`` names: its registry entry, else an unregistered pair of the two.

    A text of another form is a one-line :class:`UserError`.
    """
    text = pair_id.strip()
    for spec in HUB_PAIRS.values():
        if spec.pair_id == text or spec.name == text:
            return spec
    match = _PAIR_ID.match(text)
    if not match:
        raise UserError(f"invalid pair {pair_id!r}: expected timm/NAME:paddleclas/NAME, e.g. "
                        "timm/resnet50d:paddleclas/ResNet50_vd")
    return unregistered_pair(match.group("timm"), match.group("paddleclas"))


def missing_builders() -> Dict[str, str]:
    """Which builders are missing from the installed torchvision / paddle.vision (empty when all exist)."""
    import paddle
    import torchvision

    missing: Dict[str, str] = {}
    for spec in ARCHS.values():
        if not hasattr(torchvision.models, spec.torch_builder):
            missing[spec.name] = f"torchvision.models.{spec.torch_builder}"
        elif not hasattr(paddle.vision.models, spec.paddle_builder):
            missing[spec.name] = f"paddle.vision.models.{spec.paddle_builder}"
    return missing

