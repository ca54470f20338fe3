"""A gradient method's forward with the part before its first target layer in the predictor (paddle_impl.prefix_engine).

What it must keep: the CAM of the dynamic graph (to the engines' float32
bound), every target layer's gradient, the calls of a sub-layer used both
before and after the target layer, and the dynamic graph wherever it does not
apply (float64, an input that needs a gradient, ``inference_engine=False``, an
export that computes something else).
"""
import numpy as np
import paddle
import pytest

from paddle_impl import FullGrad, GradCAM, LayerCAM, ShapleyCAM
from paddle_impl.inference_engine import _hook_free_copy
from paddle_impl.prefix_engine import _OutputsOfCalls, built_prefix_engines, make_prefix_engine
from paddle_impl.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from test_forward_engine import small_model  # noqa: F401  (the seeded resnet18 fixture, shared)

# the engines' float32 bound on a CAM (parity/registry.py: oneDNN against Paddle's own kernels, ~1e-6 measured)
CAM_BOUND = 1e-4


def _image(seed: int, batch: int = 1, size: int = 64) -> paddle.Tensor:
    return paddle.to_tensor(np.random.default_rng(seed).standard_normal((batch, 3, size, size)).astype("float32"))


def _with_and_without_engine(cam, x, targets):
    first = cam(x, targets)  # the first call for a shape runs the dynamic graph
    assert built_prefix_engines(cam._prefix_engines) == {}
    compiled = cam(x, targets)
    engines = [engine is not None for engine in built_prefix_engines(cam._prefix_engines).values()]
    cam.inference_engine = False
    eager = cam(x, targets)
    cam.inference_engine = True
    np.testing.assert_array_equal(first, eager)
    return compiled, eager, engines


@pytest.mark.parametrize("method", [GradCAM, LayerCAM, ShapleyCAM], ids=["gradcam", "layercam", "shapleycam"])
def test_a_gradient_method_runs_its_prefix_compiled_and_gives_the_dynamic_graphs_cam(small_model, method):
    x = _image(0, batch=2)
    cam = method(small_model, [small_model.layer3])
    targets = [ClassifierOutputSoftmaxTarget(1), ClassifierOutputSoftmaxTarget(7)]  # smooth: ShapleyCAM's H A counts
    compiled, eager, engines = _with_and_without_engine(cam, x, targets)
    assert engines == [True]
    assert eager.std() > 0.05, "a map with structure"
    np.testing.assert_allclose(compiled, eager, rtol=0, atol=CAM_BOUND)


def test_every_target_layer_gets_its_gradient_when_the_first_is_answered(small_model):
    x = _image(1)
    layers = [small_model.layer4, small_model.layer2]  # layer2 runs first: it is answered, layer4 is computed
    cam = GradCAM(small_model, layers)
    compiled, eager, engines = _with_and_without_engine(cam, x, [ClassifierOutputTarget(4)])
    assert engines == [True] and len(cam.activations_and_grads.gradients) == 2
    np.testing.assert_allclose(compiled, eager, rtol=0, atol=CAM_BOUND)


class _SharedActivation(paddle.nn.Layer):
    """One ReLU called inside a block before the target, between blocks, and after the target; a block returning a
    tuple."""

    def __init__(self):
        super().__init__()
        self.act = paddle.nn.ReLU()
        self.stem = paddle.nn.Conv2D(3, 8, 3, padding=1)
        self.pair = _Pair(self.act)
        self.target = paddle.nn.Conv2D(8, 8, 3, padding=1)
        self.head = paddle.nn.Linear(8, 5)

    def forward(self, x):
        left, right = self.pair(self.act(self.stem(x)))
        features = self.act(self.target(left + right))
        return self.head(features.mean(axis=[2, 3]))


class _Pair(paddle.nn.Layer):
    def __init__(self, act):
        super().__init__()
        self.act = act
        self.conv = paddle.nn.Conv2D(8, 8, 3, padding=1)

    def forward(self, x):
        return self.act(self.conv(x)), x * 0.5


def test_a_shared_layer_and_a_tuple_output_before_the_target_are_answered_call_by_call():
    paddle.seed(0)
    model = _SharedActivation()
    model.eval()
    x = _image(2, batch=2, size=16)
    engine = make_prefix_engine(model, [model.target], x, threads=1)
    assert engine is not None
    # act: its first call (on the stem) is answered, its second (inside pair) is skipped with pair, its third computed
    assert engine._plans["act"] == [1, None] and engine._plans["pair"] == [2] and engine._arities == [1, 1, 2, 1]
    cam = GradCAM(model, [model.target])
    compiled, eager, engines = _with_and_without_engine(cam, x, [ClassifierOutputTarget(2), ClassifierOutputTarget(3)])
    assert engines == [True] and eager.std() > 0.05
    np.testing.assert_allclose(compiled, eager, rtol=0, atol=CAM_BOUND)
    assert "forward" not in model.act.__dict__ and "forward" not in model.pair.__dict__, "the forwards are restored"


def test_the_dynamic_graph_runs_where_the_prefix_engine_does_not_apply(small_model):
    x64 = paddle.zeros([1, 3, 32, 32], dtype="float64")
    assert GradCAM(small_model, [small_model.layer3]).prefix_engine_for(x64) is None
    full = FullGrad(small_model, [])
    assert full.prefix_engine_for(_image(3, size=32)) is None  # the input itself needs a gradient
    off = GradCAM(small_model, [small_model.layer3])
    off.inference_engine = False
    assert off.prefix_engine_for(_image(3, size=32)) is None and off.prefix_engine_for(_image(3, size=32)) is None
    assert off._prefix_engines == {}


class _ExportsDifferently(paddle.nn.Layer):
    """A stem whose traced program computes something else than its dynamic graph, before the target layer."""

    def __init__(self):
        super().__init__()
        self.stem = _DifferentWhenTraced()
        self.target = paddle.nn.Conv2D(4, 4, 3)
        self.head = paddle.nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.target(self.stem(x)).mean(axis=[2, 3]))


class _DifferentWhenTraced(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, 4, 3)

    def forward(self, x):
        return self.conv(x) * (1.0 if paddle.in_dynamic_mode() else 2.0)


def test_a_prefix_export_that_disagrees_with_the_dynamic_graph_is_not_used():
    paddle.seed(0)
    model = _ExportsDifferently()
    model.eval()
    assert make_prefix_engine(model, [model.target], _image(4, size=16), threads=1) is None


def test_the_parity_harness_compares_the_compiled_prefix_from_the_first_call(small_model):
    """A parity case calls its CAM once per mode: the harness has it build the engine on that call."""
    from paddle_impl import SESS
    from parity.recipes import compiled_prefix_from_the_first_call

    cam = GradCAM(small_model, [small_model.layer3])
    compiled_prefix_from_the_first_call(cam)
    cam(_image(5), [ClassifierOutputTarget(2)])
    assert [engine is not None for engine in built_prefix_engines(cam._prefix_engines).values()] == [True]
    sess = SESS(small_model, [small_model.layer3])
    compiled_prefix_from_the_first_call(sess)
    assert sess.base_cam.prefix_engine_on_call == 1
    sess.release()


def test_the_float32_recheck_runs_every_forward_in_the_dynamic_graph(small_model):
    """parity.runner's float32 recheck (``compiled_engines=False``) must build no engine, even on a repeated call."""
    from paddle_impl import SESS, EigenCAM
    from parity.recipes import dynamic_graph_only

    for cam in (GradCAM(small_model, [small_model.layer3]), EigenCAM(small_model, [small_model.layer3])):
        dynamic_graph_only(cam)
        for _ in range(3):
            cam(_image(5), [ClassifierOutputTarget(2)])
        assert built_prefix_engines(cam._prefix_engines) == {} and not cam._forward_engines
        cam.release()
    sess = SESS(small_model, [small_model.layer3])
    dynamic_graph_only(sess)
    assert sess.base_cam.inference_engine is False
    sess.release()


class _SmallBodyBigHead(paddle.nn.Layer):
    """A convolution (432 weights) before the target layer and a 4-million-weight head after it, as vgg16's."""

    def __init__(self):
        super().__init__()
        self.body = paddle.nn.Conv2D(3, 16, 3, padding=1)
        self.target = paddle.nn.ReLU()
        self.head = paddle.nn.Linear(16 * 16 * 16, 1000)

    def forward(self, x):
        return self.head(paddle.flatten(self.target(self.body(x)), 1))


def test_the_predictor_returns_and_holds_the_prefix_only(tmp_path):
    """The exported program ends at the target layer: the head's weights are not in it (the predictor would hold
    a second copy of them beside the model's; vgg16 with the whole model exported: 3,447 MiB peak, 1,449 without
    the head, upstream 2,078, measured)."""
    paddle.seed(0)
    model = _SmallBodyBigHead()
    model.eval()
    x = _image(6, size=16)
    engine = make_prefix_engine(model, [model.target], x, threads=1)
    assert engine is not None
    # the target's, not the model's (1, 1000); the body's is handed straight to the target, which ignores it
    assert len(engine._predictor.get_output_names()) == 1 and engine._skipped == [True, False]
    assert [a.shape for a in engine.answers(x)] == [[1], [1, 16, 16, 16]]
    wrapper = _OutputsOfCalls(_hook_free_copy(model), [("target", 0)])
    spec = [paddle.static.InputSpec([None, 3, 16, 16], "float32", "x")]
    paddle.jit.save(paddle.jit.to_static(wrapper, input_spec=spec, full_graph=True), str(tmp_path / "m"))
    exported = (tmp_path / "m.pdiparams").stat().st_size
    head = 4096 * 1000 * 4
    assert exported < 16 * 1024, f"{exported} bytes of weights exported: the head's {head} went with them"


def test_the_engines_copy_shares_the_models_weights_and_drops_its_hooks():
    """Tracing and exporting work on a copy of the layer structure; a copy of the weights cost vgg16 528 MB."""
    model = _SmallBodyBigHead()
    handle = model.target.register_forward_post_hook(lambda layer, inputs, output: None)
    copied = _hook_free_copy(model)
    assert copied is not model and copied.head is not model.head
    assert all(a is b for a, b in zip(copied.parameters(), model.parameters()))
    assert len(copied.parameters()) == len(model.parameters()) == 4
    assert not copied.target._forward_post_hooks and len(model.target._forward_post_hooks) == 1
    handle.remove()


class _ReadsTheStemAfterTheTarget(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.stem = paddle.nn.Conv2D(3, 4, 3)
        self.target = paddle.nn.ReLU()
        self.head = paddle.nn.Linear(4, 3)

    def forward(self, x):
        stem = self.stem(x)
        pooled = self.target(stem).mean(axis=[2, 3])
        return self.head(pooled) + stem.mean()  # the glue reads the stem's output after the target


class _HandsTheStemOnOnly(_ReadsTheStemAfterTheTarget):
    def forward(self, x):
        return self.head(self.target(self.stem(x)).mean(axis=[2, 3]))


@pytest.mark.parametrize("model_class, skipped", [(_HandsTheStemOnOnly, [True, False]),
                                                   (_ReadsTheStemAfterTheTarget, [False, False])],
                         ids=["handed-on", "read-after"])
def test_an_output_only_handed_to_the_next_answered_call_is_left_out_unless_the_glue_reads_it(model_class, skipped):
    """Fetching every answered call's output breaks oneDNN's fusions and costs a copy each (resnet50: 10 outputs
    where the forward reads 1); a value the glue reads is found by the check (NaN stands in) and exported."""
    paddle.seed(1)
    model = model_class()
    model.eval()
    x = _image(7, size=12)
    engine = make_prefix_engine(model, [model.target], x, threads=1)
    assert engine is not None and engine._skipped == skipped
    cam = GradCAM(model, [model.target])
    cam.prefix_engine_on_call = 1
    compiled = cam(x, [ClassifierOutputTarget(1)])
    cam.inference_engine = False
    np.testing.assert_allclose(compiled, cam(x, [ClassifierOutputTarget(1)]), rtol=0, atol=CAM_BOUND)
