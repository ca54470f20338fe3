"""Ablation-CAM (Desai & Ramaswamy, WACV 2020,
https://openaccess.thecvf.com/content_WACV_2020/papers/Desai_Ablation-CAM_Visual_Explanations_for_Deep_Convolutional_Network_via_Gradient-free_Localization_WACV_2020_paper.pdf).

    w_k = (y^c - y^c_k) / y^c      y^c_k: the score with channel k of the target layer ablated
    L^c = ReLU(sum_k w_k A^k)

Same numbers as upstream, less work.  Upstream swaps the target layer for an
``AblationLayer`` and runs the *whole* model on batches of copies of the
input, recomputing every layer before the target only for the ablation layer
to throw the result away.  Here those earlier layers are swapped for a
pass-through while ablating, so each batch runs just the part of the network
after the target layer (for ResNet50's layer4: avgpool and fc).  Before
trusting the shortcut it is checked: the shortened model, fed the unablated
activations, must reproduce the original logits bit for bit; if it does not
(a model that reuses early features later on), the full model is run instead.
The original scores are read from the main forward pass instead of a second one.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, List, Optional

import numpy as np
import paddle

from paddle_impl.ablation_layer import AblationLayer
from paddle_impl.base_cam import BaseCAM
from paddle_impl.progress import progress
from paddle_impl.utils.find_layers import layer_references

__all__ = ["AblationCAM"]


class _PassThrough(paddle.nn.Layer):
    def forward(self, x, *args, **kwargs):
        return x


def _layers_run_before(model: paddle.nn.Layer, target_layer: paddle.nn.Layer, input_tensor: paddle.Tensor):
    """Every sub-layer that finishes before ``target_layer`` starts and is not its ancestor, and the target
    layer's raw output (before any reshape transform).

    Found by one traced forward pass; only the outermost such layers are kept.
    """
    finished: List[paddle.nn.Layer] = []
    started = {"target": False}
    target_output = {}
    handles = []

    def on_pre(layer, inputs):
        if layer is target_layer:
            started["target"] = True

    def on_post(layer, inputs, output):
        if layer is target_layer:
            target_output["value"] = output
        if not started["target"]:
            finished.append(layer)

    for layer in model.sublayers():
        handles.append(layer.register_forward_pre_hook(on_pre))
        handles.append(layer.register_forward_post_hook(on_post))
    try:
        with paddle.no_grad():
            model(input_tensor)
    finally:
        for handle in handles:
            handle.remove()

    finished_ids = {id(layer) for layer in finished}
    outermost: Dict[int, paddle.nn.Layer] = {}

    def visit(parent: paddle.nn.Layer) -> None:
        for child in parent._sub_layers.values():
            if child is None or child is target_layer:
                continue
            if id(child) in finished_ids:
                outermost[id(child)] = child
            else:
                visit(child)

    visit(model)
    return list(outermost.values()), target_output["value"].numpy()


class AblationCAM(BaseCAM):
    def __init__(
        self,
        model: paddle.nn.Layer,
        target_layers: List[paddle.nn.Layer],
        reshape_transform: Optional[Callable] = None,
        ablation_layer: Optional[AblationLayer] = None,
        batch_size: int = 32,
        ratio_channels_to_ablate: float = 1.0,
    ) -> None:
        super().__init__(model, target_layers, reshape_transform, uses_gradients=False)
        self.batch_size = batch_size
        self.ablation_layer = ablation_layer if ablation_layer is not None else AblationLayer()
        self.ratio_channels_to_ablate = ratio_channels_to_ablate
        self.shortcut_used: Optional[bool] = None

    @contextlib.contextmanager
    def _ablating(self, target_layer: paddle.nn.Layer, skipped_layers: List[paddle.nn.Layer]) -> Iterator[None]:
        """Swap in the ablation layer for the target and pass-throughs for ``skipped_layers``; undo on exit.

        Every reference is swapped: a model may hold a layer under two names, and
        its ``forward`` may call it through a plain list (paddle.vision's DenseNet
        keeps its dense blocks as attributes and in a list ``forward`` iterates).
        """
        swaps = [(container, key, self.ablation_layer) for container, key in layer_references(self.model, target_layer)]
        for layer in skipped_layers:
            swaps += [(container, key, _PassThrough()) for container, key in layer_references(self.model, layer)]
        originals = [(container, key, container[key]) for container, key, _ in swaps]
        try:
            for container, key, replacement in swaps:
                container[key] = replacement
            yield
        finally:
            for container, key, original in originals:
                container[key] = original

    def _shortcut_reproduces(self, input_tensor: paddle.Tensor, activations: np.ndarray) -> bool:
        self.ablation_layer.activations = paddle.to_tensor(activations)
        try:
            replayed = self.model(input_tensor)
        except Exception:
            return False
        return bool(np.array_equal(replayed.numpy(), self.outputs.numpy()))

    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads) -> np.ndarray:
        original_scores = np.float32([target(output).item() for target, output in zip(targets, self.outputs)])
        number_of_channels = activations.shape[1]
        weights: List[float] = []
        # The ablation layer stands in for the target layer, so it is fed the layer's raw
        # output, as upstream does; ``activations`` went through the reshape transform
        # (for a ViT that drops the class token, which the later layers read).
        earlier_layers, raw_activations = _layers_run_before(self.model, target_layer, input_tensor)
        with paddle.no_grad(), self._ablating(target_layer, earlier_layers):
            self.shortcut_used = self._shortcut_reproduces(input_tensor, raw_activations)
        with paddle.no_grad(), self._ablating(target_layer, earlier_layers if self.shortcut_used else []):
            for batch_index, target in enumerate(targets):
                channels = self.ablation_layer.activations_to_be_ablated(
                    activations[batch_index], self.ratio_channels_to_ablate
                )
                new_scores: List[float] = []
                one_image = input_tensor[batch_index : batch_index + 1]
                starts = range(0, len(channels), self.batch_size)
                for start in progress(starts, desc="AblationCAM", unit="batch"):
                    batch_channels = channels[start : start + self.batch_size]
                    self.ablation_layer.set_next_batch(raw_activations[batch_index], batch_channels)
                    runner_input = one_image if self.shortcut_used else paddle.expand(
                        one_image, [len(batch_channels)] + list(one_image.shape[1:])
                    )
                    new_scores.extend(target(o).item() for o in self.model(runner_input))
                weights.extend(
                    self.assemble_ablation_scores(
                        new_scores, original_scores[batch_index], channels, number_of_channels
                    )
                )

        weights_arr = np.float32(weights).reshape(activations.shape[:2])
        original = original_scores[:, None]
        return (original - weights_arr) / original

    @staticmethod
    def assemble_ablation_scores(
        new_scores: List[float], original_score: np.float32, ablated_channels: np.ndarray, number_of_channels: int
    ) -> List[float]:
        """Scores in channel order; channels that were not ablated keep the original score."""
        order = np.argsort(ablated_channels)
        ablated_sorted = ablated_channels[order]
        scores_sorted = np.float32(new_scores)[order]
        result = []
        index = 0
        for channel in range(number_of_channels):
            if index < len(ablated_sorted) and ablated_sorted[index] == channel:
                result.append(scores_sorted[index])
                index += 1
            else:
                result.append(original_score)
        return result
