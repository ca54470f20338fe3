"""A report's cases as data: their ids, their order, the files each one wrote."""
from __future__ import annotations

import re
import shlex
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

from parity.registry import METHODS, SMOOTH_MODES

def default_files(method: str, smooth: str, setup: str = "") -> Dict[str, str]:
    """The files of one case, relative to DIR, as the harness lays them out (a setup gets its own directory)."""
    mode_dir = f"log_{smooth}" if not setup else f"{_setup_slug(setup)}/log_{smooth}"
    return {
        "paddle_cam_jpg": f"output_paddle/{mode_dir}/{method}_cam.jpg",
        "torch_cam_jpg": f"output_torch/{mode_dir}/{method}_cam.jpg",
        "paddle_cam_npy": f"output_paddle/{mode_dir}/{method}_cam.npy",
        "torch_cam_npy": f"output_torch/{mode_dir}/{method}_cam.npy",
        "diff_jpg": f"diff/{mode_dir}/{method}_absdiff.jpg",
    }


def _setup_slug(name: str) -> str:
    # the same rule as parity.plan.setup_slug, which this module cannot import (it pulls in the workers)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "main"


def _files(case: Mapping) -> Dict[str, str]:
    files = dict(default_files(case.get("method", ""), case.get("smooth", ""), case.get("setup") or ""))
    files.update({k: v for k, v in (case.get("files") or {}).items() if v})
    return files


def _comparable(case: Mapping) -> bool:
    return not case.get("error") and not case.get("architecture_differs")


def _case_id(case: Mapping) -> str:
    return str(case.get("id") or f"{case.get('method')}-{case.get('smooth')}")


def _short_id(case: Mapping) -> str:
    """The case id without its setup prefix: ``gradcam-no_smooth``."""
    case_id = _case_id(case)
    setup = case.get("setup") or ""
    return case_id[len(setup) + 1:] if setup and case_id.startswith(setup + "/") else case_id


def _ordered_cases(results: Mapping) -> List[Dict]:
    """Cases by setup (first appearance), then registry order (methods outer, modes inner); unknown ones after."""
    cases = list(results.get("cases") or [])
    setup_rank: Dict[str, int] = {}
    for case in cases:
        setup_rank.setdefault(case.get("setup") or "", len(setup_rank))
    method_rank = {name: i for i, name in enumerate(METHODS)}
    smooth_rank = {name: i for i, name in enumerate(SMOOTH_MODES)}
    big = len(METHODS) + len(SMOOTH_MODES) + 1

    def key(indexed):
        index, case = indexed
        return (setup_rank[case.get("setup") or ""], method_rank.get(case.get("method"), big),
                smooth_rank.get(case.get("smooth"), big), index)

    return [case for _, case in sorted(enumerate(cases), key=key)]


def _setups(cases: Sequence[Mapping]) -> List[str]:
    return list(dict.fromkeys(case.get("setup") or "" for case in cases))


def _in_order(values: Iterable[str], order: Iterable[str]) -> List[str]:
    values = list(dict.fromkeys(v for v in values if v is not None))
    rank = {name: i for i, name in enumerate(order)}
    return sorted(values, key=lambda v: (rank.get(v, len(rank)), values.index(v)))


# Profiles that choose their own models, layers, batches and sizes: one of their cases is rerun
# alone through a single-setup profile with the case's setup spelled out.
_MULTI_SETUP_PROFILES = ("zoo", "upstream-suite", "upstream-suite-informative")
_RERUN_OUT = "rerun"  # never the default `reports`: a case rerun alone must not overwrite a committed report


def rerun_command(case: Mapping, provenance: Optional[Mapping] = None) -> str:
    """The one command line that computes this case again, alone (``python -m parity --profile ... --methods ...``)."""
    prov = provenance or {}
    profile = str(prov.get("profile") or "full")
    words = ["python", "-m", "parity"]
    if case.get("setup") and profile in _MULTI_SETUP_PROFILES:
        words += ["--profile", "full"]
        layers = case.get("target_layers") or {}
        if case.get("model"):
            words += ["--model", str(case["model"])]
        if isinstance(layers, Mapping) and layers.get("torch"):
            words += ["--target-layers", str(layers["torch"])]
            if layers.get("paddle") and layers.get("paddle") != layers.get("torch"):
                words += ["--paddle-target-layers", str(layers["paddle"])]
        if case.get("batch") and int(case["batch"]) != 1:
            words += ["--batch", str(case["batch"])]
        if case.get("size"):
            words += ["--size", "x".join(str(s) for s in case["size"])]
        if case.get("target_category") is not None:
            words += ["--target-category", str(case["target_category"])]
    else:
        words += ["--profile", profile]
    words += ["--methods", str(case.get("method")), "--smooth", str(case.get("smooth"))]
    dtype = case.get("dtype") or prov.get("dtype")
    if dtype and dtype != "float32":
        words += ["--dtype", str(dtype)]
    words += ["--out", _RERUN_OUT]
    return " ".join(shlex.quote(word) for word in words)


def _p999(case: Mapping, drawn: Optional[Mapping]) -> Optional[float]:
    """The case's 99.9th percentile of |Δ|: recorded over the batch, or (older runs) from its drawn picture.

    ``drawn`` is ``results["diff_images"]``.
    """
    if case.get("cam_p999_abs_diff") is not None:
        return case["cam_p999_abs_diff"]
    return ((drawn or {}).get("p999") or {}).get(_case_id(case))
