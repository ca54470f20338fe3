from paddle_impl.utils import image, model_targets
from paddle_impl.utils.image import deprocess_image, preprocess_image, scale_cam_image, show_cam_on_image
from paddle_impl.utils.model_targets import ClassifierOutputTarget
from paddle_impl.utils.svd_on_activations import get_2d_projection

__all__ = [
    "image",
    "model_targets",
    "preprocess_image",
    "deprocess_image",
    "show_cam_on_image",
    "scale_cam_image",
    "ClassifierOutputTarget",
    "get_2d_projection",
]
