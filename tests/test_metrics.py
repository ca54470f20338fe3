"""Parity of ``paddle_impl.metrics`` with upstream's ``pytorch_grad_cam.metrics``.

Setting: the seeded ResNet50 (``weights_pair``) on ``both.png`` resized to
64x64, as a batch of two (the image and its mirror image), with two fixed
CAMs given to both sides as the same float32 arrays: a Gaussian blob for the
first image and upstream's Grad-CAM (float64, ``layer3``) for the second.

Random numbers: ROAD's imputer adds ``0.01 * N(0, 1)`` noise.  Upstream
draws it with ``torch.randn_like``; the port with
``NoisyLinearImputer.draw_noise``.  For parity both sides consume the same
draws: torch's generator is seeded with the same value right before each
side's call, and the port's ``draw_noise`` is replaced by
``torch.randn_like(torch.from_numpy(like))``, which repeats upstream's call on
a tensor of the same shape, dtype and memory layout, so every image of every
percentile gets the same noise on both sides (the imputed images are then
bit-identical, ``test_noisy_linear_imputer_is_bitwise_upstream``).

float64: upstream's ROAD cannot run on a float64 input (its imputer writes a
float32 solution into a float64 tensor, which torch refuses:
``test_upstream_road_refuses_float64``).  The float64 ROAD and ARCC
references are therefore upstream's classes with that one assignment given a
cast (``_Float64CapableImputer``), everything else unmodified.

Bounds are absolute; each has the value it measured next to it.
"""
from __future__ import annotations

from typing import Dict, Tuple

import cv2
import numpy as np
import paddle
import pytest
import torch
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import spsolve

import pytorch_grad_cam.metrics.arcc as t_arcc
import pytorch_grad_cam.metrics.cam_mult_image as t_cam_mult
import pytorch_grad_cam.metrics.perturbation_confidence as t_perturbation
import pytorch_grad_cam.metrics.road as t_road
from pytorch_grad_cam.utils import model_targets as t_targets

from paddle_impl.metrics import arcc as p_arcc
from paddle_impl.metrics import cam_mult_image as p_cam_mult
from paddle_impl.metrics import perturbation_confidence as p_perturbation
from paddle_impl.metrics import road as p_road
from paddle_impl.utils import model_targets as p_targets
from closeness import assert_close, assert_float32_close_to_exact

torch.set_num_threads(1)
paddle.base.core.set_num_threads(1)

SIZE = 64
SEED = 1234
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# Absolute bounds by what is compared and the dtype, each with the value it measured.  Every metric
# ends in float32 (upstream casts the scores), so float64 agrees only up to a float32 rounding: a
# float64 logit that differs in its 10th digit may round to the neighbouring float32, which is
# 1.9e-6 apart for scores in [16, 32); the float64 bounds allow two such steps.
BOUNDS = {
    ("logit", "float64"): 4e-6,  # scores in logits (|score| < 32 here); measured 0
    ("logit", "float32"): 2e-4,  # measured 4.2e-5 (ROADLeastRelevantFirst(80)); logits differ by 3.8e-5
    ("probability", "float64"): 2.4e-7,  # scores in [0, 1]; measured 0
    ("probability", "float32"): 3e-6,  # measured 4.2e-7
    ("unit", "float64"): 2.4e-7,  # Coherency and ARCC, in [0, 1]; measured 0
    ("unit", "float32"): 1e-5,  # port float32 vs upstream float64: measured 2.4e-7 (Coherency), 2.5e-6 (ARCC)
}


SCALE_OF = {"logit": "logit", "softmax": "probability"}


# -- the shared setting ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setting(weights_pair, reference_image):
    """Input batch, fixed CAMs, top classes, and a model pair per dtype (built on first use)."""
    from parity.weights import load_paddle_state_dict, load_torch_state_dict

    torch_path, paddle_path, _ = weights_pair
    states = (load_torch_state_dict(torch_path), load_paddle_state_dict(paddle_path))
    rgb = cv2.cvtColor(cv2.imread(str(reference_image)), cv2.COLOR_BGR2RGB)
    rgb = cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    chw = ((rgb - np.float32(MEAN)) / np.float32(STD)).transpose(2, 0, 1)
    batch = np.ascontiguousarray(np.stack([chw, chw[:, :, ::-1]]))
    models: Dict[str, Tuple[torch.nn.Module, paddle.nn.Layer]] = {}

    def model_pair(dtype: str):
        from parity.weights import paddle_resnet50, torch_resnet50

        if dtype not in models:
            models[dtype] = (torch_resnet50(states[0], dtype), paddle_resnet50(states[1], dtype))
        return models[dtype]

    torch_model64 = model_pair("float64")[0]
    with torch.no_grad():
        logits = torch_model64(torch.from_numpy(batch.astype(np.float64))).numpy()
    from pytorch_grad_cam import GradCAM

    with GradCAM(model=torch_model64, target_layers=[torch_model64.layer3]) as cam:
        gradcam = cam(input_tensor=torch.from_numpy(batch.astype(np.float64)), targets=None)
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    blob = np.exp(-((rows - 22.0) ** 2 + (cols - 40.0) ** 2) / (2 * 9.0**2))
    cams = np.stack([blob, gradcam[1]]).astype(np.float32)
    return {"batch": batch, "cams": cams, "top": logits.argmax(axis=1), "bottom": logits.argmin(axis=1), "models": model_pair}


def _inputs(setting, dtype: str):
    batch = setting["batch"].astype(dtype)
    torch_model, paddle_model = setting["models"](dtype)
    return torch.from_numpy(batch), paddle.to_tensor(batch), torch_model, paddle_model


def _targets(kind: str, classes):
    if kind == "logit":
        return [t_targets.ClassifierOutputTarget(c) for c in classes], [p_targets.ClassifierOutputTarget(c) for c in classes]
    return (
        [t_targets.ClassifierOutputSoftmaxTarget(c) for c in classes],
        [p_targets.ClassifierOutputSoftmaxTarget(c) for c in classes],
    )


@pytest.fixture
def same_noise(monkeypatch):
    """Make the port draw ROAD's noise exactly as upstream does (see the module docstring)."""
    monkeypatch.setattr(
        p_road.NoisyLinearImputer, "draw_noise", lambda self, like: torch.randn_like(torch.from_numpy(like)).numpy()
    )


class _Float64CapableImputer(t_road.NoisyLinearImputer):
    """Upstream's imputer with one change: the float32 fill is cast to the image's dtype before it is written.

    Unmodified upstream raises there for a float64 image; nothing else differs
    (same system, same solve, same float32 rounding, same ``randn_like`` draw).
    """

    def __call__(self, img, mask):
        imgflt = img.reshape(img.shape[0], -1)
        indices_linear = np.argwhere(mask.reshape(-1) == 0).flatten()
        A, b = t_road.NoisyLinearImputer.setup_sparse_system(mask.numpy(), img.numpy(), t_road.neighbors_weights)
        res = torch.tensor(spsolve(csc_matrix(A), b), dtype=torch.float)
        img_infill = imgflt.clone()
        img_infill[:, indices_linear] = (res.t() + self.noise * torch.randn_like(res.t())).to(img.dtype)
        return img_infill.reshape_as(img)


@pytest.fixture
def upstream_road_for(monkeypatch):
    """``upstream_road_for(dtype)``: unmodified upstream for float32; the cast-only variant for float64."""

    def choose(dtype: str):
        if dtype == "float64":
            monkeypatch.setattr(t_road, "NoisyLinearImputer", _Float64CapableImputer)
        return t_road

    return choose


def _seeded(call):
    torch.manual_seed(SEED)
    return call()


# -- cam_mult_image ----------------------------------------------------------------------------


@pytest.mark.parametrize("target_kind", ["logit", "softmax"])
@pytest.mark.parametrize("metric", ["CamMultImageConfidenceChange", "DropInConfidence", "IncreaseInConfidence"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cam_mult_image_metrics_match_upstream(setting, dtype, metric, target_kind):
    tx, px, tm, pm = _inputs(setting, dtype)
    # The top class (whose confidence drops) for the first image, the bottom one (whose rises) for the second.
    classes = [setting["top"][0], setting["bottom"][1]]
    t_tg, p_tg = _targets(target_kind, classes)
    ref = getattr(t_cam_mult, metric)()(tx, setting["cams"], t_tg, tm)
    got = getattr(p_cam_mult, metric)()(px, setting["cams"], p_tg, pm)
    assert got.dtype == ref.dtype == np.float32
    assert_close(f"{metric} ({dtype}, {target_kind} targets)", got, ref, BOUNDS[(SCALE_OF[target_kind], dtype)])
    if metric == "CamMultImageConfidenceChange":
        assert ref[0] < 0 < ref[1], "the setting must show a drop and an increase, or Drop/Increase prove little"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cam_mult_visualization_and_return_diff(setting, dtype):
    """The perturbed batch is ``x * L`` bit for bit; ``return_diff=False`` gives the raw post-perturbation scores."""
    tx, px, tm, pm = _inputs(setting, dtype)
    t_tg, p_tg = _targets("logit", setting["top"])
    ref, ref_images = t_cam_mult.CamMultImageConfidenceChange()(tx, setting["cams"], t_tg, tm, return_visualization=True)
    got, got_images = p_cam_mult.CamMultImageConfidenceChange()(px, setting["cams"], p_tg, pm, return_visualization=True)
    np.testing.assert_array_equal(got_images.numpy(), ref_images.numpy())
    assert_close(f"CamMultImageConfidenceChange ({dtype})", got, ref, BOUNDS[("logit", dtype)])
    ref_raw = t_cam_mult.CamMultImageConfidenceChange()(tx, setting["cams"], t_tg, tm, return_diff=False)
    got_raw = p_cam_mult.CamMultImageConfidenceChange()(px, setting["cams"], p_tg, pm, return_diff=False)
    assert_close(f"CamMultImageConfidenceChange return_diff=False ({dtype})", got_raw, ref_raw, BOUNDS[("logit", dtype)])


# -- ROAD: the imputer ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("percentile", [10, 50, 90, "auto"])
def test_noisy_linear_imputer_is_bitwise_upstream(setting, same_noise, percentile, dtype):
    """Same sparse system (indices, order, values), same right-hand side, same imputed image with noise."""
    image = setting["batch"][1].astype(dtype)
    cam = setting["cams"][1]
    keep = p_perturbation.keep_mask(cam, percentile)
    if percentile != "auto":
        threshold = np.percentile(cam, percentile)
        np.testing.assert_array_equal(keep, np.float32(torch.from_numpy(cam) < threshold))
    A_ref, b_ref = t_road.NoisyLinearImputer.setup_sparse_system(keep, image, t_road.neighbors_weights)
    A_ref = csc_matrix(A_ref)
    A_got, b_got = p_road.NoisyLinearImputer.setup_sparse_system(keep, image, p_road.neighbors_weights)
    for part in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(A_got, part), getattr(A_ref, part), err_msg=f"system matrix {part}")
    np.testing.assert_array_equal(b_got, b_ref, err_msg="right-hand side")
    assert A_ref.shape[0] > 100, "the mask must remove pixels"

    imputer = _Float64CapableImputer() if dtype == "float64" else t_road.NoisyLinearImputer()
    ref = _seeded(lambda: imputer(torch.from_numpy(image), torch.from_numpy(keep)).numpy())
    got = _seeded(lambda: p_road.NoisyLinearImputer()(paddle.to_tensor(image), paddle.to_tensor(keep)).numpy())
    np.testing.assert_array_equal(got, ref, err_msg=f"imputed image (percentile {percentile}, {dtype})")


def test_upstream_road_refuses_float64(setting):
    """Why the float64 ROAD reference needs the cast: unmodified upstream raises on a float64 image."""
    image = torch.from_numpy(setting["batch"][0].astype(np.float64))
    keep = torch.from_numpy(p_perturbation.keep_mask(setting["cams"][0], 50))
    with pytest.raises(RuntimeError, match="dtype"):
        t_road.NoisyLinearImputer()(image, keep)


def test_port_noise_comes_from_paddles_generator(setting):
    """By default the port's noise is ``paddle.randn``: reproducible under ``paddle.seed``, and really drawn."""
    image = paddle.to_tensor(setting["batch"][0])
    keep = paddle.to_tensor(p_perturbation.keep_mask(setting["cams"][0], 50))
    runs = []
    for seed in (7, 7, 8):
        paddle.seed(seed)
        runs.append(p_road.NoisyLinearImputer()(image, keep).numpy())
    np.testing.assert_array_equal(runs[0], runs[1])
    removed = keep.numpy() == 0
    delta = (runs[0] - runs[2])[:, removed]
    assert 0.005 < float(np.std(delta)) / np.sqrt(2) < 0.02, "noise of standard deviation 0.01 expected"


# -- ROAD: the metrics ---------------------------------------------------------------------------


@pytest.mark.parametrize("percentile", [20, 80, "auto"])
@pytest.mark.parametrize("metric", ["ROADMostRelevantFirst", "ROADLeastRelevantFirst"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_road_single_percentile_matches_upstream(setting, same_noise, upstream_road_for, dtype, metric, percentile):
    tx, px, tm, pm = _inputs(setting, dtype)
    t_tg, p_tg = _targets("logit", setting["top"])
    reference = upstream_road_for(dtype)
    ref, ref_images = _seeded(
        lambda: getattr(reference, metric)(percentile)(tx, setting["cams"], t_tg, tm, return_visualization=True)
    )
    got, got_images = _seeded(
        lambda: getattr(p_road, metric)(percentile)(px, setting["cams"], p_tg, pm, return_visualization=True)
    )
    np.testing.assert_array_equal(got_images.numpy(), ref_images.numpy(), err_msg=f"{metric}({percentile}) imputed batch")
    assert_close(f"{metric}({percentile}) ({dtype})", got, ref, BOUNDS[("logit", dtype)])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_road_averages_and_combined_match_upstream(setting, same_noise, upstream_road_for, dtype):
    tx, px, tm, pm = _inputs(setting, dtype)
    t_tg, p_tg = _targets("logit", setting["top"])
    reference = upstream_road_for(dtype)
    names = ["ROADMostRelevantFirstAverage", "ROADLeastRelevantFirstAverage"]
    # ROADCombined in float64 is covered inside test_arcc_matches_upstream[float64].
    names += ["ROADCombined"] if dtype == "float32" else []
    for name in names:
        percentiles = [30, 70]
        ref = _seeded(lambda: getattr(reference, name)(percentiles)(tx, setting["cams"], t_tg, tm))
        got = _seeded(lambda: getattr(p_road, name)(percentiles)(px, setting["cams"], p_tg, pm))
        assert got.dtype == ref.dtype
        assert_close(f"{name}({percentiles}) ({dtype})", got, ref, BOUNDS[("logit", dtype)])


@pytest.mark.slow
def test_road_combined_default_percentiles_matches_upstream(setting, same_noise):
    tx, px, tm, pm = _inputs(setting, "float32")
    t_tg, p_tg = _targets("softmax", setting["top"])
    ref = _seeded(lambda: t_road.ROADCombined()(tx, setting["cams"], t_tg, tm))
    got = _seeded(lambda: p_road.ROADCombined()(px, setting["cams"], p_tg, pm))
    # measured 4.2e-7
    assert_close("ROADCombined(default percentiles) (float32, softmax targets)", got, ref, BOUNDS[("probability", "float32")])


def test_averager_across_thresholds_with_a_custom_metric(setting):
    """``AveragerAcrossThresholds`` with a non-ROAD, noise-free percentile metric (zeroing instead of imputing)."""
    tx, px, tm, pm = _inputs(setting, "float32")
    t_tg, p_tg = _targets("logit", setting["top"])

    def upstream_metric(percentile):
        zero = lambda img, keep: img * keep
        return t_perturbation.PerturbationConfidenceMetric(t_perturbation.RemoveLeastRelevantFirst(percentile, zero))

    def port_metric(percentile):
        zero = lambda img, keep: img * keep.astype(img.dtype)
        return p_perturbation.PerturbationConfidenceMetric(p_perturbation.RemoveLeastRelevantFirst(percentile, zero))

    ref = t_perturbation.AveragerAcrossThresholds(upstream_metric, [40, 60])(tx, setting["cams"], t_tg, tm)
    got = p_perturbation.AveragerAcrossThresholds(port_metric, [40, 60])(px, setting["cams"], p_tg, pm)
    assert_close("AveragerAcrossThresholds(zeroing LeRF)", got, ref, BOUNDS[("logit", "float32")])


# -- arcc ----------------------------------------------------------------------------------------


def test_complexity_and_pearson_are_upstreams():
    rng = np.random.RandomState(3)
    a = rng.rand(3, 16, 16).astype(np.float32)
    b = (a + 0.3 * rng.rand(3, 16, 16)).astype(np.float32)
    np.testing.assert_array_equal(p_arcc.Complexity()(a), t_arcc.Complexity()(a))
    np.testing.assert_array_equal(p_arcc.batch_pearson_coherency(a, b), t_arcc.batch_pearson_coherency(a, b))
    constant = np.full((1, 4, 4), 0.5, dtype=np.float32)
    np.testing.assert_array_equal(
        p_arcc.batch_pearson_coherency(constant, constant), t_arcc.batch_pearson_coherency(constant, constant)
    )


def _torch_gradcam(tm):
    from pytorch_grad_cam import GradCAM as TorchGradCAM

    return TorchGradCAM(model=tm, target_layers=[tm.layer3])


def _gradcams(tm, pm):
    from paddle_impl.grad_cam import GradCAM

    return _torch_gradcam(tm), GradCAM(model=pm, target_layers=[pm.layer3])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_coherency_matches_upstream(setting, dtype):
    tx, px, tm, pm = _inputs(setting, dtype)
    t_tg, p_tg = _targets("logit", setting["top"])
    t_cam, p_cam = _gradcams(tm, pm)
    with t_cam, p_cam:
        ref = t_arcc.Coherency()(tx, setting["cams"], t_tg, tm, t_cam)
        got = p_arcc.Coherency()(px, setting["cams"], p_tg, pm, p_cam)
    if dtype == "float64":
        assert_close(f"Coherency ({dtype})", got, ref, BOUNDS[("unit", dtype)])
        return
    # The CAM recomputed on image x CAM amplifies float32 rounding by the CPU's kernels: on an AVX2 EPYC upstream's
    # float32 is 8.8e-5 from its float64 result, the port's 2.4e-7.  Hold the port to the exact answer.
    tx64, _, tm64, _ = _inputs(setting, "float64")
    with _torch_gradcam(tm64) as t_cam64:
        exact = t_arcc.Coherency()(tx64, setting["cams"], t_tg, tm64, t_cam64)
    assert_float32_close_to_exact("Coherency (float32)", got, ref, exact, BOUNDS[("unit", dtype)])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_arcc_matches_upstream(setting, same_noise, upstream_road_for, dtype):
    tx, px, tm, pm = _inputs(setting, dtype)
    t_tg, p_tg = _targets("softmax", setting["top"])
    reference = upstream_road_for(dtype)
    t_cam, p_cam = _gradcams(tm, pm)
    with t_cam, p_cam:
        ref = _seeded(lambda: t_arcc.ARCC(t_cam, road_percentiles=[30, 70])(tx, setting["cams"], t_tg, tm))
        got = _seeded(lambda: p_arcc.ARCC(p_cam, road_percentiles=[30, 70])(px, setting["cams"], p_tg, pm))
    assert np.all((0 < ref) & (ref < 1)), f"ARCC out of (0, 1): {ref}"
    if dtype == "float64":
        assert_close(f"ARCC ({dtype})", got, ref, BOUNDS[("unit", dtype)])
        return
    # As Coherency: on an AVX2 EPYC upstream's float32 ARCC is 3.7e-5 from its float64 result, the port's 1.2e-6.
    tx64, _, tm64, _ = _inputs(setting, "float64")
    upstream_road_for("float64")
    with _torch_gradcam(tm64) as t_cam64:
        exact = _seeded(lambda: t_arcc.ARCC(t_cam64, road_percentiles=[30, 70])(tx64, setting["cams"], t_tg, tm64))
    assert_float32_close_to_exact("ARCC (float32)", got, ref, exact, BOUNDS[("unit", dtype)])


# -- breakage: the comparisons must catch a wrong port -----------------------------------------


def test_breakage_cam_mult_perturbation_is_detected(setting, monkeypatch):
    """Multiplying by ``1 - L`` instead of ``L`` must fail the Drop in Confidence comparison."""
    monkeypatch.setattr(p_cam_mult, "multiply_tensor_with_cam", lambda x, cam: x * (1 - cam))
    tx, px, tm, pm = _inputs(setting, "float32")
    t_tg, p_tg = _targets("softmax", setting["top"])
    ref = t_cam_mult.DropInConfidence()(tx, setting["cams"], t_tg, tm)
    got = p_cam_mult.DropInConfidence()(px, setting["cams"], p_tg, pm)
    with pytest.raises(AssertionError, match="DropInConfidence"):
        assert_close("DropInConfidence (broken)", got, ref, BOUNDS[("probability", "float32")])


def test_breakage_lerf_without_inversion_is_detected(setting, same_noise, monkeypatch):
    """A LeRF that forgets to invert the CAM (so removes the most relevant pixels) must fail."""
    monkeypatch.setattr(
        p_perturbation.RemoveLeastRelevantFirst,
        "__call__",
        lambda self, x, mask: p_perturbation.RemoveMostRelevantFirst.__call__(self, x, mask),
    )
    tx, px, tm, pm = _inputs(setting, "float32")
    t_tg, p_tg = _targets("logit", setting["top"])
    ref = _seeded(lambda: t_road.ROADLeastRelevantFirst(50)(tx, setting["cams"], t_tg, tm))
    got = _seeded(lambda: p_road.ROADLeastRelevantFirst(50)(px, setting["cams"], p_tg, pm))
    with pytest.raises(AssertionError, match="ROADLeastRelevantFirst"):
        assert_close("ROADLeastRelevantFirst(50) (broken)", got, ref, BOUNDS[("logit", "float32")])


def test_breakage_imputer_weights_are_detected(setting, same_noise, monkeypatch):
    """Equal neighbour weights (1/8 each) instead of ROAD's 1/6 and 1/12 must fail."""
    monkeypatch.setattr(p_road, "neighbors_weights", [(offset, 1 / 8) for offset, _ in p_road.neighbors_weights])
    tx, px, tm, pm = _inputs(setting, "float32")
    t_tg, p_tg = _targets("logit", setting["top"])
    ref = _seeded(lambda: t_road.ROADMostRelevantFirst(50)(tx, setting["cams"], t_tg, tm))
    got = _seeded(lambda: p_road.ROADMostRelevantFirst(50)(px, setting["cams"], p_tg, pm))
    with pytest.raises(AssertionError, match="ROADMostRelevantFirst"):
        assert_close("ROADMostRelevantFirst(50) (broken)", got, ref, BOUNDS[("logit", "float32")])


def test_breakage_pearson_eps_is_detected(setting, monkeypatch):
    """A larger epsilon in the Pearson correlation must fail the Coherency comparison."""
    monkeypatch.setattr(p_arcc, "PEARSON_EPS", 1e-3)
    tx, px, tm, pm = _inputs(setting, "float64")
    t_tg, p_tg = _targets("logit", setting["top"])
    t_cam, p_cam = _gradcams(tm, pm)
    with t_cam, p_cam:
        ref = t_arcc.Coherency()(tx, setting["cams"], t_tg, tm, t_cam)
        got = p_arcc.Coherency()(px, setting["cams"], p_tg, pm, p_cam)
    with pytest.raises(AssertionError, match="Coherency"):
        assert_close("Coherency (broken)", got, ref, BOUNDS[("unit", "float64")])
