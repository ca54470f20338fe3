"""Seeded weights for a hub pair: timm's own init, then noise on every tensor that init leaves constant.

A fresh timm model is random where it matters for training, but many of its
tensors start as constants: BatchNorm / LayerNorm / GroupNorm weight 1 and
bias 0, running mean 0 and variance 1, zero biases, zero-initialised last
BatchNorm gammas (ResNet's ``zero_init_last``), layer-scale gammas of 1e-6,
class and distillation tokens, learnable affine scalars (PP-HGNetV2's
``lab``).  A transfer that swaps a norm's weight and bias, mean and variance,
or drops a bias entirely would pass on such weights by symmetry.  So every
floating-point parameter, and every BatchNorm running statistic, whose
elements are all equal is replaced by seeded noise of a scale that keeps the
network's activations in range:

* ``running_var``: uniform in [0.5, 1.5] (positive, like a variance);
* a constant ``c`` with ``|c| >= 1e-3`` (norm weights, variances, scalars of 1):
  ``c`` times uniform in [0.5, 1.5];
* zero, or nearly constant around zero (biases, means, zero-init gammas, class
  and distillation tokens that timm draws with std 1e-6): normal with std 0.1;
* a tiny non-zero constant (layer-scale gammas of 1e-5..1e-6, whose residual
  branch would otherwise contribute nothing a comparison could see):
  uniform in [0.1, 0.3] with the constant's sign.

Everything is drawn from one ``torch.Generator`` seeded with ``seed + 1``,
tensor by tensor in ``state_dict`` order, after ``torch.manual_seed(seed)``
and timm's builder: the same seed gives the same bytes on every machine with
the same torch and timm.  Integer buffers (``num_batches_tracked``, Swin's
``relative_position_index``) and non-statistics float buffers are left as the
builder made them: they are structure, not weights.
"""
from __future__ import annotations

from typing import Any, Dict, List

__all__ = ["seeded_hub_state", "randomize_constant_tensors", "constant_tensor_names", "SEEDING_VERSION"]

_TINY = 1e-3
_STATISTICS = ("running_mean", "running_var")


# Bumped whenever the rule below changes what it draws: the seeded weights files carry it in their names.
SEEDING_VERSION = 2
# A tensor whose values spread less than this is as good as constant: timm draws class and distillation
# tokens with std 1e-6, which leaves them ~0 next to position embeddings of std 0.02.
_NEARLY_CONSTANT_SPREAD = 1e-4


def _is_constant(tensor) -> bool:
    flat = tensor.detach().reshape(-1)
    return flat.numel() > 0 and bool((flat == flat[0]).all())


def _is_nearly_constant(tensor) -> bool:
    flat = tensor.detach().reshape(-1)
    return flat.numel() > 0 and float(flat.max() - flat.min()) < _NEARLY_CONSTANT_SPREAD


def _candidates(model) -> List[tuple]:
    """(name, tensor) of every floating parameter and BatchNorm statistic, in state_dict order."""
    wanted = dict(model.named_parameters())
    for name, buffer in model.named_buffers():
        if name.rsplit(".", 1)[-1] in _STATISTICS:
            wanted[name] = buffer
    return [(name, wanted[name]) for name in model.state_dict(keep_vars=True) if name in wanted
            and wanted[name].is_floating_point()]


def constant_tensor_names(model) -> List[str]:
    """The names of the floating parameters and BatchNorm statistics whose elements are (nearly) all equal."""
    return [name for name, tensor in _candidates(model) if _is_nearly_constant(tensor)]


def randomize_constant_tensors(model, generator) -> List[str]:
    """Replace every constant parameter / BatchNorm statistic of ``model`` in place; returns their names."""
    import torch

    changed = []
    with torch.no_grad():
        for name, tensor in _candidates(model):
            if not _is_nearly_constant(tensor):
                continue
            exact = _is_constant(tensor)
            value = float(tensor.detach().double().mean())
            shape = tuple(tensor.shape)
            uniform = torch.rand(shape, generator=generator, dtype=torch.float64)
            if name.rsplit(".", 1)[-1] == "running_var":
                noise = uniform + 0.5
            elif abs(value) >= _TINY:
                noise = value * (uniform + 0.5)
            elif value == 0.0 or not exact:
                noise = torch.randn(shape, generator=generator, dtype=torch.float64) * 0.1
            else:
                noise = (0.1 + 0.2 * uniform) * (1.0 if value > 0 else -1.0)
            tensor.copy_(noise.to(tensor.dtype))
            changed.append(name)
    return changed


def seeded_hub_state(spec: Any, seed: int = 0) -> Dict[str, Any]:
    """``torch.manual_seed(seed)``, the pair's timm model, then :func:`randomize_constant_tensors`: its state dict."""
    import torch

    torch.manual_seed(seed)
    model = spec.new_torch_model()
    randomize_constant_tensors(model, torch.Generator().manual_seed(seed + 1))
    # A one-element tensor (PP-HGNetV2's learnable affine scale and bias) is "constant" whatever it holds.
    left = [name for name in constant_tensor_names(model) if model.state_dict()[name].numel() > 1]
    if left:
        raise RuntimeError(f"{spec.name}: tensors still constant after seeding: {', '.join(left[:6])}")
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
