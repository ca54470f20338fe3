"""The parity harness: the Paddle port against unmodified upstream pytorch_grad_cam, stage by stage.

``python -m parity`` runs a profile from the command line; ``compare_models``
checks a model pair of your own from Python, and ``transfer_weights`` moves
the weights of a torch model into its Paddle twin (or back) and proves it by
a forward pass (``TransferError`` and its subclasses say where and why it
failed).  Importing the package loads neither torch nor paddle.
"""
from __future__ import annotations

__all__ = [
    "compare_models",
    "transfer_weights",
    "save_paddle_weights",
    "TransferMap",
    "TransferError",
    "TransferRefused",
    "ArchitecturesDiffer",
]

_FROM_TRANSFER = {"transfer_weights", "save_paddle_weights", "TransferMap", "TransferError", "TransferRefused",
                  "ArchitecturesDiffer"}


def __getattr__(name: str):
    if name == "compare_models":
        from parity.api import compare_models

        return compare_models
    if name in _FROM_TRANSFER:
        from parity import transfer

        return getattr(transfer, name)
    raise AttributeError(f"module 'parity' has no attribute {name!r}")
