"""One verdict, counted honestly: each case's status, the run's counts and the line a reviewer reads first.

Every case that ran has exactly one status, and every count is "of" every case
that ran: a case that cannot pass (its architectures differ), that proves
nothing (vacuous), or whose outcome a tie decided (ill-conditioned) is named
in the line beside the passed ones, never dropped from the denominator.  The
title line, the summary, the step summary and ``parity.json``'s summary all
read ``case_counts``.
"""
from __future__ import annotations

from typing import Dict, Mapping

__all__ = ["STATUSES", "float64_agrees", "engines_round_it", "case_status", "case_counts", "summary_line", "verdict_line",
           "verdict_word", "run_summary", "vacuous_allowed", "status_allows_success", "LEGACY_FLAT_FLAG"]

# Every status a case can have, in the order the summary names them.
STATUSES = ("passed", "failed", "vacuous", "ill-conditioned", "architectures differ", "float32 only", "error")

_EMOJI = {"passed": "✅", "failed": "❌", "error": "💥", "architectures differ": "🔶", "float32 only": "🟡",
          "vacuous": "⚪", "ill-conditioned": "⚖️"}

# The counts' keys in parity.json's summary (older keys kept as they were).
_COUNT_KEYS = {"passed": "passed", "failed": "failed", "vacuous": "vacuous", "ill-conditioned": "ill_conditioned",
               "architectures differ": "architecture_differs", "float32 only": "float32_only", "error": "errors"}

# Runs from before vacuity was recorded flag a case whose CAM is all zeros on a side; a case that
# passed with that flag compared two (near-)empty maps, so such a record is read as vacuous.
LEGACY_FLAT_FLAG = "flat CAM (all zeros)"

# The profile that keeps upstream's own test matrix at its original 32x32 sizes, where both models'
# target layers are 1x1 and most maps are flat: its vacuous cases are shown, and do not fail the run.
# Its informative twin (upstream-suite-informative, the same matrix at 224x224) is not listed: there,
# as in every other profile, a flat map fails the run.
VACUOUS_TOLERATED_PROFILES = ("upstream-suite",)


def float64_agrees(case: Mapping) -> bool:
    """True for a failed float32 case whose float64 rerun passed: the two sides compute the same."""
    check = case.get("float64_check") or {}
    return bool(check.get("passed")) and not check.get("error")


def engines_round_it(case: Mapping) -> bool:
    """True for a "float32 only" case that passes in float32 once Paddle's compiled engines are off.

    The float64 rerun cannot run the engines (they are float32 only); this
    one says that their fused kernels' rounding is what crossed the bound.
    """
    check = case.get("engines_off_check") or {}
    return float64_agrees(case) and bool(check.get("passed")) and not check.get("error")


def _vacuous(case: Mapping) -> bool:
    if "vacuous" in case:
        return bool(case.get("vacuous"))
    return bool(case.get("passed")) and LEGACY_FLAT_FLAG in (case.get("flags") or ())


def case_status(case: Mapping) -> str:
    """One of ``STATUSES``.

    Only ``passed`` and ``failed`` say something about the port.  A case whose
    ``paddle.vision`` twin computes another function cannot pass; a vacuous
    case compared two flat maps (nothing to see, whatever the port does); an
    ill-conditioned one was decided by a tie that float rounding breaks either
    way; a float32 case whose float64 rerun passes differs by rounding the
    method amplifies, not by the port.
    """
    if case.get("architecture_differs"):
        return "architectures differ"
    if case.get("error"):
        return "error"
    if _vacuous(case):
        return "vacuous"
    if case.get("ill_conditioned"):
        return "ill-conditioned"
    if case.get("passed"):
        return "passed"
    return "float32 only" if float64_agrees(case) else "failed"


def case_counts(results: Mapping) -> Dict[str, int]:
    """The run's counts by ``case_status``: what ``parity.json``'s summary holds and the verdict line reads."""
    cases = list(results.get("cases") or [])
    statuses = [case_status(c) for c in cases]
    counts = {"cases": len(cases)}
    counts.update({key: statuses.count(status) for status, key in _COUNT_KEYS.items()})
    counts["float32_only_engines"] = sum(1 for c, status in zip(cases, statuses)
                                         if status == "float32 only" and engines_round_it(c))
    counts["overlays_identical"] = sum(
        1 for c in cases
        if c.get("overlay_identical_fraction") is not None and float(c["overlay_identical_fraction"]) >= 1.0)
    return counts


def summary_line(results: Mapping) -> str:
    """``**30/40 cases passed** · failed: 1 · vacuous: 9 · overlays byte-identical: 20/40 · errors: 0``.

    Counted from the cases; the denominator is every case that ran, and each
    other status that has a case is named between the two.
    """
    n = case_counts(results)
    parts = [f"**{n['passed']}/{n['cases']} cases passed**"]
    for status in STATUSES[1:-1]:
        count = n[_COUNT_KEYS[status]]
        if count:
            parts.append(f"{_SUMMARY_LABEL.get(status, status)}: {count}")
            if status == "float32 only" and n["float32_only_engines"]:
                parts[-1] += f" ({n['float32_only_engines']} of them pass with Paddle's compiled engines off)"
    parts.append(f"overlays byte-identical: {n['overlays_identical']}/{n['cases']}")
    parts.append(f"errors: {n['errors']}")
    return " · ".join(parts)


_SUMMARY_LABEL = {"float32 only": "float32 only, float64 agrees"}


def verdict_word(results: Mapping) -> str:
    """``FAIL`` (a failure or an error), ``INCONCLUSIVE`` (a vacuous or tied case), ``PASS`` or ``NO VERDICT``."""
    n = case_counts(results)
    if n["failed"] or n["errors"]:
        return "FAIL"
    if n["vacuous"] or n["ill_conditioned"]:
        return "INCONCLUSIVE"
    return "PASS" if n["passed"] else "NO VERDICT"


_VERDICT_MARK = {"FAIL": "❌ **FAIL**", "INCONCLUSIVE": "⚠️ **INCONCLUSIVE**", "PASS": "✅ **PASS**",
                 "NO VERDICT": "⚪ **NO VERDICT** (no case that can pass was run)"}


def verdict_line(results: Mapping) -> str:
    """The first line a reviewer reads: ``✅ **PASS** · **32/32 cases passed** · ...``."""
    return f"{_VERDICT_MARK[verdict_word(results)]} · {summary_line(results)}"


def run_summary(results: Mapping) -> Dict:
    """``parity.json``'s summary: the counts, the verdict word and the verdict line the report opens with."""
    summary: Dict = dict(case_counts(results))
    summary["verdict"] = verdict_word(results)
    summary["verdict_line"] = verdict_line(results)
    return summary


def vacuous_allowed(profile) -> bool:
    """Whether a run of ``profile`` may hold vacuous cases and still succeed (upstream's 32x32 matrix only)."""
    return profile in VACUOUS_TOLERATED_PROFILES


def status_allows_success(case: Mapping, vacuous_ok: bool = False) -> bool:
    """Whether a case of this status lets a run exit 0: passed, or neither passed nor failed for a stated reason.

    A vacuous case fails the run (a profile must show maps with structure)
    unless ``vacuous_ok`` (``vacuous_allowed`` of the run's profile).
    """
    status = case_status(case)
    if status == "vacuous":
        return vacuous_ok
    return status in ("passed", "architectures differ", "float32 only", "ill-conditioned")
