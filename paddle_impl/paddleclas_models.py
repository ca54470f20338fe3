"""PaddleClas backbones built without running PaddleClas's package ``__init__``.

``import paddleclas`` runs its ``__init__.py``, which pulls in the inference
tool (``requests``, the predictor) and, through ``ppcls.arch.backbone``'s own
``__init__``, every model of the zoo and its training utilities.  Building one
backbone needs none of that, and PaddleClas 2.6.0's declared dependencies
(an old ``opencv-python``, a pinned numpy, ``faiss-cpu``...) cannot be
installed beside this project's; install it with ``--no-deps``.  So:

* each parent package on the way to a model module (``paddleclas``,
  ``paddleclas.ppcls``, ``...arch.backbone``, ``...legendary_models``...) is
  registered in ``sys.modules`` as a bare package whose ``__path__`` is the real
  directory: its submodules import, its ``__init__.py`` never runs;
* ``ppcls.utils.logger`` is PaddleClas's own module (it needs only paddle);
* ``ppcls.utils.save_load`` is replaced by a module with the one function the
  model modules call, ``load_dygraph_pretrain``, reading a local ``.pdparams``
  and refusing a URL (the real one downloads with ``requests``).

Every model is built under a fresh ``paddle.utils.unique_name.guard()``:
without it the second model built in one process gets suffixed parameter
names, and a state dict saved from the first no longer fits it.

Only paddle and the standard library are needed; ``paddle-gradcam --model
ResNet50_vd`` uses this, and the parity harness reuses it.
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import logging
import re
import sys
import types
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Tuple

from paddle_impl.errors import UserError

__all__ = ["INSTALL_HINT", "is_installed", "paddleclas_root", "available_models", "model_names", "paddleclas_builder",
           "paddleclas_model"]

INSTALL_HINT = "pip install --no-deps paddleclas==2.6.0 (its declared dependency pins clash with this project's)"
_PACKAGE = "paddleclas"
_BACKBONE = "paddleclas.ppcls.arch.backbone"


def is_installed() -> bool:
    """Whether a ``paddleclas`` package can be found (without importing it)."""
    if _PACKAGE in sys.modules:
        return bool(getattr(sys.modules[_PACKAGE], "__path__", None))
    return importlib.util.find_spec(_PACKAGE) is not None


def paddleclas_root() -> Path:
    """The installed ``paddleclas`` directory, found without importing it."""
    if _PACKAGE in sys.modules and getattr(sys.modules[_PACKAGE], "__path__", None):
        return Path(list(sys.modules[_PACKAGE].__path__)[0])
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"PaddleClas is not installed, so PaddleClas models cannot be built: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def _bare_package(name: str, directory: Path) -> types.ModuleType:
    """``name`` as a package whose submodules load from ``directory``; its ``__init__`` is not run."""
    existing = sys.modules.get(name)
    if existing is not None:
        return existing
    module = types.ModuleType(name)
    module.__path__ = [str(directory)]
    module.__package__ = name
    module.__file__ = None
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__spec__.submodule_search_locations = [str(directory)]
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, module)
    return module


def _load_local_pretrained(model, pretrained_path, use_ssld=False, **_ignored):
    """PaddleClas's ``load_dygraph_pretrain``, for local files only."""
    import paddle

    path = str(pretrained_path)
    if path.startswith(("http://", "https://")):
        raise UserError(
            f"PaddleClas would download its pretrained weights from {path}, which is not done here: build the "
            "model with pretrained=False, or give the path of a local .pdparams"
        )
    file = Path(path if path.endswith(".pdparams") else path + ".pdparams")
    if not file.is_file():
        raise UserError(f"PaddleClas weights file not found: {file}")
    model.set_state_dict(paddle.load(str(file)))


def _drop_init_res_notice(record: logging.LogRecord) -> bool:
    # The legacy backbones announce on construction that their own init_res() "will be
    # deprecated": a note about PaddleClas's code that no user of a model can act on.
    return "init_res" not in str(record.msg)


def _prepare_packages() -> Path:
    """The bare parent packages, PaddleClas's logger and the local-only save_load; the backbone directory."""
    root = paddleclas_root()
    backbone_dir = root / "ppcls" / "arch" / "backbone"
    if not backbone_dir.is_dir():
        raise UserError(f"{root} does not look like PaddleClas 2.6 (no ppcls/arch/backbone): {INSTALL_HINT}")
    _bare_package(_PACKAGE, root)
    _bare_package("paddleclas.ppcls", root / "ppcls")
    _bare_package("paddleclas.ppcls.arch", root / "ppcls" / "arch")
    _bare_package(_BACKBONE, backbone_dir)
    utils = _bare_package("paddleclas.ppcls.utils", root / "ppcls" / "utils")
    if "paddleclas.ppcls.utils.save_load" not in sys.modules:
        local_only = types.ModuleType("paddleclas.ppcls.utils.save_load")
        local_only.load_dygraph_pretrain = _load_local_pretrained
        sys.modules[local_only.__name__] = local_only
        utils.save_load = local_only
    logger = importlib.import_module("paddleclas.ppcls.utils.logger")
    if logger._logger is None:
        # PaddleClas's training entry point calls init_logger(); without it the first
        # logger.warning() in a model's constructor fails on None.
        logger._logger = logging.getLogger("ppcls")
        logger._logger.addFilter(_drop_init_res_notice)
    utils.logger = logger
    return backbone_dir


def _import_backbone_module(relative: str) -> types.ModuleType:
    """``legendary_models.resnet`` -> the module ``paddleclas.ppcls.arch.backbone.legendary_models.resnet``."""
    backbone_dir = _prepare_packages()
    parts = relative.split(".")
    if not all(part.isidentifier() for part in parts):
        raise UserError(f"{relative!r} is not a PaddleClas backbone module name")
    directory, name = backbone_dir, _BACKBONE
    for part in parts[:-1]:
        directory, name = directory / part, f"{name}.{part}"
        _bare_package(name, directory)
    try:
        return importlib.import_module(f"{_BACKBONE}.{relative}")
    except ModuleNotFoundError as error:
        if error.name and error.name.startswith(_BACKBONE):
            raise UserError(f"PaddleClas has no backbone module {relative!r} (under {backbone_dir})") from None
        raise UserError(
            f"PaddleClas's {relative} needs the package {error.name!r}, which is not installed "
            f"(install it, or pick another model)"
        ) from None


_EXPORT_LINE = re.compile(r"^from \.(\S+) import (.+)$")


@lru_cache(maxsize=1)
def available_models() -> Dict[str, str]:
    """Each model name PaddleClas's backbone package exports -> its module (``ResNet50_vd`` -> ``legendary_models.resnet``).

    Read from the text of ``ppcls/arch/backbone/__init__.py``, never run: its
    ``from .MODULE import NAME, ...`` lines are PaddleClas's own list.
    """
    init = _prepare_packages() / "__init__.py"
    found: Dict[str, str] = {}
    for line in init.read_text(encoding="utf-8").splitlines():
        match = _EXPORT_LINE.match(line.strip())
        if not match:
            continue
        module = match.group(1)
        for exported in match.group(2).split(","):
            exported = exported.strip().split(" as ")[-1].strip()
            if exported.isidentifier():
                found.setdefault(exported, module)
    return found


def model_names() -> List[str]:
    """The names :func:`paddleclas_model` accepts without a module part, sorted."""
    return sorted(available_models())


def _split(spec: str) -> Tuple[str, str]:
    """``legendary_models.resnet:ResNet50_vd`` or ``ResNet50_vd`` -> (module, name)."""
    if ":" in spec:
        module, _, name = spec.partition(":")
        return module, name
    models = available_models()
    if spec not in models:
        close = [name for name in models if name.lower().startswith(spec.lower()[:6])][:8]
        raise UserError(f"PaddleClas has no model {spec!r}" + (f" (similar: {', '.join(close)})" if close else ""))
    return models[spec], spec


def paddleclas_builder(spec: str):
    """The builder (function or class) ``spec`` names, imported without PaddleClas's package ``__init__``."""
    module_name, name = _split(spec)
    module = _import_backbone_module(module_name)
    try:
        return getattr(module, name)
    except AttributeError:
        raise UserError(f"PaddleClas's {module_name} has no {name!r}") from None


def paddleclas_model(spec: str, **kwargs: Any):
    """PaddleClas's model ``spec`` (``ResNet50_vd`` or ``legendary_models.resnet:ResNet50_vd``), freshly initialised.

    ``kwargs`` go to the builder (``class_num``...); ``pretrained`` defaults to
    False and may only name a local file.  Built under a fresh
    ``unique_name.guard()``, so two builds in one process have the same
    parameter names.
    """
    import paddle

    builder = paddleclas_builder(spec)
    kwargs.setdefault("pretrained", False)
    with paddle.utils.unique_name.guard():
        return builder(**kwargs)
