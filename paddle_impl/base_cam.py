"""``BaseCAM``: hooks, target selection, ReLU, scaling, layer aggregation and smoothing.

A method subclasses it and overrides ``get_cam_weights`` (channel weights,
combined as ``sum_k w_k A_k``) or ``get_cam_image`` (any other map).  The
post-processing is numpy, step for step as ``pytorch_grad_cam.base_cam``.
"""
from __future__ import annotations

import contextlib
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import paddle

from paddle_impl.activations_and_gradients import ActivationsAndGradients, frozen_parameters
from paddle_impl.augmentation import AUG_SMOOTH_VARIANTS, AugmentationVariant
from paddle_impl.utils.image import scale_cam_image
from paddle_impl.utils.model_targets import ClassifierOutputTarget
from paddle_impl.utils.svd_on_activations import get_2d_projection

__all__ = ["BaseCAM"]


class BaseCAM:
    def __init__(
        self,
        model: paddle.nn.Layer,
        target_layers: List[paddle.nn.Layer],
        reshape_transform: Optional[Callable] = None,
        uses_gradients: bool = True,
        tta_transforms: Optional[Sequence[AugmentationVariant]] = None,
    ) -> None:
        self.model = model
        self.model.eval()
        self.target_layers = target_layers
        self.reshape_transform = reshape_transform
        self.uses_gradients = uses_gradients
        self.tta_transforms = list(AUG_SMOOTH_VARIANTS if tta_transforms is None else tta_transforms)
        self.activations_and_grads = ActivationsAndGradients(model, target_layers, reshape_transform)
        self.outputs: Optional[paddle.Tensor] = None

    # -- what a method overrides -------------------------------------------------
    def get_cam_weights(
        self,
        input_tensor: paddle.Tensor,
        target_layer: paddle.nn.Layer,
        targets: List[Callable],
        activations: np.ndarray,
        grads: Optional[np.ndarray],
    ) -> np.ndarray:
        raise NotImplementedError("a CAM method overrides get_cam_weights or get_cam_image")

    def get_cam_image(
        self,
        input_tensor: paddle.Tensor,
        target_layer: paddle.nn.Layer,
        targets: List[Callable],
        activations: np.ndarray,
        grads: Optional[np.ndarray],
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        weights = self.get_cam_weights(input_tensor, target_layer, targets, activations, grads)
        if activations.ndim != 4:
            raise ValueError(f"expected (B, C, H, W) activations, got shape {activations.shape}")
        weighted_activations = weights[:, :, None, None] * activations
        if eigen_smooth:
            return get_2d_projection(weighted_activations)
        return weighted_activations.sum(axis=1)

    # -- the pipeline ----------------------------------------------------------
    def forward(
        self, input_tensor: paddle.Tensor, targets: Optional[List[Callable]], eigen_smooth: bool = False
    ) -> np.ndarray:
        grad_scope = frozen_parameters(self.model) if self.uses_gradients else paddle.no_grad()
        with grad_scope:
            outputs = self.activations_and_grads(input_tensor, capture_gradients=self.uses_gradients)
            self.outputs = outputs
            if targets is None:
                target_categories = np.argmax(outputs.numpy(), axis=-1)
                targets = [ClassifierOutputTarget(category) for category in target_categories]
            if self.uses_gradients:
                loss = sum([target(output) for target, output in zip(targets, outputs)])
                loss.backward()
        cam_per_layer = self.compute_cam_per_layer(input_tensor, targets, eigen_smooth)
        return self.aggregate_multi_layers(cam_per_layer)

    @staticmethod
    def get_target_width_height(input_tensor: paddle.Tensor) -> Tuple[int, int]:
        if len(input_tensor.shape) != 4:
            raise ValueError(f"expected an (N, C, H, W) input, got shape {list(input_tensor.shape)}")
        return int(input_tensor.shape[-1]), int(input_tensor.shape[-2])

    def compute_cam_per_layer(
        self, input_tensor: paddle.Tensor, targets: List[Callable], eigen_smooth: bool
    ) -> List[np.ndarray]:
        activations_list = [a.numpy() for a in self.activations_and_grads.activations]
        grads_list = [g.numpy() for g in self.activations_and_grads.gradients]
        target_size = self.get_target_width_height(input_tensor)

        cam_per_target_layer = []
        for i, target_layer in enumerate(self.target_layers):
            layer_activations = activations_list[i] if i < len(activations_list) else None
            layer_grads = grads_list[i] if i < len(grads_list) else None
            cam = self.get_cam_image(input_tensor, target_layer, targets, layer_activations, layer_grads, eigen_smooth)
            cam = np.maximum(cam, 0)
            scaled = scale_cam_image(cam, target_size)
            cam_per_target_layer.append(scaled[:, None, :])
        return cam_per_target_layer

    def aggregate_multi_layers(self, cam_per_target_layer: List[np.ndarray]) -> np.ndarray:
        stacked = np.concatenate(cam_per_target_layer, axis=1)
        stacked = np.maximum(stacked, 0)
        return scale_cam_image(np.mean(stacked, axis=1))

    def forward_augmentation_smoothing(
        self, input_tensor: paddle.Tensor, targets: Optional[List[Callable]], eigen_smooth: bool = False
    ) -> np.ndarray:
        cams = []
        for variant in self.tta_transforms:
            cam = self.forward(variant.augment_image(input_tensor), targets, eigen_smooth)
            cams.append(variant.deaugment_cam(cam))
        return np.mean(np.float32(cams), axis=0)

    def __call__(
        self,
        input_tensor: paddle.Tensor,
        targets: Optional[List[Callable]] = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
    ) -> np.ndarray:
        if aug_smooth is True:
            return self.forward_augmentation_smoothing(input_tensor, targets, eigen_smooth)
        return self.forward(input_tensor, targets, eigen_smooth)

    # -- hook lifetime ------------------------------------------------------------
    def release(self) -> None:
        self.activations_and_grads.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()

    def __enter__(self) -> "BaseCAM":
        return self

    def __exit__(self, exc_type, exc_value, exc_tb) -> None:
        self.release()
