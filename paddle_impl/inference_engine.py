"""Run a Layer's forward fast: a Paddle Inference predictor (static graph, oneDNN) built from it.

ScoreCAM spends nearly all its time in forward passes of the whole network
(one per channel of the target layer) whose only use is a score, and the
forward-only methods (EigenCAM, FEM, KPCA-CAM, DFF) spend much of theirs in
one forward.  Paddle's dynamic-graph CPU kernels run a ResNet50 forward about
2.5x slower than torch's oneDNN; the same network exported to a static graph
and run by Paddle Inference with oneDNN and its conv/batch-norm/ReLU fusion
passes runs about 4x faster than dygraph.  The difference in float32 results
is the size of the difference between any two convolution libraries (~2e-6
relative in the logits, measured on the seeded ResNet50), and the parity runs
compare every CAM computed this way with upstream's.

``make_batch_scorer`` maps a batch to the outputs; ``make_forward_engine`` to
the outputs and the outputs of chosen sub-layers (the CAM's target layers),
captured by hooks while the program is traced.  Only float32 on the CPU is
accelerated (oneDNN has no float64 kernels); anything else, or a model that
cannot be exported, falls back to the model itself, so the engine never
changes what can be computed.  Building a predictor (exporting the program,
creating it) is a one-time cost of a few seconds per input shape.
"""
from __future__ import annotations

import copy
import os
import tempfile
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle

__all__ = [
    "make_batch_scorer",
    "make_forward_engine",
    "cached_forward_engine",
    "engine_applies",
    "default_engine_threads",
]


_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_post_hooks",
    "_forward_pre_hooks_with_kwargs_flag",
    "_forward_post_hooks_with_kwargs_flag",
    "_forward_post_hooks_always_called",
)


def _hook_free_copy(model: paddle.nn.Layer) -> paddle.nn.Layer:
    """A copy of ``model`` in eval mode without any forward hook, sharing ``model``'s parameters and buffers.

    The engines trace and export the copy (``to_static`` converts a Layer in
    place, and the prefix engine swaps sub-layer forwards while it checks), so
    the caller's model stays as it was.  Only the layer structure is copied:
    the weights are the model's own tensors, so the copy costs no memory for
    them (vgg16: 528 MB that a deep copy held at the engine's build, measured
    in the process's peak).  The hooks are set aside while copying: copying
    them would copy whatever they are bound to (a CAM object and the tensors
    it holds).
    """
    saved = []
    for layer in model.sublayers(include_self=True):
        hooks = {name: getattr(layer, name) for name in _HOOK_DICTS if hasattr(layer, name)}
        saved.append((layer, hooks))
        for name, value in hooks.items():
            setattr(layer, name, type(value)())
    shared = {id(tensor): tensor for tensor in list(model.parameters()) + list(model.buffers())}
    try:
        copied = copy.deepcopy(model, memo=shared)
    finally:
        for layer, hooks in saved:
            for name, value in hooks.items():
                setattr(layer, name, value)
    copied.eval()
    return copied


def _create_predictor(layer: paddle.nn.Layer, spec, threads: int):
    """``layer`` exported to a static program and loaded by a oneDNN Paddle Inference predictor."""
    from paddle import inference

    with tempfile.TemporaryDirectory(prefix="paddle-gradcam-engine-") as directory:
        prefix = os.path.join(directory, "model")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            static = paddle.jit.to_static(layer, input_spec=spec, full_graph=True)
            paddle.jit.save(static, prefix)
        program = next(
            os.path.join(directory, name) for name in sorted(os.listdir(directory)) if name.endswith((".json", ".pdmodel"))
        )
        config = inference.Config(program, prefix + ".pdiparams")
        config.disable_gpu()
        config.enable_mkldnn()
        config.set_cpu_math_library_num_threads(threads)
        config.switch_ir_optim(True)
        config.disable_glog_info()
        # The predictor loads the files while it is created; the directory can go afterwards.
        return inference.create_predictor(config)


def predictor_for(layer: paddle.nn.Layer, example: paddle.Tensor, threads: Optional[int]):
    """``layer`` (a hook-free copy: exporting converts it) as a oneDNN predictor taking batches shaped like
    ``example``; None when the export or the predictor fails (best-effort: the caller runs the model itself)."""
    spec = [paddle.static.InputSpec([None] + [int(s) for s in example.shape[1:]], "float32", "x")]
    try:
        return _create_predictor(layer, spec, threads or default_engine_threads())
    except Exception:
        return None


def engine_applies(example: paddle.Tensor) -> bool:
    """The engine accelerates float32 on the CPU only (oneDNN has no float64 kernels)."""
    return example.dtype == paddle.float32 and paddle.device.get_device().startswith("cpu")


def default_engine_threads() -> int:
    """The thread count the caller's environment asks for (``OMP_NUM_THREADS``), else every core."""
    requested = os.environ.get("OMP_NUM_THREADS", "")
    return int(requested) if requested.isdigit() and int(requested) > 0 else (os.cpu_count() or 1)


def make_batch_scorer(
    model: paddle.nn.Layer, example: paddle.Tensor, enabled: bool = True, threads: Optional[int] = None
) -> Callable[[paddle.Tensor], paddle.Tensor]:
    """A function mapping an input batch shaped like ``example`` to the model's outputs.

    Uses the oneDNN predictor when ``enabled`` and the input is float32 on the
    CPU and the export succeeds; otherwise calls ``model`` directly.
    """
    def direct(batch: paddle.Tensor) -> paddle.Tensor:
        return model(batch)

    if not enabled or not engine_applies(example):
        return direct
    predictor = predictor_for(_hook_free_copy(model), example, threads)
    if predictor is None:
        return direct
    input_handle = predictor.get_input_handle(predictor.get_input_names()[0])
    output_handle = predictor.get_output_handle(predictor.get_output_names()[0])

    def engine(batch: paddle.Tensor) -> paddle.Tensor:
        input_handle.reshape(list(batch.shape))
        input_handle.copy_from_cpu(np.ascontiguousarray(batch.numpy()))
        predictor.run()
        return paddle.to_tensor(output_handle.copy_to_cpu())

    return engine


class _OutputsWithActivations(paddle.nn.Layer):
    """``model``'s outputs followed by the outputs of ``captured_layers``, in the order they ran.

    The capturing hooks run while the program is traced, so the static
    program returns the very tensors the port's ``ActivationsAndGradients``
    hooks would have stored, in the same order.
    """

    def __init__(self, model: paddle.nn.Layer, captured_layers: Sequence[paddle.nn.Layer]) -> None:
        super().__init__()
        self.model = model
        self.captured: List[paddle.Tensor] = []
        for layer in captured_layers:
            layer.register_forward_post_hook(self._capture)

    def _capture(self, layer, inputs, output):
        self.captured.append(output)

    def forward(self, x):
        self.captured.clear()
        outputs = self.model(x)
        return [outputs] + list(self.captured)


ForwardEngine = Callable[[paddle.Tensor], Tuple[paddle.Tensor, List[paddle.Tensor]]]


def make_forward_engine(
    model: paddle.nn.Layer, target_layers: Sequence[paddle.nn.Layer], example: paddle.Tensor, threads: Optional[int] = None
) -> Optional[ForwardEngine]:
    """A function mapping a batch shaped like ``example`` to ``(outputs, activations of target_layers)``.

    For the methods that read only the forward pass (no gradients): the
    whole forward runs in a oneDNN predictor instead of dynamic-graph
    Paddle.  Returns None (the caller runs the model itself) for anything
    but float32 on the CPU, for a target layer that is not a sub-layer of
    ``model``, or a model the export cannot take.
    """
    if not engine_applies(example):
        return None
    path_of = {id(layer): path for path, layer in model.named_sublayers(include_self=True)}
    if any(id(layer) not in path_of for layer in target_layers):
        return None
    copied = _hook_free_copy(model)
    copied_layers = dict(copied.named_sublayers(include_self=True))
    wrapper = _OutputsWithActivations(copied, [copied_layers[path_of[id(layer)]] for layer in target_layers])
    wrapper.eval()
    predictor = predictor_for(wrapper, example, threads)
    if predictor is None:
        return None
    input_handle = predictor.get_input_handle(predictor.get_input_names()[0])
    output_handles = [predictor.get_output_handle(name) for name in predictor.get_output_names()]
    if len(output_handles) < 1 + len(target_layers):
        return None

    def engine(batch: paddle.Tensor) -> Tuple[paddle.Tensor, List[paddle.Tensor]]:
        input_handle.reshape(list(batch.shape))
        input_handle.copy_from_cpu(np.ascontiguousarray(batch.numpy()))
        predictor.run()
        results = [paddle.to_tensor(handle.copy_to_cpu()) for handle in output_handles]
        return results[0], results[1:]

    return engine if _agrees_with_dynamic_graph(engine, model, target_layers, example) else None


def cached_forward_engine(
    cache: Dict[tuple, Optional[ForwardEngine]],
    model: paddle.nn.Layer,
    target_layers,
    input_tensor: paddle.Tensor,
    threads: Optional[int] = None,
) -> Optional[ForwardEngine]:
    """``make_forward_engine`` once per (input shape, thread count), kept in ``cache``; None where it does not apply.

    A failed export or self-check is cached too (as None), so the dynamic graph
    runs from then on without trying again for that shape.
    """
    if not engine_applies(input_tensor):
        return None
    key = (tuple(input_tensor.shape[1:]), threads)
    if key not in cache:
        cache[key] = make_forward_engine(model, target_layers, input_tensor, threads=threads)
    return cache[key]


# A compiled forward is used only when it reproduces the dynamic graph on the first input to this
# relative bound; library-to-library float32 differences are ~1e-6 of the values' scale.
ENGINE_CHECK_RELATIVE_BOUND = 1e-4


def _agrees_with_dynamic_graph(engine: ForwardEngine, model: paddle.nn.Layer, target_layers, example) -> bool:
    """One dynamic-graph forward on ``example`` against the predictor: outputs and every target activation.

    Some exported programs compute something else than the Layer (PaddleClas's
    ConvNeXt-tiny gave other logits, another argmax class: measured); the
    check costs one forward at set-up and keeps such a model on the dynamic graph.
    """
    captured: List[np.ndarray] = []
    handles = [layer.register_forward_post_hook(lambda layer, inputs, output: captured.append(output.numpy()))
               for layer in target_layers]
    try:
        with paddle.no_grad():
            eager_outputs = model(example).numpy()
    except Exception:
        return False
    finally:
        for handle in handles:
            handle.remove()
    outputs, activations = engine(example)
    compiled = [outputs.numpy()] + [a.numpy() for a in activations]
    eager = [eager_outputs] + captured
    return len(compiled) == len(eager) and all(map(close_to_dynamic_graph, compiled, eager))


def close_to_dynamic_graph(ours: np.ndarray, reference: np.ndarray) -> bool:
    """A compiled result against the dynamic graph's: same shape, finite, within ``ENGINE_CHECK_RELATIVE_BOUND``
    of the reference's largest magnitude, element by element."""
    if ours.shape != reference.shape or not np.all(np.isfinite(ours)):
        return False
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    return float(np.abs(ours - reference).max(initial=0.0)) <= ENGINE_CHECK_RELATIVE_BOUND * scale
