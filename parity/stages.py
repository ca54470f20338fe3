"""Record a CAM's intermediate stages without touching its numbers.

The recorder replaces two *instance* attributes of a CAM object,
``get_cam_image`` and ``get_cam_weights``, with wrappers that call the
original method with the same arguments, return its result unchanged and
keep a copy of what went in and came out.  Upstream's ``BaseCAM`` and the
port both call these through ``self``, so the same recorder serves both.

The wrapper around ``get_cam_weights`` can also memoise: channel weights
depend only on the input, the activations, the gradients and the targets, so
a second call with byte-identical arguments (the eigen_smooth run after the
plain one, for each augmentation variant) returns the stored result instead
of re-running ScoreCAM's or AblationCAM's thousands of forward passes.  The
memo can also be seeded with weights another process computed (a weights
unit, ``parity.plan``); ``weights_reused`` and ``weights_computed`` count, per
case, the calls answered from the memo and those that ran the method.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Callable, Dict, List, Optional

import numpy as np

__all__ = ["StageRecorder"]


def _digest(*arrays: Optional[np.ndarray], extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for array in arrays:
        if array is None:
            digest.update(b"none")
            continue
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _category(target) -> int:
    """The class a target explains: ``category``, or ``main_category`` for upstream's FinerWeightedTarget."""
    return int(getattr(target, "category", getattr(target, "main_category", -1)))


class StageRecorder:
    def __init__(self, to_numpy: Callable, reuse_weights: bool = False) -> None:
        self.to_numpy = to_numpy
        self.reuse_weights = reuse_weights
        self.records: Dict[str, List[np.ndarray]] = defaultdict(list)
        self.weights_memo: Dict[str, np.ndarray] = {}
        self.weights_reused = 0
        self.weights_computed = 0

    def start_case(self) -> None:
        self.records = defaultdict(list)
        self.weights_reused = 0
        self.weights_computed = 0

    def _numpy(self, value) -> np.ndarray:
        """A copy as numpy: arrays as they are, framework tensors (ShapleyCAM hands graph tensors) detached."""
        return np.array(value, copy=True) if isinstance(value, np.ndarray) else self.to_numpy(value)

    def attach(self, cam, prefix: str = "", logits: bool = True) -> None:
        """Wrap ``cam``'s two stage methods; ``prefix`` names the stages of one of several base CAMs.

        ``logits=False`` for a base CAM whose owner runs the forward pass itself
        (upstream's FinerCAM keeps the outputs to itself, so only one side could
        record them).
        """
        original_image = cam.get_cam_image
        original_weights = cam.get_cam_weights
        to_numpy = self.to_numpy
        record = lambda stage, value: self.records[prefix + stage].append(value)  # noqa: E731

        def get_cam_image(input_tensor, target_layer, targets, activations, grads, *rest):
            record("input", to_numpy(input_tensor))
            record("targets", np.array([_category(t) for t in targets], dtype=np.int64))
            if logits:
                record("logits", to_numpy(cam.outputs))
            record("activations", self._numpy(activations))
            if grads is not None:
                record("gradients", self._numpy(grads))
            raw = original_image(input_tensor, target_layer, targets, activations, grads, *rest)
            record("raw_cam", np.array(raw, copy=True))
            return raw

        def get_cam_weights(input_tensor, target_layer, targets, activations, grads):
            key = None
            if self.reuse_weights:
                categories = ",".join(str(_category(t)) for t in targets)
                key = _digest(to_numpy(input_tensor), activations, grads, extra=categories)
            if key is not None and key in self.weights_memo:
                weights = np.array(self.weights_memo[key], copy=True)
                self.weights_reused += 1
            else:
                weights = original_weights(input_tensor, target_layer, targets, activations, grads)
                self.weights_computed += 1
                if key is not None:
                    self.weights_memo[key] = np.array(weights, copy=True)
            record("weights", np.array(weights, copy=True))
            return weights

        cam.get_cam_image = get_cam_image
        cam.get_cam_weights = get_cam_weights

    def attach_per_layer(self, cam) -> None:
        """For a method that overrides ``compute_cam_per_layer`` itself (FullGrad): record its input and output."""
        original = cam.compute_cam_per_layer
        to_numpy = self.to_numpy

        def compute_cam_per_layer(input_tensor, targets, eigen_smooth):
            self.records["input"].append(to_numpy(input_tensor))
            self.records["targets"].append(np.array([_category(t) for t in targets], dtype=np.int64))
            self.records["logits"].append(to_numpy(cam.outputs))
            per_layer = original(input_tensor, targets, eigen_smooth)
            self.records["raw_cam"].append(self._numpy(per_layer))
            return per_layer

        cam.compute_cam_per_layer = compute_cam_per_layer

    def stacked(self) -> Dict[str, np.ndarray]:
        """Each stage with a leading axis over the calls (1, 6 with aug_smooth, one per patch batch with SESS).

        Calls whose arrays differ in their first axis (SESS's last, smaller
        batch of patches) are joined along it instead; the two sides make the
        same calls, so either way their stages line up.
        """
        stages = {}
        for name, values in self.records.items():
            if not values:
                continue
            if all(v.shape == values[0].shape for v in values):
                stages[name] = np.stack(values)
            elif all(v.shape[1:] == values[0].shape[1:] for v in values):
                stages[name] = np.concatenate(values)[None]
            else:
                stages[name] = np.concatenate([v.reshape(-1) for v in values])[None]
        return stages
