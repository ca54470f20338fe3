"""PaddleClas models without PaddleClas's package ``__init__``.

``import paddleclas`` runs ``paddleclas/__init__.py``, which imports the
inference tool (``paddleclas.py``: ``requests``, ``cv2``, the whole predictor)
and, through ``ppcls.arch.backbone``'s ``__init__``, every model module of the
zoo.  A harness that wants one backbone needs none of that, and PaddleClas
2.6.0's declared dependencies (``opencv-python<=4.6``, ``numpy==1.24.4``,
``faiss-cpu``, ``visualdl``...) cannot even be installed beside this
project's pins.  So the model module is imported directly:

* every parent package on the way (``paddleclas``, ``paddleclas.ppcls``,
  ``...arch``, ``...arch.backbone``, ``...legendary_models``...) is put in
  ``sys.modules`` as a bare package module whose ``__path__`` is the real
  directory, so its submodules resolve while its ``__init__.py`` never runs;
* ``ppcls.utils.logger`` is PaddleClas's own (it needs only paddle);
* ``ppcls.utils.save_load`` is replaced by a module of the same API whose
  ``load_dygraph_pretrain`` reads a local ``.pdparams`` and refuses a URL
  (the real one imports ``requests`` to download, and the harness runs
  offline: weights are seeded, see :mod:`parity.hubs.seeding`).

Each model is built under a fresh ``paddle.utils.unique_name.guard()``:
without it the second model of a process gets suffixed parameter names
(``conv2d_53.w_0``), and anything keyed by them stops matching.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import re
import sys
import types
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Tuple

from paddle_impl.errors import UserError

__all__ = ["paddleclas_model", "paddleclas_builder", "available_models", "paddleclas_root", "INSTALL_HINT"]

INSTALL_HINT = (
    "install the 'hubs' extra: pip install -r requirements.lock && pip install --no-deps -r requirements-nodeps.lock "
    "(paddleclas==2.6.0 goes in without its dependencies, whose pins clash with this project's)"
)
_PACKAGE = "paddleclas"
_BACKBONE = "paddleclas.ppcls.arch.backbone"


def paddleclas_root() -> Path:
    """The installed ``paddleclas`` directory, found without importing it."""
    spec = importlib.util.find_spec(_PACKAGE) if _PACKAGE not in sys.modules else None
    if _PACKAGE in sys.modules and getattr(sys.modules[_PACKAGE], "__path__", None):
        return Path(list(sys.modules[_PACKAGE].__path__)[0])
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"PaddleClas is not installed, so PaddleClas models cannot be built: {INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0])


def _bare_package(name: str, directory: Path) -> types.ModuleType:
    """``name`` as a package module whose submodules load from ``directory``, its ``__init__`` unrun."""
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


class _OfflineSaveLoad(types.ModuleType):
    """Stands in for ``ppcls.utils.save_load``: same function the model modules call, no download."""

    @staticmethod
    def load_dygraph_pretrain(model, pretrained_path, use_ssld=False, **_ignored):
        import paddle

        path = str(pretrained_path)
        if path.startswith(("http://", "https://")):
            raise UserError(
                f"PaddleClas pretrained weights are downloaded from {path}, which this harness does not do "
                "(it runs offline): build with pretrained=False, or pass the path of a local .pdparams"
            )
        file = Path(path if path.endswith(".pdparams") else path + ".pdparams")
        if not file.is_file():
            raise UserError(f"PaddleClas weights file not found: {file}")
        model.set_state_dict(paddle.load(str(file)))


def _prepare_packages() -> Path:
    """Bare parent packages, PaddleClas's logger and the offline save_load; returns the backbone directory."""
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
        offline = _OfflineSaveLoad("paddleclas.ppcls.utils.save_load")
        offline.load_dygraph_pretrain = _OfflineSaveLoad.load_dygraph_pretrain
        sys.modules[offline.__name__] = offline
        utils.save_load = offline
    logger = importlib.import_module("paddleclas.ppcls.utils.logger")
    if logger._logger is None:
        # PaddleClas's training entry point calls init_logger(); without it every
        # logger.warning() in a model's constructor fails on None.
        logger._logger = logging.getLogger("ppcls")
        logger._logger.addFilter(_drop_init_res_notice)
    utils.logger = logger
    return backbone_dir


def _drop_init_res_notice(record: logging.LogRecord) -> bool:
    # Every legacy backbone (ResNet, MobileNetV3...) announces on construction that its own
    # init_res() "will be deprecated": about PaddleClas's code, nothing a user can act on.
    return "init_res" not in str(record.msg)


def _import_backbone_module(relative: str) -> types.ModuleType:
    """``legendary_models.resnet`` -> the module ``paddleclas.ppcls.arch.backbone.legendary_models.resnet``."""
    backbone_dir = _prepare_packages()
    parts = relative.split(".")
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
            f"(install it, or {INSTALL_HINT})"
        ) from None


_EXPORT_LINE = re.compile(r"^from \.(\S+) import (.+)$")


@lru_cache(maxsize=1)
def available_models() -> Dict[str, str]:
    """Every model name the PaddleClas backbone package exports -> its module (``ResNet50_vd`` -> ``legendary_models.resnet``).

    Read from the text of ``ppcls/arch/backbone/__init__.py`` (never executed):
    its ``from .MODULE import NAME, ...`` lines are PaddleClas's own list.
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


def _split(spec: str) -> Tuple[str, str]:
    """``legendary_models.resnet:ResNet50_vd`` or ``ResNet50_vd`` -> (module, name)."""
    if ":" in spec:
        module, _, name = spec.partition(":")
        return module, name
    models = available_models()
    if spec not in models:
        close = [name for name in models if name.lower().startswith(spec.lower()[:6])][:8]
        raise UserError(
            f"PaddleClas has no model {spec!r}" + (f" (similar: {', '.join(close)})" if close else "")
            + "; parity.hubs.paddleclas_loader.available_models() lists them"
        )
    return models[spec], spec


def paddleclas_builder(spec: str):
    """The builder function (or class) named by ``spec``, imported without PaddleClas's package ``__init__``."""
    module_name, name = _split(spec)
    module = _import_backbone_module(module_name)
    try:
        return getattr(module, name)
    except AttributeError:
        raise UserError(f"PaddleClas's {module_name} has no {name!r}") from None


def paddleclas_model(spec: str, **kwargs: Any):
    """PaddleClas's model ``spec`` (``ResNet50_vd`` or ``legendary_models.resnet:ResNet50_vd``), freshly initialised.

    ``kwargs`` go to PaddleClas's builder (``class_num``, ``padding_type``...);
    ``pretrained`` defaults to False and may only name a local file.  The
    model is built under a fresh ``unique_name.guard()``, so building it
    twice in one process gives the same parameter names.
    """
    import paddle

    builder = paddleclas_builder(spec)
    kwargs.setdefault("pretrained", False)
    with paddle.utils.unique_name.guard():
        return builder(**kwargs)


def model_names() -> List[str]:
    """The names :func:`paddleclas_model` accepts without a module part, sorted."""
    return sorted(available_models())
