"""Parity of HiResCAM, GradCAMElementWise, RandomCAM, SegEigenCAM, ShapleyCAM, FullGrad, FEM and KPCA_CAM with upstream.

Every class is run by the port and by the unmodified ``pytorch_grad_cam`` on
the same seeded ResNet50 weights and the same input (``fixtures/both.png``,
resized to 64x64 with the harness's loader, ImageNet-normalised by each
side's ``preprocess_image``), and the final CAMs are compared:

* float64: shows the algorithm agrees.  The CAM is float32 at the end on
  both sides (``scale_cam_image`` casts), so the bound is a few float32 ulps.
* float32: a bound measured here; the measured value is written next to it.

RandomCAM draws its weights from numpy's global RNG: each side's call is
preceded by ``np.random.seed(0)``, so both see the same draws (every case
seeds, so the other methods are unaffected).

Each family also has a breakage test: one operation of the port is changed
with ``monkeypatch`` and the same comparison must then fail.  The unit tests
at the end check what the methods rely on: FullGrad's biases and per-layer
gradients (paired by layer), the input gradient, the untouched fast path of
the older methods, and ``second_order_graph``'s exactness.

The default tier runs at 64x64 on ``layer3`` (4x4 maps, 1024 channels) and
takes about 40 s on one core; the ``slow`` tier repeats the cheap methods at
224x224 on ``layer4`` and KPCA-CAM on ``layer2`` (784 positions, scikit-learn's
ARPACK solver).
"""
from __future__ import annotations

import warnings
from typing import Dict, Optional, Tuple

import numpy as np
import paddle
import pytest
import torch

SMALL = 64
SMALL_LAYER = "layer3"
DTYPES = ("float32", "float64")

# float64: the final CAM is float32 on both sides, so a few float32 ulps (2.4e-7 is two ulps
# of 1.0, four just below it).
F64_BOUND = 2.4e-7

# (method, target, eigen_smooth) -> float32 bound, at 64x64 / layer3, 1 thread.
# ``target``: "argmax" = upstream's default ClassifierOutputTarget(argmax logit);
# "softmax1" / "softmax0" = the softmax probability of the runner-up / the top class.
# Measured float64 max|Δ| is 0 for every case here.
F32_BOUNDS: Dict[Tuple[str, str, bool], float] = {
    ("HiResCAM", "argmax", False): 5e-6,  # measured 5.96e-07
    ("HiResCAM", "argmax", True): 5e-6,  # measured 5.07e-07
    ("GradCAMElementWise", "argmax", False): 5e-6,  # measured 2.68e-07
    ("GradCAMElementWise", "argmax", True): 5e-6,  # measured 2.09e-07
    ("RandomCAM", "argmax", False): 5e-6,  # measured 0
    ("RandomCAM", "argmax", True): 5e-6,  # measured 5.07e-07
    ("SegEigenCAM", "argmax", False): 5e-6,  # measured 8.20e-08
    ("SegEigenCAM", "argmax", True): 5e-6,  # measured 8.20e-08 (eigen_smooth is ignored, as upstream)
    ("ShapleyCAM", "argmax", False): 5e-6,  # measured 9.54e-07
    ("ShapleyCAM", "argmax", True): 5e-6,  # measured 4.77e-07
    ("ShapleyCAM", "softmax1", False): 2e-5,  # measured 3.25e-06
    ("ShapleyCAM", "softmax1", True): 5e-6,  # measured 5.96e-07
    # p(top class) = 0.988 here, so dp/dA ~ p(1 - p) loses about two digits to cancellation in
    # float32, on both sides; float64 agrees exactly.
    ("ShapleyCAM", "softmax0", False): 1e-4,  # measured 1.98e-05
    ("FullGrad", "argmax", False): 5e-6,  # measured 8.94e-07
    ("FullGrad", "argmax", True): 5e-6,  # measured 3.58e-07
    ("FEM", "argmax", False): 5e-6,  # measured 2.38e-07
    ("FEM", "argmax", True): 5e-6,  # measured 2.38e-07 (eigen_smooth is ignored, as upstream)
    ("KPCA_CAM", "argmax", False): 5e-6,  # measured 6.85e-07
    ("KPCA_CAM", "argmax", True): 5e-6,  # measured 6.85e-07 (eigen_smooth is ignored, as upstream)
}

# The same on the seeded weights with trained-like BatchNorms, for the two methods whose
# BatchNorm handling is their own: FullGrad's folded biases (all zero on the plain seeded
# weights) and ShapleyCAM's BatchNorm-as-ops second-order graph.
F32_BN_BOUNDS: Dict[Tuple[str, str, bool], float] = {
    ("FullGrad", "argmax", False): 1e-5,  # measured 1.13e-06
    ("FullGrad", "argmax", True): 5e-6,  # measured 3.58e-07
    ("ShapleyCAM", "argmax", False): 1e-5,  # measured 1.61e-06
    ("ShapleyCAM", "softmax1", False): 2e-5,  # measured 3.34e-06
    ("ShapleyCAM", "softmax1", True): 1e-5,  # measured 9.83e-07
}

# aug_smooth (six passes each), 64x64 / layer3, float32.
F32_AUG_BOUNDS: Dict[str, float] = {
    "HiResCAM": 5e-6,  # measured 1.49e-07
    "RandomCAM": 5e-6,  # measured 2.83e-07 (the six passes draw one after another from the seeded RNG)
    "ShapleyCAM": 5e-6,  # measured 6.56e-07
}

# 224x224 / layer4 (slow tier), float32; the float64 bound is F64_BOUND (measured <= 1.79e-07:
# Paddle's float64 average-pool backward scales by float32(1/49), see tests/test_port_units.py).
F32_FULL_SIZE_BOUNDS: Dict[Tuple[str, bool], float] = {
    ("HiResCAM", False): 2e-5,  # measured 1.97e-06
    ("HiResCAM", True): 5e-6,  # measured 5.96e-07
    ("GradCAMElementWise", False): 5e-6,  # measured 5.07e-07
    ("GradCAMElementWise", True): 5e-6,  # measured 6.56e-07
    ("RandomCAM", False): 4e-5,  # measured 3.93e-06
    ("RandomCAM", True): 5e-6,  # measured 4.17e-07
    ("SegEigenCAM", False): 5e-6,  # measured 3.28e-07
    ("ShapleyCAM", False): 2e-5,  # measured 2.21e-06
    ("ShapleyCAM", True): 5e-6,  # measured 5.36e-07
    ("FEM", False): 5e-6,  # measured 5.36e-07
    ("KPCA_CAM", False): 5e-6,  # measured 7.75e-07
}


# -- the two sides -----------------------------------------------------------------------------
class _TorchSoftmaxOf:
    """Softmax probability of one class, written with exp so that Paddle can differentiate it twice.

    (Paddle 3.3.1's ``softmax_grad`` has no grad op.)  The logits are shifted
    by their maximum, held constant, so that float32 ``exp`` cannot overflow.
    """

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        exp = torch.exp(output - output.max().detach())
        return exp[..., self.category] / exp.sum(-1)


class _PaddleSoftmaxOf(_TorchSoftmaxOf):
    def __call__(self, output: paddle.Tensor) -> paddle.Tensor:
        exp = paddle.exp(output - output.max().detach())
        return exp[..., self.category] / exp.sum(-1)


def _with_trained_like_batchnorms(torch_state: dict, paddle_state: dict, seed: int = 0) -> Tuple[dict, dict]:
    """The same seeded BatchNorm statistics and affine parameters written into both state dicts.

    A freshly initialised torchvision ResNet50 has mu = 0, var = 1, gamma = 1
    and beta = 0 in every BatchNorm, so FullGrad's folded biases are all zero
    (every bias map vanishes) and an inference BatchNorm is the identity up to
    eps.  These values make both non-trivial, as in a trained network.
    """
    rng = np.random.RandomState(seed)
    torch_state, paddle_state = dict(torch_state), dict(paddle_state)
    for name in sorted(torch_state):
        if not name.endswith(".running_mean"):
            continue
        prefix = name[: -len("running_mean")]
        channels, dtype = torch_state[name].shape[0], torch_state[name].dtype
        values = {
            "mean": 0.1 * rng.randn(channels),
            "var": rng.uniform(0.5, 1.5, channels),
            "gamma": rng.uniform(0.5, 1.5, channels),
            "beta": 0.1 * rng.randn(channels),
        }
        for key, torch_name, paddle_name in (
            ("mean", "running_mean", "_mean"),
            ("var", "running_var", "_variance"),
            ("gamma", "weight", "weight"),
            ("beta", "bias", "bias"),
        ):
            torch_state[prefix + torch_name] = values[key].astype(dtype)
            paddle_state[prefix + paddle_name] = values[key].astype(dtype)
    return torch_state, paddle_state


class Sides:
    """Models, inputs and cached upstream CAMs for one image size, both dtypes."""

    def __init__(self, weights_pair, reference_image, size: int, trained_like_batchnorms: bool = False) -> None:
        from parity.worker import IMAGENET_MEAN, IMAGENET_STD, load_input_image
        from parity.weights import load_paddle_state_dict, load_torch_state_dict

        torch.set_num_threads(1)
        paddle.base.core.set_num_threads(1)
        self.size = size
        self.torch_state = load_torch_state_dict(weights_pair[0])
        self.paddle_state = load_paddle_state_dict(weights_pair[1])
        if trained_like_batchnorms:
            self.torch_state, self.paddle_state = _with_trained_like_batchnorms(self.torch_state, self.paddle_state)
        self.rgb = {dtype: load_input_image(str(reference_image), size, dtype) for dtype in DTYPES}
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self._models: Dict[str, tuple] = {}
        self._upstream: Dict[tuple, np.ndarray] = {}
        self._ranked: Optional[np.ndarray] = None

    def models(self, dtype: str):
        """(torch model, torch input, paddle model, paddle input) in ``dtype``, built once."""
        if dtype not in self._models:
            from pytorch_grad_cam.utils.image import preprocess_image as torch_preprocess

            from paddle_impl.utils.image import preprocess_image as paddle_preprocess
            from parity.weights import paddle_resnet50, torch_resnet50

            self._models[dtype] = (
                torch_resnet50(self.torch_state, dtype),
                torch_preprocess(self.rgb[dtype], mean=self.mean, std=self.std),
                paddle_resnet50(self.paddle_state, dtype),
                paddle_preprocess(self.rgb[dtype], mean=self.mean, std=self.std),
            )
        return self._models[dtype]

    def ranked_classes(self) -> np.ndarray:
        """Classes by decreasing upstream float64 logit."""
        if self._ranked is None:
            tm, tx, _, _ = self.models("float64")
            with torch.no_grad():
                self._ranked = np.argsort(-tm(tx)[0].numpy())
        return self._ranked

    def targets(self, target: str, framework: str):
        if target == "argmax":
            return None
        category = int(self.ranked_classes()[int(target[len("softmax"):])])
        return [(_TorchSoftmaxOf if framework == "torch" else _PaddleSoftmaxOf)(category)]

    def upstream(self, method: str, target: str, layer: str, dtype: str, aug: bool, eig: bool, **kwargs) -> np.ndarray:
        key = (method, target, layer, dtype, aug, eig, tuple(sorted(kwargs.items())))
        if key not in self._upstream:
            import pytorch_grad_cam

            tm, tx, _, _ = self.models(dtype)
            targets = self.targets(target, "torch")
            self._upstream[key] = _run(pytorch_grad_cam, method, tm, layer, tx, targets, aug, eig, **kwargs)
        return self._upstream[key]

    def port(self, method: str, target: str, layer: str, dtype: str, aug: bool, eig: bool, **kwargs) -> np.ndarray:
        import paddle_impl

        _, _, pm, px = self.models(dtype)
        return _run(paddle_impl, method, pm, layer, px, self.targets(target, "paddle"), aug, eig, **kwargs)


def _run(library, method: str, model, layer: str, x, targets, aug: bool, eig: bool, **kwargs) -> np.ndarray:
    """One ``cam(...)`` call in upstream's call shape, after seeding numpy's global RNG (RandomCAM)."""
    target_layers = [] if method == "FullGrad" else [getattr(model, layer)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.random.seed(0)
        with getattr(library, method)(model=model, target_layers=target_layers, **kwargs) as cam:
            return cam(input_tensor=x, targets=targets, aug_smooth=aug, eigen_smooth=eig)


def _max_delta(got: np.ndarray, expected: np.ndarray) -> Tuple[float, tuple]:
    assert got.shape == expected.shape, f"CAM shape {got.shape} != upstream's {expected.shape}"
    assert got.dtype == expected.dtype == np.float32, f"CAM dtype {got.dtype} (upstream {expected.dtype}), want float32"
    delta = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    worst = np.unravel_index(int(np.argmax(delta)), delta.shape)
    return float(delta[worst]), worst


def assert_cam_matches(got: np.ndarray, expected: np.ndarray, bound: float, case: str) -> None:
    """The final CAMs agree within ``bound``; the message names the case, the place, both values and the bound."""
    assert np.ptp(expected) > 0, f"{case}: upstream's CAM is constant, the comparison would prove nothing"
    max_delta, worst = _max_delta(got, expected)
    assert max_delta <= bound, (
        f"{case}: final CAM mismatched: max|Δ| = {max_delta:.3g} at {worst} "
        f"(port {got[worst]:.9g}, upstream {expected[worst]:.9g}), bound {bound:.3g}"
    )


def assert_cam_differs(got: np.ndarray, expected: np.ndarray, bound: float, case: str) -> None:
    """The breakage must be caught: the same comparison fails."""
    max_delta, worst = _max_delta(got, expected)
    assert max_delta > bound, (
        f"{case}: the broken port still matched upstream (max|Δ| = {max_delta:.3g} <= bound {bound:.3g})"
    )


@pytest.fixture(scope="module")
def small(weights_pair, reference_image) -> Sides:
    return Sides(weights_pair, reference_image, SMALL)


@pytest.fixture(scope="module")
def small_bn(weights_pair, reference_image) -> Sides:
    """The seeded weights with trained-like BatchNorms (see ``_with_trained_like_batchnorms``)."""
    return Sides(weights_pair, reference_image, SMALL, trained_like_batchnorms=True)


def _bound(dtype: str, f32_bound: float) -> float:
    return F64_BOUND if dtype == "float64" else f32_bound


# -- parity: every class, plain and eigen_smooth, float32 and float64 ---------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "method,target,eig", list(F32_BOUNDS), ids=[f"{m}-{t}-{'eigen' if e else 'plain'}" for m, t, e in F32_BOUNDS]
)
def test_cam_matches_upstream(small, method, target, eig, dtype):
    case = f"{method} target={target} eigen_smooth={eig} {dtype} {SMALL}x{SMALL} {SMALL_LAYER}"
    expected = small.upstream(method, target, SMALL_LAYER, dtype, False, eig)
    got = small.port(method, target, SMALL_LAYER, dtype, False, eig)
    assert_cam_matches(got, expected, _bound(dtype, F32_BOUNDS[(method, target, eig)]), case)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "method,target,eig", list(F32_BN_BOUNDS), ids=[f"{m}-{t}-{'eigen' if e else 'plain'}" for m, t, e in F32_BN_BOUNDS]
)
def test_cam_with_trained_like_batchnorms_matches_upstream(small_bn, method, target, eig, dtype):
    case = f"{method} target={target} eigen_smooth={eig} {dtype} {SMALL}x{SMALL} {SMALL_LAYER}, trained-like BatchNorms"
    expected = small_bn.upstream(method, target, SMALL_LAYER, dtype, False, eig)
    got = small_bn.port(method, target, SMALL_LAYER, dtype, False, eig)
    assert_cam_matches(got, expected, _bound(dtype, F32_BN_BOUNDS[(method, target, eig)]), case)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", list(F32_AUG_BOUNDS))
def test_aug_smooth_matches_upstream(small, method, dtype):
    case = f"{method} aug_smooth {dtype} {SMALL}x{SMALL} {SMALL_LAYER}"
    expected = small.upstream(method, "argmax", SMALL_LAYER, dtype, True, False)
    got = small.port(method, "argmax", SMALL_LAYER, dtype, True, False)
    assert_cam_matches(got, expected, _bound(dtype, F32_AUG_BOUNDS[method]), case)


def test_fem_and_kpca_parameters_are_passed_on(small):
    """Non-default constructor arguments reach the computation as upstream's do."""
    for method, kwargs in (("FEM", {"k": 1}), ("KPCA_CAM", {"kernel": "rbf", "gamma": 1e-3})):
        expected = small.upstream(method, "argmax", SMALL_LAYER, "float64", False, False, **kwargs)
        got = small.port(method, "argmax", SMALL_LAYER, "float64", False, False, **kwargs)
        assert_cam_matches(got, expected, F64_BOUND, f"{method}{kwargs} float64")
        default = small.upstream(method, "argmax", SMALL_LAYER, "float64", False, False)
        assert np.abs(expected - default).max() > 1e-3, f"{method}{kwargs} should differ from the default"


# -- breakage: one operation of the port changed, the comparison must fail -----------------------
def _breakage_case(
    small: Sides, method: str, target: str = "argmax", eig: bool = False
) -> Tuple[np.ndarray, np.ndarray, float]:
    expected = small.upstream(method, target, SMALL_LAYER, "float64", False, eig)
    got = small.port(method, target, SMALL_LAYER, "float64", False, eig)
    return got, expected, F64_BOUND


def test_breakage_hirescam_with_pooled_gradients_fails(small, monkeypatch):
    from paddle_impl.hirescam import HiResCAM

    monkeypatch.setattr(
        HiResCAM,
        "get_cam_image",
        lambda self, x, layer, targets, acts, grads, eigen: (grads.mean(axis=(2, 3), keepdims=True) * acts).sum(axis=1),
    )
    assert_cam_differs(*_breakage_case(small, "HiResCAM"), "HiResCAM without the element-wise product")


def test_breakage_elementwise_without_relu_fails(small, monkeypatch):
    from paddle_impl.grad_cam_elementwise import GradCAMElementWise

    monkeypatch.setattr(
        GradCAMElementWise,
        "get_cam_image",
        lambda self, x, layer, targets, acts, grads, eigen: (grads * acts).sum(axis=1),
    )
    assert_cam_differs(*_breakage_case(small, "GradCAMElementWise"), "GradCAMElementWise without the ReLU")


def test_breakage_random_cam_with_other_draws_fails(small, monkeypatch):
    from paddle_impl.random_cam import RandomCAM

    monkeypatch.setattr(
        RandomCAM,
        "get_cam_weights",
        lambda self, x, layer, targets, acts, grads: np.random.uniform(0, 1, size=(grads.shape[0], grads.shape[1])),
    )
    assert_cam_differs(*_breakage_case(small, "RandomCAM"), "RandomCAM drawing from U(0, 1)")


def test_breakage_seg_eigen_cam_without_absolute_gradients_fails(small, monkeypatch):
    import paddle_impl.seg_eigen_cam as seg

    monkeypatch.setattr(
        seg.SegEigenCAM,
        "get_cam_image",
        lambda self, x, layer, targets, acts, grads, eigen: seg.get_2d_projection_with_sign_correction(grads * acts),
    )
    assert_cam_differs(*_breakage_case(small, "SegEigenCAM"), "SegEigenCAM without |gradient|")


def test_breakage_shapley_cam_without_hessian_term_fails(small, monkeypatch):
    from paddle_impl.shapley_cam import ShapleyCAM

    monkeypatch.setattr(ShapleyCAM, "hessian_vector_product", lambda self, activations, grads: None)
    broken = _breakage_case(small, "ShapleyCAM", "softmax1")
    assert_cam_differs(*broken, "ShapleyCAM without the Hessian-vector product")


def test_breakage_fullgrad_without_input_gradient_fails(small, monkeypatch):
    from paddle_impl.fullgrad_cam import FullGrad

    original = FullGrad.input_gradient_map
    monkeypatch.setattr(FullGrad, "input_gradient_map", staticmethod(lambda x, size: np.zeros_like(original(x, size))))
    assert_cam_differs(*_breakage_case(small, "FullGrad"), "FullGrad without the input-gradient term")


def test_breakage_fullgrad_with_raw_batchnorm_bias_fails(small_bn, monkeypatch):
    from paddle_impl.fullgrad_cam import FullGrad

    monkeypatch.setattr(FullGrad, "get_bias_data", staticmethod(lambda layer: layer.bias.numpy()))
    assert_cam_differs(*_breakage_case(small_bn, "FullGrad"), "FullGrad with beta instead of the folded BatchNorm bias")


def test_breakage_fullgrad_without_bias_terms_fails(small_bn, monkeypatch):
    from paddle_impl.fullgrad_cam import FullGrad

    original = FullGrad.bias_gradient_map
    monkeypatch.setattr(
        FullGrad,
        "bias_gradient_map",
        staticmethod(lambda bias, grads, size: np.zeros_like(original(bias, grads, size))),
    )
    assert_cam_differs(*_breakage_case(small_bn, "FullGrad"), "FullGrad without the bias-gradient terms")


class _TwoBranches(paddle.nn.Layer):
    """out = 2 * a(x) + 3 * b(x): two layers whose outputs get different gradients (2 and 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = paddle.nn.Linear(4, 4)
        self.b = paddle.nn.Linear(4, 4)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return 2 * self.a(x) + 3 * self.b(x)


def test_gradients_are_stored_in_forward_order():
    """The i-th gradient belongs to the i-th activation whatever order backward reaches them in.

    On torch that is what upstream's prepend-on-arrival list gives; Paddle's
    engine reaches parallel branches in the other order (in ResNet50 it
    reaches ``bn3`` before ``downsample.1``, whose gradients happen to be
    equal there, since both feed one sum).
    """
    from paddle_impl.activations_and_gradients import ActivationsAndGradients

    model = _TwoBranches()
    hooks = ActivationsAndGradients(model, [model.b, model.a])
    x = paddle.ones([1, 4])
    x.stop_gradient = False
    hooks(x, capture_gradients=True).sum().backward()
    firsts = [float(g.numpy().ravel()[0]) for g in hooks.gradients]
    hooks.release()
    assert firsts == [2.0, 3.0], f"gradients {firsts}, want [2, 3]: a ran first, then b"


def test_breakage_gradients_in_arrival_order_fail(monkeypatch):
    from paddle_impl.activations_and_gradients import ActivationsAndGradients

    def on_gradient_in_arrival_order(self, slot, grad):
        self.gradients = [grad.detach()] + self.gradients

    monkeypatch.setattr(ActivationsAndGradients, "_on_gradient", on_gradient_in_arrival_order)
    with pytest.raises(AssertionError, match="want"):
        test_gradients_are_stored_in_forward_order()


def test_breakage_fem_without_sigma_term_fails(small, monkeypatch):
    from paddle_impl.fem import FEM

    def mean_threshold(self, x, layer, targets, acts, grads, eigen):
        weights = (acts > acts.mean(axis=(2, 3), keepdims=True)).mean(axis=(2, 3))
        return (weights[:, :, None, None] * acts).sum(axis=1)

    monkeypatch.setattr(FEM, "get_cam_image", mean_threshold)
    assert_cam_differs(*_breakage_case(small, "FEM"), "FEM thresholding at the mean (k sigma dropped)")


def test_breakage_kpca_with_linear_kernel_fails(small, monkeypatch):
    import paddle_impl.utils.svd_on_activations as svd

    real = svd.KernelPCA
    monkeypatch.setattr(
        svd, "KernelPCA", lambda n_components, kernel, gamma: real(n_components=n_components, kernel="linear")
    )
    assert_cam_differs(*_breakage_case(small, "KPCA_CAM"), "KPCA_CAM with a linear kernel")


# -- what the methods rely on --------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_fullgrad_biases_match_upstreams(small_bn, dtype):
    """Same layers, same folded biases, up to torch's sqrt.

    torch 2.14's CPU ``sqrt`` is not correctly rounded (1 ulp off on a few
    percent of inputs); numpy's is.  So the biases agree to the rounding of
    ``-(mu * gamma / sqrt(var + eps)) + beta``, not always bit for bit.
    """
    import pytorch_grad_cam

    import paddle_impl

    tm, _, pm, _ = small_bn.models(dtype)
    eps = np.finfo(dtype).eps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytorch_grad_cam.FullGrad(model=tm, target_layers=[]) as upstream, paddle_impl.FullGrad(
            model=pm, target_layers=[]
        ) as port:
            torch_norms = [m for m in tm.modules() if isinstance(m, torch.nn.BatchNorm2d)]
            assert len(port.bias_data) == len(upstream.bias_data) == len(torch_norms) == 53
            for i, (ours, theirs, norm) in enumerate(zip(port.bias_data, upstream.bias_data, torch_norms)):
                assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, f"bias of layer {i}: dtype or shape"
                magnitude = np.abs(theirs - norm.bias.detach().numpy()) + np.abs(norm.bias.detach().numpy())
                np.testing.assert_array_less(
                    np.abs(ours - theirs),
                    4 * eps * magnitude + np.finfo(dtype).tiny,
                    err_msg=f"folded bias of layer {i}",
                )
                assert np.abs(theirs).max() > 0


def _fullgrad_gradients(sides: Sides):
    """What each side's FullGrad.compute_cam_per_layer sees: (input gradient, bias-layer gradients), float64."""
    import pytorch_grad_cam

    import paddle_impl

    tm, tx, pm, px = sides.models("float64")
    seen = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytorch_grad_cam.FullGrad(model=tm, target_layers=[]) as upstream, paddle_impl.FullGrad(
            model=pm, target_layers=[]
        ) as port:
            for name, cam in (("torch", upstream), ("paddle", port)):
                compute = cam.compute_cam_per_layer

                def spy(x, targets, eigen_smooth, name=name, cam=cam, compute=compute):
                    grads = [g.numpy().copy() for g in cam.activations_and_grads.gradients]
                    seen[name] = (x.grad.numpy().copy(), grads)
                    return compute(x, targets, eigen_smooth)

                cam.compute_cam_per_layer = spy
            upstream(input_tensor=tx, targets=None)
            port(input_tensor=px, targets=None)
    assert px.grad is None, "the caller's input tensor must be left alone"
    return seen["torch"] + seen["paddle"]


def _fullgrad_gradient_mismatches(torch_input_grad, torch_grads, paddle_input_grad, paddle_grads) -> list:
    assert np.abs(torch_input_grad).max() > 0
    np.testing.assert_allclose(
        paddle_input_grad,
        torch_input_grad,
        rtol=0,
        atol=1e-9 * np.abs(torch_input_grad).max(),
        err_msg="input gradient",
    )
    assert len(paddle_grads) == len(torch_grads) == 53
    return [
        i
        for i, (ours, theirs) in enumerate(zip(paddle_grads, torch_grads))
        if ours.shape != theirs.shape or np.abs(ours - theirs).max() > 1e-7 * np.abs(theirs).max()
    ]


def test_fullgrad_gets_input_gradient_and_every_bias_gradient_paired_by_layer(small_bn):
    """53 bias-layer gradients, each next to its own layer's upstream gradient, and the input gradient."""
    mismatched = _fullgrad_gradient_mismatches(*_fullgrad_gradients(small_bn))
    assert not mismatched, f"bias-layer gradients differ from upstream's at layers {mismatched} (bound 1e-7 x max)"


def test_fast_path_of_the_older_methods_is_kept(small):
    """GradCAM still starts backward at the target layer: nothing before it gets a gradient."""
    import paddle_impl

    _, _, pm, px = small.models("float32")
    probe = []

    def on_bn1(layer, inputs, output):
        probe.append(output.stop_gradient)

    handle = pm.bn1.register_forward_post_hook(on_bn1)
    try:
        with paddle_impl.GradCAM(model=pm, target_layers=[pm.layer3]) as cam:
            assert cam.compute_input_gradient is False and cam.detach is True
            cam(input_tensor=px, targets=None)
    finally:
        handle.remove()
    assert probe == [True], "the layers before the target layer must not be recorded for backward"
    assert px.grad is None


def _bn_outputs(model, x) -> list:
    outputs = []
    hooks = [
        layer.register_forward_post_hook(lambda layer, inputs, output: outputs.append(output.numpy().copy()))
        for layer in model.sublayers()
        if isinstance(layer, paddle.nn.BatchNorm2D)
    ]
    try:
        logits = model(x).numpy()
    finally:
        for hook in hooks:
            hook.remove()
    return [logits] + outputs


@pytest.mark.parametrize("dtype", DTYPES)
def test_second_order_graph_keeps_forward_values_and_restores_the_model(small_bn, dtype):
    from paddle_impl.activations_and_gradients import second_order_graph

    _, _, pm, px = small_bn.models(dtype)
    flatten, tensor_flatten = paddle.flatten, paddle.Tensor.flatten
    with paddle.no_grad():
        plain = _bn_outputs(pm, px)
        with second_order_graph(pm):
            assert paddle.flatten is not flatten
            rewritten = _bn_outputs(pm, px)
        again = _bn_outputs(pm, px)
    assert len(plain) == 54
    for i, (a, b, c) in enumerate(zip(plain, rewritten, again)):
        assert np.array_equal(a, b), f"output {i} (0 = logits, then each BatchNorm) changed under second_order_graph"
        assert np.array_equal(a, c), f"output {i} changed after second_order_graph"
    assert paddle.flatten is flatten and paddle.Tensor.flatten is tensor_flatten
    assert not any("forward" in layer.__dict__ for layer in pm.sublayers())


def test_shapley_cam_on_a_logit_is_grad_cam(small):
    """ResNet50 is piecewise linear, so for a logit the Hessian term vanishes and ShapleyCAM is Grad-CAM."""
    grad_cam = small.port("GradCAM", "argmax", SMALL_LAYER, "float64", False, False)
    shapley = small.port("ShapleyCAM", "argmax", SMALL_LAYER, "float64", False, False)
    assert_cam_matches(shapley, grad_cam, F64_BOUND, "port ShapleyCAM vs port GradCAM, argmax logit")
    soft_shapley = small.port("ShapleyCAM", "softmax1", SMALL_LAYER, "float64", False, False)
    soft_grad_cam = small.port("GradCAM", "softmax1", SMALL_LAYER, "float64", False, False)
    assert np.abs(soft_shapley - soft_grad_cam).max() > 1e-3, "on a softmax target the Hessian term must matter"


def test_shapley_cam_restores_parameters_and_layers(small):
    import paddle_impl

    _, _, pm, px = small.models("float32")
    flags = [p.stop_gradient for p in pm.parameters()]
    with paddle_impl.ShapleyCAM(model=pm, target_layers=[pm.layer3]) as cam:
        cam(input_tensor=px, targets=small.targets("softmax1", "paddle"))
    assert [p.stop_gradient for p in pm.parameters()] == flags
    assert all(p.grad is None for p in pm.parameters())
    assert not any("forward" in layer.__dict__ for layer in pm.sublayers())
    assert not pm.layer3._forward_post_hooks


@pytest.mark.parametrize("dtype", DTYPES)
def test_projection_helpers_are_upstreams_bit_for_bit(dtype):
    from pytorch_grad_cam.utils import svd_on_activations as upstream

    from paddle_impl.utils import svd_on_activations as port

    rng = np.random.RandomState(3)
    acts = (np.maximum(rng.randn(2, 64, 5, 6), 0) * rng.rand(64, 1, 1)).astype(dtype)
    acts[0, 0, 0, 0] = np.nan
    for name in ("get_2d_projection", "get_2d_projection_with_sign_correction", "get_2d_projection_kernel"):
        got, expected = getattr(port, name)(acts), getattr(upstream, name)(acts)
        assert got.dtype == expected.dtype == np.float32 and np.array_equal(got, expected), name
    assert not np.array_equal(port.get_2d_projection(-acts), port.get_2d_projection_with_sign_correction(-acts))


def test_find_layers_walks_in_upstreams_order(small):
    from paddle_impl.utils.find_layers import find_layer_predicate_recursive, find_layer_types_recursive

    tm, _, pm, _ = small.models("float32")
    torch_names = [name for name, m in tm.named_modules() if type(m) is torch.nn.BatchNorm2d]
    paddle_names = {id(layer): name for name, layer in pm.named_sublayers()}
    found = find_layer_types_recursive(pm, [paddle.nn.BatchNorm2D])
    assert [paddle_names[id(layer)] for layer in found] == torch_names
    convs_with_bias = find_layer_predicate_recursive(
        pm, lambda layer: isinstance(layer, paddle.nn.Conv2D) and layer.bias is not None
    )
    assert convs_with_bias == [], "paddle.vision's ResNet50 convolutions have no bias"


# -- slow tier: full size -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_size(weights_pair, reference_image) -> Sides:
    return Sides(weights_pair, reference_image, 224)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "method,eig", list(F32_FULL_SIZE_BOUNDS), ids=[f"{m}-{'eigen' if e else 'plain'}" for m, e in F32_FULL_SIZE_BOUNDS]
)
def test_full_size_cam_matches_upstream(full_size, method, eig, dtype):
    case = f"{method} eigen_smooth={eig} {dtype} 224x224 layer4"
    expected = full_size.upstream(method, "argmax", "layer4", dtype, False, eig)
    got = full_size.port(method, "argmax", "layer4", dtype, False, eig)
    assert_cam_matches(got, expected, _bound(dtype, F32_FULL_SIZE_BOUNDS[(method, eig)]), case)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
def test_kpca_with_arpack_solver_matches_upstream(full_size, dtype):
    """layer2 at 224 has 784 positions: scikit-learn picks ARPACK, started from numpy's (seeded) global RNG."""
    expected = full_size.upstream("KPCA_CAM", "argmax", "layer2", dtype, False, False)
    got = full_size.port("KPCA_CAM", "argmax", "layer2", dtype, False, False)
    bound = _bound(dtype, 5e-6)  # measured: float32 2.98e-07, float64 0
    assert_cam_matches(got, expected, bound, f"KPCA_CAM {dtype} 224x224 layer2")
