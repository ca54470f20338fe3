"""The model-zoo registry, its default target layers on both frameworks, and per-architecture weights files."""
from __future__ import annotations

import dataclasses

import numpy as np
import paddle
import pytest
import torch

from paddle_impl.errors import UserError
from parity.hubs.seeding import SEEDING_VERSION
from parity.model_zoo import ARCHS, DEFAULT_ARCH, TRANSFER_RULES, arch, arch_names, missing_builders
from parity.weight_transfer import transfer_state_dict, verification_input
from parity.weights import (
    DEFAULT_WEIGHTS_DIR,
    build_paddle_model,
    build_torch_model,
    converted_path,
    ensure_default_weights,
    ensure_paddle_weights,
    load_paddle_state_dict,
    load_torch_state_dict,
    seeded_torch_state,
    sha256_of,
    state_dict_identity,
    weights_identity,
)

pytestmark = pytest.mark.timeout(600)

REQUIRED = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d", "wide_resnet50_2", "vgg11", "vgg16",
    "mobilenet_v2", "mobilenet_v3_large", "densenet121", "squeezenet1_1", "shufflenet_v2_x1_0",
]
NAME_RULE = {"resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d", "wide_resnet50_2", "vgg11", "vgg16", "mobilenet_v2"}

# Target-layer activations, float32, 64x64, max|Δ| / max|torch| (measured):
# resnet18 1.2e-6, mobilenet_v3_large 4.9e-7, shufflenet_v2_x1_0 2.2e-7, densenet121 parity pair 6.3e-7
# (its conventional pair, after the ReLU Paddle fuses in: 8.0e-7).
TARGET_RELATIVE = 1e-5


@pytest.fixture(scope="module", autouse=True)
def _pinned_threads(one_thread):
    """Every test of this module on one thread (conftest.one_thread)."""


# -- the registry -------------------------------------------------------------------------------


def test_registry_holds_the_required_architectures():
    assert set(REQUIRED) <= set(ARCHS)
    assert arch_names()[: len(REQUIRED)] == REQUIRED
    assert DEFAULT_ARCH == "resnet50"
    assert missing_builders() == {}


def test_specs_are_frozen_and_declarative():
    spec = ARCHS["resnet18"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.transfer = "name"  # type: ignore[misc]
    for spec in ARCHS.values():
        assert spec.transfer in TRANSFER_RULES
        assert spec.torch_target_layer and spec.paddle_target_layer
        assert (spec.transfer == "name") == (spec.name in NAME_RULE), spec.name
        assert bool(spec.known_difference) == all(spec.differs_at)
        assert spec.target_outputs_agree or spec.parity_torch_target_layer
    with pytest.raises(ValueError, match="transfer must be one of"):
        dataclasses.replace(ARCHS["resnet18"], transfer="by_guess")


def test_conventional_target_layers():
    conventional = {name: (ARCHS[name].torch_target_layer, ARCHS[name].paddle_target_layer) for name in REQUIRED}
    for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d", "wide_resnet50_2"):
        assert conventional[name] == ("layer4[-1]", "layer4[-1]")
    for name in ("vgg11", "vgg16", "mobilenet_v2"):
        assert conventional[name] == ("features[-1]", "features[-1]")
    assert conventional["mobilenet_v3_large"] == ("features[-1]", "lastconv")
    assert conventional["densenet121"] == ("features[-1]", "batch_norm")
    assert conventional["squeezenet1_1"] == ("features[-1]", "_conv8")
    assert conventional["shufflenet_v2_x1_0"] == ("conv5", "_last_conv")
    assert ARCHS["densenet121"].parity_target_layers == ("features.denseblock4", "db_conv_5")
    assert ARCHS["resnet50"].parity_target_layers == ("layer4[-1]", "layer4[-1]")


def test_unknown_architecture_is_a_one_line_error():
    with pytest.raises(UserError, match="unknown architecture 'resnet5'") as info:
        arch("resnet5")
    assert "\n" not in str(info.value) and "resnet50" in str(info.value)


# -- target layers on both frameworks -------------------------------------------------------------


def _target_outputs(arch_name: str, parity: bool):
    spec = ARCHS[arch_name]
    state = {k: v.numpy() for k, v in seeded_torch_state(arch_name, randomize_batch_norm=True).items()}
    torch_model = build_torch_model(arch_name, state)
    paddle_model = build_paddle_model(arch_name, transfer_state_dict(state, arch_name))
    captured = {}
    t_handle = spec.torch_target(torch_model, parity).register_forward_hook(
        lambda m, i, o: captured.__setitem__("torch", o.detach().numpy().copy())
    )
    p_handle = spec.paddle_target(paddle_model, parity).register_forward_post_hook(
        lambda l, i, o: captured.__setitem__("paddle", o.numpy().copy())
    )
    x = verification_input()
    with torch.no_grad():
        torch_model(torch.from_numpy(x))
    with paddle.no_grad():
        paddle_model(paddle.to_tensor(x))
    t_handle.remove()
    p_handle.remove()
    return captured["torch"], captured["paddle"]


def _relative(expected: np.ndarray, got: np.ndarray) -> float:
    assert expected.shape == got.shape
    return float(np.max(np.abs(got - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("arch_name", ["resnet18", "mobilenet_v3_large", "shufflenet_v2_x1_0"])
def test_default_target_layers_compute_the_same_tensor(arch_name):
    expected, got = _target_outputs(arch_name, parity=False)
    assert _relative(expected, got) <= TARGET_RELATIVE


def test_densenet_conventional_targets_differ_by_the_fused_relu_and_the_parity_pair_agrees():
    expected, got = _target_outputs("densenet121", parity=False)
    assert expected.min() < 0 <= got.min()  # torch's norm5 is before its ReLU, Paddle's batch_norm after
    assert _relative(np.maximum(expected, 0), got) <= TARGET_RELATIVE
    assert not ARCHS["densenet121"].target_outputs_agree
    expected, got = _target_outputs("densenet121", parity=True)
    assert _relative(expected, got) <= TARGET_RELATIVE


# -- builders ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch_name", ["densenet121", "shufflenet_v2_x1_0"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_builders_give_the_dtype_and_eval_mode(arch_name, dtype):
    torch_model = build_torch_model(arch_name, dtype=dtype)
    paddle_model = build_paddle_model(arch_name, dtype=dtype)
    assert not torch_model.training and not paddle_model.training
    assert {str(v.dtype) for v in torch_model.state_dict().values() if v.is_floating_point()} == {f"torch.{dtype}"}
    # Paddle's DenseNet uses the legacy BatchNorm, which ignores the default dtype: it must still be cast.
    assert {str(v.dtype).split(".")[-1] for v in paddle_model.state_dict().values()} == {dtype}


def test_paddle_builder_refuses_a_state_dict_that_does_not_fit():
    state = {k: v.numpy() for k, v in build_paddle_model("squeezenet1_1").state_dict().items()}
    state["extra.weight"] = state.pop("_conv.weight")
    with pytest.raises(UserError, match="missing keys: _conv.weight; unexpected keys: extra.weight") as info:
        build_paddle_model("squeezenet1_1", state)
    assert "\n" not in str(info.value)


# -- per-architecture weights files -----------------------------------------------------------------


def test_resnet50_keeps_its_file_names():
    assert ARCHS["resnet50"].default_weights_name == "resnet50_seed0.pth"
    # every other twin's seeded file names the seeding rule's version (parity.hubs.seeding.SEEDING_VERSION)
    assert ARCHS["resnet18"].default_weights_name == f"resnet18_s{SEEDING_VERSION}_seed0.pth"
    default = DEFAULT_WEIGHTS_DIR / "resnet50_seed0.pth"
    if default.exists():
        assert converted_path(default).name == f"resnet50_seed0-{sha256_of(default)[:16]}.pdparams"


def test_seeded_default_weights_per_architecture(tmp_path):
    first = ensure_default_weights(tmp_path / "a", arch="resnet18")
    second = ensure_default_weights(tmp_path / "b", arch="resnet18")
    name = ARCHS["resnet18"].default_weights_name
    assert first.name == name
    assert sha256_of(first) == sha256_of(second)  # deterministic, byte for byte
    assert (first.parent / f"{name}.sha256").read_text().split()[0] == sha256_of(first)
    state = load_torch_state_dict(first)
    torch.manual_seed(0)
    import torchvision

    reference = torchvision.models.resnet18().state_dict()
    assert set(state) == set(reference)
    # torchvision's random draws are kept; only what its init leaves constant (norms, statistics) is seeded noise
    constant = {k for k, v in reference.items() if v.is_floating_point() and v.numel() > 1 and bool((v == v.flatten()[0]).all())}
    assert "bn1.weight" in constant and "layer1.0.bn1.running_var" in constant
    assert all(np.array_equal(state[k], reference[k].numpy()) for k in reference if k not in constant)
    assert all(np.ptp(state[k]) > 0 for k in constant)
    mtime = first.stat().st_mtime_ns
    assert ensure_default_weights(tmp_path / "a", arch="resnet18") == first and first.stat().st_mtime_ns == mtime

    converted = ensure_paddle_weights(first, tmp_path / "a", arch="resnet18")
    assert converted.name == f"{first.stem}-resnet18-{sha256_of(first)[:16]}.pdparams"
    assert (converted.parent / (converted.name + ".sha256")).read_text().split()[0] == sha256_of(converted)
    assert weights_identity(first, tmp_path / "a", arch="resnet18") == state_dict_identity(state)
    paddle_state = load_paddle_state_dict(converted)
    assert np.array_equal(paddle_state["fc.weight"], state["fc.weight"].T)
    build_paddle_model("resnet18", paddle_state)  # every key fits
    mtime = converted.stat().st_mtime_ns
    assert ensure_paddle_weights(first, tmp_path / "a", arch="resnet18") == converted
    assert converted.stat().st_mtime_ns == mtime  # cached


def test_converted_cache_is_keyed_by_arch(tmp_path):
    source = tmp_path / "weights.pth"
    source.write_bytes(b"x")
    names = {converted_path(source, tmp_path, name).name for name in ("resnet50", "resnet18", "densenet121")}
    assert len(names) == 3
    assert converted_path(source, tmp_path).name == f"weights-{sha256_of(source)[:16]}.pdparams"


# -- opt-in tier: every registry model's target layers -------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("arch_name", list(ARCHS))
def test_every_registry_model_target_layers(arch_name):
    spec = ARCHS[arch_name]
    torch_model, paddle_model = spec.new_torch_model(), spec.new_paddle_model()
    for parity in (False, True):
        assert spec.torch_target(torch_model, parity) is not None
        assert spec.paddle_target(paddle_model, parity) is not None
    del torch_model, paddle_model
    if spec.known_difference:
        return  # the models compute different functions; test_weight_transfer reports where
    expected, got = _target_outputs(arch_name, parity=True)
    assert _relative(expected, got) <= TARGET_RELATIVE
