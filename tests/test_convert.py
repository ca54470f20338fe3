"""``python -m parity.convert``: a faithful transfer, and one-line refusals that write nothing."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from parity.convert import main

REPO_ROOT = Path(__file__).resolve().parent.parent
PROG = "python -m parity.convert"

pytestmark = pytest.mark.timeout(300)


def run_convert(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run(
        [sys.executable, "-m", "parity.convert", *map(str, args)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def error_lines(stderr: str) -> list:
    return stderr.strip().splitlines()


def assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not out.with_name(out.name + ".sha256").exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def refused_in_process(capsys, source: Path, out: Path, match: str) -> str:
    with pytest.raises(SystemExit) as info:
        main([str(source), str(out)])
    assert info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"{PROG}: error: ")
    assert match in lines[0], lines[0]
    assert captured.out == ""
    assert_nothing_written(out)
    return lines[0]


# -- a checkpoint of our own ---------------------------------------------------------


@pytest.fixture(scope="module")
def torch_state():
    """Seeded torchvision ResNet50 with randomised BN statistics and affine terms.

    Fresh BN layers have mean 0, variance 1, weight 1, bias 0, which would hide a
    mix-up of running_mean/running_var or weight/bias in the transfer.
    """
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet50()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)
        model.fc.bias.copy_(torch.randn(model.fc.bias.shape, generator=generator) * 0.1)
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, torch_state) -> Path:
    import torch

    path = tmp_path_factory.mktemp("ckpt") / "resnet50.pth"
    torch.save(torch_state, path)
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory, checkpoint):
    out = tmp_path_factory.mktemp("converted") / "resnet50.pdparams"
    result = run_convert(checkpoint, out)
    return result, out


def test_cli_converts_and_reports(converted, torch_state):
    from parity.weights import sha256_of

    result, out = converted
    assert result.returncode == 0, result.stderr
    assert error_lines(result.stderr) == []
    expected_count = len([k for k in torch_state if not k.endswith("num_batches_tracked")])
    assert f"converted {expected_count} tensors" in result.stdout
    assert sha256_of(out) in result.stdout
    assert out.with_name(out.name + ".sha256").read_text().split()[0] == sha256_of(out)


def test_the_map_of_the_conversion_is_written_beside_it(converted, torch_state):
    from parity.transfer import MapEntry, TransferMap

    result, out = converted
    map_path = out.with_suffix(".map.tsv")
    assert f"map of the tensors (torch key, paddle key, transposed): {map_path}" in result.stdout
    loaded = TransferMap.load(map_path)
    assert loaded.direction == "torch_to_paddle" and loaded.rule == "name"
    assert MapEntry("fc.weight", "fc.weight", True) in loaded.entries
    assert MapEntry("bn1.running_var", "bn1._variance", False) in loaded.entries
    assert {entry.source for entry in loaded} == {k for k in torch_state if not k.endswith("num_batches_tracked")}
    assert loaded.transposed == ["fc.weight"]


def test_keys_renamed_fc_transposed_num_batches_tracked_dropped(converted, torch_state):
    from parity.weights import load_paddle_state_dict

    _, out = converted
    state = load_paddle_state_dict(out)
    assert not any(k.endswith("num_batches_tracked") for k in state)
    assert not any("running_" in k for k in state)
    assert np.array_equal(state["fc.weight"], torch_state["fc.weight"].numpy().T)
    assert state["fc.weight"].shape == (2048, 1000)
    assert np.array_equal(state["bn1._mean"], torch_state["bn1.running_mean"].numpy())
    assert np.array_equal(state["layer3.2.bn2._variance"], torch_state["layer3.2.bn2.running_var"].numpy())
    assert np.array_equal(state["layer4.0.downsample.1.bias"], torch_state["layer4.0.downsample.1.bias"].numpy())


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-4), ("float64", 1e-9)])
def test_logits_match_torch(converted, torch_state, dtype, rtol):
    import paddle
    import torch

    from parity.weights import load_paddle_state_dict, paddle_resnet50, torch_resnet50

    _, out = converted
    x = np.random.default_rng(0).standard_normal((1, 3, 112, 112)).astype(dtype)
    torch_model = torch_resnet50({k: v.numpy() for k, v in torch_state.items()}, dtype)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    paddle_model = paddle_resnet50(load_paddle_state_dict(out), dtype)
    with paddle.no_grad():
        got = paddle_model(paddle.to_tensor(x)).numpy()
    assert got.dtype == np.dtype(dtype)
    scale = np.max(np.abs(expected))
    assert scale > 0
    assert np.max(np.abs(got - expected)) <= rtol * scale, (np.max(np.abs(got - expected)) / scale)


# -- refusals: one line, exit 2, nothing at OUT ---------------------------------------


def test_renamed_key(tmp_path, capsys, torch_state):
    import torch

    state = dict(torch_state)
    state["layer1.0.conv1.weights"] = state.pop("layer1.0.conv1.weight")
    source = tmp_path / "renamed.pth"
    torch.save(state, source)
    line = refused_in_process(capsys, source, tmp_path / "out.pdparams", "missing keys: layer1.0.conv1.weight")
    assert "unexpected keys: layer1.0.conv1.weights" in line


def test_wrong_shape(tmp_path, capsys, torch_state):
    import torch

    state = dict(torch_state)
    state["layer2.0.conv2.weight"] = torch.zeros(128, 128, 5, 5)
    source = tmp_path / "shape.pth"
    torch.save(state, source)
    line = refused_in_process(capsys, source, tmp_path / "out.pdparams", "layer2.0.conv2.weight")
    assert "(128, 128, 5, 5)" in line and "(expected (128, 128, 3, 3))" in line


def test_not_a_state_dict(tmp_path, capsys):
    import torch

    source = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], source)
    refused_in_process(capsys, source, tmp_path / "out.pdparams", "does not hold a state dict")


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("text.pth", b"hello, this is not a checkpoint\n", "is not a PyTorch checkpoint"),
        ("empty.pth", b"", "empty file"),
    ],
)
def test_bad_bytes(tmp_path, capsys, name, content, match):
    source = tmp_path / name
    source.write_bytes(content)
    refused_in_process(capsys, source, tmp_path / "out.pdparams", match)


def test_truncated(tmp_path, capsys, checkpoint):
    source = tmp_path / "truncated.pth"
    with open(checkpoint, "rb") as handle:
        source.write_bytes(handle.read(1000))
    refused_in_process(capsys, source, tmp_path / "out.pdparams", "truncated or corrupt")


def test_missing_and_directory(tmp_path, capsys):
    refused_in_process(capsys, tmp_path / "nope.pth", tmp_path / "out.pdparams", "not found")
    refused_in_process(capsys, tmp_path, tmp_path / "out.pdparams", "is a directory")


def test_pdparams_as_input(tmp_path, capsys, converted):
    _, pdparams = converted
    refused_in_process(capsys, pdparams, tmp_path / "out.pdparams", "is a Paddle .pdparams")


def test_failed_conversion_keeps_previous_output(tmp_path, capsys):
    out = tmp_path / "out.pdparams"
    out.write_bytes(b"previous")
    source = tmp_path / "text.pth"
    source.write_bytes(b"garbage")
    with pytest.raises(SystemExit):
        main([str(source), str(out)])
    assert out.read_bytes() == b"previous"
    assert {p.name for p in tmp_path.iterdir()} == {"out.pdparams", "text.pth"}


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_plain_pickle_refused(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    source = tmp_path / "evil.pth"
    with open(source, "wb") as handle:
        pickle.dump(_Evil(marker), handle, protocol=2)
    refused_in_process(capsys, source, tmp_path / "out.pdparams", "was refused")
    assert not marker.exists()


def test_malicious_torch_save_refused_cli(tmp_path):
    """End to end, in a fresh interpreter: refused, one line, no traceback, nothing run or written."""
    import torch

    marker = tmp_path / "PWNED"
    source = tmp_path / "evil.pth"
    torch.save({"conv1.weight": _Evil(marker)}, source)
    out = tmp_path / "out.pdparams"
    result = run_convert(source, out)
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith(f"{PROG}: error: weights file {source} was refused")
    assert "system" in lines[0]
    assert not marker.exists()
    assert_nothing_written(out)


def test_garbage_cli_no_traceback(tmp_path):
    source = tmp_path / "text.pth"
    source.write_text("hello, this is not a checkpoint\n")
    out = tmp_path / "out.pdparams"
    result = run_convert(source, out)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{PROG}: error: weights file {source} is not a PyTorch checkpoint")
    assert_nothing_written(out)


# -- --arch: the model zoo -------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory) -> Path:
    """Seeded torchvision ResNet18 with randomised batch-norm statistics, made here."""
    import torch

    from parity.weights import seeded_torch_state

    path = tmp_path_factory.mktemp("ckpt18") / "resnet18.pth"
    torch.save(seeded_torch_state("resnet18", seed=0, randomize_batch_norm=True), path)
    return path


def test_cli_arch_converts_and_verifies(resnet18_checkpoint, tmp_path):
    from parity.weights import load_paddle_state_dict, load_torch_state_dict, sha256_of

    out = tmp_path / "resnet18.pdparams"
    result = run_convert("--arch", "resnet18", resnet18_checkpoint, out)
    assert result.returncode == 0, result.stderr
    assert error_lines(result.stderr) == []
    assert "converted 102 tensors (resnet18, name rule)" in result.stdout
    assert "verified: resnet18: logits agree" in result.stdout
    assert f"sha256 {sha256_of(out)}" in result.stdout
    state, source = load_paddle_state_dict(out), load_torch_state_dict(resnet18_checkpoint)
    assert np.array_equal(state["fc.weight"], source["fc.weight"].T)
    assert np.array_equal(state["layer3.1.bn2._variance"], source["layer3.1.bn2.running_var"])


def test_cli_arch_execution_order_in_process(tmp_path, capsys):
    import torch

    from parity.weights import load_paddle_state_dict, seeded_torch_state

    source = tmp_path / "shufflenet.pth"
    torch.save(seeded_torch_state("shufflenet_v2_x1_0", seed=0, randomize_batch_norm=True), source)
    out = tmp_path / "shufflenet.pdparams"
    assert main(["--arch", "shufflenet_v2_x1_0", str(source), str(out)]) == 0
    captured = capsys.readouterr()
    assert "converted 282 tensors (shufflenet_v2_x1_0, execution_order rule)" in captured.out
    assert "verified: shufflenet_v2_x1_0: logits agree" in captured.out
    assert "2_1._conv_dw_1.1._variance" in load_paddle_state_dict(out)


def _refused_with_args(capsys, args, out: Path, match: str) -> str:
    with pytest.raises(SystemExit) as info:
        main([*map(str, args)])
    assert info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"{PROG}: error: ")
    assert match in lines[0], lines[0]
    assert captured.out == ""
    assert_nothing_written(out)
    return lines[0]


def test_cli_wrong_arch_is_refused(resnet18_checkpoint, tmp_path, capsys):
    out = tmp_path / "out.pdparams"
    # a ResNet18 checkpoint under the default arch (resnet50) ...
    line = _refused_with_args(capsys, [resnet18_checkpoint, out], out, "the state dict does not fit torchvision's resnet50")
    assert "missing keys: layer1.0.bn3.bias" in line and "wrong shapes: " in line
    # ... and under an arch whose layers have other names altogether
    line = _refused_with_args(
        capsys, ["--arch", "shufflenet_v2_x1_0", resnet18_checkpoint, out], out, "does not fit torchvision's shufflenet_v2_x1_0"
    )
    assert "unexpected keys: bn1.bias" in line


def test_cli_unknown_arch(resnet18_checkpoint, tmp_path, capsys):
    out = tmp_path / "out.pdparams"
    line = _refused_with_args(capsys, ["--arch", "resnet5", resnet18_checkpoint, out], out, "unknown --arch 'resnet5'")
    assert "resnet50" in line and "shufflenet_v2_x1_0" in line


def test_cli_architectures_differ_is_refused(tmp_path, capsys):
    import torch

    from parity.weights import seeded_torch_state

    source = tmp_path / "squeezenet.pth"
    torch.save(seeded_torch_state("squeezenet1_1", seed=0), source)
    out = tmp_path / "out.pdparams"
    line = _refused_with_args(capsys, ["--arch", "squeezenet1_1", source, out], out, "architectures differ at torch features.0 (Conv2d) / paddle _conv (Conv2D)")
    assert "padding (0, 0) vs (1, 1)" in line


def test_cli_corrupted_checkpoint_cannot_be_verified(resnet18_checkpoint, tmp_path, capsys):
    from parity.weights import load_torch_state_dict

    import torch

    state = {k: torch.from_numpy(v) for k, v in load_torch_state_dict(resnet18_checkpoint).items()}
    state["bn1.running_var"] = -state["bn1.running_var"]  # sqrt of a negative variance: NaN everywhere
    source = tmp_path / "nan.pth"
    torch.save(state, source)
    out = tmp_path / "out.pdparams"
    _refused_with_args(capsys, ["--arch", "resnet18", source, out], out, "logits on the verification input are not finite")


def test_cli_help_lists_the_architectures(capsys):
    from parity.model_zoo import ARCHS

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert "--arch NAME" in text and "forward pass" in text
    for name in ARCHS:
        assert name in text
    assert "execution-order pairing" in text and "differs: refused" in text
