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
:mod:`parity.hubs`).  They are the same :class:`ArchSpec`: a builder with a
hub prefix (``timm:resnet50d``, ``paddleclas:ResNet50_vd``), the
``generic`` transfer rule, the input size the pair runs at, a reshape
transform per side, and the :class:`Switch` es that make the Paddle model
compute what the timm one does.  /work/notes/hub_schema.md (and
:mod:`parity.hubs`) says how to declare one.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from paddle_impl.errors import UserError

__all__ = ["ArchSpec", "Switch", "ARCHS", "HUB_PAIRS", "DEFAULT_ARCH", "TRANSFER_RULES", "arch", "arch_names",
           "hub_pair_names", "pair_by_id", "unregistered_pair", "missing_builders"]

# "generic": parity.transfer.transfer_weights (names where they correspond, else execution order
# and shapes), verified by a forward pass at the pair's own input size.
TRANSFER_RULES = ("name", "execution_order", "generic")
TIMM_PREFIX = "timm:"
PADDLECLAS_PREFIX = "paddleclas:"


@dataclass(frozen=True)
class Switch:
    """One documented setting that makes a hub's Paddle model compute what its timm twin computes.

    Either ``paddle_kwargs`` (arguments the PaddleClas builder is called
    with, e.g. ``padding_type="DYNAMIC"``) or ``apply(paddle_model)``, which
    changes the built model in place and returns how many layers it changed
    (0 means the switch found nothing to act on, which the harness refuses: a
    stale switch must not pass silently), or both.  ``reason``
    is the sentence the report prints: what differs, where, and why the
    switched model is the same function.  The harness verifies each pair's
    switches when it converts the weights: the forward check must fail
    without them and pass with them.
    """

    name: str
    reason: str
    apply: Optional[Callable[[Any], int]] = field(default=None, compare=False)
    paddle_kwargs: Tuple[Tuple[str, Any], ...] = ()
DEFAULT_ARCH = "resnet50"


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: its two builders, its weight-transfer rule and its default target layers.

    ``torch_target_layer`` / ``paddle_target_layer`` are upstream's
    conventional choice on each side.  Where the two do not compute the same
    tensor (``target_outputs_agree`` False, explained in ``target_note``),
    ``parity_torch_target_layer`` / ``parity_paddle_target_layer`` name the
    nearest pair that does, for stage-by-stage comparisons.

    ``known_difference`` is empty when paddle.vision builds the same function
    as torchvision; otherwise it says where and why they differ, and
    ``differs_at`` names the layer on each side (torch, paddle) that the
    first-divergence diagnosis is expected to report.
    """

    name: str
    family: str
    torch_builder: str
    paddle_builder: str
    transfer: str
    torch_target_layer: str
    paddle_target_layer: str
    paddle_kwargs: Tuple[Tuple[str, Any], ...] = ()
    target_outputs_agree: bool = True
    target_note: str = ""
    parity_torch_target_layer: str = ""
    parity_paddle_target_layer: str = ""
    known_difference: str = ""
    differs_at: Tuple[str, str] = ("", "")
    # -- hub pairs (parity.hubs); the torchvision twins leave these at their defaults --------
    # timm.create_model's keyword arguments (after the name and pretrained=False).
    torch_kwargs: Tuple[Tuple[str, Any], ...] = ()
    # (width, height) the hubs profile runs the light methods at; None: the image's own size.
    input_size: Optional[Tuple[int, int]] = None
    # Whether the hubs profile runs ScoreCAM/AblationCAM on the pair (small CNNs only: they rerun the
    # network once per channel), and at which (width, height).
    heavy_methods: bool = False
    heavy_size: Optional[Tuple[int, int]] = None
    # Methods the hubs profile does not run on this pair, each with the reason the report gives.
    skip_methods: Tuple[Tuple[str, str], ...] = ()
    # The forward check of the weight transfer runs at this (width, height); a model with a fixed
    # token grid (ViT, Swin) needs its own size.  None: the transfer's default (64x64).
    verify_size: Optional[Tuple[int, int]] = None
    # reshape_transform of each side: "" none; "module:function" a function of the activation; "auto"
    # recognised from the model's output layout (parity.hubs.resolve_reshape).
    torch_reshape: str = ""
    paddle_reshape: str = ""
    # Applied to every Paddle model built for this entry (weights, workers, diagnosis), in order.
    switches: Tuple[Switch, ...] = ()
    # Free text for the report: what the pair is, where its two sides come from, anything notable.
    note: str = ""

    def __post_init__(self) -> None:
        if self.transfer not in TRANSFER_RULES:
            raise ValueError(f"{self.name}: transfer must be one of {TRANSFER_RULES}, not {self.transfer!r}")
        if self.hub and self.transfer != "generic":
            raise ValueError(f"{self.name}: a hub pair's weights go through the generic transfer, not {self.transfer!r}")

    @property
    def hub(self) -> bool:
        """Whether either side comes from a hub (timm, PaddleClas) rather than torchvision / paddle.vision."""
        return self.torch_builder.startswith(TIMM_PREFIX) or self.paddle_builder.startswith(PADDLECLAS_PREFIX)

    @property
    def pair_id(self) -> str:
        """``timm/resnet50d:paddleclas/ResNet50_vd`` (what ``--pair`` takes); ``torchvision/x:paddle.vision/x`` for the twins."""
        def side(builder: str, hub_prefix: str, hub: str, default: str) -> str:
            if builder.startswith(hub_prefix):
                return f"{hub}/{builder[len(hub_prefix):].rsplit(':', 1)[-1]}"
            return f"{default}/{builder}"

        return (side(self.torch_builder, TIMM_PREFIX, "timm", "torchvision") + ":"
                + side(self.paddle_builder, PADDLECLAS_PREFIX, "paddleclas", "paddle.vision"))

    @property
    def parity_target_layers(self) -> Tuple[str, str]:
        """(torch, paddle) target-layer expressions whose outputs are the same tensor."""
        return (
            self.parity_torch_target_layer or self.torch_target_layer,
            self.parity_paddle_target_layer or self.paddle_target_layer,
        )

    @property
    def default_weights_name(self) -> str:
        """File name of the seeded default weights (``resnet50_seed0.pth`` for ResNet50).

        A hub pair's name also carries timm's version and the seeding rule's
        (``lcnet_100_timm1.0.31_s2_seed0.pth``): the file is written once and
        reused, and either one changes what the seed gives.
        """
        if self.torch_builder.startswith(TIMM_PREFIX):
            import timm

            from parity.hubs.seeding import SEEDING_VERSION

            return f"{self.name}_timm{timm.__version__}_s{SEEDING_VERSION}_seed0.pth"
        return f"{self.name}_seed0.pth"

    def new_torch_model(self):
        """A freshly initialised torch model (float32, train mode: as the builder returns it)."""
        if self.torch_builder.startswith(TIMM_PREFIX):
            try:
                import timm
            except ImportError:
                raise UserError(f"{self.name}: timm is not installed; install the 'hubs' extra "
                                "(pip install -r requirements.lock)") from None
            return timm.create_model(self.torch_builder[len(TIMM_PREFIX):], pretrained=False, **dict(self.torch_kwargs))
        import torchvision

        return getattr(torchvision.models, self.torch_builder)()

    def new_paddle_model(self, dtype: str = "float32", switches: Union[bool, Sequence[str]] = True):
        """A freshly initialised Paddle model whose parameters are created in ``dtype``, with the entry's switches applied.

        ``switches=False`` builds the model as its hub ships it, a sequence of
        switch names applies only those (to show that each switch is needed).
        """
        import paddle

        previous = paddle.get_default_dtype()
        paddle.set_default_dtype(dtype)
        try:
            if self.paddle_builder.startswith(PADDLECLAS_PREFIX):
                from parity.hubs.paddleclas_loader import paddleclas_model

                model = paddleclas_model(self.paddle_builder[len(PADDLECLAS_PREFIX):], **self.paddle_builder_kwargs(switches))
            else:
                model = getattr(paddle.vision.models, self.paddle_builder)(**self.paddle_builder_kwargs(switches))
        finally:
            paddle.set_default_dtype(previous)
        self.apply_switches(model, switches)
        return model

    def _chosen_switches(self, switches: Union[bool, Sequence[str]]) -> List[Switch]:
        if switches is True:
            return list(self.switches)
        if switches is False:
            return []
        unknown = set(switches) - {switch.name for switch in self.switches}
        if unknown:
            raise ValueError(f"{self.name} has no switch {sorted(unknown)}")
        return [switch for switch in self.switches if switch.name in switches]

    def paddle_builder_kwargs(self, switches: Union[bool, Sequence[str]] = True) -> Dict[str, Any]:
        """The Paddle builder's keyword arguments: the entry's own, then those of the chosen switches."""
        kwargs = dict(self.paddle_kwargs)
        for switch in self._chosen_switches(switches):
            kwargs.update(switch.paddle_kwargs)
        return kwargs

    def apply_switches(self, paddle_model, switches: Union[bool, Sequence[str]] = True) -> Dict[str, int]:
        """Apply the chosen switches' ``apply`` to ``paddle_model``; {switch: layers changed}.  One that changes nothing is refused."""
        changed: Dict[str, int] = {}
        for switch in self._chosen_switches(switches):
            if switch.apply is None:
                continue
            changed[switch.name] = int(switch.apply(paddle_model))
            if changed[switch.name] < 1:
                raise UserError(f"{self.name}: switch {switch.name!r} found nothing to change in the Paddle model "
                                f"({type(paddle_model).__name__}); the entry no longer fits the installed PaddleClas")
        return changed

    def torch_target(self, model, parity: bool = False):
        """The torch model's target layer (upstream's convention, or the parity pair's)."""
        from paddle_impl.layer_paths import resolve_layer

        return resolve_layer(model, self.parity_target_layers[0] if parity else self.torch_target_layer)

    def paddle_target(self, model, parity: bool = False):
        """The Paddle model's target layer (upstream's convention, or the parity pair's)."""
        from paddle_impl.layer_paths import resolve_layer

        return resolve_layer(model, self.parity_target_layers[1] if parity else self.paddle_target_layer)


def _resnet(name: str) -> ArchSpec:
    return ArchSpec(name, "resnet", name, name, "name", "layer4[-1]", "layer4[-1]")


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
    ArchSpec("vgg11", "vgg", "vgg11", "vgg11", "name", "features[-1]", "features[-1]"),
    ArchSpec("vgg16", "vgg", "vgg16", "vgg16", "name", "features[-1]", "features[-1]"),
    ArchSpec("mobilenet_v2", "mobilenet", "mobilenet_v2", "mobilenet_v2", "name", "features[-1]", "features[-1]"),
    ArchSpec(
        "mobilenet_v3_large",
        "mobilenet",
        "mobilenet_v3_large",
        "mobilenet_v3_large",
        "execution_order",
        "features[-1]",
        "lastconv",
        target_note="torchvision keeps the last conv block as features[-1]; Paddle calls the same block lastconv",
    ),
    ArchSpec(
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
    ArchSpec(
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
    ArchSpec(
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
    # parity.hubs declares its entries with this module's ArchSpec, so it is imported after it.
    from parity.hubs import hub_entries

    pairs: Dict[str, ArchSpec] = {}
    for spec in hub_entries():
        if spec.name in ARCHS or spec.name in pairs:
            raise ValueError(f"hub pair {spec.name!r} is declared twice (or clashes with a torchvision twin)")
        if not spec.hub:
            raise ValueError(f"hub pair {spec.name!r} has no hub builder (timm:... / paddleclas:...)")
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


def unregistered_pair(timm_name: str, paddleclas_name: str) -> ArchSpec:
    """A timm <-> PaddleClas pair without a registry entry: the generic transfer, "auto" reshape, no switch.

    It has no default target layers (the caller names them on each side) and
    runs at 224x224, the light methods only; whether the two are the same
    network the transfer's forward check says.
    """
    return ArchSpec(
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

