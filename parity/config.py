"""What a parity run is asked to do (``RunConfig``), built from plain values by the CLI and the tests."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from parity.cache import ResultCache
from parity.provenance import package_versions
from parity.registry import PROFILES, Case, Setup, all_cases

__all__ = ["RunConfig", "make_config", "fault_injection_from_env", "DEFAULT_THREADS", "WeightsPair"]

# Threads each worker computes with.  Both frameworks' float32 bits depend on it (torch's oneDNN
# splits reductions by thread; so may Paddle's MKL), so it is a fixed setting of the run, never a
# consequence of how many workers happen to run at once: parallelism comes from running more
# one-thread workers side by side.
DEFAULT_THREADS = 1

# (torch .pth, its verified Paddle conversion, the content identity of the .pth)
WeightsPair = Tuple[Path, Path, str]


@dataclass
class RunConfig:
    cases: List[Case]
    weights: Dict[str, WeightsPair]  # model name -> its weights
    dtype: str
    device: str
    image: Path
    cache_fields: Dict
    out: Path
    profile: str = "quick"
    jobs: int = 2
    threads: int = DEFAULT_THREADS
    cache: ResultCache = field(default_factory=lambda: ResultCache(enabled=False))
    case_timeout: float = 3 * 3600.0
    reuse_weights: bool = True
    # None: split aug_smooth ScoreCAM/AblationCAM jobs into per-variant weights units when a
    # variant is long enough to be worth its own process (parity.plan); True/False force it.
    split_units: Optional[bool] = None
    inject_fault: Dict[str, str] = field(default_factory=dict)  # "framework:method" -> "crash" | "hang"
    # Models whose paddle.vision twin computes another function than torchvision's (model -> why):
    # their cases are reported as "architectures differ", never run.
    unavailable: Dict[str, str] = field(default_factory=dict)
    # False: Paddle's compiled engines off, every forward in the dynamic graph (parity.runner's float32 recheck).
    compiled_engines: bool = True

    @property
    def workers(self) -> int:
        """How many worker processes may run at once: ``--jobs``, and no more than the cores allow."""
        return max(1, min(self.jobs, (os.cpu_count() or 1) // self.threads))

    @property
    def models(self) -> List[str]:
        return list(dict.fromkeys(case.setup.model for case in self.cases))


def make_config(
    *,
    profile: str,
    dtype: str,
    out: Path,
    image: Path,
    image_sha256: str,
    torch_weights: Optional[Path] = None,
    paddle_weights: Optional[Path] = None,
    weights_identity: Optional[str] = None,
    weights: Optional[Dict[str, WeightsPair]] = None,
    methods: Optional[List[str]] = None,
    smooths: Optional[List[str]] = None,
    setup_transform: Callable[[Setup], Setup] = lambda setup: setup,
    device: str = "cpu",
    jobs: int = 2,
    threads: int = DEFAULT_THREADS,
    use_cache: bool = True,
    reuse_weights: bool = True,
    split_units: Optional[bool] = None,
    case_timeout: float = 3 * 3600.0,
    inject_fault: Optional[Dict[str, str]] = None,
    unavailable: Optional[Dict[str, str]] = None,
) -> RunConfig:
    """The cases of ``profile`` (narrowed to ``methods`` and ``smooths``, setups passed through
    ``setup_transform``) with the weights of each model they use.

    ``weights`` maps each model to its weights; for a one-model run
    ``torch_weights``/``paddle_weights``/``weights_identity`` may be given instead.
    """
    cases = all_cases(methods, smooths, PROFILES[profile], setup_transform)
    if weights is None:
        models = {case.setup.model for case in cases}
        weights = {model: (Path(torch_weights), Path(paddle_weights), weights_identity) for model in models}
    # Everything an upstream result depends on besides the case, its setup and its model's
    # weights (those are added per job): versions, the image and the thread count.
    cache_fields = dict(package_versions(), image=image_sha256, threads=threads)
    return RunConfig(
        cases=cases, weights=dict(weights), dtype=dtype, device=device, image=Path(image), cache_fields=cache_fields,
        out=Path(out), profile=profile, jobs=jobs, threads=threads, cache=ResultCache(enabled=use_cache),
        case_timeout=case_timeout, reuse_weights=reuse_weights, split_units=split_units,
        inject_fault=dict(inject_fault or {}), unavailable=dict(unavailable or {}),
    )


def fault_injection_from_env() -> Dict[str, str]:
    """PARITY_INJECT_FAULT="torch:gradcam=crash,paddle:scorecam=hang,torch:eigencam=raise" (robustness tests)."""
    spec = os.environ.get("PARITY_INJECT_FAULT", "")
    return dict(item.rsplit("=", 1) for item in spec.split(",") if "=" in item)
