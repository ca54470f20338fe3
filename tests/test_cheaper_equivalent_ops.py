"""The port's faster paths do the same work: same bits, and they are taken where they should be.

Speed itself is shown by ``python -m parity.bench``, never asserted here.  These
tests pin what makes it faster:

* ``paddle_impl.blas_threads.one_blas_thread``: the projections' linear
  algebra (EigenCAM's SVD, KPCA-CAM's kernel PCA, DFF's NMF) runs with numpy's
  and scipy's BLAS on one thread, restored afterwards, with the bits of the
  default thread count (kernel PCA: within float32 rounding of them);
* ``second_order_graph``'s BatchNorm written as ops (for ShapleyCAM's second
  derivative) is used only where a gradient flows; every BatchNorm before the
  re-rooted target layer runs its own kernel.
"""
from __future__ import annotations

import numpy as np
import paddle
import pytest
from threadpoolctl import threadpool_info

import paddle_impl.blas_threads as blas_threads
from paddle_impl.activations_and_gradients import ActivationsAndGradients, frozen_parameters, second_order_graph
from paddle_impl.feature_factorization.deep_feature_factorization import dff
from paddle_impl.utils.svd_on_activations import (
    get_2d_projection,
    get_2d_projection_kernel,
    get_2d_projection_with_sign_correction,
)


def _blas_threads() -> list:
    return sorted({info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"})


def _resnet50_sized_activations(batch: int = 2) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.maximum(rng.standard_normal((batch, 2048, 7, 7)), 0).astype(np.float32)


@pytest.mark.parametrize(
    "projection",
    [get_2d_projection, get_2d_projection_with_sign_correction, get_2d_projection_kernel, lambda a: dff(a.copy(), 3)[1]],
    ids=["svd", "svd-sign-corrected", "kernel-pca", "nmf"],
)
def test_the_projections_run_on_one_blas_thread_with_the_default_threads_bits(projection, monkeypatch):
    activations = _resnet50_sized_activations()
    seen = []
    original_svd, original_fit = np.linalg.svd, None

    def spying_svd(*args, **kwargs):
        seen.append(_blas_threads())
        return original_svd(*args, **kwargs)

    monkeypatch.setattr(np.linalg, "svd", spying_svd)
    from sklearn.decomposition import NMF, KernelPCA

    for estimator in (KernelPCA, NMF):
        original_fit = estimator.fit_transform

        def spying_fit(self, *args, _original=original_fit, **kwargs):
            seen.append(_blas_threads())
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(estimator, "fit_transform", spying_fit)

    outside = _blas_threads()
    np.random.seed(0)
    limited = projection(activations)
    assert seen and all(threads == [blas_threads.BLAS_THREADS] for threads in seen), seen
    assert _blas_threads() == outside, "the BLAS thread count is restored after the call"

    monkeypatch.setattr(blas_threads, "BLAS_THREADS", max(outside))
    np.random.seed(0)
    unlimited = projection(activations)
    if projection is get_2d_projection_kernel and max(outside) > 1:
        # The kernel matrix's BLAS products split their sums by thread count: float32's last bits move
        # (measured 2.5e-7 on maps spanning 0.2, 1.2e-6 of the range), as upstream's do with its own threads.
        span = float(unlimited.max() - unlimited.min())
        np.testing.assert_allclose(limited, unlimited, rtol=0, atol=1e-5 * span)
    else:
        np.testing.assert_array_equal(limited, unlimited)


class _ConvBnTwice(paddle.nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        self.stem = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3), paddle.nn.BatchNorm2D(8), paddle.nn.ReLU())
        self.target = paddle.nn.Conv2D(8, 8, 3)
        self.head_norm = paddle.nn.BatchNorm2D(8)
        self.fc = paddle.nn.Linear(8, 4)

    def forward(self, x):
        x = self.head_norm(self.target(self.stem(x)))
        return self.fc(paddle.flatten(paddle.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_second_order_batch_norm_as_ops_only_where_a_gradient_flows(monkeypatch):
    paddle.seed(0)
    model = _ConvBnTwice()
    model.eval()
    for norm in (model.stem[1], model.head_norm):  # stored statistics away from the identity
        norm._mean.set_value(paddle.rand([8]) - 0.5)
        norm._variance.set_value(paddle.rand([8]) + 0.5)
    kernel_calls = []
    class_forward = paddle.nn.BatchNorm2D.forward

    def counting_forward(layer, x):
        kernel_calls.append(layer)
        return class_forward(layer, x)

    monkeypatch.setattr(paddle.nn.BatchNorm2D, "forward", counting_forward)
    hooks = ActivationsAndGradients(model, [model.target], None, detach=False)
    x = paddle.rand([2, 3, 12, 12])
    with frozen_parameters(model), second_order_graph(model):
        outputs = hooks(x, capture_gradients=True)
        # a squared score: its gradient depends on the activation, so there is a Hessian-vector product to take
        hooks.second_order_gradients((outputs[:, 1] ** 2).sum())
        (activation,), (gradient,) = hooks.activations, hooks.gradients
        (hessian_times_activation,) = paddle.grad(gradient, activation, grad_outputs=activation)
    hooks.release()
    assert kernel_calls == [model.stem[1]], "the stem's BatchNorm (no gradient) runs its kernel, the head's runs as ops"
    assert float(hessian_times_activation.abs().max()) > 0, "the head (BatchNorm as ops) is differentiable twice"

    kernel_calls.clear()
    with paddle.no_grad():
        reference = model(x)
    assert len(kernel_calls) == 2
    np.testing.assert_array_equal(outputs.numpy(), reference.numpy())
