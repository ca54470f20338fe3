"""What became of one worker job: where its output lies, or why there is none."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from parity.worker import WorkerJob

__all__ = ["JobOutcome"]


@dataclass
class JobOutcome:
    job: WorkerJob
    ok: bool
    seconds: float
    out_dir: Path
    cached: bool = False
    error: Optional[str] = None
    result: Dict = field(default_factory=dict)
