"""Deep Feature Factorization (Collins et al., ECCV 2018, https://arxiv.org/abs/1806.10206), Paddle twin of
``pytorch_grad_cam.feature_factorization``."""
from paddle_impl.feature_factorization.deep_feature_factorization import (
    DeepFeatureFactorization,
    dff,
    run_dff_on_image,
)

__all__ = ["DeepFeatureFactorization", "dff", "run_dff_on_image"]
