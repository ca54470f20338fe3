"""Parity of ``paddle_impl.utils.model_targets`` with upstream's ``pytorch_grad_cam.utils.model_targets``.

A gradient CAM backpropagates ``target(output)``, so each target is compared
on its value *and* on the gradient of (the sum of) that value with respect
to the model output, on the same synthetic outputs: classifier logits (one
row and a batch), segmentation logits with a mask, and a torchvision-style
detection dict.  float64 shows the formulas agree (bound 1e-12 relative to
max(1, max|upstream|)); float32 bounds are measured (the value is next to
each bound).
"""
from __future__ import annotations

from typing import Callable, Dict

import numpy as np
import paddle
import pytest
import torch

import pytorch_grad_cam.utils.model_targets as upstream
from paddle_impl.utils import model_targets as port
from closeness import assert_close as _close

torch.set_num_threads(1)
paddle.base.core.set_num_threads(1)

NUM_CLASSES = 12
F64_BOUND = 1e-12  # measured at most 6.4e-16 (FinerWeightedTarget's batched gradient)
# float32 bounds, relative to max(1, max|upstream|), each next to what it measured on these inputs
# (value / gradient).
F32_BOUNDS = {
    "ClassifierOutputTarget": 0.0,  # measured 0 / 0 (indexing)
    "ClassifierOutputSoftmaxTarget": 2e-8,  # measured 3.7e-9 / 3.7e-9
    "ClassifierOutputReST": 2e-7,  # measured 0 / 3.0e-8
    "BinaryClassifierOutputTarget": 0.0,  # measured 0 / 0
    "SoftmaxOutputTarget": 3e-7,  # measured 6.0e-8 / 4.4e-16
    "RawScoresOutputTarget": 0.0,  # measured 0 / 0
    "FinerWeightedTarget": 1e-6,  # measured 8.8e-8 / 2.6e-7
}
SEG_F32_BOUND = 3e-7  # measured 6.2e-8 (value; the sum runs in another order), gradient 0
DET_F32_BOUND = 1e-7  # measured 0 (value and both gradients), also for box_iou


def assert_close(what: str, got: np.ndarray, expected: np.ndarray, rel_bound: float) -> float:
    """Fail with max|Δ|, where, and the bound, unless max|Δ| <= rel_bound * max(1, max|expected|).

    The floor of 1 keeps quantities that are zero in exact arithmetic (the
    gradient of a probability vector's sum) from turning rounding noise into
    an infinite relative error.  Returns max|Δ|.
    """
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(float(np.nanmax(np.abs(expected))), 1.0) if expected.size and not np.isnan(expected).all() else 1.0
    return _close(what, got, expected, rel_bound, scale=scale, scale_text="max(1, max|upstream|)")

def _value_and_grad_torch(target: Callable, output: np.ndarray):
    tensor = torch.from_numpy(output.copy()).requires_grad_(True)
    value = target(tensor)
    value.sum().backward()
    return value.detach().numpy(), tensor.grad.numpy()


def _value_and_grad_paddle(target: Callable, output: np.ndarray):
    tensor = paddle.to_tensor(output.copy())
    tensor.stop_gradient = False
    value = target(tensor)
    value.sum().backward()
    grad = tensor.grad.numpy() if tensor.grad is not None else np.zeros_like(output)
    return value.numpy(), grad


def compare_target(name: str, make_upstream, make_port, output: np.ndarray, rel_bound: float) -> Dict[str, float]:
    """Value and d(sum value)/d(output) of both targets on the same output; returns the max|Δ| of each."""
    ref_value, ref_grad = _value_and_grad_torch(make_upstream(), output)
    got_value, got_grad = _value_and_grad_paddle(make_port(), output)
    return {
        "value": assert_close(f"{name} value", got_value, ref_value, rel_bound),
        "gradient": assert_close(f"{name} d/d output", got_grad, ref_grad, rel_bound),
    }


@pytest.fixture(scope="module")
def logits() -> np.ndarray:
    # Spread like a classifier's logits, with a clear winner in row 0.
    rows = np.random.RandomState(0).randn(3, NUM_CLASSES) * 4
    rows[0, 5] += 10
    return rows


CLASSIFIER_TARGETS = {
    "ClassifierOutputTarget": lambda m: m.ClassifierOutputTarget(5),
    "ClassifierOutputSoftmaxTarget": lambda m: m.ClassifierOutputSoftmaxTarget(5),
    "ClassifierOutputReST": lambda m: m.ClassifierOutputReST(7),
    "BinaryClassifierOutputTarget": lambda m: m.BinaryClassifierOutputTarget(1),
    "SoftmaxOutputTarget": lambda m: m.SoftmaxOutputTarget(),
    "RawScoresOutputTarget": lambda m: m.RawScoresOutputTarget(),
    "FinerWeightedTarget": lambda m: m.FinerWeightedTarget(5, [2, 9, 0], 0.7),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rows", ["row", "batch"])
@pytest.mark.parametrize("name", sorted(CLASSIFIER_TARGETS))
def test_classifier_targets_match_upstream(name, rows, dtype, logits):
    output = logits[0] if rows == "row" else logits
    output = output.astype(dtype)
    make = CLASSIFIER_TARGETS[name]
    bound = F64_BOUND if dtype == "float64" else F32_BOUNDS[name]
    compare_target(f"{name}[{rows}, {dtype}]", lambda: make(upstream), lambda: make(port), output, bound)


@pytest.mark.parametrize("category", [0, 1])
def test_binary_target_sign(category, logits):
    """Category 1 explains +y, anything else -y, on a single-logit output."""
    output = logits[:, :1].astype(np.float32)
    compare_target(
        f"BinaryClassifierOutputTarget({category})",
        lambda: upstream.BinaryClassifierOutputTarget(category),
        lambda: port.BinaryClassifierOutputTarget(category),
        output,
        0.0,
    )


@pytest.mark.parametrize("alpha", [0.0, 1, 2.5])
def test_finer_weighted_target_alpha_and_tiny_probabilities(alpha):
    """Comparison classes with probabilities far below 1e-9 leave the eps to dominate the denominator."""
    output = np.zeros(6)
    output[0] = 60.0  # others get exp(-60) ~ 9e-27 (kept under Paddle's exp(-64) floor, see below)
    for dtype in ("float64", "float32"):
        compare_target(
            f"FinerWeightedTarget(alpha={alpha}, {dtype})",
            lambda: upstream.FinerWeightedTarget(0, [3, 4], alpha),
            lambda: port.FinerWeightedTarget(0, [3, 4], alpha),
            output.astype(dtype),
            0.0,
        )


@pytest.mark.parametrize("mask_dtype", ["float32", "float64", "bool", "int64"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_semantic_segmentation_target_matches_upstream(dtype, mask_dtype):
    rng = np.random.RandomState(1)
    output = rng.randn(4, 9, 11).astype(dtype) * 3
    mask = (rng.rand(9, 11) > 0.4).astype(mask_dtype)
    tensor = torch.from_numpy(output.copy()).requires_grad_(True)
    ref = upstream.SemanticSegmentationTarget(2, mask)(tensor)
    ref.backward()
    got_tensor = paddle.to_tensor(output.copy())
    got_tensor.stop_gradient = False
    got = port.SemanticSegmentationTarget(2, mask)(got_tensor)
    got.backward()
    # The promoted dtype is torch's (a float64 mask makes the sum float64, an int or bool mask does not).
    assert str(got.dtype).split(".")[-1] == str(ref.dtype).split(".")[-1]
    bound = F64_BOUND if str(ref.dtype) == "torch.float64" else SEG_F32_BOUND
    assert_close(f"SemanticSegmentationTarget value ({dtype} output, {mask_dtype} mask)", got.numpy(), ref.detach().numpy(), bound)
    assert_close(
        f"SemanticSegmentationTarget d/d output ({dtype} output, {mask_dtype} mask)",
        got_tensor.grad.numpy(), tensor.grad.numpy(), bound,
    )


def _detections(dtype: str):
    """Six detected boxes; reference boxes that hit exactly, nearly, with the wrong label, below the threshold, or not at all."""
    boxes = np.array(
        [
            [10, 10, 50, 60],
            [30, 5, 90, 40],
            [100, 100, 140, 150],
            [12, 8, 52, 61],
            [0, 0, 20, 20],
            [60, 60, 61, 61],
        ],
        dtype=dtype,
    )
    labels = np.array([3, 1, 3, 7, 2, 5])
    scores = np.array([0.9, 0.8, 0.75, 0.6, 0.3, 0.2], dtype=dtype)
    references = np.array(
        [
            [10, 10, 50, 60],  # identical to box 0: every max/min is a tie
            [31.5, 6, 88, 41],  # close to box 1
            [100, 100, 140, 150],  # box 2 but with the wrong label below
            [0, 0, 30, 30],  # best IoU with box 4 is under 0.5
            [200, 200, 210, 210],  # no overlap at all
            [60, 60, 61, 61],  # a tiny box
        ],
        dtype=np.float64,
    )
    reference_labels = [3, 1, 4, 2, 1, 5]
    return boxes, labels, scores, references, reference_labels


def _detection_value_and_grads(framework: str, target_module, dtype: str, threshold: float, empty: bool = False):
    boxes, labels, scores, references, reference_labels = _detections(dtype)
    if empty:
        boxes, labels, scores = boxes[:0], labels[:0], scores[:0]
    if framework == "torch":
        tb = torch.from_numpy(boxes.copy()).requires_grad_(True)
        ts = torch.from_numpy(scores.copy()).requires_grad_(True)
        outputs = {"boxes": tb, "labels": torch.from_numpy(labels), "scores": ts}
        value = target_module.FasterRCNNBoxScoreTarget(reference_labels, references, threshold)(outputs)
        if value.requires_grad:
            value.sum().backward()
        grad = lambda t: t.grad.numpy() if t.grad is not None else np.zeros(t.shape, dtype=dtype)
        return value.detach().numpy(), grad(tb), grad(ts)
    pb = paddle.to_tensor(boxes.copy())
    pb.stop_gradient = False
    ps = paddle.to_tensor(scores.copy())
    ps.stop_gradient = False
    outputs = {"boxes": pb, "labels": paddle.to_tensor(labels), "scores": ps}
    value = target_module.FasterRCNNBoxScoreTarget(reference_labels, references, threshold)(outputs)
    if not value.stop_gradient:
        value.sum().backward()
    grad = lambda t: t.grad.numpy() if t.grad is not None else np.zeros(t.shape, dtype=dtype)
    return value.numpy(), grad(pb), grad(ps)


@pytest.mark.parametrize("threshold", [0.5, 0.0])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_faster_rcnn_box_score_target_matches_upstream(dtype, threshold):
    ref = _detection_value_and_grads("torch", upstream, dtype, threshold)
    got = _detection_value_and_grads("paddle", port, dtype, threshold)
    bound = F64_BOUND if dtype == "float64" else DET_F32_BOUND
    for what, g, r in zip(("value", "d/d boxes", "d/d scores"), got, ref):
        assert_close(f"FasterRCNNBoxScoreTarget {what} ({dtype}, iou_threshold={threshold})", g, r, bound)
    assert ref[0][0] > 0, "the fixture must produce matches, or the comparison proves little"


def test_faster_rcnn_box_score_target_without_detections():
    ref = _detection_value_and_grads("torch", upstream, "float32", 0.5, empty=True)
    got = _detection_value_and_grads("paddle", port, "float32", 0.5, empty=True)
    assert got[0].shape == ref[0].shape == (1,) and got[0][0] == ref[0][0] == 0.0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_box_iou_matches_torchvision(dtype):
    import torchvision

    boxes, _, _, references, _ = _detections(dtype)
    references = references.astype(dtype)
    t1 = torch.from_numpy(references.copy()).requires_grad_(True)
    t2 = torch.from_numpy(boxes.copy()).requires_grad_(True)
    ref = torchvision.ops.box_iou(t1, t2)
    ref.sum().backward()
    p1 = paddle.to_tensor(references.copy())
    p2 = paddle.to_tensor(boxes.copy())
    p1.stop_gradient = p2.stop_gradient = False
    got = port.box_iou(p1, p2)
    got.sum().backward()
    bound = F64_BOUND if dtype == "float64" else DET_F32_BOUND
    assert_close(f"box_iou ({dtype})", got.numpy(), ref.detach().numpy(), bound)
    assert_close(f"box_iou d/d boxes1 ({dtype})", p1.grad.numpy(), t1.grad.numpy(), bound)
    assert_close(f"box_iou d/d boxes2 ({dtype})", p2.grad.numpy(), t2.grad.numpy(), bound)


def test_paddle_softmax_floors_probabilities_at_exp_minus_64():
    """A property of Paddle 3.3.1's softmax kernel that the softmax targets inherit (torch has no floor).

    A class more than 64 logits below the top gets exp(-64) / sum ~ 1.6e-28
    instead of torch's value; the absolute difference is below 1.7e-28.  If a
    Paddle release drops the floor, this fails and the note in
    ``paddle_impl/utils/model_targets.py`` can go.
    """
    logits = np.array([100.0, 0.0])
    got = port.ClassifierOutputSoftmaxTarget(1)(paddle.to_tensor(logits)).numpy()
    ref = upstream.ClassifierOutputSoftmaxTarget(1)(torch.from_numpy(logits)).numpy()
    assert float(got) == float(np.exp(-64.0)) and float(ref) == float(np.exp(-100.0))
    assert abs(float(got) - float(ref)) < 1.7e-28


def test_targets_keep_the_category_the_harness_reads():
    assert port.ClassifierOutputTarget(np.int64(3)).category == 3
    assert port.FinerWeightedTarget(4, [1, 2], 1.0).category == 4
    assert port.SemanticSegmentationTarget(2, np.ones((2, 2), np.float32)).category == 2


# -- breakage: the comparison must catch a wrong port ---------------------------------------


def test_breakage_finer_eps_is_detected(monkeypatch):
    """A different epsilon in FinerWeightedTarget's denominator must fail the comparison."""
    output = np.zeros(6)
    output[0] = 30.0  # small comparison probabilities, so the eps is not negligible
    make = lambda m: m.FinerWeightedTarget(0, [3, 4], 1.0)
    compare_target("FinerWeightedTarget intact", lambda: make(upstream), lambda: make(port), output, F64_BOUND)
    monkeypatch.setattr(port, "FINER_EPS", 1e-12)
    with pytest.raises(AssertionError, match="max\\|Δ\\|"):
        compare_target("FinerWeightedTarget broken eps", lambda: make(upstream), lambda: make(port), output, F64_BOUND)


def test_breakage_box_iou_union_is_detected(monkeypatch):
    """An IoU whose union forgets to subtract the intersection must fail the detection-target comparison."""

    def wrong_iou(boxes1, boxes2):
        lt = paddle.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
        rb = paddle.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
        wh = paddle.clip(rb - lt, min=0)
        inter = wh[..., 0] * wh[..., 1]
        return inter / (port.box_area(boxes1)[:, None] + port.box_area(boxes2)[None, :])

    monkeypatch.setattr(port, "box_iou", wrong_iou)
    ref = _detection_value_and_grads("torch", upstream, "float64", 0.0)
    got = _detection_value_and_grads("paddle", port, "float64", 0.0)
    with pytest.raises(AssertionError, match="FasterRCNNBoxScoreTarget value"):
        assert_close("FasterRCNNBoxScoreTarget value (broken box_iou)", got[0], ref[0], F64_BOUND)
