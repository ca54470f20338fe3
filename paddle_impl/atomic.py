"""Write files so that a reader sees the old file or the whole new one, never a part."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Union

import numpy as np

__all__ = ["atomic_path", "write_bytes", "write_text", "save_npy"]

PathLike = Union[str, "os.PathLike[str]"]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, else delete it.

    The temporary file has ``path``'s own name, inside a hidden temporary
    directory beside it: some writers record the name they write to
    (``torch.save`` names its zip archive's root after it), and a random
    name would make the same content give different bytes on every write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp = staging / path.name
    # mkdtemp creates 0700; the file itself gets the mode a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    try:
        tmp.touch(mode=0o666 & ~umask)
        os.chmod(tmp, 0o666 & ~umask)
        yield tmp
        os.replace(tmp, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _write_with(path: PathLike, writer: Callable[[Path], None]) -> Path:
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_bytes(path: PathLike, data: bytes) -> Path:
    return _write_with(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: PathLike, text: str) -> Path:
    return _write_with(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_npy(path: PathLike, array: np.ndarray) -> Path:
    def writer(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, np.asarray(array), allow_pickle=False)

    return _write_with(path, writer)
