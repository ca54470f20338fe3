"""One comparison for the tests that check the port against upstream array by array.

Its failure message reads like ``torch.testing.assert_close``'s: what mismatched,
where, both values, by how much, against what bound, and how many values are over.
"""
from __future__ import annotations

import numpy as np

__all__ = ["assert_close", "assert_float32_close_to_exact"]


def assert_close(what: str, got, expected, bound: float, *, scale: float = 1.0, scale_text: str = "",
                 check_dtype: bool = False) -> float:
    """Fail unless max|port - upstream| <= bound * scale; return max|Δ|.

    ``scale`` turns a relative bound into an absolute one (``scale_text`` says
    what it is, e.g. ``max|upstream|``).  NaNs must sit at the same places on
    both sides and are left out of the difference; empty arrays agree.
    """
    got_array, expected_array = np.asarray(got), np.asarray(expected)
    assert got_array.shape == expected_array.shape, \
        f"{what}: shape {got_array.shape} (port) != {expected_array.shape} (upstream)"
    if check_dtype:
        assert got_array.dtype == expected_array.dtype, \
            f"{what}: dtype {got_array.dtype} (port) != {expected_array.dtype} (upstream)"
    got64, expected64 = got_array.astype(np.float64), expected_array.astype(np.float64)
    if np.isnan(got64).any() or np.isnan(expected64).any():
        assert np.array_equal(np.isnan(got64), np.isnan(expected64)), f"{what}: the NaNs are at other places"
    delta = np.abs(got64 - expected64)
    if delta.size == 0 or np.isnan(delta).all():
        return 0.0
    worst = float(np.nanmax(delta))
    allowed = bound * scale
    if not worst <= allowed:
        where = np.unravel_index(int(np.nanargmax(delta)), delta.shape)
        over = int(np.sum(delta > allowed))
        rule = f" (= {bound:g} x {scale_text or 'scale'} {scale:.3e})" if scale != 1.0 or scale_text else ""
        raise AssertionError(
            f"{what}: max|Δ| = {worst:.3e} at {tuple(int(i) for i in where)} "
            f"(port {got64[where]:.9g}, upstream {expected64[where]:.9g}) exceeds the bound {allowed:.3e}{rule}; "
            f"{over} of {delta.size} values over it"
        )
    return worst


def assert_float32_close_to_exact(what: str, got32, upstream32, upstream64, bound: float) -> float:
    """Fail unless the port's float32 result is within ``bound`` of the exact answer, upstream run in float64.

    For results whose float32 rounding is amplified by the input (a threshold a
    pixel sits on, a CAM recomputed on a masked image), upstream's own float32
    result can be the far one, and by how much depends on the CPU's kernels:
    on an AVX2 EPYC (Zen 3) upstream's float32 SESS with theta 0.2 is 5.9e-2
    from its float64 result where the port's is 7.2e-6; on the machine of the
    earlier sessions both were within 5e-5.  Comparing the two float32 results
    would then pass or fail by the machine.  The float64 runs of the same tests hold the port to
    upstream's algorithm; this holds the port's float32 to the exact answer, and
    a failure also shows how far upstream's float32 is from it.
    """
    assert np.shape(upstream32) == np.shape(upstream64), \
        f"{what}: shape {np.shape(upstream32)} (upstream float32) != {np.shape(upstream64)} (upstream float64)"
    try:
        return assert_close(f"{what} (port float32 against upstream float64)", got32, upstream64, bound)
    except AssertionError as error:
        own = float(np.max(np.abs(np.asarray(upstream32, np.float64) - np.asarray(upstream64, np.float64))))
        raise AssertionError(f"{error}; upstream's own float32 is {own:.3e} from its float64 at most") from None
