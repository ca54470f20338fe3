"""Paddle layers the hub switches put into a PaddleClas model (imports paddle: loaded only by a switch that runs)."""
from __future__ import annotations

import paddle
import paddle.nn.functional as F

__all__ = ["TorchHardsigmoid"]


class TorchHardsigmoid(paddle.nn.Hardsigmoid):
    """torch's and timm's hard-sigmoid, relu6(x + 3) / 6, as a ``paddle.nn.Hardsigmoid``.

    ``paddle.nn.Hardsigmoid`` calls ``F.hardsigmoid`` with its default slope,
    the decimal literal 0.1666667, which is 1/6 + 3.3e-8: the same function to
    float32's eyes, another one in float64.  Dividing by 6, as torch does,
    keeps the last bit of float64 too.
    """

    slope = 1.0 / 6.0
    offset = 0.5

    def forward(self, x):
        return F.relu6(x + 3.0) / 6.0
