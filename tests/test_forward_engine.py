"""The compiled forward of the forward-only methods (BaseCAM.prefix_engine_for, forward_through_engine).

The predictor must hand back what the dynamic-graph hooks store (same
tensors, same order, through reshape_transform), be used where it applies
(float32, CPU, a forward-only method) and nowhere else.
"""
import numpy as np
import paddle
import pytest

from paddle_impl import EigenCAM, GradCAM, ScoreCAM
from paddle_impl.inference_engine import make_forward_engine
from paddle_impl.prefix_engine import built_prefix_engines


@pytest.fixture(scope="module")
def small_model():
    paddle.seed(3)
    model = paddle.vision.models.resnet18(num_classes=10)
    model.eval()
    return model


def test_engine_returns_outputs_and_every_target_activation_in_hook_order(small_model):
    x = paddle.to_tensor(np.random.default_rng(0).standard_normal((2, 3, 48, 48)).astype("float32"))
    layers = [small_model.layer3, small_model.layer2]  # listed out of execution order on purpose
    engine = make_forward_engine(small_model, layers, x, threads=1)
    assert engine is not None
    outputs, activations = engine(x)
    stored = []
    handles = [layer.register_forward_post_hook(lambda l, i, o: stored.append(o.numpy())) for layer in layers]
    with paddle.no_grad():
        eager_outputs = small_model(x).numpy()
    for handle in handles:
        handle.remove()
    assert [a.shape for a in activations] == [list(s.shape) for s in stored]  # layer2 ran first
    for compiled, eager in zip([outputs.numpy()] + [a.numpy() for a in activations], [eager_outputs] + stored):
        scale = np.abs(eager).max()
        assert np.abs(compiled - eager).max() <= 1e-5 * scale, "predictor and dynamic graph disagree"


def test_forward_only_method_uses_the_whole_network_engine_and_agrees_with_dynamic_graph(small_model):
    x = paddle.to_tensor(np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype("float32"))
    cam = EigenCAM(small_model, [small_model.layer4])
    compiled = cam(x)
    assert [engine is not None for engine in cam._forward_engines.values()] == [True]
    assert list(built_prefix_engines(cam._prefix_engines).values()) == [None]  # resnet18's fc: 5 k of 11 M weights
    cam.inference_engine = False
    eager = cam(x)
    assert np.abs(compiled - eager).max() <= 1e-4


class _LightBodyHeavyHead(paddle.nn.Layer):
    def __init__(self):
        super().__init__()
        self.body = paddle.nn.Conv2D(3, 8, 3, padding=1)
        self.head = paddle.nn.Linear(8 * 32 * 32, 100)  # 819 k weights after the target, 224 before it

    def forward(self, x):
        return self.head(paddle.flatten(self.body(x), 1))


def test_forward_only_method_compiles_only_the_body_where_the_head_holds_most_weights():
    """A whole-network predictor would hold a second copy of the head (vgg16 EigenCAM: 2,097 MiB peak against
    1,449 with the body's predictor, upstream 1,850)."""
    paddle.seed(2)
    model = _LightBodyHeavyHead()
    model.eval()
    x = paddle.to_tensor(np.random.default_rng(8).standard_normal((1, 3, 32, 32)).astype("float32"))
    cam = EigenCAM(model, [model.body])
    compiled = cam(x)
    assert [engine is not None for engine in built_prefix_engines(cam._prefix_engines).values()] == [True]
    assert cam._forward_engines == {}
    cam.inference_engine = False
    np.testing.assert_allclose(compiled, cam(x), rtol=0, atol=1e-5)


def test_score_cam_runs_its_first_pass_in_the_whole_network_predictor(small_model):
    x = paddle.to_tensor(np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype("float32"))
    cam = ScoreCAM(small_model, [small_model.layer4])
    cam(x)
    assert [engine is not None for engine in cam._forward_engines.values()] == [True]
    assert list(built_prefix_engines(cam._prefix_engines).values()) == [None]


@pytest.mark.parametrize("inference_engine", [True, False], ids=["prefix-engine", "dynamic-graph"])
def test_score_cam_scores_through_the_body_predictor_where_the_head_holds_most_weights(inference_engine):
    """A whole-network predictor would hold a second copy of the head (vgg11 ScoreCAM at 224x224: 3,312 MiB peak
    against 1,770 with the body's predictor, upstream 2,258); the scoring passes must not keep their activations."""
    paddle.seed(2)
    model = _LightBodyHeavyHead()
    model.eval()
    x = paddle.to_tensor(np.random.default_rng(9).standard_normal((1, 3, 32, 32)).astype("float32"))
    cam = ScoreCAM(model, [model.body], batch_size=3)
    cam.inference_engine = inference_engine
    ours = cam(x)
    built = [engine is not None for engine in built_prefix_engines(cam._prefix_engines).values()]
    assert built == ([True] if inference_engine else [])
    assert cam._forward_engines == {}
    assert len(cam.activations_and_grads.activations) == 1  # the first pass's, not one per scored batch
    assert cam.last_forward_count == 1 + 8  # eight channels of random activations: eight distinct masks
    assert ours.std() > 0.1  # a map with structure
    reference = ScoreCAM(model, [model.body], batch_size=3)
    reference.inference_engine = False
    np.testing.assert_allclose(ours, reference(x), rtol=0, atol=1e-5)


def test_engine_is_not_used_for_float64_or_gradient_methods(small_model):
    cam = EigenCAM(small_model, [small_model.layer4])
    assert cam.forward_engine_for(paddle.zeros([1, 3, 32, 32], dtype="float64")) is None
    grad_cam = GradCAM(small_model, [small_model.layer4])
    assert grad_cam.forward_engine_for(paddle.zeros([1, 3, 32, 32])) is None
    assert cam._forward_engines == {} and grad_cam._forward_engines == {}


def test_score_cam_counts_the_images_it_ran(small_model):
    x = paddle.to_tensor(np.random.default_rng(2).standard_normal((1, 3, 32, 32)).astype("float32"))
    cam = ScoreCAM(small_model, [small_model.layer3])
    cam(x)
    channels = 256
    # the first pass (1 image) plus one masked image per distinct mask, at most one per channel
    assert 1 < cam.last_forward_count <= 1 + channels


class _ExportsDifferently(paddle.nn.Layer):
    """A layer whose traced program computes something else than its dynamic graph (as PaddleClas's ConvNeXt did)."""

    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, 4, 3)

    def forward(self, x):
        features = self.conv(x)
        return features.mean(axis=[2, 3]) * (1.0 if paddle.in_dynamic_mode() else 2.0)


def test_an_export_that_disagrees_with_the_dynamic_graph_is_not_used():
    paddle.seed(0)
    model = _ExportsDifferently()
    model.eval()
    x = paddle.to_tensor(np.random.default_rng(4).standard_normal((1, 3, 16, 16)).astype("float32"))
    assert make_forward_engine(model, [model.conv], x, threads=1) is None
    cam = EigenCAM(model, [model.conv])
    cam(x)
    assert list(cam._forward_engines.values()) == [None]  # the dynamic graph ran
