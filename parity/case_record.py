"""One parity case's verdict and files: load both sides' stages, compare them, write the artifacts.

Runs in the orchestrating process (numpy, OpenCV, no torch or paddle).  The
record it returns is one entry of ``parity.json``'s ``cases``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from parity.compare import CaseComparison, abs_diff, compare_case, percentile_999, ties, vacuity_note
from parity.diagnose import DIAGNOSED_STAGES
from parity.config import RunConfig
from parity.outcome import JobOutcome
from parity.plan import setup_slug
from parity.recipes import picture_cam
from parity.worker import method_error
from parity.registry import Case

__all__ = ["finalize_case", "stage_flags", "load_stages", "case_files", "empty_record"]


def load_stages(directory: Path) -> Dict[str, np.ndarray]:
    return {path.stem: np.load(path, allow_pickle=False) for path in sorted(directory.glob("*.npy"))}


def stage_flags(stages: Dict[str, np.ndarray]) -> List[str]:
    flags = []
    cam = stages.get("cam")
    if cam is not None and not np.all(np.isfinite(cam)):
        flags.append("non-finite CAM")
    elif cam is not None and not np.any(cam):
        flags.append("flat CAM (all zeros)")
    for name in ("activations", "gradients"):
        if name in stages and not np.all(np.isfinite(stages[name])):
            flags.append(f"non-finite {name}")
    return flags


def case_files(case: Case) -> Dict[str, str]:
    """Where one case's pictures and CAMs go, relative to the output directory.

    The unnamed setup of the seed profiles keeps the original reproduction's
    layout (``output_paddle/log_{mode}/{method}_cam.jpg``); a named setup gets
    a directory of its own under each of the three trees.
    """
    mode_dir = f"log_{case.smooth}" if not case.setup.name else f"{setup_slug(case.setup)}/log_{case.smooth}"
    return {
        "paddle_cam_jpg": f"output_paddle/{mode_dir}/{case.method}_cam.jpg",
        "torch_cam_jpg": f"output_torch/{mode_dir}/{case.method}_cam.jpg",
        "paddle_cam_npy": f"output_paddle/{mode_dir}/{case.method}_cam.npy",
        "torch_cam_npy": f"output_torch/{mode_dir}/{case.method}_cam.npy",
        "diff_jpg": f"diff/{mode_dir}/{case.method}_absdiff.jpg",
    }


def empty_record(config: RunConfig, case: Case) -> Dict:
    """A case's ``parity.json`` record before anything is known about it."""
    spec = case.spec
    record = {
        "id": case.id, "method": case.method, "smooth": case.smooth, **case.setup.describe(), "dtype": config.dtype,
        "tolerance": spec.cam_atol_float64 if config.dtype == "float64" else spec.cam_atol_float32,
        "image_size": None, "passed": False, "error": None, "architecture_differs": None,
        "cam_max_abs_diff": None, "cam_mean_abs_diff": None, "cam_p999_abs_diff": None, "overlay_identical_fraction": None,
        "overlay_max_diff": None, "first_divergent_stage": None, "first_divergent_layer": None, "message": "",
        # why the comparison proves nothing (both maps flat) or was decided by a tie; None when neither
        "vacuous": None, "ill_conditioned": None,
        "paddle_seconds": None, "torch_seconds": None, "torch_cached": False, "weights_reused": {},
        "target_categories": {}, "threads": {}, "flags": [], "stages": [], "files": case_files(case),
    }
    return record


def finalize_case(config: RunConfig, case: Case, torch_out: JobOutcome, paddle_out: JobOutcome,
                  diagnose_layers: Optional[Callable[[Case, JobOutcome, np.ndarray], Dict]] = None) -> Dict:
    """Compare one case and write its artifacts under ``config.out``; returns its ``parity.json`` record.

    When the case's logits or activations are over their bound,
    ``diagnose_layers(case, torch_outcome, input)`` names the first layer
    whose outputs differ (``parity.diagnose``; the runner shares one diagnosis
    among the cases of a setup).
    """
    import cv2

    from paddle_impl.atomic import save_npy, write_bytes

    spec = case.spec
    record = empty_record(config, case)
    record["torch_cached"] = torch_out.cached
    files = record["files"]
    stage_dir = Path("stages") / (setup_slug(case.setup) if case.setup.name else "") / f"log_{case.smooth}" / case.method
    errors = [o.error for o in (torch_out, paddle_out) if not o.ok]
    errors += [e for e in (method_error(o.result, case.method) for o in (torch_out, paddle_out) if o.ok) if e]
    if errors:
        record["error"] = "\n".join(errors)
        record["message"] = record["error"]
        return record

    sides = {}
    for name, outcome in (("torch", torch_out), ("paddle", paddle_out)):
        stages = load_stages(Path(outcome.out_dir) / case.method / case.smooth)
        sides[name] = stages
        info = outcome.result["cases"][case.method][case.smooth]
        record[f"{name}_seconds"] = info["seconds"]
        record["weights_reused"][name] = info["weights_reused"]
        if info.get("weights_seeded") and info.get("weights_computed"):
            # Every pass should have found its weights in the units' output; a miss means the
            # pass's arguments (input, activations, targets) differed in their bits between two
            # processes, and the weights were recomputed here: the numbers are upstream's or the
            # port's own either way, but the run was not reproducible across processes.
            record["flags"].append(f"{name}: {info['weights_computed']} pass(es) missed the weights units and recomputed")
        record["target_categories"][name] = info["target_categories"]
        record["threads"][name] = outcome.result.get("threads")
        for stage, array in stages.items():
            save_npy(config.out / stage_dir / f"{stage}_{name}.npy", array)
        save_npy(config.out / files[f"{name}_cam_npy"], picture_cam(stages["cam"]))
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(stages["overlay"][0], cv2.COLOR_RGB2BGR))
        write_bytes(config.out / files[f"{name}_cam_jpg"], jpg.tobytes())

    comparison: CaseComparison = compare_case(case.id, spec, config.dtype, sides["paddle"], sides["torch"])
    cam_diff, overlay_diff = comparison.stage("cam"), comparison.stage("overlay")
    overlay_equal = np.equal(sides["paddle"]["overlay"], sides["torch"]["overlay"])
    first = comparison.first_divergent
    if first is not None and first.stage in DIAGNOSED_STAGES and diagnose_layers is not None:
        record["first_divergent_layer"] = diagnose_layers(case, torch_out, sides["torch"]["input"][0])
    record.update(
        passed=comparison.passed,
        image_size=list(sides["torch"]["cam"].shape[-2:]),
        cam_max_abs_diff=cam_diff.max_abs_diff,
        cam_mean_abs_diff=cam_diff.mean_abs_diff,
        cam_p999_abs_diff=(percentile_999(abs_diff(sides["paddle"]["cam"], sides["torch"]["cam"]))
                           if sides["paddle"]["cam"].shape == sides["torch"]["cam"].shape else float("inf")),
        overlay_identical_fraction=float(overlay_equal.mean()),
        overlay_max_diff=int(overlay_diff.max_abs_diff),
        first_divergent_stage=None if first is None else first.stage,
        message=comparison.message() + _diagnosis_line(record["first_divergent_layer"]),
        vacuous=vacuity_note(sides["paddle"]["cam"], sides["torch"]["cam"]),
        ill_conditioned="; ".join(ties(spec, config.dtype, sides["paddle"], sides["torch"],
                                       record.get("target_category"))) or None,
        flags=sorted(set(record["flags"]) | set(stage_flags(sides["torch"])) | set(stage_flags(sides["paddle"]))),
        stages=[s.to_json() for s in comparison.stages],
    )
    return record


def _diagnosis_line(found: Optional[Dict]) -> str:
    if not found:
        return ""
    if found.get("error"):
        return f"\nThe first-diverging-layer diagnosis could not run: {found['error']}"
    if not found.get("found"):
        return "\nFirst-diverging-layer diagnosis: every layer's output agrees within the logits bound."
    return f"\nFirst-diverging-layer diagnosis: {found['message']}"
