"""Compare two runs of one case stage by stage, and say precisely where they part.

Each stage has a bound.  Stages of arbitrary scale (logits, activations,
gradients, channel weights, the raw CAM) are bounded relative to the torch
stage's largest magnitude: ``|Δ| <= rtol * max|torch|``.  The final CAM is in
[0, 1] and is bounded absolutely by the method's documented tolerance; the
uint8 overlay by a number of grey levels; the input and the chosen target
categories must be identical.  The first stage, in pipeline order, whose
bound is exceeded is the *first divergent stage*.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from parity.registry import STAGES, MethodSpec

__all__ = ["StageBound", "StageDiff", "CaseComparison", "stage_bounds", "compare_stage", "compare_case",
           "VACUOUS_RANGE", "vacuous_images", "vacuity_note", "ties", "abs_diff", "percentile_999"]

# Scale-relative bounds of the intermediate stages, from the quick profile on
# this machine (worst case over the 32 cases, relative to max|torch|):
#   float32: logits 1.4e-6, activations 2.1e-6, gradients 6e-8, weights 5e-5
#            (AblationCAM's (y - y_k) / y), raw_cam 1.6e-4 (AblationCAM) --
#            each bound is at least 6x the worst seen.
#   DFF's concepts (the NMF factor plus the offset) and their classifier scores: 1.5e-6 and 1.7e-6
#   relative in float32, 3e-12 / 2e-15 in float64 (tests/test_dff.py, 128x128, layer4, k=5): the
#   same 1e-3 / 1e-6 as the other computed stages.
#   float64: logits, activations ~1e-12.  Gradients differ by 2.05e-8 relative,
#            and that is Paddle, not the port: AdaptiveAvgPool2D's backward in
#            float64 scales by 1/49 rounded to float32 (torch's is exact; see
#            tests/test_port_units.py::test_paddle_float64_avgpool_backward_is_float32_scaled).
#            The weights and raw CAM inherit it; ScoreCAM's and AblationCAM's
#            weights are float32 by upstream's own casts.
_RELATIVE_STAGE_RTOL = {
    "float32": {"logits": 1e-4, "activations": 1e-4, "gradients": 1e-3, "weights": 1e-3, "raw_cam": 1e-3,
                "concepts": 1e-3, "concept_scores": 1e-3},
    "float64": {"logits": 1e-9, "activations": 1e-9, "gradients": 1e-7, "weights": 1e-6, "raw_cam": 1e-6,
                "concepts": 1e-6, "concept_scores": 1e-6},
}
# The overlay is uint8: a CAM difference that crosses a quantisation step moves
# a pixel by a colormap step (JET's steps are up to ~4 levels per channel) and
# the blend halves it.  That holds for float64 runs too: upstream's pipeline ends
# in float32 (scale_cam_image), so their CAMs differ by a float32 ulp or two and
# can still straddle a step (measured: mobilenet_v3_large's XGradCAM, CAM max|Δ|
# 2.4e-7, one overlay byte of 150528 off by 2 levels; the seed matrix's float64
# overlays were all identical).
_OVERLAY_LEVELS = {"float32": 4, "float64": 4}


@dataclass(frozen=True)
class StageBound:
    kind: str  # "exact" | "relative" | "absolute"
    value: float

    def limit(self, reference: np.ndarray) -> float:
        if self.kind == "exact":
            return 0.0
        if self.kind == "absolute":
            return self.value
        scale = float(np.max(np.abs(reference))) if reference.size else 0.0
        return self.value * scale

    def describe(self) -> str:
        if self.kind == "exact":
            return "exact equality"
        if self.kind == "absolute":
            return f"|Δ| <= {self.value:g}"
        return f"|Δ| <= {self.value:g} * max|torch|"


def stage_bounds(spec: MethodSpec, dtype: str) -> Dict[str, StageBound]:
    bounds = {"input": StageBound("exact", 0.0), "targets": StageBound("exact", 0.0)}
    for stage, rtol in _RELATIVE_STAGE_RTOL[dtype].items():
        bounds[stage] = StageBound("relative", rtol)
    if dtype == "float32":
        for stage, rtol in spec.stage_rtol_float32:  # measured for that method (its registry note)
            bounds[stage] = StageBound("relative", rtol)
    cam_atol = spec.cam_atol_float64 if dtype == "float64" else spec.cam_atol_float32
    bounds["cam"] = StageBound("absolute", cam_atol)
    bounds["overlay"] = StageBound("absolute", float(_OVERLAY_LEVELS[dtype]))
    return bounds


@dataclass
class StageDiff:
    stage: str
    shape: Tuple[int, ...]
    max_abs_diff: float
    mean_abs_diff: float
    bound: float
    bound_rule: str
    elements_over: int
    elements: int
    worst_index: Optional[Tuple[int, ...]]
    paddle_at_worst: Optional[float]
    torch_at_worst: Optional[float]
    passed: bool
    note: str = ""

    def message(self, case_id: str) -> str:
        if self.note:
            return f"{case_id}: stage '{self.stage}' mismatched: {self.note}"
        percent = 100.0 * self.elements_over / max(self.elements, 1)
        return (
            f"{case_id}: stage '{self.stage}' mismatched: {self.elements_over} / {self.elements} elements "
            f"({percent:.2f}%) exceed the bound.\n"
            f"Greatest absolute difference: {self.max_abs_diff:.3e} at index {self.worst_index} "
            f"(paddle {self.paddle_at_worst!r}, torch {self.torch_at_worst!r}); "
            f"allowed {self.bound:.3e} ({self.bound_rule}). Mean absolute difference {self.mean_abs_diff:.3e}."
        )

    def to_json(self) -> Dict:
        data = asdict(self)
        data["shape"] = list(self.shape)
        data["worst_index"] = None if self.worst_index is None else list(self.worst_index)
        return data


def abs_diff(paddle: np.ndarray, torch: np.ndarray) -> np.ndarray:
    """|paddle - torch| in float64; NaN on both sides is agreement (0), NaN on one side is +inf."""
    p = np.asarray(paddle, dtype=np.float64)
    t = np.asarray(torch, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.abs(p - t)
    diff = np.where(np.isnan(p) & np.isnan(t), 0.0, diff)
    return np.where(np.isnan(diff), np.inf, diff)


def percentile_999(diff: np.ndarray) -> float:
    """The 99.9th percentile of |Δ| (inf counts as the largest): all but one value in 1000 are at most this.

    Beside the max it tells one stray pixel from a map that differs everywhere.
    """
    values = np.asarray(diff, dtype=np.float64).ravel()
    if values.size == 0:
        return 0.0
    if np.isinf(values).mean() > 0.001:
        return float("inf")
    return float(np.percentile(values[np.isfinite(values)], 99.9, method="higher")) if np.isfinite(values).any() else 0.0


def compare_stage(stage: str, paddle: np.ndarray, torch: np.ndarray, bound: StageBound) -> StageDiff:
    if paddle.shape != torch.shape:
        return StageDiff(
            stage, tuple(torch.shape), float("inf"), float("inf"), 0.0, bound.describe(), torch.size, torch.size,
            None, None, None, False, note=f"shapes differ: paddle {paddle.shape}, torch {torch.shape}",
        )
    p = paddle.astype(np.float64)
    t = torch.astype(np.float64)
    diff = np.abs(p - t)
    # NaN on one side only is a mismatch; NaN on both sides at the same place is agreement.
    both_nan = np.isnan(p) & np.isnan(t)
    diff = np.where(both_nan, 0.0, diff)
    diff = np.where(np.isnan(diff), np.inf, diff)
    limit = bound.limit(np.where(np.isfinite(t), t, 0.0))
    over = diff > limit
    elements = int(diff.size)
    if elements == 0:
        return StageDiff(stage, tuple(torch.shape), 0.0, 0.0, limit, bound.describe(), 0, 0, None, None, None, True)
    flat_worst = int(np.argmax(diff))
    worst = tuple(int(i) for i in np.unravel_index(flat_worst, diff.shape))
    return StageDiff(
        stage=stage,
        shape=tuple(int(s) for s in torch.shape),
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        bound=float(limit),
        bound_rule=bound.describe(),
        elements_over=int(over.sum()),
        elements=elements,
        worst_index=worst,
        paddle_at_worst=float(p[worst]),
        torch_at_worst=float(t[worst]),
        passed=not bool(over.any()),
    )


@dataclass
class CaseComparison:
    case_id: str
    stages: List[StageDiff]

    @property
    def passed(self) -> bool:
        return all(s.passed for s in self.stages)

    @property
    def first_divergent(self) -> Optional[StageDiff]:
        return next((s for s in self.stages if not s.passed), None)

    def stage(self, name: str) -> Optional[StageDiff]:
        return next((s for s in self.stages if s.stage == name), None)

    def message(self) -> str:
        first = self.first_divergent
        if first is None:
            return f"{self.case_id}: all {len(self.stages)} stages within their bounds"
        later = [s.stage for s in self.stages if not s.passed and s is not first]
        tail = f"\nLater stages also over their bounds: {', '.join(later)}." if later else ""
        return f"First divergent stage: '{first.stage}'.\n" + first.message(self.case_id) + tail


def _pipeline_order(names) -> List[str]:
    """Stage names in pipeline order; a meta-method's per-layer stages (``layer0.weights``) sit with their stage."""
    def key(name: str):
        base = name.rsplit(".", 1)[-1]
        return (STAGES.index(base) if base in STAGES else len(STAGES), name.count("."), name)

    return sorted(names, key=key)


def compare_case(
    case_id: str, spec: MethodSpec, dtype: str, paddle: Dict[str, np.ndarray], torch: Dict[str, np.ndarray]
) -> CaseComparison:
    bounds = stage_bounds(spec, dtype)
    diffs = []
    for stage in _pipeline_order(set(paddle) | set(torch)):
        bound = bounds[stage.rsplit(".", 1)[-1]]
        if stage not in paddle or stage not in torch:
            missing = "paddle" if stage not in paddle else "torch"
            ref = torch.get(stage, paddle.get(stage))
            diffs.append(
                StageDiff(stage, tuple(ref.shape), float("inf"), float("inf"), 0.0, bound.describe(),
                          ref.size, ref.size, None, None, None, False, note=f"recorded by one side only ({missing} lacks it)")
            )
            continue
        diffs.append(compare_stage(stage, paddle[stage], torch[stage], bound))
    return CaseComparison(case_id, diffs)


# -- cases whose comparison proves nothing ----------------------------------------------------
# Below this range (max - min) a final CAM holds no picture: seeded weights at 32x32 often leave
# nothing to explain, and two all-zero maps agree whatever the port computes.
VACUOUS_RANGE = 1e-6

# Methods whose map's sign is chosen by comparing |max| with |min| of a projection
# (upstream's get_2d_projection_with_sign_correction): the stage that holds the projection.
_SIGN_CORRECTED = {"segeigencam": "raw_cam"}


def _per_image(cam: np.ndarray) -> np.ndarray:
    """(B, everything else) float64: one row per image of the batch (DFF's concepts stay with their image)."""
    cam = np.asarray(cam, dtype=np.float64)
    if cam.ndim < 3:
        cam = cam[None]
    return cam.reshape(cam.shape[0], -1)


def vacuous_images(paddle_cam: np.ndarray, torch_cam: np.ndarray) -> List[int]:
    """The batch's images whose final CAM is flat (max - min < ``VACUOUS_RANGE``) on both sides.

    NaN is not flat (NaN < x is False): a non-finite map is a finding, not a vacuous one.
    """
    p, t = _per_image(paddle_cam), _per_image(torch_cam)
    if p.shape[0] != t.shape[0] or p.size == 0 or t.size == 0:
        return []
    with np.errstate(invalid="ignore"):
        flat_p = (p.max(axis=1) - p.min(axis=1)) < VACUOUS_RANGE
        flat_t = (t.max(axis=1) - t.min(axis=1)) < VACUOUS_RANGE
    return [int(i) for i in np.flatnonzero(flat_p & flat_t)]


def vacuity_note(paddle_cam: np.ndarray, torch_cam: np.ndarray) -> Optional[str]:
    """Why a case is vacuous (a sentence), or None when every image's maps have structure."""
    flat = vacuous_images(paddle_cam, torch_cam)
    if not flat:
        return None
    images = _per_image(torch_cam).shape[0]
    which = "the only image" if images == 1 else f"image{'s' if len(flat) > 1 else ''} {', '.join(map(str, flat))} of {images}"
    return (f"both final CAMs are flat (max - min < {VACUOUS_RANGE:g}) for {which}: the comparison "
            "shows nothing about the port")


def _gap_rows(values: np.ndarray) -> np.ndarray:
    """The last axis's two largest values' gap, one per row (every other axis flattened)."""
    rows = np.asarray(values, dtype=np.float64).reshape(-1, values.shape[-1])
    if rows.shape[1] < 2:
        return np.full(rows.shape[0], np.inf)
    top = np.sort(rows, axis=1)[:, -2:]
    return top[:, 1] - top[:, 0]


def _sign_gaps(projection: np.ndarray) -> np.ndarray:
    """| |max| - |min| | of each projection (one per call and image)."""
    rows = np.asarray(projection, dtype=np.float64)
    rows = rows.reshape(-1, int(np.prod(rows.shape[-2:]))) if rows.ndim >= 2 else rows.reshape(1, -1)
    return np.abs(np.abs(rows.max(axis=1)) - np.abs(rows.min(axis=1)))


def ties(spec: MethodSpec, dtype: str, paddle: Dict[str, np.ndarray], torch: Dict[str, np.ndarray],
         target_category: Optional[int]) -> List[str]:
    """The decisions of a case that a tie made: each a sentence; empty when none.

    A decision is a tie when the two quantities it compares are closer than the
    bound the comparison allows for their stage: within it, float rounding on
    either side may decide, and the two sides may decide differently.

    - SegEigenCAM keeps or flips its projection by comparing |max| with |min|
      (a target layer with two spatial positions gives exactly +a and -a);
    - without a target category, the class explained is the argmax of the
      logits: two classes with equal scores leave the choice to rounding.
    """
    bounds = stage_bounds(spec, dtype)
    found: List[str] = []
    stage = _SIGN_CORRECTED.get(spec.name)
    if stage and stage in torch and stage in paddle:
        margin = bounds[stage].limit(np.nan_to_num(np.asarray(torch[stage], dtype=np.float64)))
        gaps = np.concatenate([_sign_gaps(paddle[stage]), _sign_gaps(torch[stage])])
        if gaps.size and float(np.nanmin(gaps)) <= margin:
            found.append(f"sign correction decided by a tie: | |max| - |min| | of the projection is "
                         f"{float(np.nanmin(gaps)):.3e}, within the {stage} bound {margin:.3e}")
    if target_category is None and "logits" in torch and "logits" in paddle:
        logits_t = np.asarray(torch["logits"])
        if logits_t.ndim >= 1 and logits_t.shape[-1] >= 2:
            margin = bounds["logits"].limit(np.nan_to_num(logits_t.astype(np.float64)))
            gaps = np.concatenate([_gap_rows(paddle["logits"]), _gap_rows(logits_t)])
            if gaps.size and float(np.nanmin(gaps)) <= margin:
                found.append(f"target class decided by a tie: the two highest scores differ by "
                             f"{float(np.nanmin(gaps)):.3e}, within the logits bound {margin:.3e}")
    return found
