"""``parity.transfer_weights`` on hand-made torch/Paddle twins: both directions, any input size, refusals named.

The twins are small (a few thousand weights, 24x24..40x40 inputs) and named
differently on each side, as real hub pairs are: the Paddle side uses
PaddleClas's legacy ``nn.BatchNorm(act="relu")`` (statistics as
*parameters*, activation fused), the torch side a separate ReLU.  Every
batch norm gets seeded statistics and affine terms, so a mean/variance or
weight/bias mix-up changes the outputs.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import paddle
import pytest
import torch

import parity
from parity.transfer import (
    ArchitecturesDiffer,
    MapEntry,
    TransferError,
    TransferMap,
    TransferRefused,
    save_paddle_weights,
    transfer_weights,
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def _pinned_threads(one_thread):
    """Every test of this module on one thread (conftest.one_thread)."""


class TorchTwin(torch.nn.Module):
    def __init__(self, exclusive_pool: bool = False, head_bias: bool = True):
        super().__init__()
        self.stem = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, stride=1, padding=1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU()
        )
        self.mix = torch.nn.Conv2d(8, 12, 3, padding=1, bias=True)
        self.mix_bn = torch.nn.BatchNorm2d(12)
        self.pool = torch.nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=not exclusive_pool)
        self.gap = torch.nn.AdaptiveAvgPool2d(1)
        self.drop = torch.nn.Dropout(0.25)
        self.head = torch.nn.Linear(12, 5, bias=head_bias)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(self.mix_bn(self.mix(x)))
        x = self.gap(self.pool(x)).flatten(1)
        return self.head(self.drop(x))


class PaddleTwin(paddle.nn.Layer):
    def __init__(self, exclusive_pool: bool = False, dropout_mode: str = "upscale_in_train", conv_bias: bool = True):
        super().__init__()
        self.conv1 = paddle.nn.Conv2D(3, 8, 3, stride=1, padding=1, bias_attr=False)
        self.bn1 = paddle.nn.BatchNorm(8, act="relu")  # legacy: _mean/_variance are parameters
        self.features = paddle.nn.Sequential(
            paddle.nn.Conv2D(8, 12, 3, padding=1, bias_attr=None if conv_bias else False),
            paddle.nn.BatchNorm2D(12),
            paddle.nn.ReLU(),
        )
        self.avg = paddle.nn.AvgPool2D(3, stride=2, padding=1, exclusive=exclusive_pool)
        self.flat = paddle.nn.AdaptiveAvgPool2D(1)
        self.dropout = paddle.nn.Dropout(0.25, mode=dropout_mode)
        self.fc = paddle.nn.Linear(12, 5)

    def forward(self, x):
        x = self.features(self.bn1(self.conv1(x)))
        x = self.flat(self.avg(x)).flatten(1)
        return self.fc(self.dropout(x))


def seeded_torch(seed: int = 0, **kwargs) -> TorchTwin:
    torch.manual_seed(seed)
    model = TorchTwin(**kwargs)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.3)
    return model.eval()


def seeded_paddle(seed: int = 0, **kwargs) -> PaddleTwin:
    paddle.seed(seed)
    model = PaddleTwin(**kwargs)
    rng = np.random.default_rng(seed + 1)
    for key, value in model.state_dict().items():
        if key.endswith(("_mean", "_variance", "weight", "bias")) and value.ndim == 1:
            low = 0.5 if key.endswith(("_variance", "weight")) else -0.3
            value.set_value(rng.uniform(low, low + 0.6, value.shape).astype("float32"))
    model.eval()
    return model


def inputs(*sizes, seed: int = 7):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((1, 3, size, size)).astype(np.float32) for size in sizes]


def outputs(torch_model, paddle_model, x):
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    with paddle.no_grad():
        got = paddle_model(paddle.to_tensor(x)).numpy()
    return expected, got


def assert_outputs_agree(torch_model, paddle_model, x):
    expected, got = outputs(torch_model, paddle_model, x)
    diff = float(np.max(np.abs(got - expected)))
    assert diff <= 1e-5 * float(np.max(np.abs(expected))), f"outputs max|Δ| {diff:.3g} at input {x.shape}"


def test_the_public_names_are_exported_from_parity():
    assert parity.transfer_weights is transfer_weights
    assert parity.TransferError is TransferError
    assert issubclass(parity.ArchitecturesDiffer, parity.TransferError)
    assert issubclass(parity.TransferRefused, parity.TransferError)
    assert not issubclass(ArchitecturesDiffer, TransferRefused)


def test_torch_to_paddle_renames_transposes_and_fills_batch_norm_parameters_in_place():
    torch_model, paddle_model = seeded_torch(), seeded_paddle(seed=3)
    held = paddle_model.bn1._mean  # a reference the user holds stays the model's tensor
    pairing = transfer_weights(torch_model, paddle_model, inputs(32)[0])
    assert pairing.rule == "execution_order" and pairing.direction == "torch_to_paddle"
    entries = {entry.source: entry for entry in pairing}
    assert entries["stem.1.running_mean"] == MapEntry("stem.1.running_mean", "bn1._mean", False)
    assert entries["stem.1.running_var"].target == "bn1._variance"
    assert entries["mix_bn.running_var"].target == "features.1._variance"
    assert entries["head.weight"] == MapEntry("head.weight", "fc.weight", True)
    assert pairing.transposed == ["fc.weight"]
    assert not any("num_batches_tracked" in entry.source for entry in pairing)
    assert len(pairing) == len(paddle_model.state_dict()) == 13
    assert paddle_model.bn1._mean is held and isinstance(held, paddle.base.framework.EagerParamBase)
    np.testing.assert_array_equal(held.numpy(), torch_model.stem[1].running_mean.numpy())
    np.testing.assert_array_equal(paddle_model.fc.weight.numpy(), torch_model.head.weight.detach().numpy().T)
    assert_outputs_agree(torch_model, paddle_model, inputs(32)[0])
    (check,) = pairing.checks
    assert check.input_shape == (1, 3, 32, 32) and check.max_abs_diff <= check.bound


def test_paddle_to_torch_fills_the_torch_tensors_in_place():
    torch_model, paddle_model = seeded_torch(seed=5), seeded_paddle(seed=0)
    weight, running_var = torch_model.head.weight, torch_model.mix_bn.running_var
    before = weight.detach().clone()
    pairing = transfer_weights(torch_model, paddle_model, inputs(24)[0], direction="paddle_to_torch")
    assert pairing.direction == "paddle_to_torch"
    assert MapEntry("fc.weight", "head.weight", True) in pairing.entries
    assert torch_model.head.weight is weight and torch_model.mix_bn.running_var is running_var
    assert not torch.equal(weight, before)
    np.testing.assert_array_equal(weight.detach().numpy(), paddle_model.fc.weight.numpy().T)
    np.testing.assert_array_equal(running_var.numpy(), paddle_model.features[1]._variance.numpy())
    assert_outputs_agree(torch_model, paddle_model, inputs(24)[0])


def test_every_example_input_is_checked_whatever_its_size():
    torch_model, paddle_model = seeded_torch(), seeded_paddle()
    pairing = transfer_weights(torch_model, paddle_model, inputs(24, 40, 31))
    assert [check.input_shape[2:] for check in pairing.checks] == [(24, 24), (40, 40), (31, 31)]
    with pytest.raises(ValueError, match="empty list"):
        transfer_weights(torch_model, paddle_model, [])
    with pytest.raises(ValueError, match=r"example_input\[1\] must be a numeric"):
        transfer_weights(torch_model, paddle_model, [inputs(24)[0], np.array(["a"])])


def test_exclusive_average_pooling_is_named_with_both_values():
    """Paddle's AvgPool2D(exclusive=True) against torch's count_include_pad=True: they part on the padded border."""
    torch_model, paddle_model = seeded_torch(), seeded_paddle(exclusive_pool=True)
    with pytest.raises(ArchitecturesDiffer) as info:
        transfer_weights(torch_model, paddle_model, inputs(24, 40))
    message = str(info.value)
    assert "\n" not in message
    assert "example input #0 (1, 3, 24, 24)" in message
    assert "torch pool (AvgPool2d) / paddle avg (AvgPool2D)" in message
    assert "count_include_pad True vs False" in message, message
    divergence = info.value.divergence
    assert (divergence.torch_path, divergence.paddle_path) == ("pool", "avg")
    assert divergence.torch_shape == divergence.paddle_shape == (1, 12, 12, 12)
    assert divergence.max_abs_diff > divergence.bound


def test_a_refused_transfer_leaves_the_target_as_it_was():
    torch_model, paddle_model = seeded_torch(), seeded_paddle(exclusive_pool=True)
    before = {key: value.numpy().copy() for key, value in paddle_model.state_dict().items()}
    with pytest.raises(ArchitecturesDiffer):
        transfer_weights(torch_model, paddle_model, inputs(24))
    for key, value in paddle_model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), before[key], err_msg=key)


def test_inference_dropout_scaling_is_named_with_both_values():
    torch_model, paddle_model = seeded_torch(), seeded_paddle(dropout_mode="downscale_in_infer")
    with pytest.raises(ArchitecturesDiffer) as info:
        transfer_weights(torch_model, paddle_model, inputs(24))
    message = str(info.value)
    assert "torch drop (Dropout) / paddle dropout (Dropout)" in message
    assert "inference_scale 1.0 vs 0.75" in message, message


def test_a_bias_on_one_side_only_is_named():
    torch_model, paddle_model = seeded_torch(), seeded_paddle(conv_bias=False)
    with pytest.raises(ArchitecturesDiffer) as info:
        transfer_weights(torch_model, paddle_model, inputs(24))
    message = str(info.value)
    assert "torch mix (Conv2d) / paddle features.0 (Conv2D)" in message, message
    assert "bias present vs absent" in message, message


def test_a_model_built_twice_pairs_by_structure_not_by_parameter_names():
    torch_model = seeded_torch()
    first, second = seeded_paddle(), seeded_paddle()
    assert first.fc.weight.name != second.fc.weight.name  # paddle.utils.unique_name suffixed the second
    for paddle_model in (first, second):
        pairing = transfer_weights(torch_model, paddle_model, inputs(24)[0])
        assert {entry.target for entry in pairing} == set(paddle_model.state_dict())
        assert_outputs_agree(torch_model, paddle_model, inputs(24)[0])


def test_the_map_file_round_trips_and_converts_a_state_dict(tmp_path):
    torch_model, paddle_model = seeded_torch(), seeded_paddle()
    pairing = transfer_weights(torch_model, paddle_model, inputs(24)[0])
    weights, map_path = save_paddle_weights(paddle_model, tmp_path / "twin.pdparams", pairing)
    assert map_path == tmp_path / "twin.map.tsv"
    lines = map_path.read_text().splitlines()
    assert lines[0] == "# parity transfer map v1 direction=torch_to_paddle rule=execution_order"
    assert lines[1].split("\t") == ["source", "target", "transposed", "source_shape", "target_shape"]
    assert "head.weight\tfc.weight\tyes\t5x12\t12x5" in lines
    loaded = TransferMap.load(map_path)
    assert loaded.entries == pairing.entries and loaded.direction == pairing.direction and loaded.rule == pairing.rule
    assert dict(loaded.source_shapes) == dict(pairing.source_shapes)
    torch_state = {key: value.numpy() for key, value in torch_model.state_dict().items()}
    converted = loaded.convert(torch_state)
    saved = paddle.load(str(weights), return_numpy=True)
    assert set(converted) == set(saved) == set(paddle_model.state_dict())
    for key in converted:
        np.testing.assert_array_equal(converted[key], saved[key], err_msg=key)
    bad = tmp_path / "bad.tsv"
    bad.write_text("source\ttarget\n")
    with pytest.raises(TransferError, match="not a parity transfer map"):
        TransferMap.load(bad)


def test_tensors_that_do_not_pair_up_are_named():
    torch_model, paddle_model = seeded_torch(head_bias=False), seeded_paddle()
    with pytest.raises(ArchitecturesDiffer) as info:
        transfer_weights(torch_model, paddle_model, inputs(24)[0])
    message = str(info.value)
    assert "torch head (Linear) / paddle fc (Linear)" in message and "bias absent vs present" in message


# -- a squeeze-excite twin: the differences met on real pairs, each named -------------------


class TorchSqueeze(torch.nn.Module):
    """conv -> squeeze-excite (hard-sigmoid gate) -> F.pad then 2x2 max-pool -> head; no ReLU, so values are negative too."""

    def __init__(self, width: int = 4, residual: bool = False):
        super().__init__()
        self.residual = residual
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.se_reduce = torch.nn.Conv2d(8, width, 1)
        self.se_act = torch.nn.ReLU()
        self.se_expand = torch.nn.Conv2d(width, 8, 1)
        self.gate = torch.nn.Hardsigmoid()
        self.pool = torch.nn.MaxPool2d(2, stride=1)
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        x = self.conv(x)
        scale = self.gate(self.se_expand(self.se_act(self.se_reduce(x.mean((2, 3), keepdim=True)))))
        x = x * scale + x if self.residual else x * scale
        x = self.pool(torch.nn.functional.pad(x, (0, 1, 0, 1)))
        return self.head(x.mean((2, 3)))


class PaddleHardsigmoid(paddle.nn.Layer):
    """PaddleClas's MobileNetV3 gate: F.hardsigmoid with its own slope and offset."""

    def __init__(self, slope: float, offset: float = 0.5):
        super().__init__()
        self.slope, self.offset = slope, offset

    def forward(self, x):
        return paddle.nn.functional.hardsigmoid(x, slope=self.slope, offset=self.offset)


class PaddleSqueeze(paddle.nn.Layer):
    def __init__(self, width: int = 4, slope: float = 1 / 6, pool_padding="SAME"):
        super().__init__()
        self.stem = paddle.nn.Conv2D(3, 8, 3, padding=1)
        self.reduce = paddle.nn.Conv2D(8, width, 1)
        self.act = paddle.nn.ReLU()
        self.expand = paddle.nn.Conv2D(width, 8, 1)
        self.hardsigmoid = PaddleHardsigmoid(slope)
        self.pool = paddle.nn.MaxPool2D(2, stride=1, padding=pool_padding)
        self.fc = paddle.nn.Linear(8, 3)

    def forward(self, x):
        x = self.stem(x)
        x = x * self.hardsigmoid(self.expand(self.act(self.reduce(x.mean((2, 3), keepdim=True)))))
        return self.fc(self.pool(x).mean((2, 3)))


def squeeze_pair(torch_kwargs=None, paddle_kwargs=None):
    torch.manual_seed(0)
    paddle.seed(0)
    return TorchSqueeze(**(torch_kwargs or {})).eval(), PaddleSqueeze(**(paddle_kwargs or {}))


def refusal(torch_model, paddle_model, size: int = 16) -> ArchitecturesDiffer:
    with pytest.raises(ArchitecturesDiffer) as info:
        transfer_weights(torch_model, paddle_model, inputs(size)[0])
    assert "\n" not in str(info.value)
    return info.value


def test_max_pool_same_padding_against_a_zero_pad_is_named_on_negative_inputs():
    error = refusal(*squeeze_pair())
    assert (error.divergence.torch_path, error.divergence.paddle_path) == ("pool", "pool"), str(error)
    message = str(error)
    assert "torch's input is paddle's zero-padded by (left, right, top, bottom) (0, 1, 0, 1)" in message, message
    assert "padding (0, 0) vs SAME" in message, message


def test_hard_sigmoid_slope_is_named_with_both_values():
    error = refusal(*squeeze_pair(paddle_kwargs={"slope": 0.2}))
    assert (error.divergence.torch_path, error.divergence.paddle_path) == ("gate", "hardsigmoid"), str(error)
    assert "hard_sigmoid slope 0.1666666667, offset 0.5 vs slope 0.2, offset 0.5" in str(error)


def test_a_squeeze_excite_of_another_width_is_a_pairing_problem_named():
    error = refusal(*squeeze_pair(paddle_kwargs={"width": 2}))
    message = str(error)
    assert "torch se_reduce (Conv2d) / paddle reduce (Conv2D): weight (4, 8, 1, 1) vs weight (2, 8, 1, 1)" in message, message


def test_a_block_wired_differently_is_placed_between_the_layers_that_still_agree():
    error = refusal(*squeeze_pair(torch_kwargs={"residual": True}))
    divergence = error.divergence
    # The gate agrees; the sum after it exists on the torch side only.  The pool, whose input
    # already differs, is downstream and must not be blamed.
    assert divergence.torch_path.startswith("between se_expand and") and divergence.paddle_path.startswith("between expand and")
    assert "a block wired differently" in str(error)
    assert divergence.torch_path != "pool"


def test_a_pairing_refusal_carries_its_divergence_too():
    error = refusal(*squeeze_pair(paddle_kwargs={"width": 2}))
    divergence = error.divergence
    assert (divergence.kind, divergence.torch_path, divergence.paddle_path) == ("architecture", "se_reduce", "reduce")
    assert (divergence.torch_type, divergence.paddle_type, divergence.pair_index) == ("Conv2d", "Conv2D", 1)


# -- a real hub pair: timm lcnet_100 <-> PaddleClas PPLCNet_x1_0 (3M weights, 64x64) ------------


def lcnet_pair():
    timm = pytest.importorskip("timm")
    if importlib.util.find_spec("paddleclas") is None:  # its package __init__ is never imported (training code)
        pytest.skip("paddleclas is not installed (the 'hubs' extra)")
    from parity.hubs.paddleclas_loader import paddleclas_model

    torch.manual_seed(0)
    torch_model = timm.create_model("lcnet_100", pretrained=False).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # statistics and affine terms that are not the identity
        for module in torch_model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
    return torch_model, paddleclas_model("PPLCNet_x1_0")


def test_timm_lcnet_against_paddleclas_is_refused_at_each_real_difference_then_transfers():
    torch_model, paddle_model = lcnet_pair()
    x = inputs(64)[0]
    with pytest.raises(ArchitecturesDiffer) as info:
        transfer_weights(torch_model, paddle_model, x)
    assert (info.value.divergence.torch_path, info.value.divergence.paddle_path) == ("conv_head", "last_conv")
    assert "bias present vs absent" in str(info.value)

    torch_model.conv_head.register_parameter("bias", None)  # PaddleClas's last conv has none
    with pytest.raises(ArchitecturesDiffer) as info:
        transfer_weights(torch_model, paddle_model, x)
    assert info.value.divergence.paddle_path == "dropout"
    assert "inference_scale 1.0 vs 0.8" in str(info.value) and "downscale_in_infer" in str(info.value)

    paddle_model.dropout.mode = "upscale_in_train"  # the identity at inference, as torch's
    pairing = transfer_weights(torch_model, paddle_model, inputs(64, 72))
    assert pairing.rule == "execution_order" and len(pairing) == len(paddle_model.state_dict())
    assert all(check.relative <= 1e-5 for check in pairing.checks), pairing.checks
    back = transfer_weights(torch_model, paddle_model, x, direction="paddle_to_torch")
    assert {(e.target, e.source) for e in back} == {(e.source, e.target) for e in pairing}


class TorchShiftBlock(torch.nn.Module):
    def __init__(self, shift_size: int):
        super().__init__()
        self.shift_size = shift_size
        self.first = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.second = torch.nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.second(torch.roll(self.first(x), shifts=(self.shift_size, self.shift_size), dims=(2, 3)))


class PaddleShiftBlock(paddle.nn.Layer):
    def __init__(self, shift_size: int):
        super().__init__()
        self.shift_size = shift_size
        self.conv_a = paddle.nn.Conv2D(3, 4, 3, padding=1)
        self.conv_b = paddle.nn.Conv2D(4, 2, 1)

    def forward(self, x):
        return self.conv_b(paddle.roll(self.conv_a(x), shifts=(self.shift_size, self.shift_size), axis=(2, 3)))


def test_a_setting_of_the_enclosing_block_is_named_when_no_layer_is_to_blame():
    """Swin's case: a shifted window one side keeps (a functional roll): the blocks' shift_size is named."""
    torch.manual_seed(0)
    torch_model = torch.nn.Sequential(TorchShiftBlock(shift_size=0)).eval()
    paddle_model = paddle.nn.Sequential(PaddleShiftBlock(shift_size=2))
    error = refusal(torch_model, paddle_model)
    assert error.divergence.torch_path == "between 0.first and 0.second", str(error)
    assert "the blocks around it differ: torch 0 (TorchShiftBlock) / paddle 0 (PaddleShiftBlock): shift_size (0, 0) vs (2, 2)" in str(error)


# -- fused modules: timm's BatchNormAct2d is a batch norm and its activation in one module ----


def fused_pair(paddle_eps: float = 1e-5, paddle_act: str = "silu"):
    layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    torch_model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, bias=False), layers.BatchNormAct2d(6, act_layer=torch.nn.SiLU), torch.nn.Conv2d(6, 2, 1)
    )
    with torch.no_grad():
        torch_model[1].running_mean.uniform_(-0.3, 0.3)
        torch_model[1].running_var.uniform_(0.5, 1.5)
    torch_model.eval()
    if paddle_act == "silu":
        paddle_model = paddle.nn.Sequential(
            paddle.nn.Conv2D(3, 6, 3, bias_attr=False), paddle.nn.BatchNorm2D(6, epsilon=paddle_eps), paddle.nn.Silu(),
            paddle.nn.Conv2D(6, 2, 1),
        )
    else:  # PaddleClas's legacy layer with the activation fused into the kernel
        paddle_model = paddle.nn.Sequential(
            paddle.nn.Conv2D(3, 6, 3, bias_attr=False), paddle.nn.BatchNorm(6, act=paddle_act, epsilon=paddle_eps),
            paddle.nn.Conv2D(6, 2, 1),
        )
    return torch_model, paddle_model


@pytest.mark.parametrize("paddle_act", ["silu", "swish"])
def test_a_fused_batch_norm_act_transfers_to_either_paddle_spelling(paddle_act):
    torch_model, paddle_model = fused_pair(paddle_act=paddle_act)
    pairing = transfer_weights(torch_model, paddle_model, inputs(12)[0])
    assert MapEntry("1.running_var", "1._variance", False) in pairing.entries


@pytest.mark.parametrize("paddle_act", ["silu", "swish"])
def test_a_fused_batch_norm_act_is_compared_before_its_activation(paddle_act):
    """eps 1e-3 on the Paddle side: the batch norm itself is named, not the activation after it."""
    torch_model, paddle_model = fused_pair(paddle_eps=1e-3, paddle_act=paddle_act)
    error = refusal(torch_model, paddle_model, size=12)
    assert (error.divergence.torch_path, error.divergence.paddle_path) == ("1", "1"), str(error)
    assert "inputs and weights agree; eps 1e-05 vs 0.001" in str(error)


def test_fused_activations_that_differ_are_named_with_both_tails():
    torch_model, paddle_model = fused_pair(paddle_act="relu")
    error = refusal(torch_model, paddle_model, size=12)
    assert (error.divergence.torch_path, error.divergence.paddle_path) == ("1", "1"), str(error)
    assert "their fused tails differ: torch applies SiLU, paddle act='relu'" in str(error)


def test_an_input_size_one_model_cannot_run_at_is_a_one_line_transfer_error():
    torch.manual_seed(0)
    torch_model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 12 * 12, 4)).eval()
    paddle_model = paddle.nn.Sequential(paddle.nn.Flatten(), paddle.nn.Linear(3 * 12 * 12, 4))
    pairing = transfer_weights(torch_model, paddle_model, inputs(12)[0])
    assert pairing.transposed == ["1.weight"]
    with pytest.raises(TransferError) as info:
        transfer_weights(torch_model, paddle_model, inputs(12, 16))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("the torch model cannot run on the input (1, 3, 16, 16) float32 (RuntimeError: "), message
