"""A timm <-> PaddleClas pair's entry: :class:`HubPair`, an :class:`parity.arch_spec.ArchSpec` whose builders name hubs.

What a hub adds to the zoo's spec is how its models are built and how its
seeded weights are named; everything else (target layers, sizes, switches,
reshape transforms) the spec already holds.  It lives here, beside the
PaddleClas loader and the seeding rule it uses, so that the spec below
(:mod:`parity.arch_spec`) needs neither.
"""
from __future__ import annotations

from typing import Any, Dict

from paddle_impl.errors import UserError
from parity.arch_spec import PADDLECLAS_PREFIX, TIMM_PREFIX, ArchSpec

__all__ = ["HubPair"]


class HubPair(ArchSpec):
    """A pair with a ``timm:NAME`` torch builder and/or a ``paddleclas:NAME`` Paddle builder; the other side's builder is
    torchvision's / paddle.vision's.  Its weights always go through the generic transfer."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.hub:
            raise ValueError(f"hub pair {self.name!r} has no hub builder ({TIMM_PREFIX}NAME / {PADDLECLAS_PREFIX}NAME)")
        if self.transfer != "generic":
            raise ValueError(f"{self.name}: a hub pair's weights go through the generic transfer, not {self.transfer!r}")

    @property
    def hub(self) -> bool:
        return self.torch_builder.startswith(TIMM_PREFIX) or self.paddle_builder.startswith(PADDLECLAS_PREFIX)

    @property
    def pair_id(self) -> str:
        """``timm/resnet50d:paddleclas/ResNet50_vd`` (what ``--pair`` takes)."""
        def side(builder: str, hub_prefix: str, hub: str, default: str) -> str:
            if builder.startswith(hub_prefix):
                return f"{hub}/{builder[len(hub_prefix):].rsplit(':', 1)[-1]}"
            return f"{default}/{builder}"

        return (side(self.torch_builder, TIMM_PREFIX, "timm", "torchvision") + ":"
                + side(self.paddle_builder, PADDLECLAS_PREFIX, "paddleclas", "paddle.vision"))

    @property
    def default_weights_name(self) -> str:
        """The seeded weights' file name, which also carries timm's version and the seeding rule's
        (``lcnet_100_timm1.0.31_s2_seed0.pth``): the file is written once and reused, and either one changes what the
        seed gives."""
        if not self.torch_builder.startswith(TIMM_PREFIX):
            return super().default_weights_name
        import timm

        from parity.hubs.seeding import SEEDING_VERSION

        return f"{self.name}_timm{timm.__version__}_s{SEEDING_VERSION}_seed0.pth"

    def new_torch_model(self):
        if not self.torch_builder.startswith(TIMM_PREFIX):
            return super().new_torch_model()
        try:
            import timm
        except ImportError:
            from parity.hubs.paddleclas_loader import INSTALL_HINT

            raise UserError(f"{self.name}: timm is not installed; {INSTALL_HINT}") from None
        return timm.create_model(self.torch_builder[len(TIMM_PREFIX):], pretrained=False, **dict(self.torch_kwargs))

    def _build_paddle_model(self, kwargs: Dict[str, Any]):
        if not self.paddle_builder.startswith(PADDLECLAS_PREFIX):
            return super()._build_paddle_model(kwargs)
        from parity.hubs.paddleclas_loader import paddleclas_model

        return paddleclas_model(self.paddle_builder[len(PADDLECLAS_PREFIX):], **kwargs)
