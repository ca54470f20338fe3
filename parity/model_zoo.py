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
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Tuple

from paddle_impl.errors import UserError

__all__ = ["ArchSpec", "ARCHS", "DEFAULT_ARCH", "TRANSFER_RULES", "arch", "arch_names", "missing_builders"]

TRANSFER_RULES = ("name", "execution_order")
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

    def __post_init__(self) -> None:
        if self.transfer not in TRANSFER_RULES:
            raise ValueError(f"{self.name}: transfer must be one of {TRANSFER_RULES}, not {self.transfer!r}")

    @property
    def parity_target_layers(self) -> Tuple[str, str]:
        """(torch, paddle) target-layer expressions whose outputs are the same tensor."""
        return (
            self.parity_torch_target_layer or self.torch_target_layer,
            self.parity_paddle_target_layer or self.paddle_target_layer,
        )

    @property
    def default_weights_name(self) -> str:
        """File name of the seeded default weights (``resnet50_seed0.pth`` for ResNet50)."""
        return f"{self.name}_seed0.pth"

    def new_torch_model(self):
        """A freshly initialised torchvision model (float32, train mode: as the builder returns it)."""
        import torchvision

        return getattr(torchvision.models, self.torch_builder)()

    def new_paddle_model(self, dtype: str = "float32"):
        """A freshly initialised ``paddle.vision.models`` model whose parameters are created in ``dtype``."""
        import paddle

        previous = paddle.get_default_dtype()
        paddle.set_default_dtype(dtype)
        try:
            return getattr(paddle.vision.models, self.paddle_builder)(**dict(self.paddle_kwargs))
        finally:
            paddle.set_default_dtype(previous)

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

ARCHS: Mapping[str, ArchSpec] = {spec.name: spec for spec in _ARCH_LIST}


def arch_names() -> List[str]:
    """Registry order: ResNets, VGG, MobileNets, DenseNet, SqueezeNet, ShuffleNet."""
    return list(ARCHS)


def arch(name: str) -> ArchSpec:
    """The spec of ``name``; an unknown name is a one-line :class:`UserError` listing the known ones."""
    try:
        return ARCHS[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown architecture {name!r} (known: {', '.join(ARCHS)})") from None


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

