"""A content-addressed cache of upstream (torch) worker results.

Upstream is the reference and does not change between runs unless one of
its inputs does, so its results are stored under a key made of everything
that can change them: package versions, weights and image sha256, method,
smoothing, dtype, device, input size, target layer and target rule.  A rerun
of ``make parity`` then recomputes only the Paddle side.

The worker's thread count is part of the key.  It changes float32 results
in their last bits (torch's ResNet50 logits moved by 4.2e-5 between 1 and 2
threads here, the size of the torch-vs-Paddle difference itself), so an entry
made with another count is never reused: the harness runs every worker with
the same fixed ``--threads`` whatever the schedule, and a rerun with the same
setting finds its entries.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Dict, List, Optional

from paddle_impl.locations import cache_dir

__all__ = ["ResultCache", "DEFAULT_CACHE_DIR"]

DEFAULT_CACHE_DIR = cache_dir()


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

    def store(self, key: str, worker_out: Path, method: Optional[str] = None, cases: Optional[List[str]] = None) -> None:
        """Copy a finished worker's output in; the rename makes the entry appear whole or not at all.

        With ``method`` and ``cases`` (smoothing-mode names) only those cases
        of a worker that ran more are kept: their directories and their entries
        in ``result.json``.  Without, the whole output (a weights unit's).
        """
        if not self.enabled:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        staging = self.directory / f".{key}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        if cases is None:
            shutil.copytree(worker_out, staging)
        else:
            for case in cases:
                shutil.copytree(Path(worker_out) / method / case, staging / method / case)
            result = json.loads((Path(worker_out) / "result.json").read_text())
            result["methods"] = [method]
            result["cases"] = {method: {name: info for name, info in result["cases"][method].items() if name in cases}}
            (staging / "result.json").write_text(json.dumps(result, indent=1))
        target = self.directory / key
        if target.exists():
            shutil.rmtree(staging, ignore_errors=True)
            return
        staging.rename(target)
