"""PaddleClas models for the harness: the port's loader (:mod:`paddle_impl.paddleclas_models`) with the harness's install hint.

The port builds PaddleClas backbones without PaddleClas's package
``__init__`` (bare parent packages, PaddleClas's logger, a local-only
``save_load``, a fresh ``unique_name`` guard per model); ``paddle-gradcam
--model ResNet50_vd`` uses it and so does the hubs profile, through here.
What differs is what to do when PaddleClas is missing: in a checkout it comes
with the ``hubs`` extra, installed from requirements-nodeps.lock without its
dependencies.
"""
from __future__ import annotations

import importlib.util  # noqa: F401  (tests patch importlib.util.find_spec through this module)
from pathlib import Path
from typing import Any, Dict, List

from paddle_impl import paddleclas_models as _port
from paddle_impl.errors import UserError

__all__ = ["paddleclas_model", "paddleclas_builder", "available_models", "paddleclas_root", "model_names", "INSTALL_HINT"]

INSTALL_HINT = (
    "install the 'hubs' extra: pip install -r requirements.lock && pip install --no-deps -r requirements-nodeps.lock "
    "(paddleclas==2.6.0 goes in without its dependencies, whose pins clash with this project's)"
)


def paddleclas_root() -> Path:
    """The installed ``paddleclas`` directory, found without importing it; the harness's hint when it is missing."""
    if not _port.is_installed():
        raise UserError(f"PaddleClas is not installed, so PaddleClas models cannot be built: {INSTALL_HINT}")
    return _port.paddleclas_root()


def available_models() -> Dict[str, str]:
    """Each PaddleClas model name -> its backbone module (see :func:`paddle_impl.paddleclas_models.available_models`)."""
    paddleclas_root()
    return _port.available_models()


def model_names() -> List[str]:
    paddleclas_root()
    return _port.model_names()


def paddleclas_builder(spec: str):
    """The builder ``spec`` names (``ResNet50_vd`` or ``legendary_models.resnet:ResNet50_vd``)."""
    paddleclas_root()
    return _port.paddleclas_builder(spec)


def paddleclas_model(spec: str, **kwargs: Any):
    """PaddleClas's model ``spec``, freshly initialised, under a fresh ``unique_name.guard()``."""
    paddleclas_root()
    return _port.paddleclas_model(spec, **kwargs)
