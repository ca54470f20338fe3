"""Build a ``RunConfig`` from plain values: shared by the command line and the tests."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional

from parity.cache import ResultCache
from parity.provenance import package_versions
from parity.registry import METHODS, PROFILES, SMOOTH_MODES
from parity.runner import RunConfig

__all__ = ["make_config"]


def make_config(
    *,
    profile: str,
    dtype: str,
    out: Path,
    image: Path,
    image_sha256: str,
    torch_weights: Path,
    paddle_weights: Path,
    torch_weights_sha256: str,
    methods: Optional[List[str]] = None,
    smooths: Optional[List[str]] = None,
    device: str = "cpu",
    jobs: int = 2,
    target_category: Optional[int] = None,
    use_cache: bool = True,
    reuse_weights: bool = True,
    case_timeout: float = 3 * 3600.0,
    inject_fault: Optional[Dict[str, str]] = None,
) -> RunConfig:
    cache_fields = dict(package_versions(), weights=torch_weights_sha256, image=image_sha256)
    return RunConfig(
        profile=PROFILES[profile], dtype=dtype, device=device, methods=list(methods or METHODS),
        smooths=list(smooths or SMOOTH_MODES), image=Path(image),
        torch_weights=Path(torch_weights), paddle_weights=Path(paddle_weights), cache_fields=cache_fields,
        out=Path(out), jobs=jobs, target_category=target_category, cache=ResultCache(enabled=use_cache),
        case_timeout=case_timeout, reuse_weights=reuse_weights, inject_fault=dict(inject_fault or {}),
    )


def fault_injection_from_env() -> Dict[str, str]:
    """PARITY_INJECT_FAULT="torch:gradcam=crash,paddle:scorecam=hang" (used by the robustness tests)."""
    spec = os.environ.get("PARITY_INJECT_FAULT", "")
    return dict(item.rsplit("=", 1) for item in spec.split(",") if "=" in item)
