"""What a parity run is asked to do (``RunConfig``), built from plain values by the CLI and the tests."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from parity.cache import ResultCache
from parity.provenance import package_versions
from parity.registry import METHODS, PROFILES, SMOOTH_MODES, Profile

__all__ = ["RunConfig", "make_config", "fault_injection_from_env", "DEFAULT_THREADS"]

# Threads each worker computes with.  Both frameworks' float32 bits depend on it (torch's oneDNN
# splits reductions by thread; so may Paddle's MKL), so it is a fixed setting of the run, never a
# consequence of how many workers happen to run at once: parallelism comes from running more
# one-thread workers side by side.
DEFAULT_THREADS = 1


@dataclass
class RunConfig:
    profile: Profile
    dtype: str
    device: str
    methods: List[str]
    smooths: List[str]
    image: Path
    torch_weights: Path
    paddle_weights: Path
    cache_fields: Dict
    out: Path
    jobs: int = 2
    threads: int = DEFAULT_THREADS
    target_category: Optional[int] = None
    cache: ResultCache = field(default_factory=lambda: ResultCache(enabled=False))
    case_timeout: float = 3 * 3600.0
    reuse_weights: bool = True
    # None: split aug_smooth ScoreCAM/AblationCAM jobs into per-variant weights units when a
    # variant is long enough to be worth its own process (parity.plan); True/False force it.
    split_units: Optional[bool] = None
    inject_fault: Dict[str, str] = field(default_factory=dict)  # "framework:method" -> "crash" | "hang"

    @property
    def workers(self) -> int:
        """How many worker processes may run at once: ``--jobs``, and no more than the cores allow."""
        return max(1, min(self.jobs, (os.cpu_count() or 1) // self.threads))


def make_config(
    *,
    profile: str,
    dtype: str,
    out: Path,
    image: Path,
    image_sha256: str,
    torch_weights: Path,
    paddle_weights: Path,
    weights_identity: str,
    methods: Optional[List[str]] = None,
    smooths: Optional[List[str]] = None,
    device: str = "cpu",
    jobs: int = 2,
    threads: int = DEFAULT_THREADS,
    target_category: Optional[int] = None,
    use_cache: bool = True,
    reuse_weights: bool = True,
    split_units: Optional[bool] = None,
    case_timeout: float = 3 * 3600.0,
    inject_fault: Optional[Dict[str, str]] = None,
) -> RunConfig:
    # Everything an upstream result depends on, besides the case itself: versions, the weights'
    # content, the image and the thread count.
    cache_fields = dict(package_versions(), weights=weights_identity, image=image_sha256, threads=threads)
    return RunConfig(
        profile=PROFILES[profile], dtype=dtype, device=device, methods=list(methods or METHODS),
        smooths=list(smooths or SMOOTH_MODES), image=Path(image),
        torch_weights=Path(torch_weights), paddle_weights=Path(paddle_weights), cache_fields=cache_fields,
        out=Path(out), jobs=jobs, threads=threads, target_category=target_category,
        cache=ResultCache(enabled=use_cache), case_timeout=case_timeout, reuse_weights=reuse_weights,
        split_units=split_units, inject_fault=dict(inject_fault or {}),
    )


def fault_injection_from_env() -> Dict[str, str]:
    """PARITY_INJECT_FAULT="torch:gradcam=crash,paddle:scorecam=hang" (used by the robustness tests)."""
    spec = os.environ.get("PARITY_INJECT_FAULT", "")
    return dict(item.rsplit("=", 1) for item in spec.split(",") if "=" in item)
