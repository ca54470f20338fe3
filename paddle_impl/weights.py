"""ResNet50 weights: where they come from, how they are checked, and the torchvision -> Paddle transfer.

Sources (``--weights``):
* ``default``  – ``torch.manual_seed(0); torchvision.models.resnet50()``, saved once
  under ``fixtures/weights/`` with its sha256 (no download needed, deterministic);
* ``imagenet`` – torchvision's IMAGENET1K_V1 checkpoint (needs the network once);
* a path      – a torchvision ResNet50 state dict saved with ``torch.save``.

``.pth`` files are read with ``torch.load(weights_only=True)``: a pickle that
asks for anything beyond tensors and containers is refused before it can run.
"""
from __future__ import annotations

import hashlib
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Dict, Mapping, Tuple

import numpy as np

from paddle_impl.atomic import atomic_path, write_text
from paddle_impl.errors import UserError, check_readable_file

__all__ = [
    "DEFAULT_WEIGHTS_DIR",
    "sha256_of",
    "load_torch_state_dict",
    "torch_to_paddle_state_dict",
    "paddle_resnet50",
    "ensure_default_weights",
    "resolve_weights",
    "ensure_paddle_weights",
    "state_dict_identity",
    "weights_identity",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WEIGHTS_DIR = REPO_ROOT / "fixtures" / "weights"
DEFAULT_SEED = 0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_dict_identity(state: Mapping[str, np.ndarray]) -> str:
    """A digest of what a state dict *holds*: sorted names, dtypes, shapes and bytes.

    Two files with the same tensors get the same identity however they were
    written (file name, pickle protocol, zip layout), so the identity, not the
    file's sha256, keys cached upstream results and names the weights in a
    report.
    """
    digest = hashlib.sha256(b"paddle-gradcam-parity state dict v1\n")
    for name in sorted(state):
        array = np.asarray(state[name])
        array = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))
        digest.update(f"{name}\0{array.dtype.str}\0{list(array.shape)}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _identity_sidecar(converted: Path) -> Path:
    return converted.with_name(converted.stem + ".identity")


def _check_readable_file(path: Path, what: str) -> None:
    check_readable_file(path, what)


def load_torch_state_dict(path: Path) -> Dict[str, np.ndarray]:
    """Read a torchvision state dict (``torch.save``) as numpy arrays, safely."""
    import torch

    path = Path(path)
    _check_readable_file(path, "weights file")
    if path.suffix == ".pdparams":
        raise UserError(f"weights file {path} is a Paddle .pdparams; pass the torchvision .pth it was converted from")
    try:
        with warnings.catch_warnings():
            # torch warns (on stderr) about pickle protocols it did not write; the
            # load either succeeds or is refused below with one line.
            warnings.simplefilter("ignore", UserWarning)
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()
        detail = next((line for line in first_line if "GLOBAL" in line or "Unsupported" in line), "")
        if detail or "Weights only load failed" in str(error):
            raise UserError(
                f"weights file {path} was refused: its pickle needs more than tensors to load "
                f"(it could run code), so it was not loaded{': ' + detail.strip() if detail else ''}"
            ) from None
        raise UserError(f"weights file {path} is not a PyTorch checkpoint ({error})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"weights file {path} is not a readable PyTorch checkpoint (truncated or corrupt?): {reason}") from None
    except Exception as error:  # the weights-only unpickler fails on garbage with KeyError, IndexError, ...
        raise UserError(
            f"weights file {path} is not a PyTorch checkpoint "
            f"({type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:200]})"
        ) from None
    if isinstance(loaded, Mapping) and "state_dict" in loaded and isinstance(loaded["state_dict"], Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise UserError(f"weights file {path} does not hold a state dict of tensors (found {type(loaded).__name__})")
    return {name: tensor.detach().cpu().numpy() for name, tensor in loaded.items()}


def _torch_name_to_paddle(name: str) -> str:
    if name.endswith(".running_mean"):
        return name[: -len("running_mean")] + "_mean"
    if name.endswith(".running_var"):
        return name[: -len("running_var")] + "_variance"
    return name


def _describe(names, limit: int = 6) -> str:
    names = sorted(names)
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


def torch_to_paddle_state_dict(
    torch_state: Mapping[str, np.ndarray], paddle_shapes: Mapping[str, Tuple[int, ...]]
) -> Dict[str, np.ndarray]:
    """Rename and reshape a torchvision ResNet state dict for ``paddle.vision.models.resnet``.

    ``running_mean`` -> ``_mean``, ``running_var`` -> ``_variance``, ``fc.weight``
    transposed (Paddle's Linear stores (in, out)), ``num_batches_tracked``
    dropped.  Every key and shape is checked against the Paddle model; any
    mismatch is refused with the names of the offending keys.
    """
    converted: Dict[str, np.ndarray] = {}
    for name, value in torch_state.items():
        if name.endswith("num_batches_tracked"):
            continue
        value = np.asarray(value)
        if name == "fc.weight":
            value = np.ascontiguousarray(value.T)
        converted[_torch_name_to_paddle(name)] = value

    missing = set(paddle_shapes) - set(converted)
    unexpected = set(converted) - set(paddle_shapes)
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    wrong_shapes = [
        f"{name} {tuple(converted[name].shape)} (expected {tuple(paddle_shapes[name])})"
        for name in sorted(set(converted) & set(paddle_shapes))
        if tuple(converted[name].shape) != tuple(paddle_shapes[name])
    ]
    if wrong_shapes:
        problems.append(f"wrong shapes: {_describe(wrong_shapes)}")
    if problems:
        raise UserError("the state dict does not fit torchvision's ResNet50: " + "; ".join(problems))
    return converted


def paddle_resnet50(state: Mapping[str, np.ndarray] = None, dtype: str = "float32"):
    """``paddle.vision.models.resnet50`` in ``dtype``, loaded from a Paddle-named state dict."""
    import paddle

    previous = paddle.get_default_dtype()
    paddle.set_default_dtype(dtype)
    try:
        model = paddle.vision.models.resnet50()
    finally:
        paddle.set_default_dtype(previous)
    if state is not None:
        model.set_state_dict({name: np.asarray(value, dtype=dtype) for name, value in state.items()})
    model.eval()
    return model


def paddle_resnet50_shapes() -> Dict[str, Tuple[int, ...]]:
    return {name: tuple(value.shape) for name, value in paddle_resnet50().state_dict().items()}


def torch_resnet50(state: Mapping[str, np.ndarray] = None, dtype: str = "float32"):
    import torch
    import torchvision

    model = torchvision.models.resnet50()
    if state is not None:
        model.load_state_dict({name: torch.from_numpy(np.asarray(value)) for name, value in state.items()})
    model = model.double() if dtype == "float64" else model.float()
    return model.eval()


def _write_with_sha(path: Path, save) -> Path:
    with atomic_path(path) as tmp:
        save(tmp)
    write_text(path.with_name(path.name + ".sha256"), f"{sha256_of(path)}  {path.name}\n")
    return path


def ensure_default_weights(directory: Path = DEFAULT_WEIGHTS_DIR) -> Path:
    """The seeded torchvision ResNet50 init, written once (deterministic) with its sha256."""
    path = Path(directory) / f"resnet50_seed{DEFAULT_SEED}.pth"
    if not path.exists():
        import torch
        import torchvision

        torch.manual_seed(DEFAULT_SEED)
        state = torchvision.models.resnet50().state_dict()
        _write_with_sha(path, lambda tmp: torch.save(state, tmp))
    return path


def _download_imagenet(directory: Path) -> Path:
    path = Path(directory) / "resnet50_imagenet1k_v1.pth"
    if not path.exists():
        import torch
        import torchvision

        try:
            state = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        except Exception as error:  # network errors come in many types
            raise UserError(f"could not download torchvision's IMAGENET1K_V1 ResNet50 weights: {error}") from None
        _write_with_sha(path, lambda tmp: torch.save(state, tmp))
    return path


def resolve_weights(spec: str, directory: Path = DEFAULT_WEIGHTS_DIR) -> Path:
    """``default`` | ``imagenet`` | a path  ->  a torchvision ``.pth`` file on disk."""
    if spec in (None, "", "default"):
        return ensure_default_weights(directory)
    if spec == "imagenet":
        return _download_imagenet(directory)
    path = Path(spec)
    _check_readable_file(path, "weights file")
    return path


def convert_file(torch_path: Path, paddle_path: Path) -> Path:
    """Convert a torchvision ``.pth`` into a Paddle ``.pdparams`` (atomically, with sha256)."""
    return _convert(load_torch_state_dict(torch_path), Path(paddle_path))


def _convert(torch_state: Mapping[str, np.ndarray], paddle_path: Path) -> Path:
    import paddle

    converted = torch_to_paddle_state_dict(torch_state, paddle_resnet50_shapes())
    return _write_with_sha(paddle_path, lambda tmp: paddle.save(converted, str(tmp)))


def _converted_path(torch_path: Path, directory: Path) -> Path:
    return Path(directory) / "converted" / f"{torch_path.stem}-{sha256_of(torch_path)[:16]}.pdparams"


def ensure_paddle_weights(torch_path: Path, directory: Path = DEFAULT_WEIGHTS_DIR) -> Path:
    """The Paddle conversion of ``torch_path``, cached by the source's sha256.

    The source's content identity (``state_dict_identity``) is written beside
    the conversion, so ``weights_identity`` need not load the file again.
    """
    torch_path = Path(torch_path)
    paddle_path = _converted_path(torch_path, directory)
    if not (paddle_path.exists() and _identity_sidecar(paddle_path).exists()):
        torch_state = load_torch_state_dict(torch_path)
        if not paddle_path.exists():
            _convert(torch_state, paddle_path)
        write_text(_identity_sidecar(paddle_path), state_dict_identity(torch_state) + "\n")
    return paddle_path


def weights_identity(torch_path: Path, directory: Path = DEFAULT_WEIGHTS_DIR) -> str:
    """The content identity of a torchvision ``.pth`` (see ``state_dict_identity``)."""
    sidecar = _identity_sidecar(ensure_paddle_weights(torch_path, directory))
    return sidecar.read_text().strip()


def load_paddle_state_dict(path: Path) -> Dict[str, np.ndarray]:
    import paddle

    _check_readable_file(Path(path), "Paddle weights file")
    try:
        loaded = paddle.load(str(path), return_numpy=True)
    except Exception as error:
        raise UserError(f"Paddle weights file {path} cannot be read: {error}") from None
    return {name: np.asarray(value) for name, value in loaded.items()}
