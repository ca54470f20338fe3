"""A report's cases as data: their ids, their order, the files each one wrote."""
from __future__ import annotations

import re
from typing import Dict, Iterable, List, Mapping, Sequence

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
