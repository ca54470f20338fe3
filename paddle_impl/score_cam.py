"""Score-CAM (Wang et al., 2020, https://arxiv.org/abs/1910.01279).

    M_k = norm(up(A^k))  (bilinear, align_corners=True; per-channel min-max, + 1e-8)
    s_k = y^c(X ⊙ M_k)             w = softmax_k(s)       L^c = ReLU(sum_k w_k A^k)

Same numbers as upstream, less work:
* a channel's masked image is built only when its batch is scored, instead of
  materialising all C masked copies of the input at once (2048 x 3 x 224 x 224
  floats, 1.2 GB, for ResNet50's layer4);
* channels whose normalised masks are bit-identical (all the dead, all-zero
  channels for instance) produce bit-identical masked images, so each distinct
  mask is scored once and its score shared;
* in float32 on the CPU the first pass and the masked images run in one
  Paddle Inference predictor with oneDNN (``paddle_impl.inference_engine``),
  about 4x faster than dynamic-graph Paddle; ``inference_engine=False`` runs
  the model itself.  Where most of the weights come after the target layer
  (a VGG's classifier), the predictor covers only what runs before it and the
  rest runs in the dynamic graph (``BaseCAM.prefix_engine_for``): a predictor
  of the whole network would hold a second copy of those weights (vgg11 at
  224x224: 3,312 MiB peak against 1,770, upstream 2,258; 40.1 s a call
  against 43.4, measured).
Scores are collected as Python floats and turned into float32 before the
softmax, as upstream does, so the weights are float32 even for a float64 model.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import numpy as np
import paddle
import paddle.nn.functional as F

from paddle_impl.base_cam import BaseCAM
from paddle_impl.inference_engine import make_batch_scorer
from paddle_impl.progress import progress

__all__ = ["ScoreCAM"]


class ScoreCAM(BaseCAM):
    # The first pass and the scoring passes share one predictor: of the whole network
    # (BaseCAM.forward_through_engine), or of what runs before the target layer where the rest is heavy.
    compiled_forward = True

    def __init__(
        self,
        model,
        target_layers,
        reshape_transform=None,
        batch_size: int = 16,
        inference_engine: bool = True,
        engine_threads: Optional[int] = None,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform=reshape_transform, uses_gradients=False)
        self.batch_size = batch_size
        self.inference_engine = inference_engine
        self.engine_threads = engine_threads
        self._scorers: Dict[tuple, Callable] = {}
        self.progress_callback: Optional[Callable[[int, int], None]] = None
        # Images the network ran on in the last call: the first pass's batch plus every masked image scored.
        self.last_forward_count = 0

    def forward(self, input_tensor: paddle.Tensor, targets, eigen_smooth: bool = False) -> np.ndarray:
        # The scorer is built before the first forward pass, not in the middle of the first call:
        # exporting and creating a oneDNN predictor happens in this process, and every dynamic-graph
        # pass should see the process in one state, so that the first pass of a ScoreCAM object
        # computes exactly what its later passes on the same input compute.
        self._scorer_for(input_tensor)
        self.last_forward_count = int(input_tensor.shape[0])
        return super().forward(input_tensor, targets, eigen_smooth)

    def normalised_masks(self, input_tensor: paddle.Tensor, activations: np.ndarray) -> paddle.Tensor:
        """(B, C, H, W) upsampled activations, each channel min-max scaled to [0, 1].

        A channel whose activations are all one value is upsampled to exactly
        that value, so its mask is exactly zero.  Paddle's bilinear
        interpolate leaves rounding noise on a constant map (a range of about
        1e-7 of the value in float32), and the min-max division (range
        + 1e-8) blows that noise up into a mask of order one.  torch's
        interpolate is exact on a constant map in some geometries (every one
        measured at 14x14 -> 224x224, about 40% of values at 7x7 -> 224x224,
        none at 4x4 -> 16x16); there upstream's mask is zero and this one now
        equals it.  Every other channel is Paddle's interpolate, untouched.
        """
        upsampled = F.interpolate(
            paddle.to_tensor(activations), size=list(input_tensor.shape[-2:]), mode="bilinear", align_corners=True
        )
        flat_activations = np.asarray(activations).reshape(activations.shape[0], activations.shape[1], -1)
        channel_max = flat_activations.max(axis=-1)
        constant = channel_max == flat_activations.min(axis=-1)
        if constant.any():
            exact = upsampled.numpy()
            exact[constant] = channel_max[constant][:, None, None]
            upsampled = paddle.to_tensor(exact)
        flat = upsampled.reshape([upsampled.shape[0], upsampled.shape[1], -1])
        maxs = flat.max(axis=-1)[:, :, None, None]
        mins = flat.min(axis=-1)[:, :, None, None]
        return (upsampled - mins) / (maxs - mins + 1e-8)

    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads) -> np.ndarray:
        with paddle.no_grad():
            masks = self.normalised_masks(input_tensor, activations)
            scorer = self._scorer_for(input_tensor)
            scores: List[float] = []
            for batch_index, target in enumerate(targets):
                scores.extend(self._score_channels(input_tensor[batch_index], masks[batch_index], target, scorer))
        scores_f32 = paddle.to_tensor(np.float32(scores)).reshape(list(activations.shape[:2]))
        return F.softmax(scores_f32, axis=-1).numpy()

    def _scorer_for(self, input_tensor: paddle.Tensor) -> Callable:
        """The (cached) function that scores a batch shaped like ``input_tensor``."""
        key = (tuple(input_tensor.shape[1:]), str(input_tensor.dtype), self.inference_engine)
        if key not in self._scorers:
            prefix_engine = self.prefix_engine_for(input_tensor)
            engine = None if prefix_engine is not None else self.forward_engine_for(input_tensor)
            if prefix_engine is not None:
                self._scorers[key] = self._without_stored_activations(
                    lambda batch: prefix_engine(self.model, batch, self.model))
            elif engine is not None:
                self._scorers[key] = lambda batch: engine(batch)[0]
            else:
                self._scorers[key] = self._without_stored_activations(make_batch_scorer(
                    self.model, input_tensor, enabled=self.inference_engine, threads=self.engine_threads
                ))
        return self._scorers[key]

    def _without_stored_activations(self, scorer: Callable) -> Callable:
        """``scorer``, dropping what the target-layer hooks store while it runs the model.

        The masked images' activations are not the CAM's; kept, they would
        grow with every batch (vgg16's 14x14x512 target at batch 16: 6.4 MB
        each, about 200 MB a call).
        """
        stored = self.activations_and_grads

        def score(batch: paddle.Tensor) -> paddle.Tensor:
            kept = len(stored.activations)
            try:
                return scorer(batch)
            finally:
                del stored.activations[kept:]

        return score

    def _score_channels(
        self, image: paddle.Tensor, masks: paddle.Tensor, target: Callable, scorer: Callable
    ) -> List[float]:
        """Score ``image * mask_k`` for every channel k, scoring each distinct mask once."""
        masks_np = masks.numpy()
        first_channel_of: Dict[bytes, int] = {}
        representative = np.empty(len(masks_np), dtype=np.int64)
        for channel, mask in enumerate(masks_np):
            representative[channel] = first_channel_of.setdefault(mask.tobytes(), channel)
        distinct = sorted(first_channel_of.values())

        score_of: Dict[int, float] = {}
        batch_starts = range(0, len(distinct), self.batch_size)
        for start in progress(batch_starts, desc="ScoreCAM", unit="batch"):
            channels = distinct[start : start + self.batch_size]
            batch = image[None] * paddle.index_select(masks, paddle.to_tensor(channels), axis=0)[:, None]
            outputs = scorer(batch)
            self.last_forward_count += len(channels)
            for channel, output in zip(channels, outputs):
                score_of[channel] = target(output).item()
            if self.progress_callback is not None:
                self.progress_callback(min(start + self.batch_size, len(distinct)), len(distinct))
        return [score_of[int(r)] for r in representative]
