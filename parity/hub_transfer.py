"""A hub pair's weights: the timm state dict into the PaddleClas model, forward-checked, switches verified.

The transfer itself is the project's one, ``parity.transfer.transfer_weights``
(names where they correspond, else execution order and shapes; it fills
the Paddle model in place and ends with a forward check that names the
first module whose outputs part).

A pair with :class:`parity.arch_spec.Switch` es is verified both ways on
the pair's own input size: with the switches the forward check must pass;
without them it must fail (else the switch is not needed and the entry is
wrong), in float32, or in float64 for a switch whose difference float32
cannot resolve (``Switch.measured_in``; the switched model is then checked
in float64 too).  :class:`SwitchCheck` keeps both outcomes for the report.

This module is not in :mod:`parity.hubs`: the transfer and the model
builder it calls know the zoo, which collects the hubs' entries, so it sits
above the zoo while the entries sit below it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from paddle_impl.errors import UserError
from parity.weight_transfer import VERIFY_RTOL, VERIFY_RTOL_FLOAT64

__all__ = ["SwitchCheck", "HubTransfer", "transfer_pair", "verification_shapes"]

_DEFAULT_VERIFY = (64, 64)

_CHECK_RTOL = {"float32": VERIFY_RTOL, "float64": VERIFY_RTOL_FLOAT64}


@dataclass(frozen=True)
class SwitchCheck:
    """What a pair's switches change: the forward check's verdict without them and with them."""

    switches: Tuple[Tuple[str, str], ...]  # (name, reason)
    without: Tuple[str, ...]  # per switch: the transfer's error with every other switch but not this one
    with_switches: str  # the forward check's summary with all of them

    def sentence(self) -> str:
        """One paragraph for the report: each switch, why, and the proof that it is needed and enough."""
        applied = "; ".join(f"{name} ({reason})" for name, reason in self.switches)
        return (f"switches applied to the Paddle model: {applied}. Verified: each one is needed "
                f"({' | '.join(self.without)}), and with all of them {self.with_switches}")


@dataclass(frozen=True)
class HubTransfer:
    state: Dict[str, np.ndarray]
    summary: str
    switch_check: Optional[SwitchCheck]


def verification_shapes(spec: Any) -> List[Tuple[int, int, int, int]]:
    """The inputs the transfer is checked on: every size the pair runs at (its verify size, else its input size, and
    the heavy methods' size), so a model whose padding depends on the input size is checked where it is used."""
    sizes = [spec.verify_size or spec.input_size or _DEFAULT_VERIFY]
    if spec.heavy_methods and spec.heavy_size and spec.heavy_size not in sizes:
        sizes.append(spec.heavy_size)
    return [(1, 3, height, width) for width, height in sizes]


def _transfer_and_check(spec: Any, torch_model: Any, paddle_model: Any, x: List[np.ndarray],
                        dtype: str = "float32") -> str:
    """Fill ``paddle_model`` from ``torch_model`` and forward-check on every input of ``x``; a one-line summary."""
    from parity.transfer import transfer_weights

    pairing = transfer_weights(torch_model, paddle_model, x, direction="torch_to_paddle", rtol=_CHECK_RTOL[dtype])
    checks = "; ".join(f"input {tuple(c.input_shape)}: max|Δ| {c.max_abs_diff:.3g} <= bound {c.bound:.3g} "
                       f"({c.relative:.2g} of max|torch output| {c.reference_max_abs:.3g})" for c in pairing.checks)
    return f"{spec.name}: {len(pairing)} tensors transferred ({pairing.rule} pairing), outputs agree, {checks}"


def _to_numpy_state(paddle_model: Any) -> Dict[str, np.ndarray]:
    return {name: np.asarray(value.numpy()) for name, value in paddle_model.state_dict().items()}


def transfer_pair(spec: Any, torch_state: Mapping[str, Any]) -> HubTransfer:
    """The verified Paddle state dict of ``spec``'s PaddleClas model from a timm state dict (float32 weights).

    Raises the transfer's ``ArchitecturesDiffer`` when the two models do not
    compute the same function (with the switches applied), and a UserError
    when a switch turns out not to be needed.
    """
    import torch

    from parity.weight_transfer import verification_input
    from parity.model_build import build_torch_model

    state = {name: np.asarray(value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value)
             for name, value in torch_state.items()}
    # A switch whose difference float32 cannot see (``measured_in="float64"``) is shown needed in float64.
    dtypes = ["float32"] + (["float64"] if any(s.measured_in == "float64" for s in spec.switches) else [])
    torch_models = {dtype: build_torch_model(spec.name, state, dtype) for dtype in dtypes}
    x = [verification_input(shape) for shape in verification_shapes(spec)]
    names = [switch.name for switch in spec.switches]
    without: List[str] = []
    for switch in spec.switches:
        # Each switch on its own must be needed: with every other switch applied, the check fails without it.
        dtype = switch.measured_in
        partial = spec.new_paddle_model(dtype, switches=[name for name in names if name != switch.name])
        partial.eval()
        try:
            _transfer_and_check(spec, torch_models[dtype], partial, x, dtype)
        except UserError as error:
            in_dtype = "" if dtype == "float32" else f" (in {dtype})"
            without.append(f"without {switch.name!r}{in_dtype}: {error}")
        else:
            raise UserError(f"{spec.name}: the Paddle model agrees with timm in {dtype} without the switch "
                            f"{switch.name!r}: the entry's switch is not needed")
    paddle_model = spec.new_paddle_model("float32")
    paddle_model.eval()
    summary = _transfer_and_check(spec, torch_models["float32"], paddle_model, x)
    if "float64" in torch_models:
        wide = spec.new_paddle_model("float64")
        wide.eval()
        summary += "; in float64: " + _transfer_and_check(spec, torch_models["float64"], wide, x, "float64")
    switch_check = None
    if spec.switches:
        switch_check = SwitchCheck(tuple((s.name, s.reason) for s in spec.switches), tuple(without), summary)
    return HubTransfer(_to_numpy_state(paddle_model), summary, switch_check)
