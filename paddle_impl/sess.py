"""SESS: Saliency Enhancing with Scaling and Sliding (Tyagi et al., ECCV 2022, https://arxiv.org/abs/2207.01769).

    For every scale s and every window position p of the image resized to s:
        c_{s,p} = score of the target on the patch (softmax by default, clipped at 0)
        M_{s,p} = base method's CAM of the patch, pasted back at p and resized to the input
    With the patches sorted by score (the lowest ``pre_filter_ratio`` dropped) and
    w_{s,p} = c_{s,p} / max c:
        mean pooling:  L(x) = sum_{s,p: w M(x) > theta} w M_{s,p}(x) / #{s,p: w M_{s,p}(x) > theta}
        max pooling:   L(x) = max_{s,p} w M_{s,p}(x)
    then an 11x11 Gaussian blur (sigma 5) and a min-max scaling.

Twin of ``pytorch_grad_cam/sess.py``.  Upstream resizes with torchvision's
``resize`` (bilinear with antialiasing, torchvision's default for tensors
since 0.17); Paddle has no antialiased resize, so ``resize`` below computes
torch's antialiased-bilinear kernel (``_upsample_bilinear2d_aa``) in numpy:
the same per-axis weights, the same width-then-height passes, and the
multiply-adds fused as torch's compiled CPU loop fuses them.  That is
bit-identical to torchvision when enlarging, which is all SESS does (every
scale is at least the window size), and within a few ulps when shrinking;
``tests/test_meta_methods.py`` compares it with torchvision directly.
SESS draws no random numbers.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, List, Optional, Sequence, Tuple, Type

import cv2
import numpy as np
import paddle
import paddle.nn.functional as F

from paddle_impl.base_cam import BaseCAM
from paddle_impl.grad_cam import GradCAM
from paddle_impl.utils.image import scale_cam_image
from paddle_impl.utils.model_targets import ClassifierOutputTarget

__all__ = ["SESS", "resize", "sliding_window", "window_starts"]

Coordinates = Tuple[int, int, int, int]


# -- torchvision's tensor resize (bilinear, antialias=True), in numpy ----------------

@functools.lru_cache(maxsize=128)
def _antialias_weights(input_size: int, output_size: int, dtype: np.dtype) -> Tuple[np.ndarray, np.ndarray]:
    """First source index and normalised triangle-filter weights for every output index of one axis.

    The filter is widened by the scale when shrinking (the antialiasing)
    and is the plain bilinear triangle when enlarging.  The arithmetic
    follows ATen's ``_compute_indices_min_size_weights_aa`` for the data's
    ``scalar_t``; for float32 that mixes float and double exactly where the
    C++ does (``scale * (i + 0.5)`` in double, rounded to float, etc.).
    Every output index is computed at once (each is independent of the
    others; only the running sum over a row's taps is sequential, and it
    stays so), and the result is cached: SESS asks for the same dozen
    (size, scale) pairs for every image.  The arrays are read-only.
    """
    dtype = np.dtype(dtype)
    real = dtype.type
    scale = real(input_size) / real(output_size)
    support = real(np.float64(scale)) if scale >= 1.0 else real(1.0)
    taps = int(math.ceil(float(support))) * 2 + 1
    inverse_scale = np.float64(real(1.0 / np.float64(scale)) if scale >= 1.0 else real(1.0))

    center = (np.float64(scale) * (np.arange(output_size) + 0.5)).astype(dtype)
    # int() of a double truncates towards zero, as the C++ cast does.
    first = np.maximum(np.trunc((center - support).astype(np.float64) + 0.5).astype(np.int64), 0)
    last = np.minimum(np.trunc((center + support).astype(np.float64) + 0.5).astype(np.int64), input_size)
    count = np.clip(last - first, 0, taps)

    weights = np.zeros((output_size, taps), dtype=dtype)
    total = np.zeros(output_size, dtype=dtype)
    for j in range(taps):
        distance = np.abs(
            (((first + j).astype(dtype) - center).astype(np.float64) + 0.5) * inverse_scale
        ).astype(dtype)
        w = np.where(distance < 1.0, (1.0 - distance.astype(np.float64)).astype(dtype), real(0.0))
        w = np.where(j < count, w, real(0.0))
        weights[:, j] = w
        # Taps past the count add an exact 0, so each row's sum is the C++'s sequential one.
        total = total + w
    normalised = total != 0.0
    weights[normalised] = weights[normalised] / total[normalised, None]
    first.setflags(write=False)
    weights.setflags(write=False)
    return first, weights


_SPLITTER = 134217729.0  # 2**27 + 1: splits a double into two 26-bit halves


def _fused_multiply_add(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``a * b + c`` with one rounding, as the FMA instruction torch's compiled loop uses.

    float32: the product of two floats is exact in double, so a double sum
    rounded once to float gives the fused result.  float64: Dekker's exact
    product and Knuth's exact sum give it (up to ties that do not occur in
    practice).
    """
    if a.dtype == np.float32:
        return (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(np.float32)
    product = a * b
    a_big = _SPLITTER * a
    a_high = a_big - (a_big - a)
    a_low = a - a_high
    b_big = _SPLITTER * b
    b_high = b_big - (b_big - b)
    b_low = b - b_high
    product_error = ((a_high * b_high - product) + a_high * b_low + a_low * b_high) + a_low * b_low
    total = product + c
    virtual = total - product
    sum_error = (product - (total - virtual)) + (c - virtual)
    return total + (sum_error + product_error)


def _resample_axis(x: np.ndarray, axis: int, output_size: int) -> np.ndarray:
    input_size = x.shape[axis]
    starts, weights = _antialias_weights(input_size, output_size, x.dtype)
    moved = np.moveaxis(x, axis, -1)
    # Taps past a row's own count have weight 0; clamping their index keeps
    # the gather in bounds, and adding 0 * x leaves the sum unchanged.
    index = np.minimum(starts[:, None] + np.arange(weights.shape[1])[None, :], input_size - 1)
    out = moved[..., index[:, 0]] * weights[:, 0]
    for j in range(1, weights.shape[1]):
        out = _fused_multiply_add(moved[..., index[:, j]], weights[:, j], out)
    return np.moveaxis(out, -1, axis)


def _resized_shape(height: int, width: int, size: int) -> Tuple[int, int]:
    """torchvision's output (H, W) for an int ``size``: the shorter side becomes ``size``."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
    return new_height, new_width


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """``torchvision.transforms.functional.resize(image, size)`` for a float (..., H, W) array.

    Bilinear, ``align_corners=False``, antialiased; the shorter side becomes
    ``size`` and the longer keeps the aspect ratio (truncated).  Returns the
    input itself when the size does not change, as torchvision does.
    Bit-identical to torchvision when enlarging (SESS's case, every scale
    at least the window size); within a few ulps when shrinking, where
    torch's compiled loop fuses only some of the multiply-adds.
    """
    height, width = image.shape[-2:]
    new_height, new_width = _resized_shape(height, width, size)
    if (new_height, new_width) == (height, width):
        return image
    if new_width != width:
        image = _resample_axis(image, image.ndim - 1, new_width)
    if new_height != height:
        image = _resample_axis(image, image.ndim - 2, new_height)
    return image


# -- windows ------------------------------------------------------------------------

def window_starts(length: int, step_size: int, window_size: int) -> List[int]:
    """Start offsets of windows along one axis; the last one is pulled back to end at the border."""
    starts = []
    for start in range(0, length, step_size):
        if start + window_size >= length:
            starts.append(max(length - window_size, 0))
            break
        starts.append(start)
    return starts


def sliding_window(height: int, width: int, step_size: int, window_size: int) -> List[Tuple[int, int]]:
    """(x, y) top-left corners of every window, row by row."""
    return [
        (x, y)
        for y in window_starts(height, step_size, window_size)
        for x in window_starts(width, step_size, window_size)
    ]


class _CAMFusion:
    """Running fusion of pasted patch CAMs, so memory does not grow with the number of patches."""

    def __init__(self, size: Tuple[int, int], pool: str, theta: float) -> None:
        self.pool = pool
        self.theta = theta
        self.total = np.zeros(size, dtype=np.float32)
        self.counts = np.zeros(size, dtype=np.float32)

    def add(self, cam: np.ndarray) -> None:
        if self.pool == "max":
            np.maximum(self.total, cam, out=self.total)
            return
        above = cam > self.theta
        self.total[above] += cam[above]
        self.counts += above

    def result(self) -> np.ndarray:
        if self.pool == "max":
            return self.total
        # Each pixel is averaged over the patches whose CAM passed theta there; 0 where none did.
        return np.divide(self.total, self.counts, out=np.zeros_like(self.total), where=self.counts > 0)


class _StoredPasses:
    """The base CAM's forward/backward results for every patch, replayed into its CAM step batch by batch.

    ``cams`` does what the second half of ``BaseCAM.forward`` does
    (``compute_cam_per_layer`` then ``aggregate_multi_layers``) on a batch
    of patches in any order: it puts those patches' outputs, activations
    and gradients where the forward pass would have left them.  Each
    patch's rows are its own (every operation is per image), so the CAM
    is the one a fresh pass on that batch gives, and whatever observes the
    base CAM's steps sees upstream's batches in upstream's order.
    """

    def __init__(self, base_cam: BaseCAM) -> None:
        self.base_cam = base_cam
        self.outputs: List[paddle.Tensor] = []
        self.activations: List[List[paddle.Tensor]] = []
        self.gradients: List[List[paddle.Tensor]] = []
        self._all: Optional[Tuple[paddle.Tensor, List[paddle.Tensor], List[paddle.Tensor]]] = None

    def keep(self) -> None:
        """Store what the base CAM's last forward/backward pass left (the next pass replaces those lists)."""
        recorded = self.base_cam.activations_and_grads
        self.outputs.append(self.base_cam.outputs.detach())
        self.activations.append(list(recorded.activations))
        self.gradients.append(list(recorded.gradients))

    def _joined(self) -> Tuple[paddle.Tensor, List[paddle.Tensor], List[paddle.Tensor]]:
        """Every patch's outputs, and per target layer its activations and gradients, one row per patch."""
        if self._all is None:
            self._all = (
                paddle.concat(self.outputs),
                [paddle.concat(list(layer)) for layer in zip(*self.activations)],
                [paddle.concat(list(layer)) for layer in zip(*self.gradients)],
            )
        return self._all

    def cams(self, batch: paddle.Tensor, indices: np.ndarray, targets: List[Callable], eigen_smooth: bool) -> np.ndarray:
        """The base CAM's (len(indices), h, w) CAMs of the patches ``indices`` (``batch`` holds those patches)."""
        base = self.base_cam
        recorded = base.activations_and_grads
        rows = paddle.to_tensor(np.asarray(indices, dtype=np.int64))
        outputs, activations, gradients = self._joined()
        base.outputs = paddle.gather(outputs, rows)
        recorded.activations = [paddle.gather(layer, rows) for layer in activations]
        recorded.gradients = [paddle.gather(layer, rows) for layer in gradients]
        cam_per_layer = base.compute_cam_per_layer(batch, targets, eigen_smooth)
        return base.aggregate_multi_layers(cam_per_layer)


class SESS:
    """A meta-method: ``base_method`` on patches of the image at several scales, fused by score.

    Paper: https://arxiv.org/abs/2207.01769; the formula is in this module's
    docstring.  Constructor and defaults as upstream (``scales`` default to
    ``num_scales`` sizes from the window size up in steps of
    ``round(scale_step_ratio * window)``; the window defaults to the
    input's shorter side and the step to the window).  Extra keyword
    arguments go to ``base_method``.  Unlike upstream there is no
    ``device`` attribute: a Paddle model runs where its tensors are.
    """

    def __init__(
        self,
        model: paddle.nn.Layer,
        target_layers: List[paddle.nn.Layer],
        reshape_transform: Optional[Callable] = None,
        base_method: Type[BaseCAM] = GradCAM,
        scales: Optional[List[int]] = None,
        num_scales: int = 12,
        scale_step_ratio: float = 2.0 / 7.0,
        window_size: Optional[int] = None,
        step_size: Optional[int] = None,
        pre_filter_ratio: float = 0.0,
        theta: float = 0.0,
        pool: str = "mean",
        smooth: bool = True,
        use_softmax_scores: bool = True,
        batch_size: int = 32,
        **kwargs,
    ) -> None:
        """Validate the options and build the base CAM (see the class docstring)."""
        if pool not in ("mean", "max"):
            raise ValueError(f"pool has to be either 'mean' or 'max'. Got: {pool}.")
        if not 0.0 <= pre_filter_ratio < 1.0:
            raise ValueError(f"pre_filter_ratio has to be in [0, 1). Got: {pre_filter_ratio}.")
        if num_scales < 1:
            raise ValueError(f"num_scales has to be at least 1. Got: {num_scales}.")

        self.base_cam = base_method(model, target_layers, reshape_transform, **kwargs)
        self.model = self.base_cam.model
        self.scales = scales
        self.num_scales = num_scales
        self.scale_step_ratio = scale_step_ratio
        self.window_size = window_size
        self.step_size = step_size
        self.pre_filter_ratio = pre_filter_ratio
        self.theta = theta
        self.pool = pool
        self.smooth = smooth
        self.use_softmax_scores = use_softmax_scores
        self.batch_size = batch_size

    def __call__(self, *args, **kwargs) -> np.ndarray:
        """Same as ``forward``."""
        return self.forward(*args, **kwargs)

    def forward(
        self,
        input_tensor: paddle.Tensor,
        targets: Optional[List[Callable]] = None,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        """(B, H, W) float32 CAMs in [0, 1], one image at a time (each has its own patches and scores)."""
        batch_size = int(input_tensor.shape[0])
        if targets is None:
            targets = [None] * batch_size
        if len(targets) != batch_size:
            raise ValueError(
                f"Expected one target per image. Got {len(targets)} targets for {batch_size} images."
            )
        # Patches are cut from a numpy copy, so nothing here keeps the input's graph.
        images = input_tensor.detach().numpy()
        cams = [
            self.forward_single_image(images[i : i + 1], target, eigen_smooth) for i, target in enumerate(targets)
        ]
        return scale_cam_image(np.float32(cams))

    def forward_single_image(
        self, image: np.ndarray, target: Optional[Callable], eigen_smooth: bool = False
    ) -> np.ndarray:
        """The fused, blurred (H, W) CAM of one (1, C, H, W) image, before the final scaling."""
        height, width = image.shape[-2:]
        window_size = self.window_size if self.window_size is not None else min(height, width)
        step_size = self.step_size if self.step_size is not None else window_size
        if target is None:
            target = self.get_target(image)

        patches, coordinates = self.collect_patches(image, window_size, step_size)
        if self.scores_come_with_cams():
            passes, scores = self.run_every_patch(patches, target)
        else:
            passes, scores = None, self.get_scores(patches, target)

        # Only the best-scoring patches are explained; argsort's order also
        # fixes the order the patch CAMs are fused in, as upstream.
        order = np.argsort(scores)[int(len(scores) * self.pre_filter_ratio) :]
        max_score = scores[order[-1]]
        weights = scores[order] / max_score if max_score > 0 else np.ones(len(order), np.float32)

        fusion = _CAMFusion((height, width), self.pool, self.theta)
        for batch_start in range(0, len(order), self.batch_size):
            indices = order[batch_start : batch_start + self.batch_size]
            batch = paddle.to_tensor(np.concatenate([patches[i] for i in indices]))
            if passes is None:
                batch_cams = self.base_cam(batch, [target] * len(indices), eigen_smooth=eigen_smooth)
            else:
                batch_cams = passes.cams(batch, indices, [target] * len(indices), eigen_smooth)
            batch_weights = weights[batch_start : batch_start + self.batch_size]
            for cam, weight, index in zip(batch_cams, batch_weights, indices):
                fusion.add(self.paste_cam(cam * weight, coordinates[index], (height, width)))

        cam = fusion.result()
        if self.smooth:
            cam = cv2.GaussianBlur(cam, (11, 11), 5.0, 0)
        return cam

    def scores_come_with_cams(self) -> bool:
        """Whether the base CAM's own forward pass can also give the patch scores (see ``run_every_patch``).

        That needs every patch explained (no pre-filtering: otherwise the
        scores decide which patches get a CAM) and a base CAM with BaseCAM's
        plain pipeline, whose ``outputs``, activations and gradients are
        kept between its forward/backward pass and its CAM computation.  A
        method with its own forward (ScoreCAM, AblationCAM), a second-order
        graph (ShapleyCAM) or an input gradient (FullGrad) keeps upstream's
        separate scoring pass.
        """
        base = self.base_cam
        return (
            self.pre_filter_ratio == 0.0
            and isinstance(base, BaseCAM)
            and base.detach
            and not base.compute_input_gradient
            and type(base).forward is BaseCAM.forward
            and type(base).forward_and_backward is BaseCAM.forward_and_backward
        )

    def run_every_patch(self, patches: Sequence[np.ndarray], target: Callable) -> Tuple["_StoredPasses", np.ndarray]:
        """The base CAM's forward/backward pass on every patch, kept, and the (N,) patch scores read from it.

        Upstream runs the network twice on every patch: once without
        gradients for its score, then again inside the base method.  Both
        are the model on the same patch, so the base method's pass is run
        first, in the batches ``get_scores`` makes, and its outputs give the
        scores (the same softmax and target; where the base runs the part
        before its target layer compiled, ``paddle_impl.prefix_engine``, the
        scores are that forward's, float32 rounding apart).  The CAMs are computed
        afterwards from the kept activations and gradients, in the score
        order and batches upstream uses (see ``_StoredPasses``).
        """
        base = self.base_cam
        passes = _StoredPasses(base)
        scores = []
        for batch_start in range(0, len(patches), self.batch_size):
            chunk = patches[batch_start : batch_start + self.batch_size]
            base.forward_and_backward(paddle.to_tensor(np.concatenate(chunk)), [target] * len(chunk))
            passes.keep()
            scores.append(self.target_scores(base.outputs.detach(), target))
        return passes, np.maximum(np.concatenate(scores), 0)

    def target_scores(self, outputs: paddle.Tensor, target: Callable) -> np.ndarray:
        """The target's score in each row of ``outputs``: of the softmax (default) or the raw output."""
        with paddle.no_grad():
            if self.use_softmax_scores:
                outputs = F.softmax(outputs, axis=-1)
            return target(outputs).numpy()

    def get_scales(self, window_size: int) -> List[int]:
        """The shorter-side sizes the image is resized to."""
        if self.scales is not None:
            return self.scales
        step = int(round(window_size * self.scale_step_ratio))
        return [window_size + step * i for i in range(self.num_scales)]

    def collect_patches(
        self, image: np.ndarray, window_size: int, step_size: int
    ) -> Tuple[List[np.ndarray], List[Coordinates]]:
        """Every window of every scale, and for each (x1, y1, scaled_width, scaled_height)."""
        patches: List[np.ndarray] = []
        coordinates: List[Coordinates] = []
        for scale in self.get_scales(window_size):
            if scale < window_size:
                raise ValueError(f"Every scale has to be at least the window size {window_size}. Got: {scale}.")
            scaled = resize(image, scale)
            scaled_height, scaled_width = scaled.shape[-2:]
            for x1, y1 in sliding_window(scaled_height, scaled_width, step_size, window_size):
                patches.append(scaled[:, :, y1 : y1 + window_size, x1 : x1 + window_size])
                coordinates.append((x1, y1, scaled_width, scaled_height))
        return patches, coordinates

    def get_target(self, image: np.ndarray) -> ClassifierOutputTarget:
        """The image's highest-scoring category, as ``BaseCAM`` picks it."""
        with paddle.no_grad():
            outputs = self.model(paddle.to_tensor(image))
        return ClassifierOutputTarget(np.argmax(outputs[0].numpy(), axis=-1))

    def get_scores(self, patches: Sequence[np.ndarray], target: Callable) -> np.ndarray:
        """The target's score on every patch: of the softmax (default) or the raw output, clipped at 0."""
        scores = []
        with paddle.no_grad():
            for batch_start in range(0, len(patches), self.batch_size):
                batch = paddle.to_tensor(np.concatenate(patches[batch_start : batch_start + self.batch_size]))
                scores.append(self.target_scores(self.model(batch), target))
        # A negative score cannot weigh a CAM.
        return np.maximum(np.concatenate(scores), 0)

    def paste_cam(self, cam: np.ndarray, coordinates: Coordinates, target_size: Tuple[int, int]) -> np.ndarray:
        """Put a patch CAM where its patch was in the scaled image, then resize that canvas to the input."""
        x1, y1, scaled_width, scaled_height = coordinates
        height, width = target_size
        canvas = np.zeros((scaled_height, scaled_width), dtype=np.float32)
        canvas[y1 : y1 + cam.shape[0], x1 : x1 + cam.shape[1]] = cam
        return cv2.resize(canvas, (width, height))

    def release(self) -> None:
        """Remove the base CAM's hooks."""
        self.base_cam.release()

    def __del__(self) -> None:
        # The base CAM does not exist when the arguments were refused.
        if hasattr(self, "base_cam"):
            self.base_cam.release()

    def __enter__(self) -> "SESS":
        return self

    def __exit__(self, exc_type, exc_value, exc_tb) -> None:
        return self.base_cam.__exit__(exc_type, exc_value, exc_tb)
