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

    def attach(self, cam) -> None:
        original_image = cam.get_cam_image
        original_weights = cam.get_cam_weights
        to_numpy = self.to_numpy

        def get_cam_image(input_tensor, target_layer, targets, activations, grads, *rest):
            self.records["input"].append(to_numpy(input_tensor))
            self.records["targets"].append(np.array([t.category for t in targets], dtype=np.int64))
            self.records["logits"].append(to_numpy(cam.outputs))
            self.records["activations"].append(np.array(activations, copy=True))
            if grads is not None:
                self.records["gradients"].append(np.array(grads, copy=True))
            raw = original_image(input_tensor, target_layer, targets, activations, grads, *rest)
            self.records["raw_cam"].append(np.array(raw, copy=True))
            return raw

        def get_cam_weights(input_tensor, target_layer, targets, activations, grads):
            key = None
            if self.reuse_weights:
                categories = ",".join(str(t.category) for t in targets)
                key = _digest(to_numpy(input_tensor), activations, grads, extra=categories)
            if key is not None and key in self.weights_memo:
                weights = np.array(self.weights_memo[key], copy=True)
                self.weights_reused += 1
            else:
                weights = original_weights(input_tensor, target_layer, targets, activations, grads)
                self.weights_computed += 1
                if key is not None:
                    self.weights_memo[key] = np.array(weights, copy=True)
            self.records["weights"].append(np.array(weights, copy=True))
            return weights

        cam.get_cam_image = get_cam_image
        cam.get_cam_weights = get_cam_weights

    def stacked(self) -> Dict[str, np.ndarray]:
        """Each stage with a leading axis over the forward passes (1, or 6 with aug_smooth)."""
        return {name: np.stack(values) for name, values in self.records.items() if values}
