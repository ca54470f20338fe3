"""Deep Feature Factorization (Collins, Achanta & Süsstrunk, ECCV 2018, https://arxiv.org/abs/1806.10206).

The target layer's activations A (C channels x N positions, all images of the
batch side by side) are shifted to be non-negative and factorised with NMF:

    A - o 1^T  ~=  W H,    W >= 0 (C x k concepts),  H >= 0 (k x N heatmaps),  o_c = min_n A_{c,n}

The concepts are ``W + o`` (back in activation space, so a classifier head
can score them) and the explanations are the rows of H, reshaped to maps and
min-max scaled to the input size.

Twin of ``pytorch_grad_cam/feature_factorization/deep_feature_factorization.py``:
the factorisation is the same scikit-learn ``NMF(init='random',
random_state=0)`` call on the same numpy array, so it is deterministic and
both sides draw the same random initialisation.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import paddle
import paddle.nn.functional as F
from sklearn.decomposition import NMF

from paddle_impl.activations_and_gradients import ActivationsAndGradients
from paddle_impl.blas_threads import one_blas_thread
from paddle_impl.inference_engine import cached_forward_engine
from paddle_impl.utils.image import create_labels_legend, scale_cam_image, show_factorization_on_image

__all__ = ["dff", "DeepFeatureFactorization", "run_dff_on_image"]


@one_blas_thread
def dff(activations: np.ndarray, n_components: int = 5) -> Tuple[np.ndarray, np.ndarray]:
    """NMF of (B, C, H, W) activations -> concepts (C, k) and explanations (B, k, H, W).

    Formula in the module docstring.  NaNs count as 0.  scikit-learn's NMF
    starts from ``sqrt(mean / k)``-scaled normal draws of a
    ``RandomState(0)``, so the same activations give the same factors.
    Like upstream, NaNs are zeroed in the caller's array.  The NMF runs on one
    BLAS thread (``paddle_impl.blas_threads``).
    """
    batch_size, channels, h, w = activations.shape
    channels_first = activations.transpose((1, 0, 2, 3))
    channels_first[np.isnan(channels_first)] = 0
    flat = channels_first.reshape(channels_first.shape[0], -1)
    # NMF needs non-negative data; the per-channel offset is added back to the concepts.
    offset = flat.min(axis=-1)
    flat = flat - offset[:, None]

    model = NMF(n_components=n_components, init="random", random_state=0)
    W = model.fit_transform(flat)
    H = model.components_
    concepts = W + offset[:, None]
    explanations = H.reshape(n_components, batch_size, h, w).transpose((1, 0, 2, 3))
    return concepts, explanations


class DeepFeatureFactorization:
    """Factorise a target layer's activations into concepts and their heatmaps (https://arxiv.org/abs/1806.10206).

    ``computation_on_concepts`` (e.g. the model's classifier head) is run on
    the (k, C) float32 concept embeddings when given.  Formula in the module
    docstring.
    """

    def __init__(
        self,
        model: paddle.nn.Layer,
        target_layer: paddle.nn.Layer,
        reshape_transform: Optional[Callable] = None,
        computation_on_concepts: Optional[Callable] = None,
    ) -> None:
        """Hook ``target_layer`` of ``model``."""
        self.model = model
        self.target_layer = target_layer
        self.computation_on_concepts = computation_on_concepts
        self.activations_and_grads = ActivationsAndGradients(self.model, [target_layer], reshape_transform)
        # As BaseCAM's: the forward pass in a oneDNN predictor for float32 on the CPU (built once per
        # input shape, on the first call); False runs the model in dynamic-graph Paddle.
        self.inference_engine = True
        self.engine_threads: Optional[int] = None
        self._forward_engines: Dict[tuple, Optional[Callable]] = {}

    def __call__(
        self, input_tensor: paddle.Tensor, n_components: int = 16
    ) -> Union[Tuple[np.ndarray, List[np.ndarray]], Tuple[np.ndarray, List[np.ndarray], np.ndarray]]:
        """``(concepts, explanations)`` or, with ``computation_on_concepts``, ``(concepts, explanations, outputs)``.

        ``concepts`` is (C, k); ``explanations`` a list with one (k, H, W)
        float32 array in [0, 1] per image (scaled to the input's size);
        ``outputs`` is ``computation_on_concepts`` of the (k, C) float32
        concepts, as numpy.
        """
        batch_size, channels, h, w = input_tensor.shape
        activations = self._target_layer_activations(input_tensor).numpy()

        concepts, explanations = dff(activations, n_components=n_components)
        processed_explanations = [scale_cam_image(batch, (w, h)) for batch in explanations]

        if self.computation_on_concepts:
            with paddle.no_grad():
                concept_tensors = paddle.to_tensor(np.float32(concepts).transpose((1, 0)))
                concept_outputs = self.computation_on_concepts(concept_tensors).numpy()
            return concepts, processed_explanations, concept_outputs
        return concepts, processed_explanations

    def _target_layer_activations(self, input_tensor: paddle.Tensor) -> paddle.Tensor:
        """The target layer's output (through ``reshape_transform``): from the predictor where it applies."""
        engine = None
        if self.inference_engine:
            engine = cached_forward_engine(
                self._forward_engines, self.model, [self.target_layer], input_tensor, self.engine_threads
            )
        if engine is not None:
            activations = engine(input_tensor)[1][0]
            transform = self.activations_and_grads.reshape_transform
            return activations if transform is None else transform(activations)
        # Only activations are read, so no graph is built.
        with paddle.no_grad():
            self.activations_and_grads(input_tensor, capture_gradients=False)
        return self.activations_and_grads.activations[0]

    def release(self) -> None:
        """Remove the hook."""
        self.activations_and_grads.release()

    def __del__(self) -> None:
        self.release()

    def __enter__(self) -> "DeepFeatureFactorization":
        return self

    def __exit__(self, exc_type, exc_value, exc_tb) -> Optional[bool]:
        self.release()
        if isinstance(exc_value, IndexError):
            # Upstream swallows IndexError here after printing it; kept for the same behaviour.
            print(f"An exception occurred in ActivationSummary with block: {exc_type}. Message: {exc_value}")
            return True
        return None


def run_dff_on_image(
    model: paddle.nn.Layer,
    target_layer: paddle.nn.Layer,
    classifier: Callable,
    img_pil,
    img_tensor: paddle.Tensor,
    reshape_transform: Optional[Callable] = None,
    n_components: int = 5,
    top_k: int = 2,
) -> np.ndarray:
    """The image beside its DFF visualisation with a legend of each concept's ``top_k`` classes.

    DFF as in ``DeepFeatureFactorization`` (https://arxiv.org/abs/1806.10206);
    concept scores are ``softmax(classifier(concepts))`` and the labels come
    from ``model.config.id2label``, as upstream (a Hugging Face-style
    model).  ``img_pil`` is a PIL image (or an (H, W, 3) uint8 array) and
    ``img_tensor`` its normalised (3, H, W) tensor.

    Upstream's default for ``reshape_transform`` is the typing object
    ``Optional[Callable]``, which fails when called; ``None`` is used here.
    """
    rgb_img_float = np.array(img_pil) / 255
    dff_method = DeepFeatureFactorization(
        model=model,
        reshape_transform=reshape_transform,
        target_layer=target_layer,
        computation_on_concepts=classifier,
    )
    concepts, batch_explanations, concept_outputs = dff_method(paddle.unsqueeze(img_tensor, 0), n_components)

    concept_outputs = F.softmax(paddle.to_tensor(concept_outputs), axis=-1).numpy()
    concept_label_strings = create_labels_legend(concept_outputs, labels=model.config.id2label, top_k=top_k)
    visualization = show_factorization_on_image(
        rgb_img_float, batch_explanations[0], image_weight=0.3, concept_labels=concept_label_strings
    )
    return np.hstack((np.array(img_pil), visualization))
