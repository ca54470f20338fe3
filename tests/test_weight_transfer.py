"""torchvision -> paddle.vision weight transfer: checked, forward-verified, and diagnosed when it is wrong.

Checkpoints are made here: the seeded torchvision init with every batch
norm's statistics and affine terms (and Linear biases) randomised, so a
mean/variance or weight/bias mix-up changes the logits.  Inputs are 64x64.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import paddle
import pytest
import torch

from parity import weight_transfer
from paddle_impl.errors import UserError
from parity.model_zoo import ARCHS
from parity.weight_transfer import (
    VERIFY_RTOL,
    ArchitecturesDiffer,
    TransferError,
    TransferRefused,
    convert_state_dict,
    diagnose_first_divergence,
    pair_layers_by_execution_order,
    transfer_plan,
    transfer_state_dict,
    verification_input,
    verify_transfer,
)
from parity.weights import build_paddle_model, build_torch_model, seeded_torch_state

pytestmark = pytest.mark.timeout(600)

FAST_ARCHS = ["resnet18", "mobilenet_v3_large", "shufflenet_v2_x1_0", "densenet121"]

# Float32 logits, max|Δ| / max|torch| at 64x64 (measured): resnet18 1.2e-6,
# mobilenet_v3_large 2.2e-7, shufflenet_v2_x1_0 3.9e-7, densenet121 9.5e-7.
# The verification bound is 1e-4 (the harness's); this tighter one shows the margin.
F32_RELATIVE = 1e-5
# Float64 (measured): resnet18 1.5e-12, shufflenet 1.1e-13, densenet121 2.0e-12;
# mobilenet_v3_large 3.1e-10: its batch norms use eps=1e-3 and Paddle's kernel
# holds eps as float32 (0.0010000000475), which alone moves a BN output by ~1e-10.
F64_RELATIVE = {"resnet18": 1e-10, "shufflenet_v2_x1_0": 1e-10, "densenet121": 1e-10, "mobilenet_v3_large": 1e-8}


@pytest.fixture(scope="module", autouse=True)
def _pinned_threads(one_thread):
    """Every test of this module on one thread (conftest.one_thread)."""


_STATES: dict = {}


def torch_state(arch_name: str) -> dict:
    if arch_name not in _STATES:
        state = seeded_torch_state(arch_name, seed=0, randomize_batch_norm=True)
        _STATES[arch_name] = {name: tensor.numpy() for name, tensor in state.items()}
    return _STATES[arch_name]


def logits(arch_name: str, torch_params: dict, paddle_params: dict, dtype: str):
    x = verification_input(dtype=dtype)
    torch_model = build_torch_model(arch_name, torch_params, dtype)
    paddle_model = build_paddle_model(arch_name, paddle_params, dtype)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    with paddle.no_grad():
        got = paddle_model(paddle.to_tensor(x)).numpy()
    assert got.dtype == np.dtype(dtype)
    return expected, got


# -- the fast tier: a few small models -----------------------------------------------------


@pytest.mark.parametrize("arch_name", FAST_ARCHS)
def test_transfer_is_verified_by_a_forward_pass(arch_name):
    converted, check = convert_state_dict(torch_state(arch_name), arch_name)
    assert check is not None and check.arch == arch_name and check.rule == ARCHS[arch_name].transfer
    assert check.bound == pytest.approx(VERIFY_RTOL * check.torch_max_abs)
    assert check.torch_max_abs > 0.1  # randomised batch norms give logits that can show a mix-up
    assert check.max_abs_diff <= check.bound, check.summary()
    assert check.relative <= F32_RELATIVE, check.summary()
    assert set(converted) == set(build_paddle_model(arch_name).state_dict())


@pytest.mark.parametrize("arch_name", FAST_ARCHS)
def test_float64_logits_agree(arch_name):
    state = torch_state(arch_name)
    expected, got = logits(arch_name, state, transfer_state_dict(state, arch_name), "float64")
    relative = np.max(np.abs(got - expected)) / np.max(np.abs(expected))
    assert relative <= F64_RELATIVE[arch_name], f"{arch_name}: float64 logits max|Δ|/max|torch| {relative:.3g}"


def test_execution_order_pairing_agrees_with_the_name_rule():
    """On ResNet18, where names agree, pairing by execution order finds exactly the name pairs."""
    spec = ARCHS["resnet18"]
    pairs = pair_layers_by_execution_order(spec.new_torch_model(), spec.new_paddle_model())
    assert len(pairs) == len(transfer_plan("resnet18").pairs) == 41  # 20 convs, 20 batch norms, fc
    assert all(pair.torch_path == pair.paddle_path for pair in pairs)
    assert {p.torch_path for p in pairs} == {p.torch_path for p in transfer_plan("resnet18").pairs}


def test_pairing_refuses_different_architectures():
    with pytest.raises(ArchitecturesDiffer, match=r"architectures differ at layer with weights #\d+") as info:
        pair_layers_by_execution_order(ARCHS["resnet18"].new_torch_model(), ARCHS["resnet34"].new_paddle_model())
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "arch_name, linear_weights",
    [
        ("resnet18", {"fc.weight"}),
        ("mobilenet_v3_large", {"classifier.0.weight", "classifier.3.weight"}),
        ("shufflenet_v2_x1_0", {"_fc.weight"}),
        ("densenet121", {"out.weight"}),
        ("squeezenet1_1", set()),  # its classifier is a 1x1 conv: nothing to transpose
    ],
)
def test_linear_weights_are_found_by_layer_type(arch_name, linear_weights):
    plan = transfer_plan(arch_name)
    assert plan.transposed == linear_weights
    state = torch_state(arch_name)
    converted = transfer_state_dict(state, arch_name)
    source = {p: t for t, p in plan.name_map.items()}
    for key in linear_weights:
        assert np.array_equal(converted[key], state[source[key]].T)
    # and nothing else is transposed
    for t_key, p_key in plan.name_map.items():
        if p_key not in linear_weights:
            assert np.array_equal(converted[p_key], state[t_key]), p_key


@pytest.mark.parametrize("arch_name", ["shufflenet_v2_x1_0", "densenet121", "mobilenet_v3_large"])
def test_execution_order_map_is_a_bijection_onto_paddle(arch_name):
    plan = transfer_plan(arch_name)
    assert plan.rule == "execution_order"
    assert len(set(plan.name_map.values())) == len(plan.name_map) == len(plan.paddle_shapes)
    assert set(plan.name_map) == {k for k in plan.torch_shapes if not k.endswith("num_batches_tracked")}
    bn = [(t, p) for t, p in plan.name_map.items() if t.endswith("running_var")]
    assert bn and all(p.endswith("._variance") for _, p in bn)


def test_example_pairs_across_differently_named_models():
    names = dict(transfer_plan("densenet121").name_map)
    assert names["features.conv0.weight"] == "conv1_func._conv.weight"
    assert names["features.denseblock4.denselayer16.norm2.running_var"] == "db_conv_5.conv5_16.bn_ac_func2._batch_norm._variance"
    assert names["classifier.bias"] == "out.bias"
    names = dict(transfer_plan("shufflenet_v2_x1_0").name_map)
    assert names["stage2.0.branch1.0.weight"] == "2_1._conv_dw_1.0.weight"
    assert names["conv5.1.running_mean"] == "_last_conv.1._mean"


@pytest.mark.parametrize("arch_name", ["resnet18", "shufflenet_v2_x1_0"])
def test_the_zoo_and_transfer_weights_are_one_transfer(arch_name):
    """parity.transfer_weights on the zoo's two models finds the zoo plan's map, and the same Paddle state."""
    from parity.transfer import transfer_weights

    state = torch_state(arch_name)
    plan = transfer_plan(arch_name)
    paddle_model = build_paddle_model(arch_name)
    pairing = transfer_weights(build_torch_model(arch_name, state), paddle_model, verification_input())
    assert pairing.rule == plan.rule
    assert {entry.source: entry.target for entry in pairing} == dict(plan.name_map)
    assert set(pairing.transposed) == set(plan.transposed)
    converted = transfer_state_dict(state, arch_name)
    for key, value in paddle_model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), converted[key], err_msg=key)


# -- every key and shape is checked ---------------------------------------------------------


def _refused(state, arch_name, *fragments):
    with pytest.raises(TransferError) as info:
        transfer_state_dict(state, arch_name)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("arch_name", ["resnet18", "shufflenet_v2_x1_0"])
def test_missing_unexpected_and_wrong_shapes_are_named(arch_name):
    state = dict(torch_state(arch_name))
    first_conv = next(k for k in state if k.endswith("weight") and state[k].ndim == 4)
    renamed = dict(state)
    renamed[first_conv + "s"] = renamed.pop(first_conv)
    _refused(renamed, arch_name, f"does not fit torchvision's {arch_name}", f"missing keys: {first_conv}", f"unexpected keys: {first_conv}s")
    reshaped = dict(state)
    reshaped[first_conv] = np.zeros((7, 7, 7, 7), np.float32)
    _refused(reshaped, arch_name, f"wrong shapes: {first_conv} (7, 7, 7, 7) (expected {state[first_conv].shape})")


def test_missing_num_batches_tracked_is_accepted():
    """Old checkpoints (torchvision's IMAGENET1K_V1) have no num_batches_tracked; Paddle has no such tensor."""
    state = {k: v for k, v in torch_state("resnet18").items() if not k.endswith("num_batches_tracked")}
    converted, check = convert_state_dict(state, "resnet18")
    assert check.max_abs_diff <= check.bound
    assert not any("num_batches_tracked" in k or "running_" in k for k in converted)


# -- breakage: a wrong transfer is refused, and the refusal names the layer -----------------


@pytest.fixture
def fresh_plans():
    transfer_plan.cache_clear()
    yield
    transfer_plan.cache_clear()


def test_breakage_swapped_batch_norm_statistics_are_refused(monkeypatch, fresh_plans):
    swap = {"running_mean": "_variance", "running_var": "_mean"}

    def broken(name: str) -> str:
        for source, target in swap.items():
            if name == source or name.endswith("." + source):
                return name[: -len(source)] + target
        return name

    monkeypatch.setattr(weight_transfer, "rename_batch_norm", broken)
    with pytest.raises(TransferRefused) as info:
        convert_state_dict(torch_state("resnet18"), "resnet18")
    message = str(info.value)
    assert "\n" not in message
    assert "logits differ" in message and "transfer refused" in message
    divergence = info.value.divergence
    assert (divergence.kind, divergence.torch_path, divergence.paddle_path) == ("weights", "bn1", "bn1")
    assert "torch bn1 (BatchNorm2d) / paddle bn1 (BatchNorm2D)" in message
    assert "running_mean" in message or "running_var" in message


def test_breakage_untransposed_linear_is_refused(monkeypatch):
    plan = transfer_plan("mobilenet_v3_large")
    monkeypatch.setattr(weight_transfer, "transfer_plan", lambda name: dataclasses.replace(plan, transposed=frozenset()))
    _refused(torch_state("mobilenet_v3_large"), "mobilenet_v3_large", "wrong shapes: classifier.0.weight (1280, 960) (expected (960, 1280))")


# -- the first-divergence diagnosis ---------------------------------------------------------


@pytest.mark.parametrize("arch_name, index", [("resnet18", 25), ("shufflenet_v2_x1_0", 101), ("densenet121", 200)])
def test_diagnosis_names_exactly_the_corrupted_batch_norm(arch_name, index):
    """Corrupt one batch norm's running variance in the Paddle weights: that layer, on each side, is named."""
    state = torch_state(arch_name)
    converted = transfer_state_dict(state, arch_name)
    pairs = [pair for pair in transfer_plan(arch_name).pairs if pair.kind == "batch_norm"]
    pair = pairs[index % len(pairs)]
    key = f"{pair.paddle_path}._variance"
    converted[key] = converted[key] * 4 + 0.5
    torch_model = build_torch_model(arch_name, state)
    paddle_model = build_paddle_model(arch_name, converted)
    divergence = diagnose_first_divergence(torch_model, paddle_model, verification_input())
    assert divergence is not None
    assert (divergence.kind, divergence.torch_path, divergence.paddle_path) == ("weights", pair.torch_path, pair.paddle_path)
    assert divergence.max_abs_diff > divergence.bound
    assert "running_var" in divergence.detail and "_variance" in divergence.detail
    with pytest.raises(TransferRefused) as info:
        verify_transfer(state, converted, arch_name)
    assert not isinstance(info.value, ArchitecturesDiffer)
    assert f"torch {pair.torch_path} " in str(info.value) and f"paddle {pair.paddle_path} " in str(info.value)
    if arch_name != "resnet18":
        assert pair.torch_path != pair.paddle_path  # the two sides really are named differently


def test_diagnosis_finds_nothing_when_models_agree():
    state = torch_state("densenet121")
    torch_model = build_torch_model("densenet121", state)
    paddle_model = build_paddle_model("densenet121", transfer_state_dict(state, "densenet121"))
    assert diagnose_first_divergence(torch_model, paddle_model, verification_input()) is None


def test_breakage_fused_activation_ignored_flags_densenet(monkeypatch):
    """Paddle's DenseNet fuses the ReLU into BatchNorm; without accounting for it the first such BN is flagged."""
    state = torch_state("densenet121")
    torch_model = build_torch_model("densenet121", state)
    paddle_model = build_paddle_model("densenet121", transfer_state_dict(state, "densenet121"))
    monkeypatch.setattr(weight_transfer, "_fused_activation", lambda layer: None)
    divergence = diagnose_first_divergence(torch_model, paddle_model, verification_input())
    assert divergence is not None and divergence.torch_path == "features.norm0"


def test_squeezenet_architectures_differ_at_the_first_conv():
    with pytest.raises(ArchitecturesDiffer) as info:
        convert_state_dict(torch_state("squeezenet1_1"), "squeezenet1_1")
    assert isinstance(info.value, UserError) and not isinstance(info.value, TransferRefused)
    message = str(info.value)
    assert "\n" not in message
    assert "architectures differ at torch features.0 (Conv2d) / paddle _conv (Conv2D)" in message
    assert "outputs (1, 64, 31, 31) vs (1, 64, 32, 32)" in message and "padding (0, 0) vs (1, 1)" in message
    assert (info.value.divergence.torch_path, info.value.divergence.paddle_path) == ARCHS["squeezenet1_1"].differs_at


def test_squeezenet_next_difference_is_the_inference_dropout():
    """With the conv padding made equal, the diagnosis finds the next difference, in a layer without weights."""
    state = torch_state("squeezenet1_1")
    torch_model = build_torch_model("squeezenet1_1", state)
    paddle_model = build_paddle_model("squeezenet1_1", transfer_state_dict(state, "squeezenet1_1"))
    paddle_model._conv._padding = [0, 0]
    paddle_model._conv._updated_padding = [0, 0]
    divergence = diagnose_first_divergence(torch_model, paddle_model, verification_input())
    assert divergence.kind == "architecture"
    assert (divergence.torch_path, divergence.paddle_path) == ("classifier.0", "_drop")
    assert "inference_scale 1.0 vs 0.5" in divergence.message


def test_diagnosis_in_float64_with_a_tight_bound():
    """The harness may diagnose float64 runs: same pairing, its own rtol."""
    state = torch_state("resnet18")
    converted = transfer_state_dict(state, "resnet18")
    converted["layer3.0.downsample.1._mean"] = converted["layer3.0.downsample.1._mean"] + 1e-6
    torch_model = build_torch_model("resnet18", state, "float64")
    paddle_model = build_paddle_model("resnet18", converted, "float64")
    x = verification_input(dtype="float64")
    divergence = diagnose_first_divergence(torch_model, paddle_model, x, rtol=1e-9)
    assert (divergence.kind, divergence.torch_path) == ("weights", "layer3.0.downsample.1")
    assert diagnose_first_divergence(torch_model, paddle_model, x, rtol=1e-4) is None  # below a float32 bound


# -- the opt-in tier (-m slow): every registry model, one at a time ---------------------------


@pytest.mark.slow
@pytest.mark.parametrize("arch_name", list(ARCHS))
def test_every_registry_model_transfers_or_is_reported_different(arch_name):
    spec = ARCHS[arch_name]
    state = {k: v.numpy() for k, v in seeded_torch_state(arch_name, seed=0, randomize_batch_norm=True).items()}
    try:
        if spec.known_difference:
            with pytest.raises(ArchitecturesDiffer) as info:
                convert_state_dict(state, arch_name)
            divergence = info.value.divergence
            assert (divergence.torch_path, divergence.paddle_path) == spec.differs_at, str(info.value)
            print(f"\n{arch_name}: {info.value}")
        else:
            _, check = convert_state_dict(state, arch_name)
            assert check.max_abs_diff <= check.bound
            assert check.relative <= F32_RELATIVE, check.summary()
            print(f"\n{check.summary()}")
    finally:
        state.clear()
