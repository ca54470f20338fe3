"""The comparison must catch a wrong port: break one line of a method and the right stage fails."""
from __future__ import annotations

import numpy as np
import paddle
import pytest
import torch

from parity.compare import compare_case
from parity.registry import METHODS
from parity.stages import StageRecorder


def _stages(cam_class, model, input_tensor, to_numpy, layer):
    recorder = StageRecorder(to_numpy)
    with cam_class(model=model, target_layers=[layer]) as cam:
        recorder.attach(cam)
        recorder.start_case()
        grayscale = cam(input_tensor=input_tensor, targets=None)
    stages = recorder.stacked()
    stages["cam"] = grayscale
    return stages


@pytest.fixture(scope="module")
def models(weights_pair):
    from parity.weights import load_paddle_state_dict, load_torch_state_dict, paddle_resnet50, torch_resnet50

    torch_path, paddle_path, _ = weights_pair
    x = np.random.RandomState(0).randn(1, 3, 96, 96).astype(np.float32)
    return (
        torch_resnet50(load_torch_state_dict(torch_path)), torch.from_numpy(x),
        paddle_resnet50(load_paddle_state_dict(paddle_path)), paddle.to_tensor(x),
    )


def _compare(method_name, models):
    import pytorch_grad_cam

    import paddle_impl

    tm, tx, pm, px = models
    spec = METHODS[method_name]
    torch_stages = _stages(getattr(pytorch_grad_cam, spec.torch_class_name), tm, tx, lambda t: t.detach().numpy().copy(), tm.layer4)
    paddle_stages = _stages(getattr(paddle_impl, spec.paddle_class_name), pm, px, lambda t: t.numpy().copy(), pm.layer4)
    return compare_case(f"{method_name}-no_smooth", spec, "float32", paddle_stages, torch_stages)


def test_intact_port_passes(models):
    result = _compare("gradcam++", models)
    assert result.passed, result.message()


def test_wrong_pooling_in_gradcam_fails_at_weights(models, monkeypatch):
    from paddle_impl.grad_cam import GradCAM

    monkeypatch.setattr(GradCAM, "get_cam_weights", lambda self, x, l, t, a, grads: np.sum(grads, axis=(2, 3)))
    result = _compare("gradcam", models)
    assert not result.passed
    assert result.first_divergent.stage == "weights"
    assert "stage 'weights' mismatched" in result.message()


def test_missing_relu_on_gradients_in_layercam_fails_at_raw_cam(models, monkeypatch):
    from paddle_impl.layer_cam import LayerCAM

    monkeypatch.setattr(
        LayerCAM, "get_cam_image", lambda self, x, l, t, acts, grads, eigen: (grads * acts).sum(axis=1)
    )
    result = _compare("layercam", models)
    assert not result.passed
    assert result.first_divergent.stage == "raw_cam"
