"""The models ``paddle-gradcam`` explains: where they come from, their weights, and a default target layer.

``--model`` is one of

* a ``paddle.vision.models`` builder name (``resnet50``, ``vgg16``...);
* a PaddleClas model name (``ResNet50_vd``) when PaddleClas is installed
  (:mod:`paddle_impl.paddleclas_models` builds it without PaddleClas's
  training code);
* ``package.module:factory``, a callable that takes no argument and returns a
  ``paddle.nn.Layer`` (the current directory is searched too, as ``python -m``
  does).

A model saved with ``paddle.jit.save`` is refused with the reason: loading
it gives a compiled program with no sub-layers, so there is no target layer
to hook (the ``package.module:factory`` form plus its ``.pdparams`` explains
the same network).

``--weights`` is

* ``seeded``: ``paddle.seed(0)``, then the builder: the same numbers on every
  run, for trying the tool (a random network's maps show its wiring, not what
  it learned);
* ``paddle``: paddle.vision's pretrained ImageNet weights, downloaded once
  into ``~/.cache/paddle/hapi/weights``;
* a ``.pdparams`` file holding the model's state dict (``paddle.save(model.state_dict(), ...)``);
* ``default``, ``imagenet`` or a ``.pth`` file: torchvision weights, converted
  by the parity harness; that needs PyTorch (the ``[parity]`` extra), and the
  command line hands them to it (see :mod:`paddle_impl.cam_command`).

Only Paddle, numpy and the standard library are used here.
"""
from __future__ import annotations

import importlib
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from paddle_impl.errors import UserError, check_readable_file

__all__ = [
    "SEED", "TORCH_WEIGHT_NAMES", "LoadedModel", "vision_model_names", "is_torch_weights", "load_model",
    "build_model", "load_state_dict", "default_target_layers", "class_count", "layer_paths_of",
]

SEED = 0
TORCH_WEIGHT_NAMES = ("default", "imagenet")
_TORCH_SUFFIXES = (".pth", ".pt")
_JIT_SUFFIXES = (".json", ".pdmodel", ".pdiparams")
_PRETRAINED_HOST = "paddle-hapi.bj.bcebos.com"

# Upstream's conventional target layer for paddle.vision's families (its README and examples name
# model.layer4[-1] for ResNets and model.features[-1] for VGG; the same choice for the others is the
# last convolutional block before the pooling, under Paddle's own names).  ResNet50 keeps `layer4`,
# which outputs the same tensor as layer4[-1], as cam.py always used.
_VISION_TARGETS: Tuple[Tuple[str, str], ...] = (
    ("resnet50", "layer4"),
    ("resnet", "layer4[-1]"),
    ("resnext", "layer4[-1]"),
    ("wide_resnet", "layer4[-1]"),
    ("vgg", "features[-1]"),
    ("mobilenet_v2", "features[-1]"),
    ("mobilenet_v3", "lastconv"),
    ("densenet", "batch_norm"),
    ("squeezenet", "_conv8"),
    ("shufflenet", "_last_conv"),
)


@dataclass
class LoadedModel:
    """A model ready to explain (eval mode, float32) and what the command line says about it."""

    model: Any
    name: str  # as given to --model
    kind: str  # "paddle.vision", "PaddleClas" or "factory"
    weights: str  # as given to --weights

    @property
    def default_target_layers(self) -> str:
        return default_target_layers(self.model, self.name if self.kind == "paddle.vision" else "")


def vision_model_names() -> List[str]:
    """paddle.vision's model builders (lower-case functions of ``paddle.vision.models``)."""
    import paddle.vision.models as vision_models

    return [name for name in vision_models.__all__ if name[:1].islower() and callable(getattr(vision_models, name))]


def is_torch_weights(weights: str) -> bool:
    """Whether ``--weights`` names torchvision weights (which only the parity harness can convert)."""
    return weights in TORCH_WEIGHT_NAMES or Path(weights).suffix.lower() in _TORCH_SUFFIXES


def _is_factory(spec: str) -> bool:
    module, colon, attribute = spec.partition(":")
    return bool(colon) and all(part.isidentifier() for part in module.split(".")) and attribute.isidentifier()


def _refuse_jit_model(spec: str) -> None:
    path = Path(spec)
    saved = [Path(str(path) + suffix) for suffix in _JIT_SUFFIXES if Path(str(path) + suffix).is_file()]
    if path.suffix in _JIT_SUFFIXES and path.is_file():
        saved.append(path)
    if saved:
        raise UserError(
            f"--model {spec}: {saved[0].name} is a model saved with paddle.jit.save, which loads as a compiled program "
            "without sub-layers, so no target layer can be hooked; give the model's class as package.module:factory "
            "and its weights as a .pdparams file (paddle.save(model.state_dict(), PATH)) instead"
        )


def _kind_of(spec: str) -> str:
    if _is_factory(spec):
        return "factory"
    _refuse_jit_model(spec)
    if spec in vision_model_names():
        return "paddle.vision"
    from paddle_impl import paddleclas_models

    if paddleclas_models.is_installed() and spec in paddleclas_models.available_models():
        return "PaddleClas"
    examples = ", ".join(vision_model_names()[:6])
    paddleclas = ("a PaddleClas model name (paddle_impl.paddleclas_models.model_names() lists them), "
                  if paddleclas_models.is_installed() else
                  f"a PaddleClas model name once PaddleClas is installed ({paddleclas_models.INSTALL_HINT}), ")
    raise UserError(
        f"--model {spec!r} is not a paddle.vision model ({examples}, ...; paddle.vision.models lists them), "
        + paddleclas + "or package.module:factory"
    )


def _factory(spec: str) -> Callable[[], Any]:
    module_name, _, attribute = spec.partition(":")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and module_name.startswith(error.name):
            raise UserError(f"--model {spec}: no module named {error.name!r} (looked in the current directory and "
                            "on sys.path)") from None
        raise
    finally:
        if added:
            sys.path.remove(cwd)
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise UserError(f"--model {spec}: {module_name} has no callable {attribute!r}")
    return factory


def build_model(spec: str, pretrained: bool = False):
    """A fresh model named by ``spec`` (its parameters drawn from Paddle's current generator), in eval mode."""
    import paddle

    kind = _kind_of(spec)
    with paddle.utils.unique_name.guard():
        if kind == "paddle.vision":
            model = getattr(paddle.vision.models, spec)(pretrained=pretrained)
        elif kind == "PaddleClas":
            from paddle_impl.paddleclas_models import paddleclas_model

            model = paddleclas_model(spec)
        else:
            model = _factory(spec)()
    if not isinstance(model, paddle.nn.Layer):
        raise UserError(f"--model {spec}: the factory returned a {type(model).__name__}, not a paddle.nn.Layer")
    model.eval()
    return model


def load_state_dict(model: Any, path: Path) -> None:
    """Load a ``.pdparams`` state dict into ``model``; any missing, extra or misshapen key is a one-line error."""
    import paddle

    path = Path(path)
    check_readable_file(path, "weights file")
    try:
        loaded = paddle.load(str(path), return_numpy=True)
    except Exception as error:  # a truncated or foreign file fails in many ways inside paddle.load
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise UserError(f"weights file {path} is not a Paddle state dict (.pdparams) Paddle can read: {first}") from None
    if not isinstance(loaded, dict):
        raise UserError(f"weights file {path} holds a {type(loaded).__name__}, not a state dict")
    expected = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    missing = sorted(set(expected) - set(loaded))
    unexpected = sorted(set(loaded) - set(expected))
    misshapen = sorted(name for name in set(expected) & set(loaded) if tuple(np.shape(loaded[name])) != expected[name])
    if missing or unexpected or misshapen:
        def some(names: List[str]) -> str:
            return ", ".join(names[:4]) + (f", ... ({len(names)} in all)" if len(names) > 4 else "") if names else "none"

        raise UserError(f"weights file {path} does not fit the model: missing keys: {some(missing)}; "
                        f"unexpected keys: {some(unexpected)}; other shapes: {some(misshapen)}")
    model.set_state_dict({name: np.asarray(value) for name, value in loaded.items()})


def _check_pretrained_reachable(spec: str) -> None:
    """One line instead of paddle's download retries when its weights server cannot be reached."""
    try:
        socket.create_connection((_PRETRAINED_HOST, 443), timeout=10).close()
    except OSError as error:
        raise UserError(
            f"--weights paddle: paddle.vision's pretrained {spec} weights are downloaded from {_PRETRAINED_HOST}, "
            f"which cannot be reached ({error.strerror or error}); download the .pdparams elsewhere and pass its path"
        ) from None


def _pretrained_cached(spec: str) -> bool:
    """Whether paddle.vision's download of ``spec`` is already in its weights cache (no network needed)."""
    import paddle

    module = sys.modules.get(getattr(paddle.vision.models, spec).__module__)
    urls = getattr(module, "model_urls", {}) or {}
    entry = urls.get(spec)
    if not entry:
        return False
    from paddle.utils.download import WEIGHTS_HOME

    return (Path(WEIGHTS_HOME) / entry[0].rsplit("/", 1)[-1]).is_file()


def load_model(spec: str, weights: str = "seeded",
               torch_weights: Optional[Callable[[str, str], Path]] = None) -> LoadedModel:
    """The model ``spec`` with ``weights`` (see the module docstring), float32, in eval mode.

    ``torch_weights(weights, spec)`` converts torchvision weights into a
    ``.pdparams`` for a paddle.vision model; without it they are refused.
    """
    import paddle

    kind = _kind_of(spec)
    if weights == "paddle":
        if kind != "paddle.vision":
            raise UserError(f"--weights paddle: only paddle.vision models have Paddle's pretrained download; "
                            f"give {spec} a .pdparams file or 'seeded'")
        if not _pretrained_cached(spec):
            _check_pretrained_reachable(spec)
        try:
            model = build_model(spec, pretrained=True)
        except (AssertionError, RuntimeError) as error:  # no pretrained weights for it, or the download failed
            raise UserError(f"--weights paddle: {spec}: {str(error).strip().splitlines()[0]}") from None
        return LoadedModel(model, spec, kind, weights)
    paddle.seed(SEED)
    model = build_model(spec)
    if weights == "seeded":
        return LoadedModel(model, spec, kind, weights)
    if is_torch_weights(weights):
        if torch_weights is None:
            raise UserError(f"--weights {weights}: torchvision weights are converted by the parity harness, which "
                            "is not available here")
        if kind != "paddle.vision":
            raise UserError(f"--weights {weights}: torchvision weights fit paddle.vision models only, not {spec}")
        load_state_dict(model, torch_weights(weights, spec))
        return LoadedModel(model, spec, kind, weights)
    path = Path(weights)
    if path.suffix.lower() in _JIT_SUFFIXES:
        raise UserError(f"--weights {weights}: give the .pdparams of the model's state dict, not a paddle.jit.save file")
    load_state_dict(model, path)
    return LoadedModel(model, spec, kind, weights)


def _first_spatial_output(model: Any) -> str:
    """The last top-level sub-layer whose output is a feature map (N, C, H, W) with more than one pixel.

    Found by one forward pass of a 224x224 zero image with a hook on each
    top-level sub-layer: for a classifier that is the last block before the
    global pooling, the layer upstream's documentation asks for.
    """
    import paddle

    outputs: Dict[str, Tuple[int, ...]] = {}
    hooks = []
    for name, child in model.named_children():
        def record(layer, inputs, output, name=name):
            if isinstance(output, paddle.Tensor):
                outputs[name] = tuple(output.shape)

        hooks.append(child.register_forward_post_hook(record))
    try:
        with paddle.no_grad():
            model(paddle.zeros([1, 3, 224, 224], dtype="float32"))
    finally:
        for hook in hooks:
            hook.remove()
    maps = [name for name, shape in outputs.items() if len(shape) == 4 and shape[2] * shape[3] > 1]
    if not maps:
        raise UserError("no sub-layer of this model outputs a feature map; name the target with --target-layers "
                        "(--list-layers shows them)")
    last = maps[-1]
    return last if last.isidentifier() else f'["{last}"]'


def default_target_layers(model: Any, vision_name: str = "") -> str:
    """The target-layer expression used when ``--target-layers`` is not given.

    paddle.vision's families have upstream's convention; any other model gets
    the last top-level sub-layer that outputs a feature map.
    """
    for prefix, target in _VISION_TARGETS:
        if vision_name == prefix or (vision_name.startswith(prefix) and prefix != "resnet50"):
            return target
    return _first_spatial_output(model)


def class_count(model: Any) -> Optional[int]:
    """How many classes the model scores: the output size of its last ``Linear`` (None without one)."""
    import paddle

    linear = [layer for layer in model.sublayers(include_self=True) if isinstance(layer, paddle.nn.Linear)]
    return int(linear[-1].weight.shape[1]) if linear else None


def _spelling(prefix: str, name: str, indexed: bool, position: int) -> Optional[str]:
    """The ``--target-layers`` spelling of sub-layer ``name`` under the path ``prefix`` (None: it has none)."""
    if name.startswith("__"):
        return None
    if indexed and name == str(position):
        return f"{prefix}[{position}]" if prefix else f"model[{position}]"
    if name.isidentifier():
        return f"{prefix}.{name}" if prefix else name
    if name.isascii() and all(ch.isalnum() or ch == "_" for ch in name) and not (name.isdigit() and not prefix):
        # ShuffleNet's "2_1": bracketed below the root, bare at the root (the grammar reads it as a name there)
        return f'{prefix}["{name}"]' if prefix else name
    return None


def layer_paths_of(model: Any) -> List[Tuple[str, str]]:
    """``(path, type name)`` for every sub-layer, in the spelling ``--target-layers`` resolves.

    Children of a ``Sequential`` or ``LayerList`` are indices
    (``layer4[2].conv1``), names that are not identifiers are bracketed
    (``_stage2["2_1"]``).  A layer whose name the expression grammar cannot
    spell (some PaddleClas layers have dots in theirs) is left out with
    everything below it: it cannot be a target.
    """
    import paddle

    found: List[Tuple[str, str]] = []

    def visit(layer: Any, prefix: str) -> None:
        indexed = isinstance(layer, (paddle.nn.Sequential, paddle.nn.LayerList))
        children = [(name, child) for name, child in layer._sub_layers.items() if child is not None]
        for position, (name, child) in enumerate(children):
            path = _spelling(prefix, name, indexed, position)
            if path is None:
                continue
            found.append((path, type(child).__name__))
            visit(child, path)

    visit(model, "")
    return found
