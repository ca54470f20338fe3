"""Principal-component projections of activations: EigenCAM, ``eigen_smooth``, KPCA-CAM, Seg-Eigen-CAM.

Port of ``pytorch_grad_cam/utils/svd_on_activations.py`` (grad-cam 1.5.7).
Every function treats one (C, H, W) map as H*W samples of C features,
zeroes NaNs, centres each feature over the positions and projects onto the
first component, returning (B, H, W) float32 as upstream does.  The linear
algebra runs on one BLAS thread (``paddle_impl.blas_threads``: measured faster
beside Paddle's thread pool, same bits).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from sklearn.decomposition import KernelPCA

from paddle_impl.blas_threads import one_blas_thread

__all__ = ["get_2d_projection", "get_2d_projection_kernel", "get_2d_projection_with_sign_correction"]


def _centred_positions_by_channels(activations: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H*W, C), each channel centred over the positions.

    Without centring the first component mostly encodes the mean and the map
    comes out negative.
    """
    positions_by_channels = activations.reshape(activations.shape[0], -1).transpose()
    return positions_by_channels - positions_by_channels.mean(axis=0)


def _first_component_projection(positions_by_channels: np.ndarray) -> np.ndarray:
    """Projection of the centred (H*W, C) samples onto their first right singular vector.

    Upstream asks LAPACK for the full (C x C) right singular basis although
    only its first row is used; the thin SVD returns that row bit for bit
    (``tests/test_port_units.py`` checks it against upstream on
    ResNet50-sized maps) for a fraction of the work.
    """
    _, _, vt = np.linalg.svd(positions_by_channels, full_matrices=False)
    return positions_by_channels @ vt[0, :]


def _without_nans(activation_batch: np.ndarray) -> np.ndarray:
    activation_batch = activation_batch.copy()
    activation_batch[np.isnan(activation_batch)] = 0
    return activation_batch


@one_blas_thread
def get_2d_projection(activation_batch: np.ndarray) -> np.ndarray:
    """Project each (C, H, W) map onto its first principal component -> (B, H, W) float32.

    Eigen-CAM (https://arxiv.org/abs/2008.00299): ``L = A_c V_1`` with
    ``A_c`` the centred (positions x channels) activations and ``V_1`` their
    first right singular vector.
    """
    projections = []
    for activations in _without_nans(activation_batch):
        projection = _first_component_projection(_centred_positions_by_channels(activations))
        projections.append(projection.reshape(activations.shape[1:]))
    return np.float32(projections)


@one_blas_thread
def get_2d_projection_kernel(
    activation_batch: np.ndarray, kernel: str = "sigmoid", gamma: Optional[float] = None
) -> np.ndarray:
    """First kernel-principal-component scores of each (C, H, W) map -> (B, H, W) float32.

    KPCA-CAM (Karmani et al., 2024, https://arxiv.org/abs/2410.00267):
    ``L = alpha_1^T K_c`` with ``K_c`` the centred kernel matrix of the
    centred positions and ``alpha_1`` its leading eigenvector, computed by
    scikit-learn's ``KernelPCA(n_components=1, kernel, gamma)`` exactly as
    upstream calls it.  For more than 200 positions scikit-learn picks its
    ARPACK solver, whose start vector is drawn from numpy's global RNG
    (``random_state=None``); a caller comparing runs seeds that RNG first.
    """
    projections = []
    for activations in _without_nans(activation_batch):
        kpca = KernelPCA(n_components=1, kernel=kernel, gamma=gamma)
        projection = kpca.fit_transform(_centred_positions_by_channels(activations))
        projections.append(projection.reshape(activations.shape[1:]))
    return np.float32(projections)


@one_blas_thread
def get_2d_projection_with_sign_correction(activation_batch: np.ndarray) -> np.ndarray:
    """``get_2d_projection`` with the sign of each map fixed so that its salient part is positive.

    Seg-Eigen-CAM (Chung & Ying, 2025, https://doi.org/10.3390/app15137562),
    Eq. 13: an SVD determines ``V_1`` only up to sign, so the projection
    ``p = A_c V_1`` is negated when ``|min p| > |max p|``.
    """
    projections = []
    for activations in _without_nans(activation_batch):
        projection = _first_component_projection(_centred_positions_by_channels(activations))
        projection = projection.reshape(activations.shape[1:])
        if abs(projection.min()) > abs(projection.max()):
            projection = -projection
        projections.append(projection)
    return np.float32(projections)
