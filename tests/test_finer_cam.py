"""Parity of ``paddle_impl.finer_cam.FinerCAM`` with upstream's ``pytorch_grad_cam.FinerCAM``.

Setting: the seeded ResNet50 (``weights_pair``) on ``both.png`` at 64x64, a
batch of two (the image and its mirror image), target layer ``layer3``.  Each
case runs both FinerCAMs on the same weights and input and compares the final
(B, H, W) CAM; the classes Finer-CAM picks are compared too (they come from
an argsort of the logits, so a near-tie could reorder them).
"""
from __future__ import annotations

import cv2
import numpy as np
import paddle
import pytest
import torch

from paddle_impl import finer_cam as p_finer
from paddle_impl.utils import model_targets as p_targets
from closeness import assert_close

torch.set_num_threads(1)
paddle.base.core.set_num_threads(1)

SIZE = 64
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Absolute bounds on the final CAM (values in [0, 1]).
CAM_BOUNDS = {
    # Both sides end in float32, and Paddle's float64 average-pool backward is float32-scaled
    # (tests/test_port_units.py), so float64 is allowed a few float32 steps (6e-8 each below 1).
    "float64": 5e-7,  # measured 0 (every case)
    "float32": 1e-4,  # measured 3.1e-5 ("comparison past num_classes dropped"), 1.4e-5 (defaults)
}


@pytest.fixture(scope="module")
def setting(weights_pair, reference_image):
    from parity.weights import load_paddle_state_dict, load_torch_state_dict

    torch_path, paddle_path, _ = weights_pair
    states = (load_torch_state_dict(torch_path), load_paddle_state_dict(paddle_path))
    rgb = cv2.cvtColor(cv2.imread(str(reference_image)), cv2.COLOR_BGR2RGB)
    rgb = cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    chw = ((rgb - np.float32(MEAN)) / np.float32(STD)).transpose(2, 0, 1)
    batch = np.ascontiguousarray(np.stack([chw, chw[:, :, ::-1]]))
    models = {}

    def pair(dtype: str):
        from parity.weights import paddle_resnet50, torch_resnet50

        if dtype not in models:
            models[dtype] = (torch_resnet50(states[0], dtype), paddle_resnet50(states[1], dtype))
        return models[dtype]

    return {"batch": batch, "models": pair}


def _run(setting, dtype: str, base: str = "GradCAM", torch_targets=None, paddle_targets=None, **kwargs):
    import pytorch_grad_cam

    import paddle_impl

    tm, pm = setting["models"](dtype)
    batch = setting["batch"].astype(dtype)
    with pytorch_grad_cam.FinerCAM(tm, [tm.layer3], base_method=getattr(pytorch_grad_cam, base)) as cam:
        ref = cam(torch.from_numpy(batch), targets=torch_targets, **kwargs)
    with paddle_impl.finer_cam.FinerCAM(pm, [pm.layer3], base_method=getattr(paddle_impl, base)) as cam:
        got = cam(paddle.to_tensor(batch), targets=paddle_targets, **kwargs)
        logits = cam.base_cam.outputs.numpy()
    with torch.no_grad():
        torch_logits = tm(torch.from_numpy(batch)).numpy()
    return got, ref, logits, torch_logits


def _choices(targets):
    return [(t.main_category, list(t.comparison_categories), t.alpha) for t in targets]


CASES = {
    "defaults": {},
    "alpha=0.5, comparisons [1, 5]": {"alpha": 0.5, "comparison_categories": [1, 5]},
    "target_idx, alpha=0.7": {"target_idx": 361, "alpha": 0.7},
    "comparison past num_classes dropped": {"comparison_categories": [2, 1000, 4]},
    "eigen_smooth": {"eigen_smooth": True},
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_finer_cam_matches_upstream(setting, dtype, case):
    kwargs = CASES[case]
    got, ref, logits, torch_logits = _run(setting, dtype, **kwargs)
    selection = {k: v for k, v in kwargs.items() if k in ("alpha", "comparison_categories", "target_idx")}
    assert _choices(p_finer.finer_targets(logits, **selection)) == _choices(
        p_finer.finer_targets(torch_logits, **selection)
    ), "Finer-CAM picked other classes than upstream would from its own logits"
    assert got.dtype == ref.dtype == np.float32
    assert_close(f"FinerCAM CAM ({case}, {dtype})", got, ref, CAM_BOUNDS[dtype])
    assert float(ref.max()) > 0.5, "an all-zero CAM would prove little"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_finer_cam_with_explicit_targets_and_another_base_method(setting, dtype):
    make = lambda module: [module.FinerWeightedTarget(111, [7, 3], 0.8), module.FinerWeightedTarget(905, [12], 1.0)]
    from pytorch_grad_cam.utils import model_targets as t_targets

    got, ref, _, _ = _run(
        setting, dtype, base="GradCAMPlusPlus", torch_targets=make(t_targets), paddle_targets=make(p_targets)
    )
    assert_close(f"FinerCAM(GradCAMPlusPlus) CAM, explicit targets ({dtype})", got, ref, CAM_BOUNDS[dtype])


@pytest.mark.slow
def test_finer_cam_over_a_gradient_free_base_method(setting):
    """ScoreCAM as the base: no backward pass, the Finer targets score every masked input."""
    got, ref, _, _ = _run(setting, "float32", base="ScoreCAM")
    assert_close("FinerCAM(ScoreCAM) CAM (float32)", got, ref, CAM_BOUNDS["float32"])  # measured 2.1e-6


def test_finer_cam_call_shape_and_hooks(setting):
    """``aug_smooth=False`` is accepted (upstream has no such argument), ``True`` is refused; ``with`` removes hooks."""
    _, pm = setting["models"]("float32")
    x = paddle.to_tensor(setting["batch"])
    with p_finer.FinerCAM(pm, [pm.layer3]) as cam:
        plain = cam(input_tensor=x, targets=None, aug_smooth=False, eigen_smooth=False)
        with pytest.raises(ValueError, match="aug_smooth"):
            cam(input_tensor=x, aug_smooth=True)
    assert plain.shape == (2, SIZE, SIZE)
    assert not pm.layer3._forward_post_hooks, "hooks must be removed on exit"
    assert all(p.grad is None for p in pm.parameters()), "parameter gradients must not be computed"


def test_finer_targets_clip_default_comparisons_for_small_heads():
    logits = np.array([[0.3, 2.0, -1.0]])
    (target,) = p_finer.finer_targets(logits)
    assert (target.main_category, target.comparison_categories) == (1, [0, 2])
    (target,) = p_finer.finer_targets(np.array([[4.0]]))
    assert (target.main_category, target.comparison_categories) == (0, [])


def test_breakage_comparison_categories_are_detected(setting, monkeypatch):
    """Comparing against the 2nd-4th most similar classes instead of the 1st-3rd must fail the CAM comparison."""
    monkeypatch.setattr(p_finer, "DEFAULT_COMPARISON_CATEGORIES", (2, 3, 4))
    got, ref, _, _ = _run(setting, "float64")
    with pytest.raises(AssertionError, match="FinerCAM CAM"):
        assert_close("FinerCAM CAM (broken comparisons)", got, ref, CAM_BOUNDS["float64"])
