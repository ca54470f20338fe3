"""Target callables: turn a model's output row into the scalar a CAM explains."""
from __future__ import annotations

import paddle

__all__ = ["ClassifierOutputTarget"]


class ClassifierOutputTarget:
    """The pre-softmax logit of ``category`` (upstream's default target)."""

    def __init__(self, category: int) -> None:
        self.category = int(category)

    def __call__(self, model_output: paddle.Tensor) -> paddle.Tensor:
        if len(model_output.shape) == 1:
            return model_output[self.category]
        return model_output[:, self.category]

    def __repr__(self) -> str:
        return f"ClassifierOutputTarget({self.category})"
