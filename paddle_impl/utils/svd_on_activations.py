"""First-principal-component projection used by EigenCAM and ``eigen_smooth``."""
from __future__ import annotations

import numpy as np

__all__ = ["get_2d_projection"]


def get_2d_projection(activation_batch: np.ndarray) -> np.ndarray:
    """Project each (C, H, W) map onto its first principal component -> (B, H, W) float32.

    Positions are the samples and channels the features: centre each channel
    over positions, take the SVD and project onto the first right singular
    vector.  NaNs are zeroed first, and the result is cast to float32, as
    upstream does.

    Upstream asks LAPACK for the full (C x C) right singular basis although
    only its first row is used; the thin SVD returns that row bit for bit
    (``tests/test_port_units.py`` checks it against upstream on
    ResNet50-sized maps) for a fraction of the work.
    """
    activation_batch = activation_batch.copy()
    activation_batch[np.isnan(activation_batch)] = 0
    projections = []
    for activations in activation_batch:
        positions_by_channels = activations.reshape(activations.shape[0], -1).transpose()
        # Without centring the first component mostly encodes the mean and the
        # map comes out negative.
        positions_by_channels = positions_by_channels - positions_by_channels.mean(axis=0)
        _, _, vt = np.linalg.svd(positions_by_channels, full_matrices=False)
        projection = positions_by_channels @ vt[0, :]
        projections.append(projection.reshape(activations.shape[1:]))
    return np.float32(projections)
