"""A gradient method's forward with everything before the target layer in the compiled predictor.

Port-only (upstream has no twin).  A gradient CAM reads the gradient of the
score with respect to the target layer's output, and the port already starts
the graph there (``ActivationsAndGradients`` re-roots that output when nothing
before it needs a gradient).  Everything before the target layer is therefore
a plain forward whose values are all the method uses, and dynamic-graph Paddle
runs it at about 2.5-3x torch's time on the CPU (ResNet50 at 224x224: 0.22 s
against torch's 0.079 s and the oneDNN predictor's 0.053 s, measured).

``make_prefix_engine`` traces one dynamic-graph forward to learn which
sub-layer calls finish before the first target layer starts, exports the
model to a predictor that returns those calls' outputs and the target
layer's (and only them: the program ends there), and checks the result
against the dynamic graph.  Each call then
runs the predictor, and the model's own forward in the dynamic graph with each
of those sub-layer calls answered from the predictor's outputs instead of
computed: the "glue" in the enclosing forwards (a residual addition, a
reshape) still runs, and everything from the target layer on (the part the
gradient flows through) runs as before.  An answered call whose value is only
handed on to the next answered call (a block's output entering the next
block) is not exported, so oneDNN keeps its fusions; a NaN stands in for it,
and the check when built falls back to exporting every answered call if
anything reads one.  The values before the target layer
are the predictor's (oneDNN: ~1e-6 relative from the dynamic graph, as for the
forward-only methods); every gradient op is the dynamic graph's.

Only float32 on the CPU, only when the input itself needs no gradient
(FullGrad's does), and only for a model whose traced calls the check
reproduces; anything else runs the dynamic graph as before.  Built on the
second call for an input shape (``cached_prefix_engine``): a single call
pays no set-up.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle

from paddle_impl.inference_engine import _hook_free_copy, close_to_dynamic_graph, engine_applies, predictor_for

__all__ = ["PrefixEngine", "make_prefix_engine", "cached_prefix_engine", "built_prefix_engines"]


class _Call:
    __slots__ = ("path", "occurrence", "start", "end", "parent", "children", "output", "input_ids")

    def __init__(self, path: str, occurrence: int, start: int, parent: Optional[int], input_ids=()) -> None:
        self.path, self.occurrence, self.start, self.parent = path, occurrence, start, parent
        self.input_ids = input_ids  # id() of each tensor argument: which earlier outputs this call was handed
        self.end: Optional[int] = None
        self.children: List[int] = []
        self.output = None


def _trace_calls(
    model: paddle.nn.Layer, example: paddle.Tensor, target_paths: Sequence[str]
) -> Tuple[List[_Call], np.ndarray]:
    """Every sub-layer call of one dynamic-graph forward, in start order, with the enclosing call; and the outputs.

    A call keeps its output only while it may be answered: it ended before
    the first target layer started and no call around it has ended yet (the
    first target layer's own call keeps its output too).
    """
    path_of = {id(layer): path for path, layer in model.named_sublayers()}
    calls: List[_Call] = []
    stack: List[int] = []
    clock = [0]
    occurrences: Dict[str, int] = {}
    target_started = [False]

    def tick() -> int:
        clock[0] += 1
        return clock[0]

    def before(layer, inputs):
        path = path_of[id(layer)]
        occurrence = occurrences.get(path, 0)
        occurrences[path] = occurrence + 1
        parent = stack[-1] if stack else None
        calls.append(_Call(path, occurrence, tick(), parent, tuple(id(t) for t in inputs if isinstance(t, paddle.Tensor))))
        if parent is not None:
            calls[parent].children.append(len(calls) - 1)
        is_first_target = path in target_paths and not target_started[0]
        target_started[0] = target_started[0] or path in target_paths
        stack.append(-(len(calls) - 1) - 1 if is_first_target else len(calls) - 1)

    def after(layer, inputs, output):
        index = stack.pop()
        keep = index < 0  # the first target layer's call
        call = calls[-index - 1 if keep else index]
        call.end = tick()
        if keep or not target_started[0]:
            call.output = output
            for child in call.children:  # inside a call that ends before the target: never outermost
                calls[child].output = None

    handles = []
    for _, layer in model.named_sublayers():
        handles.append(layer.register_forward_pre_hook(before))
        handles.append(layer.register_forward_post_hook(after))
    try:
        with paddle.no_grad():
            outputs = model(example)
    finally:
        for handle in handles:
            handle.remove()
    return calls, outputs.numpy()


def _answered_calls(calls: List[_Call], target_paths: Sequence[str]) -> Optional[List[int]]:
    """Indices of the calls to answer from the predictor: the outermost calls that end before the first target
    layer starts, then that target layer's call itself; None when no target layer ran."""
    target_calls = [i for i, call in enumerate(calls) if call.path in target_paths]
    if not target_calls:
        return None
    first = target_calls[0]
    start = calls[first].start
    outermost = [i for i, call in enumerate(calls)
                 if call.end < start and (call.parent is None or calls[call.parent].end > start)]
    return outermost + [first]


# a tensor while tracing dynamic-graph Paddle, a Value while the export traces the program
_TENSOR_TYPES = (paddle.Tensor, paddle.pir.Value)


def _handed_on(calls: List[_Call], answered: List[int]) -> List[bool]:
    """For each answered call: whether its output (one tensor) is handed straight to the next answered call.

    The forward then passes it only to a call whose answer is ready, which
    ignores it, unless the glue reads it too (a residual addition, a shape);
    the engine's check finds that out (the value it then reads is NaN).
    """
    handed = []
    for position, index in enumerate(answered[:-1]):
        output = calls[index].output
        following = calls[answered[position + 1]]
        handed.append(isinstance(output, _TENSOR_TYPES) and id(output) in following.input_ids)
    return handed + [False]  # the first target layer's output is what the method reads


def _flat_tensors(output) -> Optional[List]:
    if isinstance(output, _TENSOR_TYPES):
        return [output]
    if isinstance(output, (tuple, list)) and output and all(isinstance(o, _TENSOR_TYPES) for o in output):
        return list(output)
    return None


class _OutputsOfCalls(paddle.nn.Layer):
    """The outputs of chosen calls (sub-layer path, occurrence) of ``model``'s forward, in that order.

    Not the model's own outputs: the exported program then ends at the first
    target layer, and the export leaves out everything after it and its
    weights (vgg16's classifier, 124 M of its 138 M parameters), which the
    predictor would otherwise hold beside the model's.
    """

    def __init__(self, model: paddle.nn.Layer, wanted: Sequence[Tuple[str, int]]) -> None:
        super().__init__()
        self.model = model
        self.wanted = list(wanted)
        self._slot = {key: i for i, key in enumerate(self.wanted)}
        self._seen: Dict[str, int] = {}
        self._captured: Dict[int, list] = {}
        layers = dict(model.named_sublayers())
        for path in dict.fromkeys(path for path, _ in self.wanted):
            layers[path].register_forward_post_hook(self._capturer(path))

    def _capturer(self, path: str):
        def capture(layer, inputs, output):
            occurrence = self._seen.get(path, 0)
            self._seen[path] = occurrence + 1
            slot = self._slot.get((path, occurrence))
            if slot is not None:
                self._captured[slot] = _flat_tensors(output)
        return capture

    def forward(self, x):
        self._seen.clear()
        self._captured.clear()
        self.model(x)
        flat = []
        for slot in range(len(self.wanted)):
            flat.extend(self._captured[slot])
        return flat


class PrefixEngine:
    """Runs a model's forward with the calls before its first target layer answered by a predictor."""

    def __init__(self, predictor, arities: List[int], plans: Dict[str, List[Optional[int]]],
                 skipped: Optional[List[bool]] = None) -> None:
        self._predictor = predictor
        # answered calls whose value nothing reads (see _handed_on): a NaN stands in, the predictor leaves them out
        self._skipped = skipped or [False] * len(arities)
        self._placeholder = paddle.to_tensor(np.full([1], np.nan, dtype=np.float32))
        self._input = predictor.get_input_handle(predictor.get_input_names()[0])
        self._outputs = [predictor.get_output_handle(name) for name in predictor.get_output_names()]
        self._arities = arities  # tensors per answered call (1, or the length of a tuple output)
        # per sub-layer path: for each of its calls in a run, the answered call it is (an index) or None (compute it)
        self._plans = plans

    def answers(self, batch: paddle.Tensor) -> List:
        self._input.reshape(list(batch.shape))
        self._input.copy_from_cpu(np.ascontiguousarray(batch.numpy()))
        self._predictor.run()
        values = [paddle.to_tensor(handle.copy_to_cpu()) for handle in self._outputs]
        answers, position = [], 0
        for arity, skipped in zip(self._arities, self._skipped):
            if skipped:
                answers.append(self._placeholder)
                continue
            chunk = values[position:position + arity]
            answers.append(chunk[0] if arity == 1 else tuple(chunk))
            position += arity
        return answers

    def __call__(self, model: paddle.nn.Layer, batch: paddle.Tensor, run: Callable[[paddle.Tensor], paddle.Tensor]):
        """``run(batch)`` (the caller's forward of ``model``) with the answered calls replaced by their values."""
        answers = self.answers(batch)
        layers = dict(model.named_sublayers())
        saved = []
        try:
            for path, plan in self._plans.items():
                layer = layers[path]
                saved.append((layer, layer.__dict__.get("forward")))
                layer.forward = _answering_forward(layer.forward, [None if i is None else answers[i] for i in plan])
            return run(batch)
        finally:
            for layer, forward in reversed(saved):
                if forward is None:
                    layer.__dict__.pop("forward", None)
                else:
                    layer.forward = forward


def _answering_forward(compute: Callable, answers: List):
    """A forward that returns the n-th prepared answer on its n-th call, or computes where there is none."""
    count = [0]

    def forward(*args, **kwargs):
        n = count[0]
        count[0] += 1
        if n < len(answers) and answers[n] is not None:
            return answers[n]
        return compute(*args, **kwargs)

    return forward


def _plans(calls: List[_Call], answered: List[int]) -> Dict[str, List[Optional[int]]]:
    """For each sub-layer with an answered call: its calls in a run where the answered ones skip their insides."""
    answer_of = {index: number for number, index in enumerate(answered)}

    def skipped(index: int) -> bool:  # inside an answered call: not called at all
        parent = calls[index].parent
        while parent is not None:
            if parent in answer_of:
                return True
            parent = calls[parent].parent
        return False

    paths = {calls[index].path for index in answered}
    return {path: [answer_of.get(i) for i, call in enumerate(calls) if call.path == path and not skipped(i)]
            for path in paths}


def make_prefix_engine(
    model: paddle.nn.Layer, target_layers: Sequence[paddle.nn.Layer], example: paddle.Tensor,
    threads: Optional[int] = None, only_for_a_heavy_rest: bool = False,
) -> Optional[PrefixEngine]:
    """A :class:`PrefixEngine` for inputs shaped like ``example``, or None where it does not apply (see the module).

    ``only_for_a_heavy_rest``: None also where most of the model's weights are
    in what runs before the first target layer (see ``_rest_is_heavy``).
    """
    if not engine_applies(example):
        return None
    path_of = {id(layer): path for path, layer in model.named_sublayers()}
    if any(id(layer) not in path_of for layer in target_layers):
        return None
    target_paths = [path_of[id(layer)] for layer in target_layers]
    traced = _hook_free_copy(model)
    try:
        calls, eager_outputs = _trace_calls(traced, example, target_paths)
    except Exception:
        return None
    answered = _answered_calls(calls, target_paths)
    if not answered or any(_flat_tensors(calls[i].output) is None for i in answered):
        return None
    if only_for_a_heavy_rest and not _rest_is_heavy(traced, calls, answered):
        return None
    arities = [len(_flat_tensors(calls[i].output)) for i in answered]
    eager_target = calls[answered[-1]].output.numpy()
    first_target = calls[answered[-1]].path
    handed_on = _handed_on(calls, answered)
    # Exporting only what the forward reads keeps oneDNN's fusions (a convolution, its batch norm and ReLU are
    # one kernel unless each output is fetched) and the copies out; where the glue reads a value after all,
    # the check fails and every answered call is exported.
    for skipped in ([handed_on, [False] * len(answered)] if any(handed_on) else [handed_on]):
        exported = [i for i, skip in zip(answered, skipped) if not skip]
        wrapper = _OutputsOfCalls(_hook_free_copy(model), [(calls[i].path, calls[i].occurrence) for i in exported])
        wrapper.eval()
        predictor = predictor_for(wrapper, example, threads)
        if predictor is None:
            return None
        if len(predictor.get_output_names()) != sum(a for a, skip in zip(arities, skipped) if not skip):
            continue
        engine = PrefixEngine(predictor, arities, _plans(calls, answered), skipped)
        if _reproduces(engine, traced, example, eager_outputs, eager_target, first_target):
            return engine
    return None


def _rest_is_heavy(model: paddle.nn.Layer, calls: List[_Call], answered: List[int]) -> bool:
    """Whether most of ``model``'s weights are outside the answered calls' layers (a VGG's head: 124 M of 138 M).

    For a forward-only method the choice is between this engine, which runs
    the rest of the forward in the dynamic graph, and a predictor of the
    whole network, which holds a copy of every weight beside the model's.
    The whole network's is faster where the rest is light (ResNet50 FEM,
    batch 8: 0.46-0.52 s a call against 0.54-0.61 s, measured); this one holds
    less where the rest is heavy (vgg16 EigenCAM: 1,449 MiB peak against
    2,097, upstream's 1,850; 0.21 s a call against 0.20 s).
    """
    layers = dict(model.named_sublayers())
    before = {id(p): int(np.prod(p.shape)) for i in answered for p in layers[calls[i].path].parameters()}
    total = sum(int(np.prod(p.shape)) for p in model.parameters())
    return total - sum(before.values()) > total / 2


def _reproduces(engine: PrefixEngine, traced: paddle.nn.Layer, example, eager_outputs, eager_target, target_path) -> bool:
    """The engine's forward of the traced copy against the dynamic graph's: outputs and the first target's output."""
    seen = []
    handle = dict(traced.named_sublayers())[target_path].register_forward_post_hook(
        lambda layer, inputs, output: seen.append(output))
    try:
        with paddle.no_grad():
            outputs = engine(traced, example, traced)
    except Exception:
        return False
    finally:
        handle.remove()
    if not seen:
        return False
    return close_to_dynamic_graph(outputs.numpy(), eager_outputs) and close_to_dynamic_graph(seen[0].numpy(), eager_target)


class _CallsSoFar(int):
    """An input shape's calls that ran without the engine (the cache's value until the engine is tried)."""


def cached_prefix_engine(
    cache: Dict[tuple, object], model: paddle.nn.Layer, target_layers, input_tensor: paddle.Tensor,
    threads: Optional[int] = None, build_on_call: int = 2, only_for_a_heavy_rest: bool = False,
) -> Optional[PrefixEngine]:
    """``make_prefix_engine`` once per (input shape without the batch, thread count), on call ``build_on_call``.

    Building costs an export and a predictor (about 2.7 s for ResNet50,
    measured), several times a gradient method's call: by default a CAM
    called once for an image (a notebook, a script) runs the dynamic graph
    and pays nothing; one called again for the same shape builds the engine
    then and gains from there on.  A failure is cached as None.
    """
    if not engine_applies(input_tensor):
        return None
    key = (tuple(input_tensor.shape[1:]), threads)
    state = cache.get(key, _CallsSoFar(0))
    if isinstance(state, _CallsSoFar):
        if state + 1 < build_on_call:
            cache[key] = _CallsSoFar(state + 1)
            return None
        cache[key] = make_prefix_engine(model, target_layers, input_tensor, threads, only_for_a_heavy_rest)
    return cache[key]  # type: ignore[return-value]


def built_prefix_engines(cache: Dict[tuple, object]) -> Dict[tuple, Optional[PrefixEngine]]:
    """The shapes whose engine was tried, and the engine (None: the model runs the dynamic graph)."""
    return {key: value for key, value in cache.items() if not isinstance(value, _CallsSoFar)}  # type: ignore[misc]
