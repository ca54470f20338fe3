"""Weight transfer between a torch model and its Paddle twin: the pairing, the forward check and the diagnosis.

The one transfer of the project: :func:`parity.transfer.transfer_weights`
(any pair of the same architecture, timm <-> PaddleClas included) and the
model zoo's torchvision -> ``paddle.vision`` conversion both use what is here.

* the **pairing** (:func:`pair_models`): which torch tensor is which Paddle
  tensor, keyed by state-dict key (layer path + local name, never Paddle's
  ``param.name``): by layer path where both models name their layers alike,
  else by execution order (PaDiff's rule: the k-th layer that owns tensors to
  run in torch is the k-th in Paddle; kind and every shape must agree);
  tensors by local name after the batch-norm renames (``running_mean`` ->
  ``_mean``, ``running_var`` -> ``_variance``; ``num_batches_tracked`` and
  other integer buffers are not weights), Linear weights transposed because
  both layers are Linear (:func:`converted_value`);
* the zoo's **transfer plan** of an architecture (:func:`transfer_plan`, by
  the registry's rule) and **conversion** of a state dict
  (:func:`transfer_state_dict`, :func:`convert_state_dict`): every key and
  shape checked on both sides;
* the **forward check** (:func:`forward_check`): both models on an input,
  outputs within ``1e-4 * max|reference output|``;
* the **first-divergence diagnosis** (:func:`diagnose_first_divergence`):
  both models run once with forward hooks on every computing (leaf) layer; the
  layers that own weights are paired in execution order and compared pair by
  pair -- input, output (shape and values) and weights -- so the first pair
  whose outputs differ is named, on each side, with shapes, max|Δ| and the
  bound.  A pair whose inputs and weights agree but whose outputs do not
  computes a different function (stride, padding, eps, a bias on one side,
  exclusive pooling, a hard-sigmoid slope, a fused activation...): the
  architectures differ there, and no weight transfer can fix it.  That case
  is an :class:`ArchitecturesDiffer`, so a harness can report it as such
  rather than as a port failure.  A layer whose input already differs is
  downstream: the culprit is looked for among the weight-free layers before it.
"""
from __future__ import annotations

import functools
import inspect
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from paddle_impl.errors import UserError

__all__ = [
    "VERIFY_RTOL",
    "VERIFY_INPUT_SHAPE",
    "TransferError",
    "TransferRefused",
    "ArchitecturesDiffer",
    "LayerPair",
    "TensorLink",
    "ModelPairing",
    "PAIRING_RULES",
    "pair_models",
    "converted_value",
    "TransferPlan",
    "TransferCheck",
    "Divergence",
    "rename_batch_norm",
    "pair_layers_by_execution_order",
    "transfer_plan",
    "transfer_state_dict",
    "verify_transfer",
    "convert_state_dict",
    "check_logits",
    "forward_check",
    "diagnose_first_divergence",
    "verification_input",
]

# Forward verification: float32 logits within 1e-4 * max|torch logits| (the
# harness's `logits` bound).  Correct transfers measure 2.2e-7..2.0e-6 relative
# on the registry's models at 64x64 (oneDNN and Paddle round convolutions
# differently); a swapped tensor moves the logits by percents or more.
VERIFY_RTOL = 1e-4
# The same check in float64 (a hub switch that only float64 can see): the harness's float64 `logits` bound.
VERIFY_RTOL_FLOAT64 = 1e-9
VERIFY_INPUT_SHAPE = (1, 3, 64, 64)
_VERIFY_SEED = 20240607
# The pairing forward pass only needs every layer to run once; any input works.
_PAIRING_INPUT_SHAPE = (1, 3, 64, 64)
# Transferred weights are copies, so "the weights agree" means equal up to a dtype cast.
_WEIGHTS_RTOL = 1e-6


class TransferError(UserError):
    """A weight transfer between a torch model and a Paddle model failed; the message says where and why.

    The base of every transfer failure: tensors that do not fit (missing or
    unexpected keys, wrong shapes, layers that cannot be paired), and the two
    refusals after the forward check, :class:`TransferRefused` and
    :class:`ArchitecturesDiffer`.  ``divergence`` is the diagnosis
    (:class:`Divergence`) when the failure came from comparing the two
    models' outputs, else None.
    """

    def __init__(self, message: str, divergence: Optional["Divergence"] = None) -> None:
        super().__init__(message)
        self.divergence = divergence


class TransferRefused(TransferError):
    """The transferred weights do not reproduce the source model's outputs; the message names the first diverging layer."""


class ArchitecturesDiffer(TransferError):
    """The two models compute different functions ("architectures differ at LAYER: WHAT"); no transfer can fix it."""


# -- layers and their tensors ---------------------------------------------------------------


# torch's local tensor names that Paddle spells differently (batch norm's statistics).
_PADDLE_LOCAL_NAMES = {"running_mean": "_mean", "running_var": "_variance"}


def rename_batch_norm(name: str) -> str:
    """torch -> Paddle tensor name: ``running_mean`` -> ``_mean``, ``running_var`` -> ``_variance``."""
    for torch_local, paddle_local in _PADDLE_LOCAL_NAMES.items():
        if name == torch_local or name.endswith("." + torch_local):
            return name[: -len(torch_local)] + paddle_local
    return name


def _is_counter(name: str) -> bool:
    # BatchNorm's num_batches_tracked counts training steps; Paddle has no such tensor
    # and inference does not read it.  Old checkpoints (e.g. IMAGENET1K_V1) lack it.
    return name == "num_batches_tracked" or name.endswith(".num_batches_tracked")


# Layer kinds both frameworks have; a pair of these must be of the same kind.  Any
# other layer that owns tensors (a block holding a layer-scale gamma, a model
# holding a class token) is "custom" and pairs by its tensors alone.
_KNOWN_KINDS = ("conv", "conv_transpose", "batch_norm", "linear", "layer_norm", "group_norm", "embedding", "prelu")


def _torch_kind(module: Any) -> str:
    nn = sys.modules["torch"].nn
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return "conv"
    if isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        return "conv_transpose"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "batch_norm"
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.LayerNorm):
        return "layer_norm"
    if isinstance(module, nn.GroupNorm):
        return "group_norm"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if isinstance(module, nn.PReLU):
        return "prelu"
    return type(module).__name__.lower()


def _paddle_kind(layer: Any) -> str:
    nn = sys.modules["paddle"].nn
    if isinstance(layer, (nn.Conv1D, nn.Conv2D, nn.Conv3D)):
        return "conv"
    if isinstance(layer, (nn.Conv1DTranspose, nn.Conv2DTranspose, nn.Conv3DTranspose)):
        return "conv_transpose"
    if isinstance(layer, (nn.layer.norm._BatchNormBase, nn.BatchNorm)):
        return "batch_norm"
    if isinstance(layer, nn.Linear):
        return "linear"
    if isinstance(layer, nn.LayerNorm):
        return "layer_norm"
    if isinstance(layer, nn.GroupNorm):
        return "group_norm"
    if isinstance(layer, nn.Embedding):
        return "embedding"
    if isinstance(layer, nn.PReLU):
        return "prelu"
    return type(layer).__name__.lower()


def _is_float(value: Any) -> bool:
    return "float" in str(value.dtype)


def _torch_own_tensors(module: Any) -> Dict[str, Any]:
    """The module's own transferable tensors (parameters and persistent floating-point buffers), by local name.

    Integer buffers (``num_batches_tracked``, a transformer's relative-position
    index) follow from the architecture, not from training: never transferred.
    """
    own = {name: value for name, value in module._parameters.items() if value is not None}
    own.update(
        (name, value)
        for name, value in module._buffers.items()
        if value is not None and name not in module._non_persistent_buffers_set and _is_float(value)
    )
    return own


def _paddle_own_tensors(layer: Any) -> Dict[str, Any]:
    """Paddle's counterpart of :func:`_torch_own_tensors`.

    Legacy ``paddle.nn.BatchNorm`` (PaddleClas) keeps ``_mean``/``_variance``
    as parameters, ``BatchNorm2D`` as buffers: both are found here.
    """
    own = {name: value for name, value in layer._parameters.items() if value is not None}
    own.update(
        (name, value)
        for name, value in layer._buffers.items()
        if value is not None and name not in layer._non_persistable_buffer_names_set and _is_float(value)
    )
    return own


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _torch_modules(model: Any) -> List[Tuple[str, Any]]:
    return list(model.named_modules())


def _paddle_layers(model: Any) -> List[Tuple[str, Any]]:
    return list(model.named_sublayers(include_self=True))


def _is_leaf_torch(module: Any) -> bool:
    return not any(child is not None for child in module._modules.values())


def _is_leaf_paddle(layer: Any) -> bool:
    return not any(child is not None for child in layer._sub_layers.values())


def _describe(names: Sequence[str], limit: int = 6) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


# -- pairing two models' tensors ------------------------------------------------------------


@dataclass(frozen=True)
class LayerPair:
    """A torch layer and the Paddle layer that holds the same tensors."""

    torch_path: str
    paddle_path: str
    kind: str
    torch_type: str
    paddle_type: str


@dataclass(frozen=True)
class TensorLink:
    """One torch tensor and its Paddle counterpart, by state-dict key; ``transposed`` for Linear weights."""

    torch_key: str
    paddle_key: str
    transposed: bool
    torch_shape: Tuple[int, ...]
    paddle_shape: Tuple[int, ...]


@dataclass(frozen=True)
class ModelPairing:
    """Which layer and tensor of one model is which of the other, and the rule that found it."""

    rule: str
    pairs: Tuple[LayerPair, ...]
    links: Tuple[TensorLink, ...]


@dataclass(frozen=True)
class TransferPlan:
    """Everything the conversion of one architecture needs; depends only on the architecture."""

    arch: str
    rule: str
    torch_shapes: Mapping[str, Tuple[int, ...]]
    paddle_shapes: Mapping[str, Tuple[int, ...]]
    name_map: Mapping[str, str]
    transposed: frozenset
    pairs: Tuple[LayerPair, ...]


def converted_value(value: np.ndarray, transposed: bool) -> np.ndarray:
    """One tensor's values as the other framework stores them: Linear weights are (out, in) in torch, (in, out) in Paddle."""
    value = np.asarray(value)
    return np.ascontiguousarray(value.T) if transposed else value


def _state_owners_in_order(records: Sequence[Tuple[str, Any]]) -> List[Tuple[str, Any]]:
    seen, ordered = set(), []
    for path, layer in records:
        if id(layer) not in seen:
            seen.add(id(layer))
            ordered.append((path, layer))
    return ordered


def _pairing_input(example_input: Optional[np.ndarray], input_shape: Tuple[int, ...]) -> np.ndarray:
    if example_input is not None:
        return np.ascontiguousarray(example_input)
    return np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)


def _run_recording_owners(torch_model: Any, paddle_model: Any, x: np.ndarray):
    """Both models once (eval) on ``x``; the layers that own tensors, in the order they first finish running."""
    torch_order: List[Tuple[str, Any]] = []
    paddle_order: List[Tuple[str, Any]] = []
    handles = []
    try:
        for path, module in _torch_modules(torch_model):
            if _torch_own_tensors(module):
                handles.append(
                    module.register_forward_hook(lambda m, i, o, path=path: torch_order.append((path, m)))
                )
        for path, layer in _paddle_layers(paddle_model):
            if _paddle_own_tensors(layer):
                handles.append(
                    layer.register_forward_post_hook(lambda l, i, o, path=path: paddle_order.append((path, l)))
                )
        torch_model.eval()
        paddle_model.eval()
        _torch_forward(torch_model, x)
        _paddle_forward(paddle_model, x)
    finally:
        for handle in handles:
            handle.remove()
    return _state_owners_in_order(torch_order), _state_owners_in_order(paddle_order)


def _local_map(torch_locals: Mapping[str, Any]) -> Dict[str, str]:
    return {name: rename_batch_norm(name) for name in torch_locals if not _is_counter(name)}


def _match_tensors(torch_layer: Any, paddle_layer: Any):
    """``(links, problem)``: the pair's tensors as ``(torch local, paddle local, transposed)``, or why they do not match.

    Tensors match by local name after the batch-norm renames; where the names
    differ (a custom block's ``gamma`` against ``layer_scale``) and both hold
    as many tensors, by declaration order.  Either way every shape must agree,
    Linear weights transposed.
    """
    t_kind, p_kind = _torch_kind(torch_layer), _paddle_kind(paddle_layer)
    t_own, p_own = _torch_own_tensors(torch_layer), _paddle_own_tensors(paddle_layer)
    mapping = _local_map(t_own)
    if set(mapping.values()) == set(p_own):
        ordered = list(mapping.items())
    elif len(mapping) == len(p_own) and (t_kind not in _KNOWN_KINDS or p_kind not in _KNOWN_KINDS):
        ordered = list(zip(mapping, p_own))
    else:
        t_names, p_names = set(mapping.values()), set(p_own)
        if t_names ^ p_names == {"bias"}:
            # One side's layer was built without a bias (bias=False / bias_attr=False).
            return [], "bias " + ("present vs absent" if "bias" in t_names else "absent vs present")
        return [], f"tensors {sorted(t_names)} vs {sorted(p_names)}"
    links = []
    for t_name, p_name in ordered:
        transposed = t_kind == "linear" and p_kind == "linear" and t_name == "weight"
        t_shape = tuple(t_own[t_name].shape)
        p_shape = tuple(p_own[p_name].shape)
        if (t_shape[::-1] if transposed else t_shape) != p_shape:
            return [], f"{t_name} {t_shape} vs {p_name} {p_shape}"
        links.append((t_name, p_name, transposed))
    return links, None


def _kinds_problem(torch_layer: Any, paddle_layer: Any) -> Optional[str]:
    t_kind, p_kind = _torch_kind(torch_layer), _paddle_kind(paddle_layer)
    # A custom layer on one side (PaddleClas's ChannelsFirstLayerNorm against timm's
    # LayerNorm2d) pairs by its tensors; two standard layers must be the same kind.
    if t_kind != p_kind and t_kind in _KNOWN_KINDS and p_kind in _KNOWN_KINDS:
        return f"different kinds ({t_kind} vs {p_kind})"
    return None


def _pair_problem(
    index: int, torch_path: str, torch_layer: Any, paddle_path: str, paddle_layer: Any
) -> Optional[str]:
    """Why the index-th weighted layers of the two models cannot be each other's (None when they can)."""
    where = f"layer with weights #{index + 1} in execution order: torch {torch_path or '<model>'} ({type(torch_layer).__name__}) / paddle {paddle_path or '<model>'} ({type(paddle_layer).__name__})"
    problem = _kinds_problem(torch_layer, paddle_layer) or _match_tensors(torch_layer, paddle_layer)[1]
    return f"{where}: {problem}" if problem else None


def _layer_pair(torch_path: str, module: Any, paddle_path: str, layer: Any) -> LayerPair:
    return LayerPair(torch_path, paddle_path, _torch_kind(module), type(module).__name__, type(layer).__name__)


def _describe_owner(path: str, layer: Any, framework: str) -> str:
    own = _torch_own_tensors(layer) if framework == "torch" else _paddle_own_tensors(layer)
    weight = own.get("weight")
    shape = f" weight {tuple(weight.shape)}" if weight is not None else ""
    return f"{path or '<model>'} ({type(layer).__name__}{shape})"


def _realignment(torch_order: Sequence[Tuple[str, Any]], paddle_order: Sequence[Tuple[str, Any]], index: int,
                 lookahead: int = 3, confirm: int = 4) -> str:
    """Where the k-th layers do not pair: whether one side runs extra layers with weights here.

    If skipping 1..``lookahead`` layers on one side makes the next
    ``confirm`` pairs fit, the block is wired differently there (an extra
    1x1 conv, a squeeze-excite the other lacks): those layers are named.
    """
    def fits(t_start: int, p_start: int) -> bool:
        count = min(confirm, len(torch_order) - t_start, len(paddle_order) - p_start)
        if count <= 0:
            return False
        return all(
            _kinds_problem(torch_order[t_start + i][1], paddle_order[p_start + i][1]) is None
            and _match_tensors(torch_order[t_start + i][1], paddle_order[p_start + i][1])[1] is None
            for i in range(count)
        )

    for skip in range(1, lookahead + 1):
        for side, order, framework, t_start, p_start in (
            ("paddle", paddle_order, "paddle", index, index + skip),
            ("torch", torch_order, "torch", index + skip, index),
        ):
            if fits(t_start, p_start):
                extra = [_describe_owner(path, layer, framework) for path, layer in order[index:index + skip]]
                return (f"; {side} runs {skip} more layer(s) with weights here ({', '.join(extra)}), "
                        "after which the layers pair up again: a block wired differently")
    return ""


def _pair_idle_by_name(idle_t: Sequence[Tuple[str, Any]], idle_p: Sequence[Tuple[str, Any]]) -> Optional[List[LayerPair]]:
    """Layers with tensors that did not run on the pairing input, paired by path; None unless all pair up."""
    by_path = dict(idle_p)
    if len(idle_t) != len(idle_p) or set(by_path) != {path for path, _ in idle_t}:
        return None
    pairs = []
    for path, module in idle_t:
        if _kinds_problem(module, by_path[path]) or _match_tensors(module, by_path[path])[1]:
            return None
        pairs.append(_layer_pair(path, module, path, by_path[path]))
    return pairs


def pair_layers_by_execution_order(
    torch_model: Any,
    paddle_model: Any,
    input_shape: Tuple[int, ...] = _PAIRING_INPUT_SHAPE,
    example_input: Optional[np.ndarray] = None,
) -> List[LayerPair]:
    """Pair the layers that own tensors by the order they run in (PaDiff's rule), checking kind and shapes.

    Both models run once (eval) on ``example_input`` (default: seeded noise
    of ``input_shape``).  Raises :class:`ArchitecturesDiffer` when the k-th
    layers cannot be each other's (other kind, other tensors or shapes) or
    the counts differ, and :class:`TransferError` when layers with tensors
    never run and do not pair up by path either.
    """
    x = _pairing_input(example_input, input_shape)
    torch_order, paddle_order = _run_recording_owners(torch_model, paddle_model, x)
    ran_t, ran_p = {id(m) for _, m in torch_order}, {id(l) for _, l in paddle_order}
    idle_t = [(p, m) for p, m in _torch_modules(torch_model) if _torch_own_tensors(m) and id(m) not in ran_t]
    idle_p = [(p, l) for p, l in _paddle_layers(paddle_model) if _paddle_own_tensors(l) and id(l) not in ran_p]
    idle_pairs: List[LayerPair] = []
    if idle_t or idle_p:
        found = _pair_idle_by_name(idle_t, idle_p)
        if found is None:
            raise TransferError(
                "cannot pair layers by execution order: layers with weights that never ran "
                f"(torch: {_describe([p for p, _ in idle_t]) or 'none'}; paddle: {_describe([p for p, _ in idle_p]) or 'none'})"
                f" on the input {tuple(x.shape)}"
            )
        idle_pairs = found
    pairs: List[LayerPair] = []
    for index, ((t_path, t_layer), (p_path, p_layer)) in enumerate(zip(torch_order, paddle_order)):
        problem = _pair_problem(index, t_path, t_layer, p_path, p_layer)
        if problem:
            realigned = _realignment(torch_order, paddle_order, index)
            raise ArchitecturesDiffer(
                f"architectures differ at {problem}{realigned}",
                Divergence("architecture", t_path, p_path, type(t_layer).__name__, type(p_layer).__name__,
                           None, None, None, None, f"the weighted layers do not pair up ({problem}){realigned}", index),
            )
        pairs.append(_layer_pair(t_path, t_layer, p_path, p_layer))
    if len(torch_order) != len(paddle_order):
        longer, rest = ("torch", torch_order) if len(torch_order) > len(paddle_order) else ("paddle", paddle_order)
        extra_path, extra_layer = rest[len(pairs)]
        detail = (f"torch runs {len(torch_order)} layers with weights, paddle {len(paddle_order)}; "
                  f"the first {len(pairs)} pair up")
        raise ArchitecturesDiffer(
            f"architectures differ at {longer} {extra_path}: {detail}",
            Divergence("architecture", extra_path if longer == "torch" else "", extra_path if longer == "paddle" else "",
                       type(extra_layer).__name__ if longer == "torch" else "-",
                       type(extra_layer).__name__ if longer == "paddle" else "-",
                       None, None, None, None, detail, len(pairs)),
        )
    return pairs + idle_pairs


def _pairs_by_name(torch_model: Any, paddle_model: Any, strict: bool = True) -> Optional[List[LayerPair]]:
    """Pair layers by path.  ``strict``: a TransferError when a torch layer has no Paddle layer of that path;
    otherwise None whenever the names do not pair every layer with tensors on both sides."""
    paddle_layers = dict(_paddle_layers(paddle_model))
    pairs = []
    for path, module in _torch_modules(torch_model):
        if not _torch_own_tensors(module):
            continue
        layer = paddle_layers.get(path)
        if layer is None:
            if strict:
                raise TransferError(f"the name rule has no Paddle layer for torch layer {path!r}")
            return None
        if not strict and (_kinds_problem(module, layer) or _match_tensors(module, layer)[1]):
            return None
        pairs.append(_layer_pair(path, module, path, layer))
    if not strict:
        paired = {pair.paddle_path for pair in pairs}
        if any(_paddle_own_tensors(layer) and path not in paired for path, layer in paddle_layers.items()):
            return None
    return pairs


PAIRING_RULES = ("auto", "name", "execution_order")


def pair_models(
    torch_model: Any, paddle_model: Any, example_input: Optional[np.ndarray] = None, rule: str = "auto"
) -> ModelPairing:
    """Every transferable tensor of ``torch_model`` with its counterpart in ``paddle_model``.

    ``rule``: ``name`` (the layer paths are the same on both sides),
    ``execution_order`` (the k-th layer with tensors to run in torch is the
    k-th in Paddle; layers that do not run on ``example_input`` pair by
    path), or ``auto``: names when they pair every layer with tensors on both
    sides with matching tensors, else execution order.  Tensors are keyed by
    state-dict key (layer path + local name), never by Paddle's
    ``param.name``, which ``paddle.utils.unique_name`` suffixes when a model
    is built twice in one process.  Raises :class:`TransferError` (or
    :class:`ArchitecturesDiffer`) naming what does not pair up.
    """
    if rule not in PAIRING_RULES:
        raise ValueError(f"rule must be one of {PAIRING_RULES}, not {rule!r}")
    if rule == "name":
        pairs, used = _pairs_by_name(torch_model, paddle_model, strict=True), "name"
    else:
        pairs = _pairs_by_name(torch_model, paddle_model, strict=False) if rule == "auto" else None
        used = "name"
        if pairs is None:
            pairs = pair_layers_by_execution_order(torch_model, paddle_model, example_input=example_input)
            used = "execution_order"
    torch_modules = dict(_torch_modules(torch_model))
    paddle_layers = dict(_paddle_layers(paddle_model))
    links: List[TensorLink] = []
    for pair in pairs:
        module, layer = torch_modules[pair.torch_path], paddle_layers[pair.paddle_path]
        matched, problem = _match_tensors(module, layer)
        if problem:
            raise TransferError(
                f"torch {pair.torch_path or '<model>'} ({pair.torch_type}) / paddle {pair.paddle_path or '<model>'} "
                f"({pair.paddle_type}): {problem}"
            )
        t_own, p_own = _torch_own_tensors(module), _paddle_own_tensors(layer)
        for t_local, p_local, transposed in matched:
            links.append(TensorLink(
                _join(pair.torch_path, t_local), _join(pair.paddle_path, p_local), transposed,
                tuple(t_own[t_local].shape), tuple(p_own[p_local].shape),
            ))
    return ModelPairing(used, tuple(pairs), tuple(links))


def _plan_for(spec: Any, torch_model: Any, paddle_model: Any) -> TransferPlan:
    torch_shapes = {name: tuple(value.shape) for name, value in torch_model.state_dict().items()}
    paddle_shapes = {name: tuple(value.shape) for name, value in paddle_model.state_dict().items()}
    pairing = pair_models(torch_model, paddle_model, rule=spec.transfer)
    name_map: Dict[str, str] = {link.torch_key: link.paddle_key for link in pairing.links}
    transposed = frozenset(link.paddle_key for link in pairing.links if link.transposed)

    # Linear weights are transposed because of what the layer is, on both sides.
    paddle_linear = frozenset(
        _join(path, "weight") for path, layer in _paddle_layers(paddle_model) if _paddle_kind(layer) == "linear"
    )
    if paddle_linear != transposed:
        raise TransferError(
            f"{spec.name}: torch Linear weights map to {_describe(transposed)} but Paddle's Linear weights are "
            f"{_describe(paddle_linear)}"
        )

    unmapped_torch = [k for k in torch_shapes if not _is_counter(k) and k not in name_map]
    unfilled_paddle = sorted(set(paddle_shapes) - set(name_map.values()))
    if unmapped_torch or unfilled_paddle or len(set(name_map.values())) != len(name_map):
        raise TransferError(
            f"{spec.name}: the {spec.transfer} rule does not cover both state dicts "
            f"(torch tensors without a target: {_describe(unmapped_torch) or 'none'}; "
            f"paddle tensors without a source: {_describe(unfilled_paddle) or 'none'})"
        )
    return TransferPlan(
        arch=spec.name,
        rule=spec.transfer,
        torch_shapes=torch_shapes,
        paddle_shapes=paddle_shapes,
        name_map=name_map,
        transposed=transposed,
        pairs=pairing.pairs,
    )


@functools.lru_cache(maxsize=None)
def transfer_plan(arch_name: str) -> TransferPlan:
    """The (cached) transfer plan of a registry architecture, built from fresh models of both frameworks."""
    from parity.model_zoo import arch

    spec = arch(arch_name)
    return _plan_for(spec, spec.new_torch_model(), spec.new_paddle_model())


# -- the conversion -------------------------------------------------------------------------


def _check_torch_state(plan: TransferPlan, torch_state: Mapping[str, Any]) -> None:
    expected = plan.torch_shapes
    missing = [k for k in expected if k not in torch_state and not _is_counter(k)]
    unexpected = [k for k in torch_state if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    wrong = [
        f"{k} {tuple(np.shape(torch_state[k]))} (expected {expected[k]})"
        for k in sorted(set(torch_state) & set(expected))
        if tuple(np.shape(torch_state[k])) != expected[k]
    ]
    if wrong:
        problems.append(f"wrong shapes: {_describe(wrong)}")
    if problems:
        raise TransferError(f"the state dict does not fit torchvision's {plan.arch}: " + "; ".join(problems))


def transfer_state_dict(torch_state: Mapping[str, Any], arch_name: str = "resnet50") -> Dict[str, np.ndarray]:
    """Rename, pair and transpose a torchvision state dict into ``paddle.vision``'s (no forward check).

    Every torch key and shape is checked against torchvision's model of
    ``arch_name`` (``num_batches_tracked`` may be absent) and every Paddle key
    and shape against paddle.vision's; a mismatch is a one-line
    :class:`TransferError` naming the keys.  Use :func:`convert_state_dict` for
    the verified conversion.
    """
    plan = transfer_plan(arch_name)
    _check_torch_state(plan, torch_state)
    converted: Dict[str, np.ndarray] = {}
    for t_name, p_name in plan.name_map.items():
        converted[p_name] = converted_value(torch_state[t_name], p_name in plan.transposed)
    wrong = [
        f"{k} {tuple(v.shape)} (expected {plan.paddle_shapes[k]})"
        for k, v in converted.items()
        if tuple(v.shape) != plan.paddle_shapes[k]
    ]
    if wrong:
        raise TransferError(f"the converted state dict does not fit paddle.vision's {plan.arch}: wrong shapes: {_describe(wrong)}")
    return converted


@dataclass(frozen=True)
class TransferCheck:
    """The forward verification of one transfer: logits max|Δ| against ``rtol * max|torch logits|``."""

    arch: str
    rule: str
    tensors: int
    input_shape: Tuple[int, ...]
    max_abs_diff: float
    torch_max_abs: float
    bound: float

    @property
    def relative(self) -> float:
        """max|Δ| / max|torch logits|."""
        return self.max_abs_diff / self.torch_max_abs if self.torch_max_abs else float("inf")

    def summary(self) -> str:
        """One line for a log or a report."""
        return (
            f"{self.arch}: logits agree, max|Δ| {self.max_abs_diff:.3g} <= bound {self.bound:.3g} "
            f"({self.relative:.2g} of max|torch| {self.torch_max_abs:.3g}; input {self.input_shape}, float32)"
        )


def verification_input(shape: Tuple[int, ...] = VERIFY_INPUT_SHAPE, dtype: str = "float32") -> np.ndarray:
    """The fixed input of the forward verification: seeded standard-normal pixels (any image-like scale)."""
    return np.random.default_rng(_VERIFY_SEED).standard_normal(shape).astype(dtype)


def _torch_input(model: Any, x: np.ndarray):
    """``x`` as a torch tensor on the device the model's tensors are on (a CUDA model gets a CUDA input)."""
    import torch

    tensor = torch.from_numpy(np.array(x, copy=True))
    for value in list(model.parameters()) + list(model.buffers()):
        return tensor.to(value.device)
    return tensor


class _ModelFailed(TransferError):
    """A model raised on the input it was given (a size it cannot run at, a wrong channel count...)."""


def _run_model(framework: str, call, x: np.ndarray):
    try:
        output = call()
    except TransferError:
        raise
    except Exception as error:  # the model's own error, whatever its type: said in one line
        first = (str(error).strip().splitlines() or [""])[0][:300]
        raise _ModelFailed(
            f"the {framework} model cannot run on the input {tuple(x.shape)} {x.dtype} "
            f"({type(error).__name__}: {first}); give an input size and dtype both models accept"
        ) from error
    tensor = _first_tensor(output)
    if tensor is None:
        raise TransferError(f"the {framework} model returned no tensor ({type(output).__name__}), so its output cannot be compared")
    return tensor


def _torch_forward(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return _run_model("torch", lambda: model(_torch_input(model, x)), x).detach().cpu().numpy()


def _paddle_forward(model: Any, x: np.ndarray) -> np.ndarray:
    import paddle

    with paddle.no_grad():
        return np.asarray(_run_model("paddle", lambda: model(paddle.to_tensor(np.ascontiguousarray(x))), x).numpy())


def check_logits(
    torch_model: Any,
    paddle_model: Any,
    x: np.ndarray,
    arch_name: str = "",
    rtol: float = VERIFY_RTOL,
    rule: str = "",
) -> TransferCheck:
    """Compare the two models' outputs on ``x``; on disagreement diagnose and raise.

    Raises :class:`ArchitecturesDiffer` when the diagnosis finds a layer that
    computes differently with equal inputs and weights (or a difference that
    arises between weighted layers), :class:`TransferRefused` otherwise; both
    messages name the first diverging layer on each side, its shapes, max|Δ|
    and bound.
    """
    name = arch_name or type(torch_model).__name__
    diff, scale, bound = forward_check(torch_model, paddle_model, x, rtol, name, "logits")
    return TransferCheck(name, rule, len(paddle_model.state_dict()), tuple(x.shape), diff, scale, bound)


def forward_check(
    torch_model: Any,
    paddle_model: Any,
    x: np.ndarray,
    rtol: float = VERIFY_RTOL,
    name: str = "",
    what: str = "outputs",
    where: str = "the verification input",
    reference: str = "torch",
) -> Tuple[float, float, float]:
    """Both models on ``x``: ``(max|Δ|, max|reference output|, bound)`` when they agree within ``rtol * max|reference|``.

    Otherwise the first layer pair that parts is diagnosed and raised:
    :class:`ArchitecturesDiffer` when a layer computes differently with equal
    inputs and weights (or the difference arises between weighted layers, or
    the layers do not pair up), :class:`TransferRefused` otherwise.  Every
    transfer of the project ends here (the zoo's conversion and
    :func:`parity.transfer.transfer_weights`).
    """
    t_out = _torch_forward(torch_model, x)
    p_out = _paddle_forward(paddle_model, x)
    expected, got = (t_out, p_out) if reference == "torch" else (p_out, t_out)
    if not np.all(np.isfinite(expected)):
        # NaN == NaN would "verify" anything; weights that yield non-finite outputs cannot be checked.
        raise TransferRefused(
            f"{name}: {reference}'s own {what} on {where} are not finite "
            f"({int(np.sum(~np.isfinite(expected)))} of {expected.size}), so the transfer cannot be verified"
        )
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    bound = rtol * scale
    same_shape = got.shape == expected.shape
    diff = float(np.max(np.abs(got.astype(np.float64) - expected))) if same_shape and got.size else (0.0 if same_shape else float("inf"))
    if same_shape and diff <= bound:
        return diff, scale, bound
    divergence = diagnose_first_divergence(torch_model, paddle_model, x, rtol=rtol)
    on = "" if where == "the verification input" else f" on {where}"
    head = (
        f"{name}: {what} differ{on} (max|Δ| {diff:.3g} > bound {bound:.3g} = {rtol:g} * max|{reference} {what}| {scale:.3g}; "
        f"shapes {tuple(t_out.shape)} vs {tuple(p_out.shape)})"
    )
    if divergence is None:
        raise TransferRefused(f"{head}; every paired layer agrees, so the difference is in the models' own forward code")
    if divergence.kind == "architecture":
        raise ArchitecturesDiffer(f"{head}; {divergence.message}", divergence)
    raise TransferRefused(f"{head}; transfer refused, {divergence.message}", divergence)


def verify_transfer(
    torch_state: Mapping[str, Any],
    paddle_state: Mapping[str, Any],
    arch_name: str = "resnet50",
    x: Optional[np.ndarray] = None,
    rtol: float = VERIFY_RTOL,
) -> TransferCheck:
    """Forward-verify a transfer: both models (float32, eval) on ``x`` (default :func:`verification_input`)."""
    from parity.model_build import build_paddle_model, build_torch_model

    x = verification_input() if x is None else np.asarray(x, dtype=np.float32)
    torch_model = build_torch_model(arch_name, torch_state, "float32")
    paddle_model = build_paddle_model(arch_name, paddle_state, "float32")
    return check_logits(torch_model, paddle_model, x, arch_name, rtol, transfer_plan(arch_name).rule)


def convert_state_dict(
    torch_state: Mapping[str, Any], arch_name: str = "resnet50", verify: bool = True
) -> Tuple[Dict[str, np.ndarray], Optional[TransferCheck]]:
    """The checked and (by default) forward-verified Paddle state dict of a torchvision one."""
    converted = transfer_state_dict(torch_state, arch_name)
    check = verify_transfer(torch_state, converted, arch_name) if verify else None
    return converted, check


# -- the first-divergence diagnosis ----------------------------------------------------------


@dataclass
class _Event:
    """One call of a leaf (or weighted) layer: its path, type, first input and first output tensor."""

    path: str
    layer: Any
    kind: str
    weighted: bool
    input: Optional[np.ndarray] = None
    output: Optional[np.ndarray] = None
    core: Optional[np.ndarray] = None  # a fused layer's own result, before its weight-free tail


@dataclass(frozen=True)
class Divergence:
    """Where two models first compute different things.

    ``kind`` is ``"weights"`` (the pair's inputs agree, its weights differ:
    a transfer problem) or ``"architecture"`` (inputs and weights agree but
    the layer computes another function; the difference arises between
    weighted layers, in code no weight reaches; or the weighted layers do not
    pair up).  ``torch_path`` / ``paddle_path`` are ``named_modules`` paths,
    which :func:`paddle_impl.layer_paths.resolve_layer` accepts.
    """

    kind: str
    torch_path: str
    paddle_path: str
    torch_type: str
    paddle_type: str
    torch_shape: Optional[Tuple[int, ...]]
    paddle_shape: Optional[Tuple[int, ...]]
    max_abs_diff: Optional[float]
    bound: Optional[float]
    detail: str = ""
    pair_index: Optional[int] = None

    @property
    def message(self) -> str:
        """One line: both layer paths and types, both output shapes, max|Δ| against the bound, and why."""
        where = (
            f"torch {self.torch_path or '<model>'} ({self.torch_type}) / "
            f"paddle {self.paddle_path or '<model>'} ({self.paddle_type})"
        )
        numbers = ""
        if self.torch_shape is not None or self.paddle_shape is not None:
            numbers = f": outputs {self.torch_shape} vs {self.paddle_shape}"
            if self.max_abs_diff is not None and self.bound is not None:
                numbers += f", max|Δ| {self.max_abs_diff:.3g} > bound {self.bound:.3g}"
        lead = "architectures differ at" if self.kind == "architecture" else "first layer whose outputs differ:"
        return f"{lead} {where}{numbers}" + (f"; {self.detail}" if self.detail else "")


def _first_tensor(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
        return None
    return value if hasattr(value, "shape") and hasattr(value, "numpy") else None


def _torch_array(value: Any) -> Optional[np.ndarray]:
    tensor = _first_tensor(value)
    return None if tensor is None else tensor.detach().cpu().numpy().copy()


def _paddle_array(value: Any) -> Optional[np.ndarray]:
    tensor = _first_tensor(value)
    return None if tensor is None else np.array(tensor.numpy(), copy=True)


def _fused_layers(named: Sequence[Tuple[str, Any]], own, children) -> set:
    """ids of layers that own tensors and whose sub-layers own none: a computation plus a tail
    (timm's ``BatchNormAct2d`` is a batch norm, then its ``drop`` and ``act`` children)."""
    fused = set()
    for _, layer in named:
        subs = [child for child in children(layer) if child is not None]
        if subs and own(layer) and not any(own(sub) for sub in _descendants(subs, children)):
            fused.add(id(layer))
    return fused


def _descendants(layers: Sequence[Any], children) -> List[Any]:
    found, stack = [], list(layers)
    while stack:
        layer = stack.pop()
        found.append(layer)
        stack.extend(child for child in children(layer) if child is not None)
    return found


def _record(model: Any, x: np.ndarray, framework: str) -> Tuple[List[_Event], np.ndarray]:
    """Run ``model`` once on ``x``; one event per call of each leaf or weighted layer, in finishing order.

    A fused layer (one that owns tensors and runs weight-free children, like
    timm's ``BatchNormAct2d``) is listed *before* the events of its children,
    in the order the computation runs, and its ``core`` is the input of its
    first child: the result of its own computation before the tail.
    """
    events: List[_Event] = []
    pending: Dict[int, List[np.ndarray]] = {}
    handles = []
    if framework == "torch":
        named, leaf, own, kind, to_array = _torch_modules(model), _is_leaf_torch, _torch_own_tensors, _torch_kind, _torch_array
        children = lambda layer: list(layer._modules.values())  # noqa: E731
    else:
        named, leaf, own, kind, to_array = _paddle_layers(model), _is_leaf_paddle, _paddle_own_tensors, _paddle_kind, _paddle_array
        children = lambda layer: list(layer._sub_layers.values())  # noqa: E731
    fused = _fused_layers(named, own, children)
    open_fused: List[Dict[str, Any]] = []

    # The input is copied before the layer runs: an in-place ReLU overwrites it.
    def pre_hook(layer, inputs):
        array = to_array(inputs)
        pending.setdefault(id(layer), []).append(array)
        if open_fused and open_fused[-1]["core"] is None and open_fused[-1]["id"] != id(layer):
            open_fused[-1]["core"] = array
        if id(layer) in fused:
            open_fused.append({"id": id(layer), "start": len(events), "core": None})

    def make_post_hook(path: str, weighted: bool):
        def post_hook(layer, inputs, output):
            stack = pending.get(id(layer)) or [None]
            event = _Event(path, layer, kind(layer), weighted, stack.pop(), to_array(output))
            if id(layer) in fused and open_fused and open_fused[-1]["id"] == id(layer):
                frame = open_fused.pop()
                # A tail that runs first (act, then the layer's own computation) leaves the
                # input as "core": then there is no core to compare, only the output.
                same_as_input = (frame["core"] is not None and event.input is not None
                                 and frame["core"].shape == event.input.shape and np.array_equal(frame["core"], event.input))
                event.core = None if same_as_input else frame["core"]
                events.insert(frame["start"], event)
            else:
                events.append(event)

        return post_hook

    try:
        for path, layer in named:
            weighted = bool(own(layer))
            if not path or not (weighted or leaf(layer)):
                continue
            if framework == "torch":
                handles.append(layer.register_forward_pre_hook(pre_hook))
                handles.append(layer.register_forward_hook(make_post_hook(path, weighted)))
            else:
                handles.append(layer.register_forward_pre_hook(pre_hook))
                handles.append(layer.register_forward_post_hook(make_post_hook(path, weighted)))
        output = _torch_forward(model, x) if framework == "torch" else _paddle_forward(model, x)
    finally:
        for handle in handles:
            handle.remove()
    return events, output


def _fused_activation(layer: Any) -> Optional[str]:
    """Paddle's legacy ``BatchNorm(act=...)`` applies an activation inside the layer; torch's never does."""
    act = getattr(layer, "_act", None)
    nn = sys.modules["paddle"].nn
    return act if isinstance(layer, nn.BatchNorm) and isinstance(act, str) and act else None


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-a))


# Paddle's legacy BatchNorm(act=NAME) calls the kernel of that name on its output.
_NUMPY_ACTIVATIONS = {
    "relu": lambda a: np.maximum(a, 0),
    "relu6": lambda a: np.clip(a, 0, 6),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "swish": lambda a: a * _sigmoid(a),
    "silu": lambda a: a * _sigmoid(a),
    "hard_swish": lambda a: a * np.clip(a + 3, 0, 6) / 6,
    "hardswish": lambda a: a * np.clip(a + 3, 0, 6) / 6,
}


def _compare(expected: Optional[np.ndarray], got: Optional[np.ndarray], rtol: float, atol: float):
    """(agree, max|Δ| or None when shapes differ, bound)."""
    if expected is None or got is None:
        return expected is None and got is None, None, None
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    bound = rtol * scale + atol
    if expected.shape != got.shape:
        got = _in_layout_of(expected, got)
        if got is None:
            return False, None, bound
    if not expected.size:
        return True, 0.0, bound
    diff = float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))
    return bool(diff <= bound), diff, bound


def _in_layout_of(expected: np.ndarray, got: np.ndarray) -> Optional[np.ndarray]:
    """``got`` in ``expected``'s layout when the two hold the same tensor laid out differently, else None.

    Hubs lay the same activations out differently between layers: timm's Swin
    keeps (B, H, W, C) where PaddleClas's keeps (B, H*W, C), and a channels-last
    map is a channels-first one transposed.  The values are compared in one
    layout; tensors of different sizes or batch never match.
    """
    if got.size != expected.size or got.ndim < 2 or expected.ndim < 2 or got.shape[0] != expected.shape[0]:
        return None
    candidates = [got]
    if got.ndim >= 3:
        candidates.append(np.moveaxis(got, 1, -1))  # channels first -> channels last
        candidates.append(np.moveaxis(got, -1, 1))  # channels last -> channels first
    for candidate in candidates:
        if candidate.shape == expected.shape:
            return candidate
        flat = candidate.reshape(candidate.shape[0], -1, candidate.shape[-1]) if candidate.ndim >= 3 else None
        if flat is not None and flat.size == expected.size:
            try:
                reshaped = flat.reshape(expected.shape)
            except ValueError:
                continue
            if expected.ndim >= 2 and reshaped.shape[-1] == candidate.shape[-1]:
                return reshaped
    return None


def _is_wide(array: Optional[np.ndarray]) -> bool:
    return array is not None and array.dtype == np.float64


def _shape(array: Optional[np.ndarray]) -> Optional[Tuple[int, ...]]:
    return None if array is None else tuple(array.shape)


def _norm_pair(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(int(v) if isinstance(v, (int, np.integer)) else v for v in value)
    if isinstance(value, (int, np.integer)):
        return (int(value), int(value))
    return value


# The hyper-parameters that decide what a layer computes: a common name -> the attribute
# each framework keeps it in (the first one a layer has).  Paddle's convs keep `_stride`,
# its pools `stride`.
_CONFIG_ATTRIBUTES = {
    "stride": (("stride",), ("_stride", "stride")),
    "padding": (("padding",), ("_padding", "padding")),
    "dilation": (("dilation",), ("_dilation", "dilation")),
    "groups": (("groups",), ("_groups",)),
    "eps": (("eps",), ("_epsilon", "epsilon")),
    "kernel_size": (("kernel_size",), ("ksize", "_kernel_size", "kernel_size")),
    "ceil_mode": (("ceil_mode",), ("ceil_mode",)),
    "p": (("p",), ("p",)),
    "output_size": (("output_size",), ("_output_size",)),
    "negative_slope": (("negative_slope",), ("_negative_slope",)),
    "approximate": (("approximate",), ("_approximate",)),
    "normalized_shape": (("normalized_shape",), ("_normalized_shape",)),
    "num_groups": (("num_groups",), ("_num_groups",)),
}


def _config(layer: Any, framework: str, wide: bool = False) -> Dict[str, Any]:
    """The hyper-parameters that decide what a layer computes, named alike for both frameworks.

    ``wide``: the models run in float64, where torch uses eps as given.
    """
    side = 0 if framework == "torch" else 1
    config: Dict[str, Any] = {}
    for common, attributes in _CONFIG_ATTRIBUTES.items():
        attribute = next((a for a in attributes[side] if hasattr(layer, a)), None)
        if attribute is None:
            continue
        value = getattr(layer, attribute)
        if callable(value):
            continue
        if common in ("stride", "padding", "dilation", "kernel_size", "normalized_shape"):
            value = value.upper() if isinstance(value, str) else _norm_pair(value)
        elif common == "eps":
            # Paddle's batch-norm kernels take epsilon as a float32 attribute: in float64
            # runs that alone moves outputs by ~eps * 2.4e-8 / (var + eps) relative.
            value = float(value) if framework == "torch" and wide else float(np.float32(value))
        config[common] = value
    config.update(_semantic_config(layer, framework))
    return config


def _semantic_config(layer: Any, framework: str) -> Dict[str, Any]:
    """Settings the two frameworks spell differently, in one common spelling (torch's where it has one)."""
    config: Dict[str, Any] = {}
    if framework == "paddle":
        if getattr(layer, "mode", None) == "downscale_in_infer":
            # This Dropout scales its input by (1 - p) at inference; torch's is the identity there.
            config["inference_scale"] = 1 - float(layer.p)
        elif isinstance(layer, sys.modules["paddle"].nn.Dropout):
            config["inference_scale"] = 1.0
        if hasattr(layer, "exclusive") and isinstance(getattr(layer, "exclusive"), bool):
            # Paddle's AvgPool2D(exclusive=True) divides by the unpadded count: torch's count_include_pad=False.
            config["count_include_pad"] = not layer.exclusive
        if _fused_activation(layer):
            config["fused_activation"] = _fused_activation(layer)
        if _paddle_kind(layer) in ("conv", "linear", "conv_transpose"):
            config["bias"] = "present" if getattr(layer, "bias", None) is not None else "absent"
    else:
        nn = sys.modules["torch"].nn
        if isinstance(layer, nn.Dropout):
            config["inference_scale"] = 1.0
        if isinstance(getattr(layer, "count_include_pad", None), bool):
            config["count_include_pad"] = layer.count_include_pad
        if _torch_kind(layer) in ("conv", "linear", "conv_transpose"):
            config["bias"] = "present" if getattr(layer, "bias", None) is not None else "absent"
    slope = _hard_sigmoid_slope(layer, framework)
    if slope is not None:
        config["hard_sigmoid"] = slope
    return config


def _hard_sigmoid_slope(layer: Any, framework: str) -> Optional[str]:
    """'slope S, offset O' of a hard-sigmoid layer, to 10 digits.

    torch's ``nn.Hardsigmoid`` is relu6(x + 3) / 6; ``paddle.nn.Hardsigmoid``
    passes no slope, so ``F.hardsigmoid``'s default applies: the literal
    0.1666667, which only float64 tells apart from 1/6.
    """
    if framework == "torch":
        if isinstance(layer, sys.modules["torch"].nn.Hardsigmoid):
            return _slope_words(1.0 / 6.0, 0.5)
        return None
    paddle = sys.modules["paddle"]
    if isinstance(layer, paddle.nn.Hardsigmoid):
        defaults = inspect.signature(paddle.nn.functional.hardsigmoid).parameters
        return _slope_words(getattr(layer, "slope", defaults["slope"].default),
                            getattr(layer, "offset", defaults["offset"].default))
    slope, offset = getattr(layer, "slope", None), getattr(layer, "offset", None)
    if isinstance(slope, (int, float)) and isinstance(offset, (int, float)) and "sigmoid" in type(layer).__name__.lower():
        return _slope_words(slope, offset)
    return None


def _slope_words(slope: float, offset: float) -> str:
    return f"slope {float(slope):.10g}, offset {float(offset):.10g}"


def _config_difference(torch_layer: Any, paddle_layer: Any, wide: bool = False) -> str:
    t, p = _config(torch_layer, "torch", wide), _config(paddle_layer, "paddle", wide)
    differing = [f"{key} {_number(t[key])} vs {_number(p[key])}" for key in sorted(set(t) & set(p)) if t[key] != p[key]]
    return ", ".join(differing)


def _weights_difference(torch_layer: Any, paddle_layer: Any, kind: str) -> str:
    """'' when the pair's tensors agree; else the first differing tensor with its max|Δ|."""
    t_own, p_own = _torch_own_tensors(torch_layer), _paddle_own_tensors(paddle_layer)
    # The names are matched from the table, not through rename_batch_norm: the diagnosis
    # must not share a mistake with the transfer it checks.
    for t_name in t_own:
        if _is_counter(t_name):
            continue
        p_name = _PADDLE_LOCAL_NAMES.get(t_name, t_name)
        if p_name not in p_own:
            return f"paddle has no tensor {p_name}"
        a = t_own[t_name].detach().cpu().numpy().astype(np.float64)
        if kind == "linear" and t_name == "weight":
            a = a.T
        b = np.asarray(p_own[p_name].numpy(), dtype=np.float64)
        if a.shape != b.shape:
            return f"{t_name} {a.shape} vs {p_name} {b.shape}"
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        if not diff <= _WEIGHTS_RTOL * float(np.max(np.abs(a)) if a.size else 0.0):
            return f"their weights differ: torch {t_name} vs paddle {p_name} max|Δ| {diff:.3g}"
    return ""


def _paired_outputs(te: _Event, pe: _Event) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """The two outputs that must agree for a weighted pair, fused layers taken apart.

    A fused layer's own computation (``core``) is compared, not its tail: a
    timm ``BatchNormAct2d`` against a Paddle ``BatchNorm2D`` whose activation is
    a separate layer.  Paddle's legacy ``BatchNorm(act=...)`` fuses its
    activation into the kernel (no core to read): it is applied to torch's
    side instead.
    """
    t_out = te.core if te.core is not None else te.output
    p_out = pe.core if pe.core is not None else pe.output
    act = _fused_activation(pe.layer)
    if act and t_out is not None:
        if act in _NUMPY_ACTIVATIONS:
            return _NUMPY_ACTIVATIONS[act](t_out.astype(np.float64)).astype(t_out.dtype), pe.output
        return te.output, pe.output
    return t_out, p_out


def _tail_description(event: _Event, framework: str) -> str:
    """What a fused layer applies after its own computation: its children's types, or Paddle's act=."""
    if framework == "paddle" and _fused_activation(event.layer):
        return f"act={_fused_activation(event.layer)!r}"
    if event.core is None:
        return "nothing"
    children = event.layer._modules.values() if framework == "torch" else event.layer._sub_layers.values()
    names = [type(child).__name__ for child in children if child is not None and type(child).__name__ != "Identity"]
    return " + ".join(names) or "nothing"


def _segment_divergence(
    t_events: Sequence[_Event],
    p_events: Sequence[_Event],
    t_before: str,
    p_before: str,
    t_after: str,
    p_after: str,
    rtol: float,
    atol: float,
    models: Optional[Tuple[Any, Any]] = None,
) -> Divergence:
    """The divergence lies between two weighted layers: name the first weight-free layer pair that causes it.

    When no layer pair is to blame, the blocks that hold both weighted layers
    (``models``: the torch and the Paddle model) are compared by their
    settings (a Swin block's ``shift_size``, a window size...).
    """
    # Weight-free layers pair by kind in order (a torch ReLU module may be a functional
    # call in Paddle, so either side may have layers the other lacks).
    start = 0
    pairs: List[Tuple[_Event, _Event]] = []
    for t_event in t_events:
        for j in range(start, len(p_events)):
            if _same_kind(p_events[j].kind, t_event.kind):
                pairs.append((t_event, p_events[j]))
                start = j + 1
                break
    for t_event, p_event in pairs:
        agree_out, diff, bound = _compare(t_event.output, p_event.output, rtol, atol)
        if agree_out:
            continue
        agree_in, _, _ = _compare(t_event.input, p_event.input, rtol, atol)
        padded = None if agree_in else _zero_padding_between(t_event.input, p_event.input, rtol, atol)
        if agree_in or padded:
            why = _config_difference(t_event.layer, p_event.layer, _is_wide(t_event.output))
            lead = f"{padded}; the layer has no weights" if padded else "inputs agree and the layer has no weights"
            return Divergence(
                "architecture", t_event.path, p_event.path, type(t_event.layer).__name__, type(p_event.layer).__name__,
                _shape(t_event.output), _shape(p_event.output), diff, bound, f"{lead}: {why}" if why else lead,
            )
        break
    paired = {id(event) for pair in pairs for event in pair}
    for p_event in p_events:
        scale = _config(p_event.layer, "paddle").get("inference_scale")
        if id(p_event) not in paired and scale is not None and scale != 1.0:
            # A Paddle Dropout that scales at inference, where torch has no module (timm calls
            # F.dropout, the identity in eval): the values change here and nowhere else.
            changed, diff, bound = _compare(p_event.input, p_event.output, rtol, atol)
            if not changed:
                return Divergence(
                    "architecture", "<no layer: identity at inference>", p_event.path, "-", type(p_event.layer).__name__,
                    _shape(p_event.input), _shape(p_event.output), diff, bound,
                    f"a Paddle-only layer that changes its input: inference_scale 1.0 vs {_number(scale)} "
                    f"(Dropout mode {getattr(p_event.layer, 'mode', '?')!r}; torch's dropout is the identity at inference)",
                )
    lone_t = [f"{e.path} ({type(e.layer).__name__})" for e in t_events if id(e) not in paired]
    lone_p = [f"{e.path} ({type(e.layer).__name__})" for e in p_events if id(e) not in paired]
    lone = ""
    if lone_t or lone_p:
        lone = f"; layers on one side only: torch {_describe(lone_t, 4) or 'none'}, paddle {_describe(lone_p, 4) or 'none'}"
    if models is not None:
        lone += _enclosing_block_difference(models, (t_before, t_after), (p_before, p_after))
    return Divergence(
        "architecture",
        f"between {t_before or '<input>'} and {t_after}",
        f"between {p_before or '<input>'} and {p_after}",
        "weight-free code", "weight-free code", None, None, None, None,
        "every weighted layer before agrees; the difference arises in operations without weights "
        "(functional calls, or a block wired differently: a sum or product one side makes and the other does not)"
        + lone,
    )


def _zero_padding_between(t_in: Optional[np.ndarray], p_in: Optional[np.ndarray], rtol: float, atol: float,
                          largest: int = 8) -> Optional[str]:
    """When one input is the other zero-padded (a functional ``F.pad`` before the layer on one side only),
    say so with the padding (left, right, top, bottom); else None."""
    if t_in is None or p_in is None or t_in.ndim < 3 or t_in.ndim != p_in.ndim or t_in.shape[:-2] != p_in.shape[:-2]:
        return None
    bigger, smaller, side = (t_in, p_in, "torch") if t_in.shape[-1] >= p_in.shape[-1] else (p_in, t_in, "paddle")
    dh, dw = bigger.shape[-2] - smaller.shape[-2], bigger.shape[-1] - smaller.shape[-1]
    if dh < 0 or dw < 0 or dh + dw == 0 or dh > largest or dw > largest:
        return None
    h, w = smaller.shape[-2:]
    for top in range(dh + 1):
        for left in range(dw + 1):
            inner = bigger[..., top:top + h, left:left + w]
            if not _compare(smaller, inner, rtol, atol)[0]:
                continue
            border = bigger.astype(np.float64).copy()
            border[..., top:top + h, left:left + w] = 0
            if np.any(border):
                continue
            other = "paddle" if side == "torch" else "torch"
            return (f"{side}'s input is {other}'s zero-padded by (left, right, top, bottom) "
                    f"{(left, dw - left, top, dh - top)} before this layer (a functional pad on the {side} side only)")
    return None


def _enclosing_path(model: Any, paths: Sequence[str], framework: str) -> Optional[str]:
    """The deepest layer path that contains every one of ``paths`` (layers, not the model itself)."""
    named = dict(_torch_modules(model) if framework == "torch" else _paddle_layers(model))
    real = [path for path in paths if path in named and path]
    if len(real) < 2:
        return None
    common = real[0]
    while common and not all(path == common or path.startswith(common + ".") for path in real):
        common = common.rpartition(".")[0]
    while common and common not in named:
        common = common.rpartition(".")[0]
    return common or None


def _block_settings(layer: Any) -> Dict[str, Any]:
    """A block's plain settings (numbers, flags, strings, tuples of numbers), by name without leading underscores."""
    settings = {}
    for name, value in vars(layer).items():
        key = name.lstrip("_")
        if key in ("training", "full_name", "helper", "dtype", "name_scope") or key.startswith(("forward_", "loaded_", "init_")):
            continue
        if isinstance(value, bool) or isinstance(value, str):
            settings[key] = value
        elif isinstance(value, (int, float, np.integer, np.floating)):
            settings[key] = _norm_pair(value) if isinstance(value, (int, np.integer)) else float(value)
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float, np.integer)) for v in value):
            settings[key] = _norm_pair(value)
    return settings


def _enclosing_block_difference(models: Tuple[Any, Any], t_paths: Sequence[str], p_paths: Sequence[str]) -> str:
    """'; the blocks around it differ: ...' naming the settings both enclosing blocks have with other values."""
    torch_model, paddle_model = models
    t_path = _enclosing_path(torch_model, t_paths, "torch")
    p_path = _enclosing_path(paddle_model, p_paths, "paddle")
    if not t_path or not p_path:
        return ""
    t_block = dict(_torch_modules(torch_model))[t_path]
    p_block = dict(_paddle_layers(paddle_model))[p_path]
    t_set, p_set = _block_settings(t_block), _block_settings(p_block)
    differing = [f"{key} {_number(t_set[key])} vs {_number(p_set[key])}" for key in sorted(set(t_set) & set(p_set))
                 if t_set[key] != p_set[key]]
    if not differing:
        return ""
    return (f"; the blocks around it differ: torch {t_path} ({type(t_block).__name__}) / paddle {p_path} "
            f"({type(p_block).__name__}): " + ", ".join(differing))


# Weight-free layers the two frameworks name differently but compute alike.
_KIND_ALIASES = {"swish": "silu", "hard_swish": "hardswish", "hard_sigmoid": "hardsigmoid", "gelu_tanh": "gelu"}


def _same_kind(a: str, b: str) -> bool:
    """Same layer kind, allowing for a prefix or suffix one hub adds (timm's MaxPool2dSame, a custom PaddleHardsigmoid)."""
    a, b = _KIND_ALIASES.get(a, a), _KIND_ALIASES.get(b, b)
    if a == b:
        return True
    short, long = sorted((a, b), key=len)
    return len(short) >= 4 and (long.startswith(short) or long.endswith(short))


def _number(value: Any) -> Any:
    """A float at 6 significant digits (float32 eps 1e-05 prints as 1e-05, not 9.999999747378752e-06)."""
    return float(f"{value:.6g}") if isinstance(value, float) else value


def _as_numpy(value: Any) -> np.ndarray:
    """A numpy copy of an input given as numpy, a torch tensor or a Paddle tensor."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy().copy()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        return np.array(value.numpy(), copy=True)
    return np.asarray(value)


def diagnose_first_divergence(
    torch_model: Any,
    paddle_model: Any,
    input: np.ndarray,
    rtol: float = VERIFY_RTOL,
    atol: float = 0.0,
) -> Optional[Divergence]:
    """Run both models once on ``input`` with forward hooks on every layer and name the first pair that differs.

    Layers that own weights (conv, batch norm, linear...) are paired in
    execution order, checked for the same kind and parameter shapes, and
    compared in order: input, output (shape and values within
    ``rtol * max|torch output| + atol``), weights.  The first pair whose
    output differs is classified:

    * inputs agree, weights differ -> ``kind="weights"`` (a transfer problem);
    * inputs and weights agree     -> ``kind="architecture"`` (the layer's
      hyper-parameters differ; those that do are listed);
    * inputs differ                -> the difference arose in weight-free
      layers since the previous pair; those are paired by kind and output
      shape to name the culprit (e.g. a Dropout that scales at inference),
      else the span between the two weighted layers is named.

    Paddle's legacy ``BatchNorm(act='relu')`` fuses the activation that torch
    applies in a separate layer, so its output is compared with
    ``relu(torch output)``.  ``input`` is a numpy array or a tensor of
    either framework; both models must be in its dtype and in eval mode.
    Returns None when every pair and the final outputs agree.  One forward
    pass per model; every leaf layer's input and output are kept (as numpy)
    until the comparison ends.
    """
    x = _as_numpy(input)
    t_events, t_out = _record(torch_model, x, "torch")
    p_events, p_out = _record(paddle_model, x, "paddle")

    def first_weighted(events: List[_Event]) -> List[int]:
        """Indices of each weighted layer's first call: the pairing uses first calls only."""
        seen, indices = set(), []
        for i, event in enumerate(events):
            if event.weighted and id(event.layer) not in seen:
                seen.add(id(event.layer))
                indices.append(i)
        return indices

    t_idx, p_idx = first_weighted(t_events), first_weighted(p_events)
    t_prev = p_prev = -1
    for k, (ti, pi) in enumerate(zip(t_idx, p_idx)):
        te, pe = t_events[ti], p_events[pi]
        problem = _pair_problem(k, te.path, te.layer, pe.path, pe.layer)
        if problem:
            return Divergence(
                "architecture", te.path, pe.path, type(te.layer).__name__, type(pe.layer).__name__,
                _shape(te.output), _shape(pe.output), None, None, f"the weighted layers do not pair up ({problem})", k,
            )
        agree_in, _, _ = _compare(te.input, pe.input, rtol, atol)
        padded = None if agree_in else _zero_padding_between(te.input, pe.input, rtol, atol)
        if padded:
            # One side pads functionally before the layer, the other inside it (padding="SAME"):
            # the same input; the layer's output decides.
            t_out, p_out = _paired_outputs(te, pe)
            agree_out, diff, bound = _compare(t_out, p_out, rtol, atol)
            if not agree_out:
                why = _config_difference(te.layer, pe.layer, _is_wide(te.output))
                return Divergence(
                    "architecture", te.path, pe.path, type(te.layer).__name__, type(pe.layer).__name__,
                    _shape(te.output), _shape(pe.output), diff, bound,
                    f"{padded}" + (f"; {why}" if why else ""), k,
                )
            agree_in = True
        if not agree_in:
            before_t = t_events[t_prev].path if t_prev >= 0 else ""
            before_p = p_events[p_prev].path if p_prev >= 0 else ""
            return _segment_divergence(
                t_events[t_prev + 1 : ti], p_events[p_prev + 1 : pi], before_t, before_p, te.path, pe.path, rtol, atol,
                (torch_model, paddle_model),
            )
        t_out, p_out = _paired_outputs(te, pe)
        agree_out, diff, bound = _compare(t_out, p_out, rtol, atol)
        if agree_out and te.core is not None and (pe.core is not None or _fused_activation(pe.layer)):
            # Both layers end in a fused tail (activation, dropout): the tails must agree too.
            agree_tail, diff, bound = _compare(te.output, pe.output, rtol, atol)
            if not agree_tail:
                return Divergence(
                    "architecture", te.path, pe.path, type(te.layer).__name__, type(pe.layer).__name__,
                    _shape(te.output), _shape(pe.output), diff, bound,
                    f"their own computations agree, their fused tails differ: torch applies {_tail_description(te, 'torch')}, "
                    f"paddle {_tail_description(pe, 'paddle')}", k,
                )
        if not agree_out:
            weights = _weights_difference(te.layer, pe.layer, te.kind)
            if weights:
                return Divergence(
                    "weights", te.path, pe.path, type(te.layer).__name__, type(pe.layer).__name__,
                    _shape(te.output), _shape(pe.output), diff, bound, f"their inputs agree and {weights}", k,
                )
            why = _config_difference(te.layer, pe.layer, _is_wide(te.output))
            return Divergence(
                "architecture", te.path, pe.path, type(te.layer).__name__, type(pe.layer).__name__,
                _shape(te.output), _shape(pe.output), diff, bound,
                "inputs and weights agree"
                + (f"; {why}" if why else "; the hyper-parameters match, so the two kernels compute differently"),
                k,
            )
        t_prev, p_prev = ti, pi
    if len(t_idx) != len(p_idx):
        k = min(len(t_idx), len(p_idx))
        extra = t_events[t_idx[k]] if len(t_idx) > k else p_events[p_idx[k]]
        side = "torch" if len(t_idx) > k else "paddle"
        return Divergence(
            "architecture", extra.path if side == "torch" else "", extra.path if side == "paddle" else "",
            type(extra.layer).__name__ if side == "torch" else "-", type(extra.layer).__name__ if side == "paddle" else "-",
            None, None, None, None,
            f"torch runs {len(t_idx)} layers with weights, paddle {len(p_idx)}; the first {k} pairs agree", k,
        )
    agree, diff, bound = _compare(t_out, p_out, rtol, atol)
    if agree:
        return None
    before_t = t_events[t_prev].path if t_prev >= 0 else ""
    before_p = p_events[p_prev].path if p_prev >= 0 else ""
    segment = _segment_divergence(
        t_events[t_prev + 1 :], p_events[p_prev + 1 :], before_t, before_p, "<output>", "<output>", rtol, atol,
        (torch_model, paddle_model),
    )
    if segment.max_abs_diff is None:
        return Divergence(
            "architecture", segment.torch_path, segment.paddle_path, segment.torch_type, segment.paddle_type,
            _shape(t_out), _shape(p_out), diff, bound, segment.detail,
        )
    return segment
