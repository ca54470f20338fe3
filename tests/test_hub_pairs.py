"""timm <-> PaddleClas pairs (parity.hubs): the loader, seeded weights, switches, and GradCAM through the harness."""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("timm", reason="the hubs extra is not installed (make install installs it)")
# Never `import paddleclas`: its package __init__ imports the training and inference code (requests, cv2...).
if importlib.util.find_spec("paddleclas") is None:
    pytest.skip("PaddleClas is not installed (make install: requirements-nodeps.lock)", allow_module_level=True)

from paddle_impl.errors import UserError  # noqa: E402
from parity.model_zoo import HUB_PAIRS, arch, pair_by_id  # noqa: E402

pytestmark = pytest.mark.timeout(600)
REPO_ROOT = Path(__file__).resolve().parent.parent

CNN_PAIRS = ["resnet50d", "lcnet_100", "mobilenetv3_large_100", "tf_efficientnet_b0", "efficientnet_b0", "hgnetv2_b0"]


def test_the_loader_builds_a_model_without_paddleclas_package_init():
    # A fresh interpreter: nothing else has imported anything from paddleclas yet.
    code = (
        "import sys\n"
        "from parity.hubs.paddleclas_loader import paddleclas_model\n"
        "model = paddleclas_model('PPLCNet_x0_25')\n"
        "import paddleclas\n"
        "print(type(model).__name__, paddleclas.__file__, 'paddleclas.paddleclas' in sys.modules,\n"
        "      'requests' in sys.modules, 'paddleclas.ppcls.arch.backbone.model_zoo.vision_transformer' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    # The package module is a bare one (no __file__: its __init__ never ran), the inference tool and
    # requests were never imported, and neither was any other model module.
    assert result.stdout.split() == ["PPLCNet", "None", "False", "False", "False"], result.stdout


def test_building_twice_gives_the_same_parameter_names():
    from parity.hubs.paddleclas_loader import paddleclas_model

    first = paddleclas_model("PPLCNet_x0_25")
    second = paddleclas_model("PPLCNet_x0_25")
    assert list(first.state_dict()) == list(second.state_dict())
    # the parameters' own names too, which unique_name would suffix without the guard
    assert [p.name for p in first.parameters()] == [p.name for p in second.parameters()]


def test_missing_paddleclas_is_one_line_naming_the_extra(monkeypatch):
    from parity.hubs import paddleclas_loader

    monkeypatch.setattr(paddleclas_loader.importlib.util, "find_spec", lambda name: None)
    monkeypatch.delitem(sys.modules, "paddleclas", raising=False)
    with pytest.raises(UserError) as error:
        paddleclas_loader.paddleclas_builder("legendary_models.pp_lcnet:PPLCNet_x0_25")
    message = str(error.value)
    assert "\n" not in message and "not installed" in message and "hubs" in message and "--no-deps" in message


def test_unknown_paddleclas_model_is_refused():
    from parity.hubs.paddleclas_loader import available_models, paddleclas_model

    assert {"ResNet50_vd", "PPLCNet_x1_0", "EfficientNetB0", "PPHGNetV2_B0", "DeiT_tiny_patch16_224"} <= set(available_models())
    with pytest.raises(UserError, match="PaddleClas has no model 'ResNet50_vdx'"):
        paddleclas_model("ResNet50_vdx")


def test_registry_lists_the_cnn_pairs_and_the_hubs_profile():
    from parity.registry import PROFILES, SEED_METHODS, all_cases

    assert CNN_PAIRS == [name for name in HUB_PAIRS if name in CNN_PAIRS]
    assert pair_by_id("timm/resnet50d:paddleclas/ResNet50_vd").name == "resnet50d"
    cases = all_cases(profile=PROFILES["hubs"])
    assert {case.setup.model for case in cases} == set(HUB_PAIRS)
    assert {case.method for case in cases} == set(SEED_METHODS)
    for case in cases:
        spec = HUB_PAIRS[case.setup.model]
        if case.spec.reruns_network_per_channel:
            assert spec.heavy_methods and case.setup.size == spec.heavy_size
        else:
            assert case.setup.size == spec.input_size
    heavy = {case.setup.model for case in cases if case.spec.reruns_network_per_channel}
    assert "resnet50d" not in heavy and "lcnet_100" in heavy
    # an entry's skip_methods leave a method out, with the entry's reason
    assert "hgnetv2_b0/scorecam-no_smooth" in {c.id for c in cases}
    assert "hgnetv2_b0/ablationcam-no_smooth" not in {c.id for c in cases}
    assert "1e7" in dict(HUB_PAIRS["hgnetv2_b0"].skip_methods)["ablationcam"]


def test_a_reshape_transform_is_part_of_the_setup_and_so_of_the_upstream_cache_key():
    from parity.registry import Setup

    declared = Setup(name="deit_tiny_patch16_224", model="deit_tiny_patch16_224").describe()["reshape_transform"]
    assert declared["torch"] == declared["paddle"] == "auto" and len(declared["code"]) == 16
    assert "reshape_transform" not in Setup(name="lcnet_100", model="lcnet_100").describe()


def test_seeded_weights_leave_no_constant_tensor_and_repeat_exactly():
    import torch

    from parity.hubs.seeding import constant_tensor_names, seeded_hub_state

    spec = arch("lcnet_100")
    fresh = spec.new_torch_model()
    constant = constant_tensor_names(fresh)
    # BatchNorm affine and statistics, and the conv biases, start constant in timm's init
    assert any(name.endswith("bn1.running_var") for name in constant) and any(name.endswith(".bias") for name in constant)
    first, second = seeded_hub_state(spec), seeded_hub_state(spec)
    assert list(first) == list(second)
    assert all(torch.equal(first[name], second[name]) for name in first)
    model = spec.new_torch_model()
    model.load_state_dict(first)
    assert [name for name in constant_tensor_names(model) if first[name].numel() > 1] == []
    assert float(first["bn1.running_var"].min()) > 0


def test_class_tokens_drawn_near_zero_get_noise_too():
    from parity.hubs.seeding import seeded_hub_state

    state = seeded_hub_state(arch("deit_tiny_patch16_224"))
    # timm draws the class token with std 1e-6: as good as zero beside position embeddings of std 0.02
    assert float(state["cls_token"].std()) > 0.05
    assert "_timm" in arch("deit_tiny_patch16_224").default_weights_name  # the seeded file names timm's version


def test_a_pair_without_registry_entry_is_rebuilt_from_its_name():
    from parity.model_zoo import UNREGISTERED_FAMILY

    spec = pair_by_id("timm/hgnetv2_b1:paddleclas/PPHGNetV2_B1")
    assert spec.family == UNREGISTERED_FAMILY and spec.transfer == "generic" and not spec.switches
    assert spec.pair_id == "timm/hgnetv2_b1:paddleclas/PPHGNetV2_B1"
    assert arch(spec.name) == spec  # a worker process finds it from the setup's model name
    with pytest.raises(UserError, match="invalid pair"):
        pair_by_id("timm/hgnetv2_b1")


def _seeded(name):
    from parity.hubs.seeding import seeded_hub_state

    return seeded_hub_state(arch(name))


def test_a_pair_that_differs_without_its_switch_is_refused_naming_layer_and_attribute(one_thread):
    """timm's efficientnet_b0 normalises with eps 1e-5, PaddleClas's EfficientNetB0 with 1e-3; its switch fixes it."""
    from parity.hub_transfer import transfer_pair, verification_shapes
    from parity.hub_transfer import _transfer_and_check
    from parity.weight_transfer import ArchitecturesDiffer, verification_input
    from parity.weights import build_torch_model

    spec = arch("efficientnet_b0")
    state = _seeded("efficientnet_b0")
    torch_model = build_torch_model(spec.name, {k: v.numpy() for k, v in state.items()})
    x = [verification_input(shape) for shape in verification_shapes(spec)]
    without_eps = spec.new_paddle_model(switches=["padding_type DYNAMIC"])
    with pytest.raises(ArchitecturesDiffer) as refused:
        _transfer_and_check(spec, torch_model, without_eps, x)
    message = str(refused.value)
    assert "architectures differ at torch bn1" in message and "_ef._conv_stem._conv._bn" in message
    # the attribute and both values (as float32, which Paddle's kernel takes eps in; formats vary)
    found = re.search(r"\beps ([0-9.e+-]+) vs ([0-9.e+-]+)", message)
    assert found, message
    assert np.float32(found.group(1)) == np.float32(1e-5) and np.float32(found.group(2)) == np.float32(1e-3)

    done = transfer_pair(spec, state)  # every switch: passes, and each one is shown to be needed
    assert done.switch_check is not None
    sentence = done.switch_check.sentence()
    assert "padding_type DYNAMIC" in sentence and "batch_norm_epsilon 1e-5" in sentence
    assert "padding (1, 1) vs (2, 2)" in sentence or "padding" in done.switch_check.without[0]
    assert "eps" in done.switch_check.without[1]


def test_a_missing_bias_and_the_inference_dropout_are_switched_on_lcnet(one_thread):
    from parity.hub_transfer import transfer_pair

    done = transfer_pair(arch("lcnet_100"), _seeded("lcnet_100"))
    without_bias, without_dropout, without_slope = done.switch_check.without
    # the layer on each side and the attribute that differs (its wording is the transfer's)
    assert "torch conv_head" in without_bias and "paddle last_conv" in without_bias and "bias" in without_bias
    assert "dropout" in without_dropout.lower() and ("0.8" in without_dropout or "downscale_in_infer" in without_dropout), without_dropout
    assert "last_conv.bias" in done.state
    # the gate's slope: invisible in float32, shown needed in float64, with both constants named
    assert "(in float64)" in without_slope and "se.hardsigmoid" in without_slope, without_slope
    assert "slope 0.1666666667, offset 0.5 vs slope 0.1666667, offset 0.5" in without_slope, without_slope
    assert "; in float64: lcnet_100:" in done.switch_check.with_switches


def test_the_torch_hard_sigmoid_switch_computes_torchs_gate_and_gradient_in_float64():
    """Op by op against torch: the switched layer's output and input gradient to float64's last bits, Paddle's own
    nn.Hardsigmoid 2e-8 away (its slope literal), which a switch verified in float32 could never show."""
    import paddle
    import torch

    from parity.hubs.paddle_layers import TorchHardsigmoid
    from parity.hubs.switches import torch_hard_sigmoid

    x = np.random.default_rng(0).uniform(-4, 4, size=(4, 64)).astype(np.float64)
    t_in = torch.tensor(x, requires_grad=True)
    t_out = torch.nn.Hardsigmoid()(t_in)
    t_out.sum().backward()

    def paddle_side(layer):
        p_in = paddle.to_tensor(x, stop_gradient=False)
        p_out = layer(p_in)
        p_out.sum().backward()
        return p_out.numpy(), p_in.grad.numpy()

    out, grad = paddle_side(TorchHardsigmoid())
    np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=0, atol=1e-15)
    # torch's CPU backward multiplies by 1.0f / 6.0f, a float32 constant, in float64 too (measured: 0.16666667163):
    # 3e-8 relative from 1/6, inside the float64 `gradients` bound (1e-7 relative); Paddle's default slope is 2e-7 off.
    t_grad = t_in.grad.numpy()
    assert np.all(np.isin(t_grad, [0.0, float(np.float32(1.0) / np.float32(6.0))]))
    np.testing.assert_allclose(grad, t_grad, rtol=4e-8, atol=0)
    default_out, default_grad = paddle_side(paddle.nn.Hardsigmoid())
    assert np.max(np.abs(default_out - t_out.detach().numpy())) > 1e-8
    assert np.max(np.abs(default_grad - t_grad)) > 1e-7 * np.max(np.abs(t_grad))

    class Gate(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.conv = paddle.nn.Conv2D(2, 2, 1)
            self.hardsigmoid = paddle.nn.Hardsigmoid()

    model = paddle.nn.Sequential(Gate(), Gate())
    assert torch_hard_sigmoid(model) == 2
    names = [name for name, layer in model.named_sublayers() if isinstance(layer, TorchHardsigmoid)]
    assert names == ["0.hardsigmoid", "1.hardsigmoid"]
    assert torch_hard_sigmoid(model) == 0  # nothing left to switch: the harness refuses a stale switch


def test_mobilenetv3_is_reported_where_the_architectures_differ(one_thread):
    from parity.hub_transfer import transfer_pair
    from parity.weight_transfer import ArchitecturesDiffer

    spec = arch("mobilenetv3_large_100")
    assert spec.known_difference
    with pytest.raises(ArchitecturesDiffer) as differs:
        transfer_pair(spec, _seeded(spec.name))
    message = str(differs.value)
    assert message.startswith("architectures differ at") or "architectures differ at" in message
    assert spec.differs_at[0] in message and spec.differs_at[1] in message


def test_pair_option_errors_are_one_line_with_exit_status_2(capsys):
    from parity.cli import main

    for argv, expected in [
        (["--pair", "timm/resnet50d"], "invalid pair"),
        (["--pair", "timm/resnet34d:paddleclas/ResNet34_vd"], "has no registry entry (parity/hubs), so no default target layers"),
        (["--pair", "timm/resnet50d:paddleclas/ResNet50_vd", "--profile", "zoo"], "cannot be combined with --profile zoo"),
        (["--pair", "timm/resnet50d:paddleclas/ResNet50_vd", "--model", "resnet18"], "cannot be combined with --model"),
        (["--profile", "hubs", "--size", "64x64"], "cannot be combined with --profile hubs"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--out", "/nonexistent/never-written"])
        assert exit_info.value.code == 2, argv
        # argparse's own refusals print the usage first, as for every other option; the error is one line
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("python -m parity: error: ") and expected in err[-1], (argv, err)


def test_gradcam_on_lcnet_through_the_harness_passes_against_upstream(tmp_path):
    """python -m parity --pair: seeded timm weights, the verified transfer, GradCAM on both sides, compared."""
    from parity.cli import main

    out = tmp_path / "hub"
    status = main(["--pair", "timm/lcnet_100:paddleclas/PPLCNet_x1_0", "--methods", "gradcam", "--size", "112x112",
                   "--jobs", "1", "--no-cache", "--out", str(out)])
    results = json.loads((out / "parity.json").read_text())
    (case,) = results["cases"]
    assert status == 0 and case["passed"], case.get("message")
    assert case["id"] == "lcnet_100/gradcam-no_smooth" and case["cam_max_abs_diff"] <= 1e-4
    weights = results["provenance"]["weights"]["lcnet_100"]
    assert weights["pair"] == "timm/lcnet_100:paddleclas/PPLCNet_x1_0"
    assert "bias on last_conv" in weights["switches"] and "dropout upscale_in_train" in weights["switches"]
    cam = np.load(next(out.rglob("cam_paddle.npy")))
    assert cam.std() > 0.05  # a map with structure, not a flat one that passes trivially


@pytest.mark.slow
def test_hubs_profile_light_methods(tmp_path):
    """Every registered pair (CNN and transformer) passes GradCAM and EigenCAM or is reported as differing."""
    from parity.cli import main

    out = tmp_path / "hubs"
    status = main(["--profile", "hubs", "--methods", "gradcam,eigencam", "--jobs", "1", "--out", str(out)])
    results = json.loads((out / "parity.json").read_text())
    assert status == 0, [c["message"] for c in results["cases"] if not c["passed"]]
    assert {c["id"].split("/")[0] for c in results["cases"]} == set(HUB_PAIRS)
