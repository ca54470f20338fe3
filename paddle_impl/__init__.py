"""A PaddlePaddle port of pytorch-grad-cam (``grad-cam`` 1.5.7).

Names and call shapes follow upstream, so switching is one import line::

    from paddle_impl import GradCAM
    with GradCAM(model=model, target_layers=[model.layer4]) as cam:
        grayscale = cam(input_tensor=x, targets=None, aug_smooth=False, eigen_smooth=False)
"""
from paddle_impl.ablation_cam import AblationCAM
from paddle_impl.ablation_layer import AblationLayer
from paddle_impl.activations_and_gradients import ActivationsAndGradients
from paddle_impl.base_cam import BaseCAM
from paddle_impl.eigen_cam import EigenCAM
from paddle_impl.eigen_grad_cam import EigenGradCAM
from paddle_impl.grad_cam import GradCAM
from paddle_impl.grad_cam_plusplus import GradCAMPlusPlus
from paddle_impl.guided_backprop import GuidedBackpropReLUModel
from paddle_impl.layer_cam import LayerCAM
from paddle_impl.score_cam import ScoreCAM
from paddle_impl.xgrad_cam import XGradCAM
from paddle_impl import utils

__all__ = [
    "AblationCAM",
    "AblationLayer",
    "ActivationsAndGradients",
    "BaseCAM",
    "EigenCAM",
    "EigenGradCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedBackpropReLUModel",
    "LayerCAM",
    "ScoreCAM",
    "XGradCAM",
    "utils",
]
