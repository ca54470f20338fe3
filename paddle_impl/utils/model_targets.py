"""Target callables: turn a model's output into the scalar (or vector) a CAM explains.

Port of ``pytorch_grad_cam/utils/model_targets.py`` (grad-cam 1.5.7), class for
class and in the same order.  Each target is differentiable: a gradient CAM
backpropagates ``target(output)``, so what must agree with upstream is both
the value and its gradient with respect to the model output
(``tests/test_model_targets.py`` compares the two).

``box_iou`` stands in for ``torchvision.ops.box_iou`` (xyxy boxes), which
``FasterRCNNBoxScoreTarget`` needs and Paddle lacks.

The softmax targets use ``paddle.nn.functional.softmax``.  One difference of
Paddle's kernel from torch's is inherited, not introduced: Paddle floors
``exp(x_j - max x)`` at ``exp(-64)``, so a class more than 64 logits below the
top gets probability ~1.6e-28 instead of torch's smaller (or zero) value
(``tests/test_model_targets.py`` pins this).  Writing the softmax out by hand
would avoid that but costs ~10x more float32 error everywhere else
(Paddle's elementwise ``exp`` is less accurate than its softmax kernel's).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

import numpy as np
import paddle
import paddle.nn.functional as F

__all__ = [
    "ClassifierOutputTarget",
    "ClassifierOutputSoftmaxTarget",
    "ClassifierOutputReST",
    "BinaryClassifierOutputTarget",
    "SoftmaxOutputTarget",
    "RawScoresOutputTarget",
    "SemanticSegmentationTarget",
    "FasterRCNNBoxScoreTarget",
    "FinerWeightedTarget",
    "box_area",
    "box_iou",
]

# FinerWeightedTarget keeps its weighted mean finite when every comparison
# probability underflows to 0 (upstream's literal 1e-9).
FINER_EPS = 1e-9


def _numpy_dtype(tensor: paddle.Tensor) -> np.dtype:
    return np.dtype(str(tensor.dtype).split(".")[-1])


def _torch_result_dtype(tensor: paddle.Tensor, array: np.ndarray) -> np.dtype:
    """The dtype torch gives ``tensor * torch.from_numpy(array)`` (both are dimensioned tensors).

    Differs from numpy's rule where an integer or boolean array meets a float
    tensor: torch keeps the tensor's float type (numpy would widen
    float32 x int64 to float64).
    """
    tensor_dtype = _numpy_dtype(tensor)
    array_dtype = np.dtype(array.dtype)
    if tensor_dtype.kind == "f" and array_dtype.kind in "biu":
        return tensor_dtype
    if array_dtype.kind == "f" and tensor_dtype.kind in "biu":
        return array_dtype
    return np.result_type(tensor_dtype, array_dtype)


class ClassifierOutputTarget:
    """The pre-softmax logit of ``category``: ``y^c`` (Grad-CAM's score, https://arxiv.org/abs/1610.02391)."""

    def __init__(self, category: int) -> None:
        self.category = int(category)

    def __call__(self, model_output: paddle.Tensor) -> paddle.Tensor:
        """``y[c]`` for one output row, ``y[:, c]`` for a batch."""
        if len(model_output.shape) == 1:
            return model_output[self.category]
        return model_output[:, self.category]

    def __repr__(self) -> str:
        return f"ClassifierOutputTarget({self.category})"


class ClassifierOutputSoftmaxTarget:
    """The class probability ``p_c = softmax(y)_c`` (the score the Grad-CAM++ paper's metrics use)."""

    def __init__(self, category: int) -> None:
        self.category = int(category)

    def __call__(self, model_output: paddle.Tensor) -> paddle.Tensor:
        """``softmax(y)[c]`` over the last axis, per row."""
        probabilities = F.softmax(model_output, axis=-1)
        if len(model_output.shape) == 1:
            return probabilities[self.category]
        return probabilities[:, self.category]

    def __repr__(self) -> str:
        return f"ClassifierOutputSoftmaxTarget({self.category})"


class ClassifierOutputReST:
    """ReST: the logit minus the cross-entropy loss, ``y_c - CE(y, c) = y_c + log softmax(y)_c``.

    Paper: https://arxiv.org/abs/2501.06261.  Upstream calls
    ``torch.nn.functional.cross_entropy``, which torch evaluates as
    ``nll_loss(log_softmax(y))``; the port writes that decomposition out with
    ``paddle.nn.functional.log_softmax``, the same operations in the same order.
    """

    def __init__(self, category: int) -> None:
        self.category = int(category)

    def __call__(self, model_output: paddle.Tensor) -> paddle.Tensor:
        """``y_c - CE`` for one row (a 0-d tensor) or per row of a batch (shape ``(N,)``)."""
        if len(model_output.shape) == 1:
            # Upstream lifts the row to a batch of one and takes the mean loss over it.
            batch = model_output.unsqueeze(0)
            cross_entropy = -F.log_softmax(batch, axis=-1)[:, self.category].mean()
            return batch[0][self.category] - cross_entropy
        cross_entropy = -F.log_softmax(model_output, axis=-1)[:, self.category]
        return model_output[:, self.category] - cross_entropy

    def __repr__(self) -> str:
        return f"ClassifierOutputReST({self.category})"


class BinaryClassifierOutputTarget:
    """A single-logit classifier: ``+y`` explains class 1, ``-y`` explains class 0."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, model_output: paddle.Tensor) -> paddle.Tensor:
        """``y * sign`` with sign ``+1`` for category 1 and ``-1`` otherwise."""
        sign = 1 if self.category == 1 else -1
        return model_output * sign

    def __repr__(self) -> str:
        return f"BinaryClassifierOutputTarget({self.category})"


class SoftmaxOutputTarget:
    """The whole probability vector ``softmax(y)`` (a backward pass sums it)."""

    def __call__(self, model_output: paddle.Tensor) -> paddle.Tensor:
        """``softmax(y)`` over the last axis."""
        return F.softmax(model_output, axis=-1)


class RawScoresOutputTarget:
    """The model output unchanged (regression heads, or every logit at once)."""

    def __call__(self, model_output: paddle.Tensor) -> paddle.Tensor:
        """``y`` itself."""
        return model_output


class SemanticSegmentationTarget:
    """``sum_{ij} y[c, i, j] * M_{ij}``: a class's scores summed over a spatial mask.

    Used to explain a segmentation model (Seg-Grad-CAM style, see upstream's
    segmentation tutorial).  The mask keeps its numpy dtype, and the product
    takes the dtype torch would give it, so a float64 mask over a float32
    output is summed in float64 as upstream does.
    """

    def __init__(self, category: int, mask: np.ndarray) -> None:
        self.category = category
        self.mask_array = np.asarray(mask)
        self.mask = paddle.to_tensor(self.mask_array)

    def __call__(self, model_output: paddle.Tensor) -> paddle.Tensor:
        """``(y[c] * M).sum()`` for one ``(C, H, W)`` output."""
        dtype = _torch_result_dtype(model_output, self.mask_array)
        scores = model_output[self.category, :, :]
        if _numpy_dtype(scores) != dtype:
            scores = scores.astype(str(dtype))
        mask = self.mask if _numpy_dtype(self.mask) == dtype else self.mask.astype(str(dtype))
        return (scores * mask).sum()

    def __repr__(self) -> str:
        return f"SemanticSegmentationTarget({self.category}, mask{tuple(self.mask_array.shape)})"


def box_area(boxes: paddle.Tensor) -> paddle.Tensor:
    """Areas ``(x2 - x1) * (y2 - y1)`` of ``(N, 4)`` xyxy boxes (``torchvision.ops.box_area``)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: paddle.Tensor, boxes2: paddle.Tensor) -> paddle.Tensor:
    """Pairwise IoU ``|A ∩ B| / (|A| + |B| - |A ∩ B|)`` of xyxy boxes: ``(N, 4), (M, 4) -> (N, M)``.

    ``torchvision.ops.box_iou`` (fmt ``"xyxy"``), operation for operation.
    The negative overlaps are zeroed with ``where(x <= 0, 0, x)`` rather than
    ``clip``, because that routes the gradient as torch's ``clamp(min=0)``
    does: only where ``x > 0`` (boxes that just touch get none).
    ``paddle.maximum``/``minimum`` already split a tie's gradient in halves,
    as torch's do, which matters here because a target box usually *is* one of
    the detected boxes.
    """
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = paddle.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = paddle.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    overlap = rb - lt
    wh = paddle.where(overlap <= 0, paddle.zeros_like(overlap), overlap)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter / union


class FasterRCNNBoxScoreTarget:
    """Detection score: ``sum_b [IoU_b > t and label matches] (IoU_b + score_b)``.

    For each reference box (with its label) the best-overlapping detected box
    is found; if its IoU exceeds ``iou_threshold`` and its label is the
    reference label, its IoU plus its classification score is added.  No
    match adds nothing, so an empty detection scores ``[0.0]``.  The model
    output is torchvision's detection dict (``boxes`` ``(M, 4)`` xyxy,
    ``labels`` ``(M,)``, ``scores`` ``(M,)``) with Paddle tensors.
    """

    def __init__(self, labels: Sequence[Any], bounding_boxes: Sequence[Any], iou_threshold: float = 0.5) -> None:
        self.labels = labels
        self.bounding_boxes = bounding_boxes
        self.iou_threshold = iou_threshold

    def __call__(self, model_outputs: Mapping[str, paddle.Tensor]) -> paddle.Tensor:
        """The summed matched ``IoU + score`` as a shape-``(1,)`` tensor in the boxes' dtype."""
        boxes = model_outputs["boxes"]
        dtype = str(boxes.dtype).split(".")[-1]
        output = paddle.to_tensor([0.0], dtype=dtype)
        if len(boxes) == 0:
            return output

        for box, label in zip(self.bounding_boxes, self.labels):
            reference = self._as_row(box, dtype)
            ious = box_iou(reference, boxes)
            # A flat argmax over the (1, M) matrix, first maximum on ties, as torch's.
            index = int(ious.argmax())
            if bool(ious[0, index] > self.iou_threshold) and bool(model_outputs["labels"][index] == label):
                score = ious[0, index] + model_outputs["scores"][index]
                output = output + score
        return output

    @staticmethod
    def _as_row(box: Union[paddle.Tensor, np.ndarray, Sequence[float]], dtype: str) -> paddle.Tensor:
        """``box[None, :]`` in the detections' dtype (``torch.as_tensor(box[None, :], dtype=...)``)."""
        if isinstance(box, paddle.Tensor):
            return box[None, :].astype(dtype)
        return paddle.to_tensor(np.asarray(box)[None, :].astype(dtype))


class FinerWeightedTarget:
    """Finer-CAM's target: the main logit's probability-weighted margin over similar classes.

        T = sum_k p_k (y_n - alpha * y_k) / (sum_k p_k + 1e-9),   p = softmax(y)

    with ``n`` the main category and ``k`` over the comparison categories.
    Paper: Finer-CAM, https://arxiv.org/abs/2501.11309.
    """

    def __init__(self, main_category: int, comparison_categories: Sequence[int], alpha: float) -> None:
        self.main_category = main_category
        self.comparison_categories = comparison_categories
        self.alpha = alpha

    @property
    def category(self) -> int:
        """The explained class, under the attribute name the harness reads for every target."""
        return self.main_category

    def _select(self, values: paddle.Tensor, index: int) -> paddle.Tensor:
        return values[index] if values.ndim == 1 else values[..., index]

    def __call__(self, model_output: paddle.Tensor) -> paddle.Tensor:
        """``T`` for one row (0-d) or per row of a batch."""
        main_score = self._select(model_output, self.main_category)
        probabilities = F.softmax(model_output, axis=-1)
        weights = [self._select(probabilities, index) for index in self.comparison_categories]
        # Python's sum (starting from 0), like upstream, so the additions happen in the same order.
        numerator = sum(
            weight * (main_score - self.alpha * self._select(model_output, index))
            for weight, index in zip(weights, self.comparison_categories)
        )
        denominator = sum(weights)
        return numerator / (denominator + FINER_EPS)

    def __repr__(self) -> str:
        return f"FinerWeightedTarget({self.main_category}, {list(self.comparison_categories)}, alpha={self.alpha})"
