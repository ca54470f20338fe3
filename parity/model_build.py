"""The zoo's models built on either side, in a dtype, loaded from a state dict, in eval mode.

What the weights (``parity.weights``), the transfer's verification
(``parity.weight_transfer``), the hub pairs (``parity.hub_transfer``) and the
workers all need.  It sits below them so that none of them has to import
another to build a model: ``parity.weights`` converts through
``parity.weight_transfer``, which verifies a conversion by running both models.
``parity.weights`` re-exports both builders under their old names.
"""
from __future__ import annotations

from typing import Mapping, Optional

import numpy as np

from paddle_impl.errors import UserError
from parity import model_zoo
from parity.model_zoo import DEFAULT_ARCH

__all__ = ["build_torch_model", "build_paddle_model"]


def _describe(names, limit: int = 6) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


def build_torch_model(arch: str = DEFAULT_ARCH, state: Optional[Mapping[str, np.ndarray]] = None, dtype: str = "float32"):
    """torchvision's ``arch`` in ``dtype`` (float32 or float64), loaded from ``state`` (strict) and in eval mode."""
    import torch

    _check_dtype(dtype)
    model = model_zoo.arch(arch).new_torch_model()
    if state is not None:
        model.load_state_dict({name: torch.from_numpy(np.asarray(value)) for name, value in state.items()})
    model = model.double() if dtype == "float64" else model.float()
    return model.eval()


def build_paddle_model(arch: str = DEFAULT_ARCH, state: Optional[Mapping[str, np.ndarray]] = None, dtype: str = "float32"):
    """paddle.vision's ``arch`` with parameters created in ``dtype``, loaded from a Paddle-named state dict, in eval mode.

    The keys of ``state`` must be exactly the model's (``set_state_dict``
    only warns about missing ones): anything else is a one-line UserError.
    """
    from parity.dtype_cast import cast_floating, floating_state

    _check_dtype(dtype)
    model = model_zoo.arch(arch).new_paddle_model(dtype)
    # Paddle's legacy BatchNorm (DenseNet's) takes dtype='float32' as an argument and
    # ignores the default dtype; cast whatever was created in another dtype.  Only
    # floating tensors: Layer.to(dtype=) would make integer buffers float too.
    if any(floating_state(value) and str(value.dtype).split(".")[-1] != dtype for value in model.state_dict().values()):
        cast_floating(model, dtype)
    if state is not None:
        expected = set(model.state_dict())
        if set(state) != expected:
            missing, unexpected = expected - set(state), set(state) - expected
            raise UserError(
                f"the Paddle state dict does not fit paddle.vision's {arch}: "
                f"missing keys: {_describe(missing) or 'none'}; unexpected keys: {_describe(unexpected) or 'none'}"
            )
        model.set_state_dict(
            {name: np.asarray(value, dtype=dtype) if floating_state(np.asarray(value)) else np.asarray(value)
             for name, value in state.items()}
        )
    model.eval()
    return model


def _check_dtype(dtype: str) -> None:
    if dtype not in ("float32", "float64"):
        raise UserError(f"dtype must be float32 or float64, not {dtype!r}")
