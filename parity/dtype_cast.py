"""Cast a Paddle model's floating-point tensors to another dtype, and nothing else.

``paddle.nn.Layer.to(dtype=...)``, ``.type()`` and ``.double()`` (Paddle
3.3.1) cast *every* parameter and buffer, integer ones included: Swin's
``relative_position_index`` becomes float64 and the ``index_select`` that
reads the relative-position-bias table with it fails, so a float64 rerun of a
transformer could not even run.  torch's ``Module.double()`` leaves integer
tensors alone; ``cast_floating`` does the same on the Paddle side.  Paddle's
own ``Layer.float()`` works this way (``_to_impl(floating_only=True)``, one
layer at a time), which is what is used here, for any target dtype; the
tensors are converted in place, so references to the parameters stay valid.
"""
from __future__ import annotations

from typing import Dict

import paddle

__all__ = ["cast_floating", "floating_state", "state_dtypes"]


def state_dtypes(model: paddle.nn.Layer) -> Dict[str, str]:
    """Each parameter's and buffer's dtype by state-dict name, as 'float32', 'int64', ..."""
    return {name: str(value.dtype).split(".")[-1] for name, value in model.state_dict().items()}


def floating_state(value) -> bool:
    """Whether a state tensor (Paddle or numpy) holds floating-point numbers."""
    if isinstance(value, paddle.Tensor):
        return paddle.is_floating_point(value)
    return getattr(getattr(value, "dtype", None), "kind", None) == "f"


def cast_floating(model: paddle.nn.Layer, dtype: str) -> paddle.nn.Layer:
    """Cast ``model``'s floating-point parameters and buffers to ``dtype`` in place; integer and bool ones keep theirs.

    Returns the model.  Raises ``RuntimeError`` if afterwards a floating
    tensor is not in ``dtype`` or a non-floating one changed dtype (a Paddle
    release whose private cast behaves otherwise must not pass silently).
    """
    if dtype not in ("float16", "bfloat16", "float32", "float64"):
        raise ValueError(f"cast_floating casts to a floating dtype, not {dtype!r}")
    before = state_dtypes(model)
    for layer in model.sublayers(include_self=True):
        layer._to_impl(dtype=dtype, floating_only=True, include_sublayers=False)
    after = state_dtypes(model)
    wrong = [
        f"{name}: {before[name]} -> {after.get(name)}"
        for name in before
        if (before[name].startswith(("float", "bfloat")) and after.get(name) != dtype)
        or (not before[name].startswith(("float", "bfloat")) and after.get(name) != before[name])
    ]
    if wrong:
        raise RuntimeError(f"cast_floating to {dtype} went wrong for {len(wrong)} tensor(s): {', '.join(wrong[:5])}")
    return model
