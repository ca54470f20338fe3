"""torchvision weights for ``paddle-gradcam``: the harness converts them, the port only reads ``.pdparams``.

The port's command line (:mod:`paddle_impl.cam_command`) knows nothing of
torch.  When ``--weights`` is ``default`` (torchvision's init after
``torch.manual_seed(0)``, made here), ``imagenet`` or a ``.pth`` file, it
hands the request to this function: found through the entry point
``paddle_gradcam.torch_weights`` when the project is installed, passed
directly by the checkout's ``cam.py``.  The conversion is
:func:`parity.weights.ensure_paddle_weights`: checked key by key, verified by
a forward pass, cached by the source's sha256 and reused without torch.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["converted_weights"]


def converted_weights(weights: str, model: str) -> Path:
    """The verified Paddle conversion (``.pdparams``) of torchvision weights ``weights`` for paddle.vision's ``model``."""
    from parity.weights import ensure_paddle_weights, resolve_weights

    return ensure_paddle_weights(resolve_weights(weights, arch=model), arch=model)
