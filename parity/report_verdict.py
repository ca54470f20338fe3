"""One verdict, counted honestly: each case's status, the run's counts and the line a reviewer reads first."""
from __future__ import annotations

from typing import Dict, Mapping

def float64_agrees(case: Mapping) -> bool:
    """True for a failed float32 case whose float64 rerun passed: the two sides compute the same."""
    check = case.get("float64_check") or {}
    return bool(check.get("passed")) and not check.get("error")


def case_status(case: Mapping) -> str:
    """``passed``, ``failed``, ``error``, ``architectures differ`` or ``float32 only``.

    The last two are neither passed nor failed: no port can pass a model whose
    ``paddle.vision`` twin computes another function, and a float32 case whose
    float64 rerun passes differs by rounding the method amplifies, not by the port.
    """
    if case.get("architecture_differs"):
        return "architectures differ"
    if case.get("error"):
        return "error"
    if case.get("passed"):
        return "passed"
    return "float32 only" if float64_agrees(case) else "failed"


_status = case_status
_EMOJI = {"passed": "✅", "failed": "❌", "error": "💥", "architectures differ": "🔶", "float32 only": "🟡"}


def case_counts(results: Mapping) -> Dict[str, int]:
    """The run's counts by ``case_status``: what ``parity.json``'s summary holds and the verdict line reads."""
    cases = list(results.get("cases") or [])
    statuses = [case_status(c) for c in cases]
    return {
        "cases": len(cases),
        "passed": statuses.count("passed"),
        "failed": statuses.count("failed"),
        "errors": statuses.count("error"),
        "architecture_differs": statuses.count("architectures differ"),
        "float32_only": statuses.count("float32 only"),
        # over the counted cases only, so the count never exceeds the cases it is "of"
        "overlays_identical": sum(
            1 for c, status in zip(cases, statuses) if status in ("passed", "failed")
            and c.get("overlay_identical_fraction") is not None and float(c["overlay_identical_fraction"]) >= 1.0
        ),
    }


def summary_line(results: Mapping) -> str:
    """``**31/32 cases passed** · overlays byte-identical: 20/32 · errors: 0`` (counted from the cases).

    Cases whose architectures differ, and float32 cases whose float64 rerun passed, are left
    out of both counts and named on their own.
    """
    n = case_counts(results)
    counted = n["cases"] - n["architecture_differs"] - n["float32_only"]
    line = f"**{n['passed']}/{counted} cases passed**"
    if n["architecture_differs"]:
        line += f" · architectures differ: {n['architecture_differs']} (not counted)"
    if n["float32_only"]:
        line += f" · float32 only, float64 agrees: {n['float32_only']} (not counted)"
    return line + f" · overlays byte-identical: {n['overlays_identical']}/{counted} · errors: {n['errors']}"


def verdict_line(results: Mapping) -> str:
    """The first line a reviewer reads: ``✅ **PASS** · 32/32 cases passed · ...``."""
    n = case_counts(results)
    if n["failed"] or n["errors"]:
        verdict = "❌ **FAIL**"
    elif n["passed"]:
        verdict = "✅ **PASS**"
    else:
        verdict = "⚪ **NO VERDICT** (no case that can pass was run)"
    return f"{verdict} · {summary_line(results)}"
