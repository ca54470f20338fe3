"""Model weights: where they come from, how they are checked, and the torchvision -> Paddle transfer.

Every architecture of the model zoo (:mod:`parity.model_zoo`) is
supported; ResNet50 is the default everywhere (``arch="resnet50"``), and the
ResNet50-named helpers (``torch_resnet50``, ``paddle_resnet50``...) are kept
for the code that calls them.

Sources (``--weights``):
* ``default``  – ``torch.manual_seed(0)`` then the torchvision builder, saved
  once as ``fixtures/weights/{arch}_seed0.pth`` with its sha256 (no download
  needed, deterministic; ResNet50's file is ``resnet50_seed0.pth``);
* ``imagenet`` – torchvision's IMAGENET1K_V1 checkpoint (needs the network once);
* a path      – a torchvision state dict of the architecture, saved with ``torch.save``.

``.pth`` files are read with ``torch.load(weights_only=True)``: a pickle that
asks for anything beyond tensors and containers is refused before it can run.
A conversion to Paddle (:mod:`parity.weight_transfer`) checks every key
and shape and is accepted only after a forward pass shows both models give
the same logits; it is cached under ``fixtures/weights/converted/`` by the
source's sha256 and the architecture.
"""
from __future__ import annotations

import hashlib
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from paddle_impl import locations
from parity import model_zoo
from paddle_impl.atomic import atomic_path, write_text
from paddle_impl.errors import UserError, check_readable_file
from parity.model_zoo import DEFAULT_ARCH
# the builders live below this module and parity.weight_transfer (which verifies with them)
from parity.model_build import _check_dtype, _describe, build_paddle_model, build_torch_model  # noqa: F401

__all__ = [
    "DEFAULT_WEIGHTS_DIR",
    "DEFAULT_SEED",
    "sha256_of",
    "load_torch_state_dict",
    "load_paddle_state_dict",
    "torch_to_paddle_state_dict",
    "build_torch_model",
    "build_paddle_model",
    "seeded_torch_state",
    "torch_resnet50",
    "paddle_resnet50",
    "ensure_default_weights",
    "resolve_weights",
    "convert_file",
    "convert_file_checked",
    "converted_path",
    "ensure_paddle_weights",
    "state_dict_identity",
    "weights_identity",
    "hub_transfer_facts",
]

# fixtures/weights in a checkout; under the per-user data directory when installed
# (never inside site-packages): see paddle_impl.locations.
DEFAULT_WEIGHTS_DIR = locations.weights_dir()
DEFAULT_SEED = 0


def sha256_of(path: Path) -> str:
    """The sha256 hex digest of a file's bytes."""
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


def torch_to_paddle_state_dict(
    torch_state: Mapping[str, np.ndarray],
    paddle_shapes: Optional[Mapping[str, Tuple[int, ...]]] = None,
    arch: str = DEFAULT_ARCH,
) -> Dict[str, np.ndarray]:
    """Rename, pair and transpose a torchvision state dict for ``paddle.vision.models.{arch}``.

    The architecture's rule (:mod:`parity.model_zoo`) maps the names;
    ``num_batches_tracked`` is dropped and Linear weights, found by layer
    type, are transposed (Paddle's Linear stores (in, out)).  Every key and
    shape is checked on both sides (and against ``paddle_shapes`` when given);
    any mismatch is refused with the names of the offending keys.  No forward
    check: :func:`convert_file` and :func:`ensure_paddle_weights` add that.
    """
    from parity.weight_transfer import transfer_state_dict

    converted = transfer_state_dict(torch_state, arch)
    if paddle_shapes is not None:
        wrong = sorted(
            name for name in set(converted) | set(paddle_shapes)
            if tuple(paddle_shapes.get(name, ())) != tuple(np.shape(converted.get(name, ())))
        )
        if wrong:
            raise UserError(f"the converted state dict does not fit the given Paddle shapes: {_describe(wrong)}")
    return converted


def paddle_resnet50(state: Mapping[str, np.ndarray] = None, dtype: str = "float32"):
    """``paddle.vision.models.resnet50`` in ``dtype``, loaded from a Paddle-named state dict."""
    return build_paddle_model("resnet50", state, dtype)


def torch_resnet50(state: Mapping[str, np.ndarray] = None, dtype: str = "float32"):
    """torchvision's ``resnet50`` in ``dtype``, loaded from a torchvision state dict, in eval mode."""
    return build_torch_model("resnet50", state, dtype)


def seeded_torch_state(arch: str = DEFAULT_ARCH, seed: int = DEFAULT_SEED, randomize_batch_norm: bool = False) -> Dict[str, Any]:
    """``torch.manual_seed(seed)`` then torchvision's builder: the state dict of the default weights (torch tensors).

    A :class:`parity.model_zoo.SeededTwin` (every twin but ResNet50) and a hub
    pair then get seeded noise on every tensor the builder leaves constant
    (:func:`parity.hubs.seeding.randomize_constant_tensors`, generator seeded
    with ``seed + 1``), as trained weights would have.

    ``randomize_batch_norm`` is the older, narrower rule, kept for the tests
    measured on it: instead of the above, every batch norm's running
    mean/variance and affine terms, and every Linear bias, are drawn from a
    generator seeded with ``seed + 1``.
    """
    import torch

    spec = model_zoo.arch(arch)
    if spec.hub:
        # A hub pair's init leaves many tensors constant (norms, zero-init gammas, tokens): all get seeded noise.
        from parity.hubs.seeding import seeded_hub_state

        return seeded_hub_state(spec, seed)
    torch.manual_seed(seed)
    model = spec.new_torch_model()
    generator = torch.Generator().manual_seed(seed + 1)
    if randomize_batch_norm:
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    n = module.num_features
                    module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                    module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                    module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                    module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                elif isinstance(module, torch.nn.Linear) and module.bias is not None:
                    module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
    elif isinstance(spec, model_zoo.SeededTwin):
        from parity.hubs.seeding import constant_tensor_names, randomize_constant_tensors

        randomize_constant_tensors(model, generator)
        left = constant_tensor_names(model)
        if left:
            raise RuntimeError(f"{arch}: tensors still constant after seeding: {', '.join(left[:6])}")
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _write_with_sha(path: Path, save) -> Path:
    with atomic_path(path) as tmp:
        save(tmp)
    write_text(path.with_name(path.name + ".sha256"), f"{sha256_of(path)}  {path.name}\n")
    return path


def ensure_default_weights(directory: Path = DEFAULT_WEIGHTS_DIR, arch: str = DEFAULT_ARCH) -> Path:
    """The seeded torchvision init of ``arch``, written once (deterministic) with its sha256."""
    spec = model_zoo.arch(arch)
    path = Path(directory) / spec.default_weights_name
    if not path.exists():
        import torch

        state = seeded_torch_state(arch, DEFAULT_SEED)
        _write_with_sha(path, lambda tmp: torch.save(state, tmp))
    return path


def _download_imagenet(directory: Path, arch: str = DEFAULT_ARCH) -> Path:
    path = Path(directory) / f"{arch}_imagenet1k_v1.pth"
    if not path.exists():
        import torch
        import torchvision

        spec = model_zoo.arch(arch)
        try:
            enum = torchvision.models.get_model_weights(spec.torch_builder)
            weights = getattr(enum, "IMAGENET1K_V1", None) or enum.DEFAULT
            state = weights.get_state_dict(progress=True)
        except Exception as error:  # network errors come in many types
            raise UserError(f"could not download torchvision's IMAGENET1K_V1 {arch} weights: {error}") from None
        _write_with_sha(path, lambda tmp: torch.save(state, tmp))
    return path


def resolve_weights(spec: str, directory: Path = DEFAULT_WEIGHTS_DIR, arch: str = DEFAULT_ARCH) -> Path:
    """``default`` | ``imagenet`` | a path  ->  a torchvision ``.pth`` file of ``arch`` on disk."""
    if spec in (None, "", "default"):
        return ensure_default_weights(directory, arch)
    if spec == "imagenet":
        if model_zoo.arch(arch).hub:
            raise UserError(f"--weights imagenet is torchvision's download; for the hub pair {arch} pass a timm state "
                            "dict (.pth of model.state_dict()) or use the seeded 'default'")
        return _download_imagenet(directory, arch)
    path = Path(spec)
    _check_readable_file(path, "weights file")
    return path


def convert_file_checked(torch_path: Path, paddle_path: Path, arch: str = DEFAULT_ARCH):
    """Convert and forward-verify a torchvision ``.pth`` into a Paddle ``.pdparams`` (atomically, with sha256).

    Returns ``(path, TransferCheck)``.  Nothing is written when a key, a
    shape or the forward verification fails.
    """
    return _convert(load_torch_state_dict(torch_path), Path(paddle_path), arch)


def convert_file(torch_path: Path, paddle_path: Path, arch: str = DEFAULT_ARCH) -> Path:
    """Convert a torchvision ``.pth`` into a Paddle ``.pdparams`` (checked, verified, atomic, with sha256)."""
    return convert_file_checked(torch_path, paddle_path, arch)[0]


def _convert(torch_state: Mapping[str, np.ndarray], paddle_path: Path, arch: str = DEFAULT_ARCH):
    import paddle

    if model_zoo.arch(arch).hub:
        return _convert_hub_pair(torch_state, Path(paddle_path), arch)
    from parity.weight_transfer import convert_state_dict

    converted, check = convert_state_dict(torch_state, arch, verify=True)
    return _write_with_sha(paddle_path, lambda tmp: paddle.save(converted, str(tmp))), check


def _hub_sidecar(converted: Path) -> Path:
    return converted.with_name(converted.stem + ".transfer.json")


def _convert_hub_pair(torch_state: Mapping[str, np.ndarray], paddle_path: Path, arch: str):
    """A hub pair: the generic transfer into PaddleClas's model (switches verified), with what it found beside it."""
    import json

    import paddle

    from parity.hub_transfer import transfer_pair

    spec = model_zoo.arch(arch)
    done = transfer_pair(spec, torch_state)
    path = _write_with_sha(paddle_path, lambda tmp: paddle.save(done.state, str(tmp)))
    write_text(_hub_sidecar(path), json.dumps({
        "pair": spec.pair_id, "transfer": done.summary,
        "switches": done.switch_check.sentence() if done.switch_check else "",
    }, indent=1) + "\n")
    return path, done


def hub_transfer_facts(paddle_path: Path) -> Dict[str, str]:
    """What the conversion of a hub pair found (pair, transfer summary, switches and their proof); {} for the twins."""
    import json

    sidecar = _hub_sidecar(Path(paddle_path))
    if not sidecar.exists():
        return {}
    return {key: value for key, value in json.loads(sidecar.read_text()).items() if value}


def converted_path(torch_path: Path, directory: Path = DEFAULT_WEIGHTS_DIR, arch: str = DEFAULT_ARCH) -> Path:
    """Where the conversion of ``torch_path`` for ``arch`` is cached (keyed by the source's sha256 and the arch).

    ResNet50's name has no arch part, as before the zoo existed, so existing
    caches stay valid.
    """
    torch_path = Path(torch_path)
    spec = model_zoo.arch(arch)
    tag = "" if arch == DEFAULT_ARCH else f"-{spec.name}"
    if spec.hub:
        # A hub pair's conversion also depends on its entry (builders, their arguments, switches): a changed entry
        # must not reuse a conversion made for the old one.
        entry = repr((spec.torch_builder, spec.paddle_builder, spec.torch_kwargs, sorted(spec.paddle_builder_kwargs().items()),
                      [switch.name for switch in spec.switches]))
        tag += "-" + hashlib.sha256(entry.encode()).hexdigest()[:8]
    return Path(directory) / "converted" / f"{torch_path.stem}{tag}-{sha256_of(torch_path)[:16]}.pdparams"


def ensure_paddle_weights(torch_path: Path, directory: Path = DEFAULT_WEIGHTS_DIR, arch: str = DEFAULT_ARCH) -> Path:
    """The verified Paddle conversion of ``torch_path`` for ``arch``, cached by the source's sha256 and the arch.

    The source's content identity (``state_dict_identity``) is written beside
    the conversion, so ``weights_identity`` need not load the file again.
    """
    torch_path = Path(torch_path)
    paddle_path = converted_path(torch_path, directory, arch)
    hub_facts_missing = model_zoo.arch(arch).hub and not _hub_sidecar(paddle_path).exists()
    if hub_facts_missing and paddle_path.exists():
        paddle_path.unlink()  # converted before its facts were written: convert again
    if not (paddle_path.exists() and _identity_sidecar(paddle_path).exists()):
        torch_state = load_torch_state_dict(torch_path)
        if not paddle_path.exists():
            _convert(torch_state, paddle_path, arch)
        write_text(_identity_sidecar(paddle_path), state_dict_identity(torch_state) + "\n")
    return paddle_path


def weights_identity(torch_path: Path, directory: Path = DEFAULT_WEIGHTS_DIR, arch: str = DEFAULT_ARCH) -> str:
    """The content identity of a torchvision ``.pth`` (see ``state_dict_identity``)."""
    sidecar = _identity_sidecar(ensure_paddle_weights(torch_path, directory, arch))
    return sidecar.read_text().strip()


def load_paddle_state_dict(path: Path) -> Dict[str, np.ndarray]:
    """Read a Paddle ``.pdparams`` as numpy arrays; an unreadable file is a one-line UserError."""
    import paddle

    _check_readable_file(Path(path), "Paddle weights file")
    try:
        loaded = paddle.load(str(path), return_numpy=True)
    except Exception as error:
        raise UserError(f"Paddle weights file {path} cannot be read: {error}") from None
    return {name: np.asarray(value) for name, value in loaded.items()}
