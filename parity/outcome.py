"""What became of one worker job: where its output lies, or why there is none."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from parity.worker import WorkerJob

__all__ = ["JobOutcome", "error_headline"]


@dataclass
class JobOutcome:
    job: WorkerJob
    ok: bool
    seconds: float
    out_dir: Path
    cached: bool = False
    error: Optional[str] = None
    result: Dict = field(default_factory=dict)


def error_headline(text: str, limit: int = 240) -> str:
    """One console line for an error: its first line and, when a traceback follows, the exception it ends in."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return "(no message)"
    headline = lines[0]
    if len(lines) > 1 and any(line.startswith("Traceback (most recent call last)") for line in lines):
        headline = f"{headline.rstrip(':')}: {lines[-1]}"
    return headline if len(headline) <= limit else headline[:limit - 1] + "…"
