"""A content-addressed cache of upstream (torch) worker results.

Upstream is the reference and does not change between runs unless one of
its inputs does, so its results are stored under a key made of everything
that can change them: package versions, weights and image sha256, method,
smoothing, dtype, device, input size, target layer and target rule.  A rerun
of ``make parity`` then recomputes only the Paddle side.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Dict, Optional

__all__ = ["ResultCache", "DEFAULT_CACHE_DIR"]

DEFAULT_CACHE_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "cache" / "torch"


class ResultCache:
    def __init__(self, directory: Path = DEFAULT_CACHE_DIR, enabled: bool = True) -> None:
        self.directory = Path(directory)
        self.enabled = enabled

    @staticmethod
    def key(fields: Dict) -> str:
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]

    def lookup(self, key: str) -> Optional[Path]:
        if not self.enabled:
            return None
        entry = self.directory / key
        return entry if (entry / "result.json").is_file() else None

    def store(self, key: str, worker_out: Path) -> None:
        """Copy a finished worker's output in; the rename makes the entry appear whole or not at all."""
        if not self.enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        staging = self.directory / f".{key}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(worker_out, staging)
        target = self.directory / key
        if target.exists():
            shutil.rmtree(staging, ignore_errors=True)
            return
        staging.rename(target)
