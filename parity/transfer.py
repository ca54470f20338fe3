"""``parity.transfer_weights``: move the weights of one model into its twin in the other framework, and prove it.

    from parity.transfer import transfer_weights, TransferError

    pairing = transfer_weights(torch_model, paddle_model, x)            # torch -> Paddle
    pairing = transfer_weights(torch_model, paddle_model, x, direction="paddle_to_torch")
    pairing.save("model.map.tsv")                                       # a reviewable map

Every parameter and floating-point buffer of the source is paired with one
of the target (:func:`parity.weight_transfer.pair_models`): by layer path
where the two models name their layers alike, else by the order the layers
that own tensors run in on ``example_input`` (PaDiff's rule), each pair
checked for kind and shapes.  Batch-norm statistics pair however each side
stores them (``running_mean`` / ``_mean``, ``running_var`` / ``_variance``,
as buffers or, in Paddle's legacy ``BatchNorm``, as parameters);
``num_batches_tracked`` and other integer buffers are not weights and are
left alone.  Linear weights are transposed because both layers are Linear,
never because of a name.

The target's own tensor objects are overwritten in place (Paddle:
``set_value``; torch: ``copy_`` under ``no_grad``), so references a user holds
stay valid.  Then both models run on every example input (eval mode, the
models' float dtype) and the outputs must agree within
``VERIFY_RTOL * max|source output|``; otherwise the target's previous values
are put back and a :class:`TransferError` is raised whose message names the
first layer pair whose outputs part (path on each side, shapes, max|Δ|) and,
where the two layers say it, the attribute that differs with both values.
"""
from __future__ import annotations

import contextlib
import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, NamedTuple, Sequence, Tuple, Union

import numpy as np

from parity.weight_transfer import (
    PAIRING_RULES,
    VERIFY_RTOL,
    ArchitecturesDiffer,
    Divergence,
    ModelPairing,
    TransferError,
    TransferRefused,
    converted_value,
    forward_check,
    pair_models,
)

__all__ = [
    "transfer_weights",
    "save_paddle_weights",
    "TransferMap",
    "MapEntry",
    "OutputCheck",
    "TransferError",
    "TransferRefused",
    "ArchitecturesDiffer",
    "Divergence",
    "DIRECTIONS",
    "VERIFY_RTOL",
]

DIRECTIONS = ("torch_to_paddle", "paddle_to_torch")
_MAP_HEADER = ("source", "target", "transposed", "source_shape", "target_shape")
_MAP_MAGIC = "# parity transfer map v1"


class MapEntry(NamedTuple):
    """One tensor of the transfer: source state-dict key, target state-dict key, whether its values are transposed."""

    source: str
    target: str
    transposed: bool


@dataclass(frozen=True)
class OutputCheck:
    """The forward check on one example input: outputs' max|Δ| against ``rtol * max|source output|``."""

    input_shape: Tuple[int, ...]
    max_abs_diff: float
    reference_max_abs: float
    bound: float

    @property
    def relative(self) -> float:
        return self.max_abs_diff / self.reference_max_abs if self.reference_max_abs else float("inf")


def _shape_text(shape: Tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape) if shape else "scalar"


def _shape_from_text(text: str) -> Tuple[int, ...]:
    return () if text in ("", "scalar") else tuple(int(n) for n in text.split("x"))


@dataclass(frozen=True)
class TransferMap:
    """What :func:`transfer_weights` did: which source tensor went to which target tensor.

    Iterating gives ``MapEntry(source, target, transposed)`` triples.
    ``rule`` is how the layers were paired (``name`` or
    ``execution_order``); ``checks`` the forward check of each example input
    (empty when loaded from a file).  :meth:`save` writes a tab-separated map
    with a header, :meth:`load` reads it back, and :meth:`convert` applies the
    map to a source state dict of numpy arrays.
    """

    direction: str
    rule: str
    entries: Tuple[MapEntry, ...]
    source_shapes: Mapping[str, Tuple[int, ...]] = field(default_factory=dict)
    target_shapes: Mapping[str, Tuple[int, ...]] = field(default_factory=dict)
    checks: Tuple[OutputCheck, ...] = ()

    def __iter__(self) -> Iterator[MapEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def transposed(self) -> List[str]:
        """The target keys whose values were transposed (Linear weights)."""
        return [entry.target for entry in self.entries if entry.transposed]

    def convert(self, source_state: Mapping[str, Any]) -> Dict[str, np.ndarray]:
        """The target-keyed state dict of ``source_state`` (numpy arrays or tensors), by this map.

        Every source key of the map must be present with its recorded shape;
        a mismatch is a :class:`TransferError` naming the keys.
        """
        missing = [e.source for e in self.entries if e.source not in source_state]
        if missing:
            raise TransferError(f"the state dict lacks {len(missing)} tensor(s) of the map: " + ", ".join(sorted(missing)[:6]))
        converted: Dict[str, np.ndarray] = {}
        wrong = []
        for entry in self.entries:
            value = _to_numpy(source_state[entry.source])
            expected = self.source_shapes.get(entry.source)
            if expected is not None and tuple(value.shape) != tuple(expected):
                wrong.append(f"{entry.source} {tuple(value.shape)} (expected {tuple(expected)})")
                continue
            converted[entry.target] = converted_value(value, entry.transposed)
        if wrong:
            raise TransferError("wrong shapes: " + ", ".join(wrong[:6]))
        return converted

    def save(self, path: Union[str, Path]) -> Path:
        """Write the map as tab-separated text: a comment line, a header, one line per tensor."""
        from paddle_impl.atomic import write_text

        buffer = io.StringIO()
        buffer.write(f"{_MAP_MAGIC} direction={self.direction} rule={self.rule}\n")
        writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
        writer.writerow(_MAP_HEADER)
        for entry in self.entries:
            writer.writerow([
                entry.source, entry.target, "yes" if entry.transposed else "no",
                _shape_text(self.source_shapes.get(entry.source, ())), _shape_text(self.target_shapes.get(entry.target, ())),
            ])
        path = Path(path)
        write_text(path, buffer.getvalue())
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "TransferMap":
        """Read a map written by :meth:`save`; a file of another format is a :class:`TransferError`."""
        text = Path(path).read_text(encoding="utf-8")
        first, _, rest = text.partition("\n")
        if not first.startswith(_MAP_MAGIC):
            raise TransferError(f"{path} is not a parity transfer map (its first line is not {_MAP_MAGIC!r})")
        settings = dict(item.split("=", 1) for item in first[len(_MAP_MAGIC):].split() if "=" in item)
        rows = list(csv.reader(io.StringIO(rest), delimiter="\t"))
        if not rows or tuple(rows[0]) != _MAP_HEADER:
            raise TransferError(f"{path}: the header is not {chr(9).join(_MAP_HEADER)!r}")
        entries, source_shapes, target_shapes = [], {}, {}
        for number, row in enumerate(rows[1:], start=3):
            if len(row) != len(_MAP_HEADER) or row[2] not in ("yes", "no"):
                raise TransferError(f"{path}:{number}: expected {len(_MAP_HEADER)} tab-separated fields, got {row!r}")
            entries.append(MapEntry(row[0], row[1], row[2] == "yes"))
            source_shapes[row[0]] = _shape_from_text(row[3])
            target_shapes[row[1]] = _shape_from_text(row[4])
        return cls(settings.get("direction", ""), settings.get("rule", ""), tuple(entries), source_shapes, target_shapes)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):
        return np.asarray(value.numpy())
    return np.asarray(value)


def _example_inputs(example_input: Any) -> List[np.ndarray]:
    """One (N, C, ...) array, or a list/tuple of them (sizes may differ): a list of numpy arrays."""
    items = list(example_input) if isinstance(example_input, (list, tuple)) else [example_input]
    if not items:
        raise ValueError("example_input is an empty list: give at least one (N, C, H, W) array")
    arrays = []
    for index, item in enumerate(items):
        array = _to_numpy(item)
        if array.ndim < 2 or not np.issubdtype(array.dtype, np.number):
            raise ValueError(
                f"example_input{'' if len(items) == 1 else f'[{index}]'} must be a numeric (N, C, H, W) array, "
                f"got {array.dtype} of shape {array.shape}"
            )
        arrays.append(array)
    return arrays


def _float_dtype(torch_model: Any) -> np.dtype:
    """The numpy dtype of the torch model's first floating-point tensor (float32 if it has none)."""
    for tensor in list(torch_model.parameters()) + list(torch_model.buffers()):
        if tensor.is_floating_point():
            return np.dtype(str(tensor.dtype).replace("torch.", ""))
    return np.dtype(np.float32)


@contextlib.contextmanager
def _eval_mode(torch_model: Any, paddle_model: Any):
    """Both models in eval mode for the duration; every sub-layer's training flag restored afterwards."""
    flags = [(m, m.training) for m in torch_model.modules()] + [
        (layer, layer.training) for layer in paddle_model.sublayers(include_self=True)
    ]
    torch_model.eval()
    paddle_model.eval()
    try:
        yield
    finally:
        for layer, training in flags:
            layer.training = training


def _tensors(model: Any, framework: str) -> Dict[str, Any]:
    """Every transferable tensor object of ``model`` by state-dict key (layer path + local name)."""
    from parity import weight_transfer as wt

    named = wt._torch_modules(model) if framework == "torch" else wt._paddle_layers(model)
    own = wt._torch_own_tensors if framework == "torch" else wt._paddle_own_tensors
    found: Dict[str, Any] = {}
    for path, layer in named:
        for local, tensor in own(layer).items():
            found.setdefault(wt._join(path, local), tensor)
    return found


def _fill(tensor: Any, value: np.ndarray, framework: str) -> None:
    """Overwrite ``tensor``'s values in place, in its own dtype, keeping the object (and any reference to it)."""
    if framework == "torch":
        import torch

        with torch.no_grad():
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(tensor.dtype))
    else:
        target_dtype = str(tensor.dtype).split(".")[-1]
        tensor.set_value(np.ascontiguousarray(value).astype(target_dtype, copy=False))


def _model_names(torch_model: Any, paddle_model: Any) -> str:
    return f"torch {type(torch_model).__name__} / paddle {type(paddle_model).__name__}"


def _check_outputs(
    torch_model: Any, paddle_model: Any, inputs: Sequence[np.ndarray], direction: str, rtol: float
) -> List[OutputCheck]:
    """Both models on every input (the zoo's forward check); the first disagreement is diagnosed and raised."""
    checks = []
    reference = "torch" if direction == "torch_to_paddle" else "paddle"
    name = f"{_model_names(torch_model, paddle_model)} ({direction})"
    for index, x in enumerate(inputs):
        where = f"example input {tuple(x.shape)}" if len(inputs) == 1 else f"example input #{index} {tuple(x.shape)}"
        diff, scale, bound = forward_check(torch_model, paddle_model, x, rtol, name, "outputs", where, reference)
        checks.append(OutputCheck(tuple(x.shape), diff, scale, bound))
    return checks


def transfer_weights(
    torch_model: Any,
    paddle_model: Any,
    example_input: Union[np.ndarray, Sequence[np.ndarray]],
    direction: str = "torch_to_paddle",
    *,
    rule: str = "auto",
    rtol: float = VERIFY_RTOL,
) -> TransferMap:
    """Copy every weight of one model into the other (same architecture, other framework), then verify.

    ``direction``: ``"torch_to_paddle"`` (the default) fills ``paddle_model``
    from ``torch_model``; ``"paddle_to_torch"`` the reverse.
    ``example_input``: one (N, C, H, W) numpy array (or tensor), or a list of
    them of different sizes; the first one pairs the layers (when their names
    differ), and every one is run through both models (eval mode, cast to the
    torch model's float dtype) and checked.  ``rule``: ``auto`` (names where
    they pair every layer, else execution order), ``name`` or
    ``execution_order``.

    Returns the :class:`TransferMap`.  Raises a :class:`TransferError`:
    :class:`ArchitecturesDiffer` when the models compute different
    functions (the message names the layer on each side and what differs),
    :class:`TransferRefused` when the weights did not arrive intact, and the
    base class when the tensors do not pair up.  On any of these the target
    keeps the values it had.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    if rule not in PAIRING_RULES:
        raise ValueError(f"rule must be one of {PAIRING_RULES}, not {rule!r}")
    dtype = _float_dtype(torch_model)
    inputs = [np.ascontiguousarray(x, dtype=dtype) for x in _example_inputs(example_input)]
    with _eval_mode(torch_model, paddle_model):
        pairing: ModelPairing = pair_models(torch_model, paddle_model, inputs[0], rule)
        torch_tensors, paddle_tensors = _tensors(torch_model, "torch"), _tensors(paddle_model, "paddle")
        _check_coverage(pairing, torch_tensors, paddle_tensors)
        to_paddle = direction == "torch_to_paddle"
        sources, targets = (torch_tensors, paddle_tensors) if to_paddle else (paddle_tensors, torch_tensors)
        target_framework = "paddle" if to_paddle else "torch"
        entries, previous = [], {}
        for link in pairing.links:
            source_key, target_key = (link.torch_key, link.paddle_key) if to_paddle else (link.paddle_key, link.torch_key)
            entries.append(MapEntry(source_key, target_key, link.transposed))
            previous[target_key] = np.array(_to_numpy(targets[target_key]), copy=True)
        try:
            for entry in entries:
                value = converted_value(_to_numpy(sources[entry.source]), entry.transposed)
                _fill(targets[entry.target], value, target_framework)
            checks = _check_outputs(torch_model, paddle_model, inputs, direction, rtol)
        except BaseException:
            for key, value in previous.items():
                _fill(targets[key], value, target_framework)
            raise
    shapes = {link.torch_key: link.torch_shape for link in pairing.links}
    shapes_p = {link.paddle_key: link.paddle_shape for link in pairing.links}
    source_shapes, target_shapes = (shapes, shapes_p) if to_paddle else (shapes_p, shapes)
    return TransferMap(direction, pairing.rule, tuple(entries), source_shapes, target_shapes, tuple(checks))


def _check_coverage(pairing: ModelPairing, torch_tensors: Mapping[str, Any], paddle_tensors: Mapping[str, Any]) -> None:
    """Every transferable tensor of both models is in exactly one link."""
    from parity.weight_transfer import _describe

    linked_t = [link.torch_key for link in pairing.links]
    linked_p = [link.paddle_key for link in pairing.links]
    unlinked_t = sorted(set(torch_tensors) - set(linked_t))
    unlinked_p = sorted(set(paddle_tensors) - set(linked_p))
    twice = sorted({k for k in linked_p if linked_p.count(k) > 1} | {k for k in linked_t if linked_t.count(k) > 1})
    if unlinked_t or unlinked_p or twice:
        raise TransferError(
            f"the {pairing.rule} pairing does not cover both models (torch tensors without a counterpart: "
            f"{_describe(unlinked_t) or 'none'}; paddle tensors without a counterpart: {_describe(unlinked_p) or 'none'}"
            + (f"; paired twice: {_describe(twice)}" if twice else "") + ")"
        )


def save_paddle_weights(paddle_model: Any, path: Union[str, Path], transfer_map: TransferMap) -> Tuple[Path, Path]:
    """Write ``paddle_model``'s state dict as ``path`` (a ``.pdparams``) and the map beside it (``.map.tsv``).

    Both are written atomically; returns ``(pdparams path, map path)``.
    """
    import paddle

    from paddle_impl.atomic import atomic_path

    path = Path(path)
    if path.suffix != ".pdparams":
        raise ValueError(f"the Paddle weights file must end in .pdparams, not {path.name!r}")
    state = {key: np.array(value.numpy(), copy=True) for key, value in paddle_model.state_dict().items()}
    with atomic_path(path) as tmp:
        paddle.save(state, str(tmp))
    map_path = transfer_map.save(path.with_suffix(".map.tsv"))
    return path, map_path
