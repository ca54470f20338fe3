"""``BaseCAM``: hooks, target selection, ReLU, scaling, layer aggregation and smoothing.

Port of ``pytorch_grad_cam/base_cam.py`` (grad-cam 1.5.7).  A method
subclasses it and overrides ``get_cam_weights`` (channel weights, combined as
``sum_k w_k A_k``) or ``get_cam_image`` (any other map).  The post-processing
is numpy, step for step as upstream's.

Upstream's two graph options are kept:

* ``compute_input_gradient``: the input becomes a leaf that asks for a
  gradient, and ``input_tensor.grad`` is filled by the backward pass
  (FullGrad reads it).  The graph then reaches the input, so the target-layer
  re-rooting of ``ActivationsAndGradients`` does not happen.
* ``detach=False``: activations and gradients stay graph tensors, the
  gradients are taken with ``create_graph=True`` and the forward pass runs
  under ``second_order_graph`` (ShapleyCAM differentiates the gradients again).

With the defaults (``compute_input_gradient=False, detach=True``) the forward
and backward passes are exactly those of the eight original methods.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle

from paddle_impl.activations_and_gradients import ActivationsAndGradients, frozen_parameters, second_order_graph
from paddle_impl.augmentation import AUG_SMOOTH_VARIANTS, AugmentationVariant
from paddle_impl.inference_engine import cached_forward_engine
from paddle_impl.prefix_engine import PrefixEngine, cached_prefix_engine
from paddle_impl.utils.image import scale_cam_image
from paddle_impl.utils.model_targets import ClassifierOutputTarget
from paddle_impl.utils.reshape_transforms import AutoReshapeTransform
from paddle_impl.utils.svd_on_activations import get_2d_projection

__all__ = ["BaseCAM"]


def _argmax_targets(logits: np.ndarray) -> List[Callable]:
    """Upstream's default: explain each image's highest logit."""
    return [ClassifierOutputTarget(category) for category in np.argmax(logits, axis=-1)]


class _ReshapeFromInput:
    """``reshape_transform="auto"``: each activation's layout read from its shape and the current input's size.

    Upstream takes only a callable.  Writing one for every ViT, DeiT or Swin
    variant is the most common stumbling block of its users, and the layout
    follows from two things the CAM already has: the activation's shape and
    the size of the image being explained (set before each forward pass).
    A model with a ``patch_embed.patch_size`` (timm and PaddleClas
    transformers) narrows the grids considered to its patch grid and the
    halvings of it.
    """

    def __init__(self, model: paddle.nn.Layer) -> None:
        patch_size = getattr(getattr(model, "patch_embed", None), "patch_size", None)
        self.patch_size = None if patch_size is None else tuple(int(s) for s in np.atleast_1d(patch_size))[-2:]
        self.transform: Optional[AutoReshapeTransform] = None

    def set_input_size(self, input_tensor: paddle.Tensor) -> None:
        size = tuple(int(s) for s in input_tensor.shape[-2:])
        if self.transform is None or self.transform.input_size != size:
            self.transform = AutoReshapeTransform(size, self.patch_size)

    def __call__(self, tensor: paddle.Tensor) -> paddle.Tensor:
        if self.transform is None:
            raise ValueError("reshape_transform='auto' reads the input size from the tensor being explained; none has been seen yet")
        return self.transform(tensor)


def _reshape_transform_for(model: paddle.nn.Layer, reshape_transform) -> Optional[Callable]:
    """A callable (or None) for ``reshape_transform``; the one string accepted is ``"auto"``."""
    if isinstance(reshape_transform, str):
        if reshape_transform != "auto":
            raise ValueError(f"reshape_transform must be a callable, None or 'auto', not {reshape_transform!r}")
        return _ReshapeFromInput(model)
    return reshape_transform


class BaseCAM:
    """The CAM pipeline shared by every method; see the module docstring."""

    # A method that reads nothing but the forward pass (the target layers' activations and the
    # outputs) runs it in a compiled oneDNN predictor from its first call: the whole network
    # (``forward_through_engine``), or what comes before the target layer (``prefix_engine_for``).
    compiled_forward = False

    def __init__(
        self,
        model: paddle.nn.Layer,
        target_layers: List[paddle.nn.Layer],
        reshape_transform: Optional[Callable] = None,
        compute_input_gradient: bool = False,
        uses_gradients: bool = True,
        tta_transforms: Optional[Sequence[AugmentationVariant]] = None,
        detach: bool = True,
    ) -> None:
        """Hook ``target_layers`` of ``model`` (put in eval mode); the arguments are upstream's, in its order."""
        self.model = model
        self.model.eval()
        self.target_layers = target_layers
        self.reshape_transform = reshape_transform = _reshape_transform_for(model, reshape_transform)
        self.compute_input_gradient = compute_input_gradient
        self.uses_gradients = uses_gradients
        self.tta_transforms = list(AUG_SMOOTH_VARIANTS if tta_transforms is None else tta_transforms)
        self.detach = detach
        self.activations_and_grads = ActivationsAndGradients(model, target_layers, reshape_transform, detach)
        self.outputs: Optional[paddle.Tensor] = None
        # Set to False to run every forward pass in dynamic-graph Paddle; ``engine_threads`` None:
        # OMP_NUM_THREADS, else every core.
        self.inference_engine = True
        self.engine_threads: Optional[int] = None
        self._forward_engines: Dict[tuple, Optional[Callable]] = {}
        self._prefix_engines: Dict[tuple, object] = {}  # see prefix_engine.cached_prefix_engine
        # The call (per input shape) on which a gradient method builds its prefix engine: the second, so that one
        # call pays no set-up; 1 builds it at once (the parity harness compares that path with upstream).
        self.prefix_engine_on_call = 2

    # -- what a method overrides -------------------------------------------------
    def get_cam_weights(
        self,
        input_tensor: paddle.Tensor,
        target_layer: paddle.nn.Layer,
        targets: List[Callable],
        activations: np.ndarray,
        grads: Optional[np.ndarray],
    ) -> np.ndarray:
        """(B, C) channel weights ``w_k``; a method either overrides this or ``get_cam_image``."""
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
        """The raw map ``sum_k w_k A_k`` (or its first principal component with ``eigen_smooth``), before ReLU.

        With ``detach=False`` the weights see the graph tensors and the map
        is built from their values, as upstream does.
        """
        weights = self.get_cam_weights(input_tensor, target_layer, targets, activations, grads)
        if isinstance(activations, paddle.Tensor):
            activations = activations.detach().numpy()
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
        """One pass: forward, backward (gradient methods), a CAM per target layer, their aggregate."""
        input_tensor, targets = self.forward_and_backward(input_tensor, targets)
        cam_per_layer = self.compute_cam_per_layer(input_tensor, targets, eigen_smooth)
        return self.aggregate_multi_layers(cam_per_layer)

    def forward_and_backward(
        self,
        input_tensor: paddle.Tensor,
        targets: Optional[List[Callable]],
        default_targets: Callable[[np.ndarray], List[Callable]] = _argmax_targets,
    ) -> Tuple[paddle.Tensor, List[Callable]]:
        """Run the model, choose targets if none are given, and backpropagate their summed score.

        Returns the input tensor the CAM should read (with
        ``compute_input_gradient`` a fresh leaf whose ``.grad`` holds
        d score / d input; the caller's tensor is left alone) and the targets.
        ``default_targets`` maps the (B, classes) logits to targets when
        ``targets`` is None (upstream: the argmax); a wrapper that picks its
        targets from the same pass (FinerCAM) passes its own.
        """
        if isinstance(self.reshape_transform, _ReshapeFromInput):
            self.reshape_transform.set_input_size(input_tensor)
        if self.compute_input_gradient and self.detach:
            # With detach=False upstream takes the input gradient with autograd.grad and
            # discards it, so only the detach=True path needs the input in the graph.
            input_tensor = input_tensor.detach()
            input_tensor.stop_gradient = False
        grad_scope = frozen_parameters(self.model) if self.uses_gradients else paddle.no_grad()
        graph_scope = (
            second_order_graph(self.model) if self.uses_gradients and not self.detach else contextlib.nullcontext()
        )
        # built (once per input shape) before the scopes below change the model's parameters and forwards
        prefix_engine = self.prefix_engine_for(input_tensor)
        with grad_scope, graph_scope:
            outputs = None if prefix_engine is not None else self.forward_through_engine(input_tensor)
            if outputs is None:
                outputs = self.forward_with_compiled_prefix(input_tensor, prefix_engine)
            self.outputs = outputs
            if targets is None:
                targets = default_targets(outputs.numpy())
            if self.uses_gradients:
                loss = sum([target(output) for target, output in zip(targets, outputs)])
                if self.detach:
                    loss.backward()
                else:
                    self.activations_and_grads.second_order_gradients(loss)
        return input_tensor, targets

    def forward_through_engine(self, input_tensor: paddle.Tensor) -> Optional[paddle.Tensor]:
        """The forward pass in a oneDNN predictor, for a ``compiled_forward`` method; None where it does not apply.

        A forward-only method's pass where ``prefix_engine_for`` gives no
        engine (most weights before the target layer, or a model the prefix
        engine cannot take); ScoreCAM's scores run in the same predictor.
        Upstream's forward-only methods spend much of their time in the
        network's forward, where dynamic-graph Paddle costs about twice
        torch's.  The predictor runs the same network (oneDNN, conv/batch-norm
        fusion: ~1e-6 relative from dynamic-graph Paddle, the size of the
        difference between any two convolution libraries) and hands back the outputs and every target
        layer's output in the order the hooks would have stored them, each
        through ``reshape_transform`` as the hook does.  Built once per input
        shape, on the first call (its one-time cost: exporting the program and
        creating the predictor, a few seconds for ResNet50); float32 on the
        CPU only, so float64 runs are dynamic-graph Paddle exactly as before.
        """
        engine = self.forward_engine_for(input_tensor)
        if engine is None:
            return None
        outputs, activations = engine(input_tensor)
        transform = self.activations_and_grads.reshape_transform
        self.activations_and_grads.activations = [a if transform is None else transform(a) for a in activations]
        self.activations_and_grads.gradients = []
        return outputs

    def forward_with_compiled_prefix(
        self, input_tensor: paddle.Tensor, prefix_engine: Optional[PrefixEngine] = None
    ) -> paddle.Tensor:
        """The hooked forward in dynamic-graph Paddle, with what runs before the first target layer answered by
        ``prefix_engine`` (see ``prefix_engine_for``) when there is one."""
        def run(batch: paddle.Tensor) -> paddle.Tensor:
            return self.activations_and_grads(batch, capture_gradients=self.uses_gradients)

        return run(input_tensor) if prefix_engine is None else prefix_engine(self.model, input_tensor, run)

    def prefix_engine_for(self, input_tensor: paddle.Tensor) -> Optional[PrefixEngine]:
        """The (cached) predictor for everything before the first target layer, or None where it does not apply.

        A gradient method reads the gradient at the target layer, and the
        graph starts there (``ActivationsAndGradients`` re-roots it) unless
        the input itself needs a gradient (FullGrad): what comes before is a
        plain forward, which a oneDNN predictor runs at a fraction of
        dynamic-graph Paddle's time (``paddle_impl.prefix_engine``).  Built on
        call ``prefix_engine_on_call`` for an input shape (the second by
        default: the first runs the dynamic graph).

        A ``compiled_forward`` method (EigenCAM, FEM, KPCA-CAM; ScoreCAM for
        its first pass and its scores) builds it on its first call where most
        of the model's weights come after the target layer (a VGG's head): the
        rest of the forward runs in the dynamic graph, where a predictor of the whole network
        (``forward_through_engine``, faster elsewhere) would hold a second
        copy of those weights (``prefix_engine._rest_is_heavy``).  Float32 on
        the CPU only; checked against the dynamic graph when built.
        """
        if not self.inference_engine or (self.compute_input_gradient and self.detach):
            return None
        if self.uses_gradients:
            return cached_prefix_engine(self._prefix_engines, self.model, self.target_layers, input_tensor,
                                        self.engine_threads, self.prefix_engine_on_call)
        if self.compiled_forward and self.detach:
            return cached_prefix_engine(self._prefix_engines, self.model, self.target_layers, input_tensor,
                                        self.engine_threads, build_on_call=1, only_for_a_heavy_rest=True)
        return None

    def forward_engine_for(self, input_tensor: paddle.Tensor) -> Optional[Callable]:
        """The (cached) predictor-backed forward for inputs shaped like ``input_tensor``, or None."""
        if not (self.compiled_forward and self.inference_engine and self.detach) or self.uses_gradients:
            return None
        if self.compute_input_gradient:
            return None
        return cached_forward_engine(
            self._forward_engines, self.model, self.target_layers, input_tensor, self.engine_threads
        )

    @staticmethod
    def get_target_width_height(input_tensor: paddle.Tensor) -> Tuple[int, int]:
        """(width, height) of an (N, C, H, W) input, the size every CAM is resized to."""
        if len(input_tensor.shape) != 4:
            raise ValueError(f"expected an (N, C, H, W) input, got shape {list(input_tensor.shape)}")
        return int(input_tensor.shape[-1]), int(input_tensor.shape[-2])

    def compute_cam_per_layer(
        self, input_tensor: paddle.Tensor, targets: List[Callable], eigen_smooth: bool
    ) -> List[np.ndarray]:
        """Per target layer: the raw CAM, ReLU, min-max scaled and resized -> list of (B, 1, H, W)."""
        if self.detach:
            activations_list = [a.numpy() for a in self.activations_and_grads.activations]
            grads_list = [g.numpy() for g in self.activations_and_grads.gradients]
        else:
            activations_list = list(self.activations_and_grads.activations)
            grads_list = list(self.activations_and_grads.gradients)
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
        """Mean over layers of the ReLU'd per-layer CAMs, min-max scaled -> (B, H, W) float32."""
        stacked = np.concatenate(cam_per_target_layer, axis=1)
        stacked = np.maximum(stacked, 0)
        return scale_cam_image(np.mean(stacked, axis=1))

    def forward_augmentation_smoothing(
        self, input_tensor: paddle.Tensor, targets: Optional[List[Callable]], eigen_smooth: bool = False
    ) -> np.ndarray:
        """``aug_smooth``: mean of the CAMs of the six flip x brightness variants, each mapped back."""
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
        """``cam(input_tensor=..., targets=..., aug_smooth=..., eigen_smooth=...)`` -> (B, H, W) float32 in [0, 1]."""
        if aug_smooth is True:
            return self.forward_augmentation_smoothing(input_tensor, targets, eigen_smooth)
        return self.forward(input_tensor, targets, eigen_smooth)

    # -- hook lifetime ------------------------------------------------------------
    def release(self) -> None:
        """Remove the hooks and drop what they stored."""
        self.activations_and_grads.release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()

    def __enter__(self) -> "BaseCAM":
        return self

    def __exit__(self, exc_type, exc_value, exc_tb) -> None:
        self.release()
