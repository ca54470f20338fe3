"""Run the CAMs' small numpy/scipy linear algebra on one BLAS thread.

Port-only (upstream has no twin).  The projections of EigenCAM, KPCA-CAM,
Seg-Eigen-CAM and ``eigen_smooth`` (an SVD or a kernel PCA of the positions x
channels activations) and DFF's NMF run in numpy/scipy right after the
network's forward.  Their matrices are small (49 x 2048 for ResNet50 at
224x224), so a second BLAS thread has nothing to split; what it does meet is
the framework's OpenMP threads, still spinning on the same cores after the
forward.  Measured on a 2-core AMD EPYC (Zen 3), 2 threads, 224x224, batch 1,
eight consecutive calls in one process: EigenCAM on resnet18 took 0.046-0.167 s
a call (median 0.100 s) with numpy's default two OpenBLAS threads and 0.025 s
every call on one; KPCA-CAM on ResNet50 0.126-0.193 s (median 0.182 s) against
0.054-0.058 s; EigenCAM on ResNet50 at batch 8 0.618 s against 0.458 s.  The
SVD's and NMF's results are bit-identical both ways at these sizes; kernel
PCA's move in float32's last bits (1.2e-6 of a map's range), as upstream's
move with its own thread count.  The parity runs' workers compute with one
thread on both sides, so what they compare is unchanged.

``one_blas_thread`` is a decorator.  The thread-pool controller is built on
first use, after numpy and scipy (and their OpenBLAS builds) are loaded; it is
~0.02 ms a call where ``threadpoolctl.threadpool_limits`` rescans the process's
libraries each time (~2 ms).  Change ``BLAS_THREADS`` to give the projections
more threads (for very large maps on a many-core machine).
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, TypeVar

from threadpoolctl import ThreadpoolController

__all__ = ["BLAS_THREADS", "one_blas_thread"]

BLAS_THREADS = 1

_controller: Optional[ThreadpoolController] = None

Function = TypeVar("Function", bound=Callable)


def _blas_controller() -> ThreadpoolController:
    global _controller
    if _controller is None:
        _controller = ThreadpoolController()
    return _controller


def one_blas_thread(function: Function) -> Function:
    """``function`` run with numpy's and scipy's BLAS limited to ``BLAS_THREADS`` threads."""

    @functools.wraps(function)
    def limited(*args, **kwargs):
        with _blas_controller().limit(limits=BLAS_THREADS, user_api="blas"):
            return function(*args, **kwargs)

    return limited  # type: ignore[return-value]
