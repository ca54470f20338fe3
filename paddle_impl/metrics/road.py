"""ROAD: RemOve And Debias (Rong et al., 2022, https://arxiv.org/abs/2202.00449).

Port of ``pytorch_grad_cam/metrics/road.py`` (grad-cam 1.5.7), whose imputer
upstream takes from the ROAD authors' ``imputations.py`` (MIT licence,
Copyright (c) 2022 Tobias Leemann).

Noisy linear imputation: every removed pixel ``i`` takes the weighted mean of
its 8 neighbours, ``x_i = sum_j w_ij x_j / sum_j w_ij`` (``w`` = 1/6 for the 4
edge neighbours, 1/12 for the 4 corners, neighbours outside the image left
out), which for all removed pixels at once is one sparse linear system per
image solved with ``scipy.sparse.linalg.spsolve``; then Gaussian noise of
standard deviation ``noise`` is added.  The ROAD metrics are
``PerturbationConfidenceMetric`` s whose perturbation removes the top (MoRF)
or bottom (LeRF) pixels of the CAM and imputes them;
``ROADCombined = (mean_p LeRF_p - mean_p MoRF_p) / 2``.

Same numbers as upstream, with these details kept on purpose:
* the solution is rounded to float32 before the noise is added (upstream
  builds a ``torch.float`` tensor from it), so a float64 image gets
  float32-precision imputed pixels, as upstream's does;
* ``NoisyLinearImputer(weighting=...)`` is stored but, as upstream, the
  module's ``neighbors_weights`` are what the system is built from;
* the noise is drawn even when ``noise == 0``, so the random stream
  advances as upstream's does.
The port assembles the sparse matrix directly in compressed form instead of
element by element in a ``lil_matrix``; the matrix handed to ``spsolve`` has
the same entries, indices and order (``tests/test_metrics.py`` checks it
against upstream's), so the solve is the same.

Random numbers: the noise comes from ``NoisyLinearImputer.draw_noise``, by
default ``paddle.randn`` (seed it with ``paddle.seed``).  Upstream draws it
with ``torch.randn_like`` on the ``(C, N)`` transposed solution; a parity test
makes both sides consume the same draws by seeding torch identically before
each side's call and replacing ``draw_noise`` with
``torch.randn_like(torch.from_numpy(like))``, which reproduces upstream's call
on a tensor of the same shape, dtype and memory layout (see
``tests/test_metrics.py``).
"""
from __future__ import annotations

from typing import Callable, List, Sequence, Tuple

import numpy as np
import paddle
from scipy.sparse import csc_matrix
from scipy.sparse.linalg import spsolve

from paddle_impl.metrics.perturbation_confidence import (
    DEFAULT_PERCENTILES,
    AveragerAcrossThresholds,
    PerturbationConfidenceMetric,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
)

__all__ = [
    "neighbors_weights",
    "NoisyLinearImputer",
    "ROADMostRelevantFirst",
    "ROADLeastRelevantFirst",
    "ROADMostRelevantFirstAverage",
    "ROADLeastRelevantFirstAverage",
    "ROADCombined",
]

# ((row offset, column offset), weight) of the 8 neighbours.  The order is
# upstream's: the right-hand side accumulates neighbour by neighbour, and
# float addition is not associative.
neighbors_weights: List[Tuple[Tuple[int, int], float]] = [
    ((1, 1), 1 / 12),
    ((0, 1), 1 / 6),
    ((-1, 1), 1 / 12),
    ((1, -1), 1 / 12),
    ((0, -1), 1 / 6),
    ((-1, -1), 1 / 12),
    ((1, 0), 1 / 6),
    ((-1, 0), 1 / 6),
]


class NoisyLinearImputer:
    """Fill removed pixels by 8-neighbour linear interpolation plus ``N(0, noise^2)`` noise."""

    def __init__(
        self, noise: float = 0.01, weighting: Sequence[Tuple[Tuple[int, int], float]] = neighbors_weights
    ) -> None:
        """``noise``: the noise's standard deviation (absolute; 0 for none).

        ``weighting`` is accepted for upstream's signature; as upstream, the
        module-level ``neighbors_weights`` are used.
        """
        self.noise = noise
        self.weighting = neighbors_weights

    @staticmethod
    def add_offset_to_indices(indices: np.ndarray, offset: Tuple[int, int], mask_shape: Tuple[int, int]):
        """Flat indices moved by a (row, column) offset, and which of them stay inside the image."""
        columns = indices % mask_shape[1] + offset[1]
        rows = indices // mask_shape[1] + offset[0]
        outside = (rows < 0) | (columns < 0) | (rows >= mask_shape[0]) | (columns >= mask_shape[1])
        return ~outside, indices + offset[0] * mask_shape[1] + offset[1]

    @staticmethod
    def setup_sparse_system(mask: np.ndarray, img: np.ndarray, neighbors_weights) -> Tuple[csc_matrix, np.ndarray]:
        """The system ``A v = b`` for the removed pixels (``mask == 0``) of a ``(C, H, W)`` image.

        Row ``e`` (the ``e``-th removed pixel in raster order) reads
        ``-s_e v_e + sum_{removed j} w_j v_j = -sum_{kept j} w_j x_j``, with
        ``s_e`` the weight of the neighbours inside the image.  Returns
        ``A`` (N x N, CSC, float64) and ``b`` (N x C, float64).
        """
        mask_flat = mask.flatten()
        img_flat = img.reshape((img.shape[0], -1))
        indices = np.argwhere(mask_flat == 0).flatten()
        variable_of_pixel = np.zeros(len(mask_flat), dtype=int)
        variable_of_pixel[indices] = np.arange(len(indices))
        n_equations = len(indices)

        rows: List[np.ndarray] = []
        columns: List[np.ndarray] = []
        values: List[np.ndarray] = []
        b = np.zeros((n_equations, img.shape[0]))
        weight_inside = np.ones(n_equations)
        for offset, weight in neighbors_weights:
            valid, neighbours = NoisyLinearImputer.add_offset_to_indices(indices, offset, mask.shape)
            valid_neighbours = neighbours[valid]
            valid_equations = np.argwhere(valid == 1).flatten()
            known = mask_flat[valid_neighbours] > 0.5
            b[valid_equations[known], :] -= weight * img_flat[:, valid_neighbours[known]].T
            unknown = mask_flat[valid_neighbours] < 0.5
            rows.append(valid_equations[unknown])
            columns.append(variable_of_pixel[valid_neighbours[unknown]])
            values.append(np.full(int(unknown.sum()), weight))
            outside = np.argwhere(valid == 0).flatten()
            weight_inside[outside] = weight_inside[outside] - weight

        diagonal = np.arange(n_equations)
        rows.append(diagonal)
        columns.append(diagonal)
        values.append(-weight_inside)
        # Each (row, column) pair occurs once (distinct offsets reach distinct
        # neighbours), so this is the matrix upstream's lil_matrix assignments give.
        A = csc_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))),
            shape=(n_equations, n_equations),
        )
        return A, b

    def draw_noise(self, like: np.ndarray) -> np.ndarray:
        """Standard-normal float32 draws shaped like ``like``, the ``(C, N)`` float32 solution.

        ``paddle.randn`` by default.  The solution itself is passed, not just
        its shape, because where upstream's draws come from depends on its
        memory layout too: ``torch.randn_like`` fills a contiguous tensor
        (which ``res.t()`` is, spsolve returning Fortran order) with a
        different algorithm from a strided one.
        """
        return paddle.randn(list(like.shape), dtype="float32").numpy()

    def __call__(self, img: paddle.Tensor, mask: paddle.Tensor) -> paddle.Tensor:
        """Impute the pixels where ``mask == 0`` in a ``(C, H, W)`` image; returns a new tensor."""
        img_np = img.numpy()
        mask_np = mask.numpy()
        img_flat = img_np.reshape(img_np.shape[0], -1)
        removed = np.argwhere(mask_np.reshape(-1) == 0).flatten()
        A, b = NoisyLinearImputer.setup_sparse_system(mask_np, img_np, neighbors_weights)
        # astype keeps spsolve's Fortran layout, so ``solution`` is C-contiguous as upstream's ``res.t()`` is.
        solution = spsolve(A, b).astype(np.float32).T
        noise = self.draw_noise(solution)
        filled = img_flat.copy()
        filled[:, removed] = solution + np.float32(self.noise) * noise
        return paddle.to_tensor(filled.reshape(img_np.shape))


class ROADMostRelevantFirst(PerturbationConfidenceMetric):
    """ROAD MoRF at one percentile: impute the CAM's top ``100 - percentile`` % of pixels."""

    def __init__(self, percentile: float = 80) -> None:
        super().__init__(RemoveMostRelevantFirst(percentile, NoisyLinearImputer()))


class ROADLeastRelevantFirst(PerturbationConfidenceMetric):
    """ROAD LeRF at one percentile: impute the CAM's bottom ``100 - percentile`` % of pixels."""

    def __init__(self, percentile: float = 20) -> None:
        super().__init__(RemoveLeastRelevantFirst(percentile, NoisyLinearImputer()))


class ROADMostRelevantFirstAverage(AveragerAcrossThresholds):
    """MoRF averaged over ``percentiles``."""

    def __init__(self, percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> None:
        super().__init__(ROADMostRelevantFirst, percentiles)


class ROADLeastRelevantFirstAverage(AveragerAcrossThresholds):
    """LeRF averaged over ``percentiles``."""

    def __init__(self, percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> None:
        super().__init__(ROADLeastRelevantFirst, percentiles)


class ROADCombined:
    """``(mean_p LeRF_p - mean_p MoRF_p) / 2``: high when removing relevant pixels hurts and irrelevant ones do not."""

    def __init__(self, percentiles: Sequence[float] = DEFAULT_PERCENTILES) -> None:
        self.percentiles = percentiles
        self.morf_averager = ROADMostRelevantFirstAverage(percentiles)
        self.lerf_averager = ROADLeastRelevantFirstAverage(percentiles)

    def __call__(
        self, input_tensor: paddle.Tensor, cams: np.ndarray, targets: List[Callable], model: paddle.nn.Layer
    ) -> np.ndarray:
        """The combined score per image (LeRF is evaluated before MoRF, as upstream, for the noise order)."""
        scores_lerf = self.lerf_averager(input_tensor, cams, targets, model)
        scores_morf = self.morf_averager(input_tensor, cams, targets, model)
        return (scores_lerf - scores_morf) / 2
