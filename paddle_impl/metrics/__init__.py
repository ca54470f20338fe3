"""CAM quality metrics, ported from ``pytorch_grad_cam.metrics`` (grad-cam 1.5.7).

Upstream's package ``__init__`` is empty (users import the submodules); the
port re-exports the public classes for convenience, and the submodules keep
upstream's names, so ``from paddle_impl.metrics.road import ROADCombined``
works as ``from pytorch_grad_cam.metrics.road import ROADCombined`` does.
"""
from paddle_impl.metrics.arcc import ARCC, Coherency, Complexity, batch_pearson_coherency
from paddle_impl.metrics.cam_mult_image import (
    CamMultImageConfidenceChange,
    DropInConfidence,
    IncreaseInConfidence,
    multiply_tensor_with_cam,
)
from paddle_impl.metrics.perturbation_confidence import (
    AveragerAcrossThresholds,
    PerturbationConfidenceMetric,
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
)
from paddle_impl.metrics.road import (
    NoisyLinearImputer,
    ROADCombined,
    ROADLeastRelevantFirst,
    ROADLeastRelevantFirstAverage,
    ROADMostRelevantFirst,
    ROADMostRelevantFirstAverage,
)

__all__ = [
    "ARCC",
    "AveragerAcrossThresholds",
    "CamMultImageConfidenceChange",
    "Coherency",
    "Complexity",
    "DropInConfidence",
    "IncreaseInConfidence",
    "NoisyLinearImputer",
    "PerturbationConfidenceMetric",
    "ROADCombined",
    "ROADLeastRelevantFirst",
    "ROADLeastRelevantFirstAverage",
    "ROADMostRelevantFirst",
    "ROADMostRelevantFirstAverage",
    "RemoveLeastRelevantFirst",
    "RemoveMostRelevantFirst",
    "batch_pearson_coherency",
    "multiply_tensor_with_cam",
]
