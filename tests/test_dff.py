"""Deep Feature Factorization and its rendering against upstream's.

Both sides factorise with the same scikit-learn ``NMF(init='random',
random_state=0)``, which draws its initialisation from its own seeded
``RandomState``: the same activations give the same draws, so no seeding is
needed here.  Compared: the concepts, the explanation heatmaps, the classifier
outputs on the concepts, ``show_factorization_on_image`` (with its matplotlib
legend) and ``run_dff_on_image``, on the seeded ResNet50 and both.png at
128x128 (layer4: 4x4 positions).
"""
from __future__ import annotations

import types

import matplotlib
import numpy as np
import paddle
import pytest
import torch
from closeness import assert_close as _close

matplotlib.use("Agg")

# Upstream's NMF call (max_iter 200) does not always converge; both sides warn alike.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

SIZE = 128
N_COMPONENTS = 5

# float32 bounds, measured on this machine (relative to max|upstream|):
#   concepts 1.5e-6 (NMF amplifies the ~1e-6 relative differences of the two
#   frameworks' layer4 activations), classifier outputs 1.7e-6, explanations
#   (in [0, 1]) 1.0e-6 absolute.  Bounds ~10x.
# float64: concepts 3.1e-12 relative, outputs 1.7e-15, explanations 0.
BOUNDS = {
    "float32": {"concepts": 2e-5, "outputs": 2e-5, "explanations": 1e-5},
    "float64": {"concepts": 1e-9, "outputs": 1e-9, "explanations": 1e-6},
}


def _assert_close(what: str, got: np.ndarray, expected: np.ndarray, bound: float, relative: bool = False) -> float:
    """max|Δ| (relative to max|upstream| with ``relative``), failing over ``bound``."""
    scale = float(np.abs(np.asarray(expected)).max()) if relative else 1.0
    worst = _close(what, got, expected, bound, scale=scale, scale_text="max|upstream|" if relative else "")
    return worst / scale

@pytest.fixture(scope="module", autouse=True)
def _pinned_threads(one_thread):
    """Every test of this module on one thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def models(weights_pair):
    from parity.weights import load_paddle_state_dict, load_torch_state_dict, paddle_resnet50, torch_resnet50

    torch_path, paddle_path, _ = weights_pair
    torch_state, paddle_state = load_torch_state_dict(torch_path), load_paddle_state_dict(paddle_path)
    pairs = {}
    for dtype in ("float32", "float64"):
        torch_model, paddle_model = torch_resnet50(torch_state, dtype), paddle_resnet50(paddle_state, dtype)
        # run_dff_on_image reads Hugging Face's model.config.id2label.
        labels = {i: f"class {i}, second name {i}, third, fourth" for i in range(1000)}
        torch_model.config = types.SimpleNamespace(id2label=labels)
        paddle_model.config = types.SimpleNamespace(id2label=labels)
        pairs[dtype] = (torch_model, paddle_model)
    return pairs


@pytest.fixture(scope="module")
def rgb(reference_image):
    from parity.worker import load_input_image

    return {dtype: load_input_image(str(reference_image), SIZE, dtype) for dtype in ("float32", "float64")}


def _inputs(rgb_image: np.ndarray):
    from pytorch_grad_cam.utils.image import preprocess_image as torch_preprocess

    from paddle_impl.utils.image import preprocess_image as paddle_preprocess
    from parity.worker import IMAGENET_MEAN, IMAGENET_STD

    return torch_preprocess(rgb_image, IMAGENET_MEAN, IMAGENET_STD), paddle_preprocess(rgb_image, IMAGENET_MEAN, IMAGENET_STD)


def _heads(models, dtype):
    """The classifier heads; upstream hands them float32 concepts, so a float64 head casts first."""
    torch_model, paddle_model = models[dtype]
    if dtype == "float64":
        return (lambda t: torch_model.fc(t.double())), (lambda t: paddle_model.fc(t.astype("float64")))
    return torch_model.fc, paddle_model.fc


def _run_dff(models, rgb, dtype):
    from pytorch_grad_cam.feature_factorization.deep_feature_factorization import (
        DeepFeatureFactorization as TorchDFF,
    )

    from paddle_impl import DeepFeatureFactorization

    torch_model, paddle_model = models[dtype]
    torch_head, paddle_head = _heads(models, dtype)
    torch_x, paddle_x = _inputs(rgb[dtype])
    expected = TorchDFF(torch_model, torch_model.layer4, None, torch_head)(torch_x, N_COMPONENTS)
    with DeepFeatureFactorization(paddle_model, paddle_model.layer4, None, paddle_head) as dff:
        got = dff(paddle_x, N_COMPONENTS)
    return got, expected


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_dff_matches_upstream(models, rgb, dtype):
    (concepts, explanations, outputs), (t_concepts, t_explanations, t_outputs) = _run_dff(models, rgb, dtype)
    bounds = BOUNDS[dtype]
    assert concepts.dtype == t_concepts.dtype and len(explanations) == len(t_explanations) == 1
    _assert_close(f"DFF concepts {dtype}", concepts, t_concepts, bounds["concepts"], relative=True)
    _assert_close(f"DFF classifier outputs {dtype}", outputs, t_outputs, bounds["outputs"], relative=True)
    assert explanations[0].dtype == t_explanations[0].dtype == np.float32
    assert explanations[0].shape == (N_COMPONENTS, SIZE, SIZE)
    _assert_close(f"DFF explanations {dtype}", explanations[0], t_explanations[0], bounds["explanations"])


def test_dff_without_a_head_returns_two_values(models, rgb):
    from paddle_impl import DeepFeatureFactorization

    _, paddle_model = models["float32"]
    with DeepFeatureFactorization(paddle_model, paddle_model.layer4) as dff:
        result = dff(_inputs(rgb["float32"])[1], 3)
    assert len(result) == 2 and result[0].shape == (2048, 3)


def test_dff_function_is_upstreams_on_the_same_array():
    """Same numpy and scikit-learn calls on the same array: bit-identical, NaNs zeroed in place alike."""
    from pytorch_grad_cam.feature_factorization.deep_feature_factorization import dff as torch_dff

    from paddle_impl.feature_factorization import dff

    acts = np.random.RandomState(0).randn(2, 24, 3, 4).astype(np.float32)
    acts[1, 5, 2, 0] = np.nan
    mine, theirs = acts.copy(), acts.copy()
    for got, expected in zip(dff(mine, 4), torch_dff(theirs, 4)):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(mine, theirs)


def test_dff_breakage_is_detected(models, rgb, monkeypatch):
    """A different NMF seed (random_state=1) must fail the float64 comparison of the concepts."""
    from sklearn.decomposition import NMF

    from paddle_impl.feature_factorization import deep_feature_factorization

    monkeypatch.setattr(
        deep_feature_factorization, "NMF", lambda **kwargs: NMF(**{**kwargs, "random_state": 1})
    )
    (concepts, _, _), (t_concepts, _, _) = _run_dff(models, rgb, "float64")
    with pytest.raises(AssertionError, match="exceeds the bound"):
        _assert_close("DFF concepts (broken)", concepts, t_concepts, BOUNDS["float64"]["concepts"], relative=True)


# -- rendering ----------------------------------------------------------------

@pytest.fixture
def upstream_get_cmap(monkeypatch):
    """Upstream calls ``plt.cm.get_cmap``, which matplotlib 3.9 removed; give it back for upstream's sake.

    The port reads the same colormap from ``matplotlib.colormaps``; upstream's
    source is not touched.
    """
    import matplotlib.cm

    monkeypatch.setattr(matplotlib.cm, "get_cmap", lambda name: matplotlib.colormaps[name], raising=False)


def _explanations(seed: int, k: int = 4, h: int = 40, w: int = 56) -> np.ndarray:
    return np.random.RandomState(seed).rand(k, h, w).astype(np.float32)


@pytest.mark.parametrize("with_labels", [False, True])
def test_show_factorization_matches_upstream_byte_for_byte(with_labels):
    from pytorch_grad_cam.utils.image import show_factorization_on_image as torch_show

    from paddle_impl.utils.image import show_factorization_on_image

    img = np.random.RandomState(1).rand(40, 56, 3)
    colors = [np.array(c) for c in [(1.0, 0.0, 0.0, 1.0), (0.2, 0.8, 0.1, 1.0), (0.0, 0.3, 1.0, 1.0), (0.9, 0.9, 0.2, 1.0)]]
    labels = ["cat:0.91\ndog:0.05", "car:0.50\nbus:0.20", "tree:0.33\nsky:0.30", "x:0.10\ny:0.09"] if with_labels else None
    mine, theirs = _explanations(2), _explanations(2)
    got = show_factorization_on_image(img, mine, colors=colors, image_weight=0.4, concept_labels=labels)
    expected = torch_show(img, theirs, colors=colors, image_weight=0.4, concept_labels=labels)
    assert got.dtype == expected.dtype == np.uint8 and got.shape == expected.shape
    assert np.array_equal(got, expected), f"{int((got != expected).sum())} of {got.size} bytes differ (bound: none)"
    # Both zero the losing pixels of the explanations in place.
    np.testing.assert_array_equal(mine, theirs)


def test_show_factorization_default_colours_match_upstream(upstream_get_cmap):
    from pytorch_grad_cam.utils.image import show_factorization_on_image as torch_show

    from paddle_impl.utils.image import show_factorization_on_image

    img = np.random.RandomState(3).rand(40, 56, 3).astype(np.float32)
    for k in (3, 5):
        labels = [f"concept {i}" for i in range(k)]
        got = show_factorization_on_image(img, _explanations(k, k), concept_labels=labels)
        expected = torch_show(img, _explanations(k, k), concept_labels=labels)
        assert np.array_equal(got, expected), f"k={k}: {int((got != expected).sum())} of {got.size} bytes differ"


def test_create_labels_legend_matches_upstream():
    from pytorch_grad_cam.utils.image import create_labels_legend as torch_legend

    from paddle_impl.utils.image import create_labels_legend

    scores = np.random.RandomState(4).rand(5, 30).astype(np.float32)
    labels = {i: f"name{i}, alias{i}, third{i}, dropped{i}" for i in range(30)}
    for top_k in (1, 2, 4):
        assert create_labels_legend(scores, labels, top_k) == torch_legend(scores, labels, top_k)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_run_dff_on_image_matches_upstream(models, rgb, dtype, upstream_get_cmap):
    """The whole helper: image, coloured concepts and the rendered legend, side by side.

    Upstream's own default for ``reshape_transform`` cannot be called, so
    ``None`` is passed explicitly to it.
    """
    from PIL import Image
    from pytorch_grad_cam.feature_factorization.deep_feature_factorization import (
        run_dff_on_image as torch_run_dff_on_image,
    )

    from paddle_impl import run_dff_on_image

    torch_model, paddle_model = models[dtype]
    torch_head, paddle_head = _heads(models, dtype)
    img_pil = Image.fromarray(np.uint8(np.round(rgb["float32"] * 255)))
    torch_x, paddle_x = _inputs(np.asarray(img_pil, dtype=dtype) / 255)
    expected = torch_run_dff_on_image(
        torch_model, torch_model.layer4, torch_head, img_pil, torch_x[0], reshape_transform=None, n_components=4
    )
    got = run_dff_on_image(paddle_model, paddle_model.layer4, paddle_head, img_pil, paddle_x[0], n_components=4)
    assert got.shape == expected.shape == (SIZE, 3 * SIZE, 3)
    differing = got != expected
    levels = int(np.abs(got.astype(int) - expected.astype(int)).max())
    # float64: identical.  float32: the explanations differ by ~1e-6, which moves a pixel
    # when it sits on a uint8 step of the HSV value; measured 4 of 147456 bytes, each by
    # one grey level.  Bound: 1 level on at most 0.1% of the bytes.
    max_levels, max_fraction = (0, 0.0) if dtype == "float64" else (1, 1e-3)
    assert levels <= max_levels and differing.mean() <= max_fraction, (
        f"run_dff_on_image {dtype}: {int(differing.sum())} of {got.size} bytes differ, by up to {levels} "
        f"grey levels (bound: {max_levels} levels on at most {max_fraction:.1%} of the bytes)"
    )
