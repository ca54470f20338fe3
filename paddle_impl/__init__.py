"""A PaddlePaddle port of pytorch-grad-cam (``grad-cam`` 1.5.7).

Names and call shapes follow upstream, so switching is one import line::

    import paddle
    from paddle_impl import GradCAM

    paddle.seed(0)
    model = paddle.vision.models.resnet50()  # or your trained model
    model.eval()
    x = paddle.rand([1, 3, 224, 224])  # a preprocessed image batch
    with GradCAM(model=model, target_layers=[model.layer4]) as cam:
        grayscale = cam(input_tensor=x, targets=None, aug_smooth=False, eigen_smooth=False)  # (1, 224, 224)

The CAM classes are imported on first use, so the framework-free helpers
(``paddle_impl.atomic``, ``paddle_impl.errors``, ``paddle_impl.method_table``)
load without Paddle.  Only Paddle and its usual companions (numpy, OpenCV,
scipy, scikit-learn, matplotlib) are imported: never torch.
"""
from __future__ import annotations

import importlib
import warnings

# Importing Paddle warns when ccache is missing: it concerns compiling C++ extensions, which
# the port never does, so it would only be noise on every user's first import.
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

_EXPORTS = {
    "AblationCAM": "paddle_impl.ablation_cam",
    "AblationLayer": "paddle_impl.ablation_layer",
    "AblationLayerVit": "paddle_impl.ablation_layer",
    "ActivationsAndGradients": "paddle_impl.activations_and_gradients",
    "BaseCAM": "paddle_impl.base_cam",
    "DeepFeatureFactorization": "paddle_impl.feature_factorization.deep_feature_factorization",
    "EigenCAM": "paddle_impl.eigen_cam",
    "EigenGradCAM": "paddle_impl.eigen_grad_cam",
    "FEM": "paddle_impl.fem",
    "FinerCAM": "paddle_impl.finer_cam",
    "FullGrad": "paddle_impl.fullgrad_cam",
    "GradCAM": "paddle_impl.grad_cam",
    "GradCAMElementWise": "paddle_impl.grad_cam_elementwise",
    "GradCAMPlusPlus": "paddle_impl.grad_cam_plusplus",
    "GuidedBackpropReLUModel": "paddle_impl.guided_backprop",
    "HiResCAM": "paddle_impl.hirescam",
    "KPCA_CAM": "paddle_impl.kpca_cam",
    "LayerCAM": "paddle_impl.layer_cam",
    "RandomCAM": "paddle_impl.random_cam",
    "RefineCAM": "paddle_impl.refine_cam",
    "ScoreCAM": "paddle_impl.score_cam",
    "SegEigenCAM": "paddle_impl.seg_eigen_cam",
    "SESS": "paddle_impl.sess",
    "ShapleyCAM": "paddle_impl.shapley_cam",
    "XGradCAM": "paddle_impl.xgrad_cam",
    "run_dff_on_image": "paddle_impl.feature_factorization.deep_feature_factorization",
}

__all__ = sorted(_EXPORTS) + ["metrics", "utils"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    if name in ("metrics", "utils"):
        return importlib.import_module(f"paddle_impl.{name}")
    raise AttributeError(f"module 'paddle_impl' has no attribute {name!r}")


def __dir__():
    return __all__
