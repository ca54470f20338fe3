"""The parity harness: the Paddle port against unmodified upstream pytorch_grad_cam, stage by stage.

``python -m parity`` runs a profile from the command line; ``compare_models``
checks a model pair of your own from Python.  Importing the package loads
neither torch nor paddle.
"""
from __future__ import annotations

__all__ = ["compare_models"]


def __getattr__(name: str):
    if name == "compare_models":
        from parity.api import compare_models

        return compare_models
    raise AttributeError(f"module 'parity' has no attribute {name!r}")
