"""What one entry of the model zoo is: :class:`ArchSpec` (a pair of builders and how to compare them) and :class:`Switch`.

This module sits below both the zoo (:mod:`parity.model_zoo`, the
torchvision <-> paddle.vision twins) and the hub pairs
(:mod:`parity.hubs`, timm <-> PaddleClas), so that each can declare its
entries without importing the other: the zoo collects the hubs' entries,
the hubs never look back at the zoo.

An :class:`ArchSpec` builds its models from torchvision and paddle.vision
only.  A pair from the hubs is a :class:`parity.hubs.HubPair`, the same
spec whose builders also understand the ``timm:`` and ``paddleclas:``
prefixes; a plain ArchSpec given such a builder is refused, rather than
failing later on a ``getattr`` of torchvision.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from paddle_impl.errors import UserError

__all__ = ["ArchSpec", "Switch", "TRANSFER_RULES", "TIMM_PREFIX", "PADDLECLAS_PREFIX"]

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
    without them and pass with them.  ``measured_in`` is the dtype in which
    that check can see the switch: "float64" for a difference below
    float32's resolution (a constant that differs in its eighth digit), which
    only the float64 profiles show.
    """

    name: str
    reason: str
    apply: Optional[Callable[[Any], int]] = field(default=None, compare=False)
    paddle_kwargs: Tuple[Tuple[str, Any], ...] = ()
    measured_in: str = "float32"


@dataclass(frozen=True)
class ArchSpec:
    """One architecture: its two builders, its weight-transfer rule and its default target layers.

    ``torch_target_layer`` / ``paddle_target_layer`` are upstream's
    conventional choice on each side.  Where the two do not compute the same
    tensor (``target_outputs_agree`` False, explained in ``target_note``),
    ``parity_torch_target_layer`` / ``parity_paddle_target_layer`` name the
    nearest pair that does, for stage-by-stage comparisons.

    ``known_difference`` is empty when the two builders make the same
    function; otherwise it says where and why they differ, and
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
        if not self.hub:
            for builder in (self.torch_builder, self.paddle_builder):
                if builder.startswith((TIMM_PREFIX, PADDLECLAS_PREFIX)):
                    raise ValueError(f"{self.name}: builder {builder!r} comes from a hub; declare the pair "
                                     "as a parity.hubs.HubPair")

    @property
    def hub(self) -> bool:
        """Whether either side comes from a hub (timm, PaddleClas) rather than torchvision / paddle.vision."""
        return False

    @property
    def pair_id(self) -> str:
        """``torchvision/NAME:paddle.vision/NAME`` (a hub pair: ``timm/NAME:paddleclas/NAME``, what ``--pair`` takes)."""
        return f"torchvision/{self.torch_builder}:paddle.vision/{self.paddle_builder}"

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
        """A freshly initialised torch model (float32, train mode: as the builder returns it)."""
        import torchvision

        return getattr(torchvision.models, self.torch_builder)()

    def _build_paddle_model(self, kwargs: Dict[str, Any]):
        """The Paddle builder called with ``kwargs``, under the default dtype the caller has set."""
        import paddle

        return getattr(paddle.vision.models, self.paddle_builder)(**kwargs)

    def new_paddle_model(self, dtype: str = "float32", switches: Union[bool, Sequence[str]] = True):
        """A freshly initialised Paddle model whose parameters are created in ``dtype``, with the entry's switches applied.

        ``switches=False`` builds the model as its hub ships it, a sequence of
        switch names applies only those (to show that each switch is needed).
        """
        import paddle

        previous = paddle.get_default_dtype()
        paddle.set_default_dtype(dtype)
        try:
            model = self._build_paddle_model(self.paddle_builder_kwargs(switches))
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
