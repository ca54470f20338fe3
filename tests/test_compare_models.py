"""``parity.compare_models`` on model pairs defined here, and the first-diverging-layer diagnosis.

A user porting their own network gets the same comparison, records and
report as the model zoo: a small CNN with batch norms, and a transformer
whose tokens need a ``reshape_transform`` on each side (upstream's ViT
path).  Breaking one batch norm's running variance in the Paddle copy must
fail the case at the logits and name exactly that layer on both sides, in
the record and in the report, both through ``compare_models`` (in process)
and through ``python -m parity``'s runner (the diagnosis subprocess).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
import pytest
import torch

import parity
from model_pairs import GRID, PATCH, make_vit_pair
from paddle_impl.utils import reshape_transforms as paddle_reshape

pytestmark = pytest.mark.filterwarnings("ignore:No ccache found:UserWarning")


@pytest.fixture(scope="module", autouse=True)
def _pinned_threads(one_thread):
    """Every test of this module on one thread (conftest.one_thread)."""


class TorchNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.body = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU())
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.head = torch.nn.Linear(16, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.body(self.stem(x))), 1))


class PaddleNet(paddle.nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        self.stem = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3, padding=1), paddle.nn.BatchNorm2D(8), paddle.nn.ReLU())
        self.body = paddle.nn.Sequential(paddle.nn.Conv2D(8, 16, 3, stride=2, padding=1), paddle.nn.BatchNorm2D(16), paddle.nn.ReLU())
        self.pool = paddle.nn.AdaptiveAvgPool2D(1)
        self.head = paddle.nn.Linear(16, 10)

    def forward(self, x):
        return self.head(paddle.flatten(self.pool(self.body(self.stem(x))), 1))


def _cnn_pair(corrupt_variance_of: str = ""):
    torch.manual_seed(0)
    torch_model = TorchNet()
    with torch.no_grad():  # batch-norm statistics that are not the identity, so a mix-up would show
        for module in torch_model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    torch_model.eval()
    state = {}
    for key, value in torch_model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        array = value.numpy()
        key = key.replace("running_mean", "_mean").replace("running_var", "_variance")
        state[key] = np.ascontiguousarray(array.T) if key == "head.weight" else array
    if corrupt_variance_of:
        state[f"{corrupt_variance_of}._variance"] = state[f"{corrupt_variance_of}._variance"] * 1.5
    paddle_model = PaddleNet()
    paddle_model.set_state_dict(state)
    paddle_model.eval()
    return torch_model, paddle_model


def _input(shape=(2, 3, 32, 32)) -> np.ndarray:
    return np.random.RandomState(0).rand(*shape).astype(np.float32)


def test_a_small_cnn_pair_passes_every_stage_and_writes_the_report(tmp_path):
    torch_model, paddle_model = _cnn_pair()
    records = parity.compare_models(
        torch_model, paddle_model, _input(), torch_layers=[torch_model.body], paddle_layers=["body"],
        methods=["gradcam", "scorecam", "eigencam"], smooth=["no_smooth", "eigen_smooth"], out=tmp_path / "report",
    )
    assert [r["id"] for r in records] == [f"custom/{m}-{s}" for m in ("gradcam", "scorecam", "eigencam")
                                          for s in ("no_smooth", "eigen_smooth")]
    for record in records:
        assert record["passed"], record["message"]
        assert record["target_layers"] == {"torch": "body", "paddle": "body"}
        assert {s["stage"] for s in record["stages"]} >= {"input", "logits", "activations", "cam", "overlay"}
    report = (tmp_path / "report" / "parity.md").read_text()
    assert "custom/gradcam-no_smooth" in report
    results = json.loads((tmp_path / "report" / "parity.json").read_text())
    assert results["summary"]["passed"] == 6
    assert (tmp_path / "report" / records[0]["files"]["diff_jpg"]).is_file()


def test_a_list_of_inputs_of_different_sizes_is_checked_input_by_input(tmp_path):
    torch_model, paddle_model = _cnn_pair()
    inputs = [_input((1, 3, 24, 24)), _input((2, 3, 40, 32))]
    records = parity.compare_models(
        torch_model, paddle_model, inputs, torch_layers=["body"], paddle_layers=["body"], methods=["gradcam", "eigencam"],
        out=tmp_path / "report",
    )
    assert [r["id"] for r in records] == ["custom#0/gradcam-no_smooth", "custom#0/eigencam-no_smooth",
                                          "custom#1/gradcam-no_smooth", "custom#1/eigencam-no_smooth"]
    for record, shape in zip(records, [(1, 3, 24, 24)] * 2 + [(2, 3, 40, 32)] * 2):
        assert record["passed"], record["message"]
        stage = next(s for s in record["stages"] if s["stage"] == "input")
        assert tuple(stage["shape"])[-4:] == shape  # the stage stacks the calls: (calls, B, C, H, W)
    assert json.loads((tmp_path / "report" / "parity.json").read_text())["summary"]["passed"] == 4
    with pytest.raises(ValueError, match=r"input\[1\] must be one \(B, C, H, W\) array"):
        parity.compare_models(torch_model, paddle_model, [inputs[0], inputs[0][0]], torch_layers=["body"],
                              paddle_layers=["body"])


def test_each_input_of_a_list_is_diagnosed_on_its_own():
    """A corrupted batch norm fails every input of the list, and each record names that layer."""
    torch_model, paddle_model = _cnn_pair(corrupt_variance_of="stem.1")
    records = parity.compare_models(
        torch_model, paddle_model, [_input((1, 3, 16, 16)), _input((1, 3, 28, 20))], torch_layers=["body"],
        paddle_layers=["body"], methods=["gradcam"],
    )
    assert len(records) == 2
    for record in records:
        assert not record["passed"] and record["first_divergent_stage"] == "logits"
        layer = record["first_divergent_layer"]
        assert (layer["kind"], layer["torch_path"], layer["paddle_path"]) == ("weights", "stem.1", "stem.1")


def test_a_transformer_with_reshape_transforms_passes():
    """Upstream's ViT path: tokens reshaped to a map on both sides, and AblationCAM with AblationLayerVit."""
    torch_model, paddle_model = make_vit_pair("float32")
    from pytorch_grad_cam.ablation_layer import AblationLayerVit as TorchAblationLayerVit
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform

    import paddle_impl

    records = parity.compare_models(
        torch_model, paddle_model, np.random.RandomState(1).randn(2, 3, GRID * PATCH, GRID * PATCH).astype(np.float32),
        torch_layers=["blocks[-1].norm1"], paddle_layers=["blocks[-1].norm1"], methods=["gradcam", "layercam", "ablationcam"],
        reshape_transform=(lambda t: vit_reshape_transform(t, GRID, GRID),
                           lambda t: paddle_reshape.vit_reshape_transform(t, GRID, GRID)),
        cam_kwargs={"ablationcam": ({"ablation_layer": TorchAblationLayerVit()},
                                    {"ablation_layer": paddle_impl.AblationLayerVit()})},
    )
    assert len(records) == 3
    for record in records:
        assert record["passed"], record["message"]
        activations = next(s for s in record["stages"] if s["stage"] == "activations")
        assert activations["shape"][-2:] == [GRID, GRID]  # the tokens became a (GRID x GRID) map


def test_a_corrupted_batch_norm_is_named_exactly(tmp_path):
    torch_model, paddle_model = _cnn_pair(corrupt_variance_of="body.1")
    records = parity.compare_models(
        torch_model, paddle_model, _input(), torch_layers=["body"], paddle_layers=["body"], methods=["gradcam"],
        out=tmp_path / "report",
    )
    (record,) = records
    assert not record["passed"]
    assert record["first_divergent_stage"] == "logits"
    layer = record["first_divergent_layer"]
    assert layer["found"] and layer["kind"] == "weights"
    assert (layer["torch_path"], layer["paddle_path"]) == ("body.1", "body.1")
    assert "body.1" in record["message"]
    assert "body.1" in (tmp_path / "report" / "parity.md").read_text()


@pytest.mark.timeout(600)
def test_the_runner_names_a_corrupted_batch_norm_of_a_zoo_model(tmp_path, reference_image):
    """Through python -m parity's runner: resnet18 whose Paddle copy has one running variance scaled."""
    from parity.weights import (
        ensure_default_weights, ensure_paddle_weights, load_paddle_state_dict, sha256_of, weights_identity,
    )
    from parity.cache import ResultCache
    from parity.config import make_config
    from parity.registry import Setup
    from parity.runner import run_matrix

    torch_path = ensure_default_weights(arch="resnet18")
    state = load_paddle_state_dict(ensure_paddle_weights(torch_path, arch="resnet18"))
    state["layer3.1.bn2._variance"] = state["layer3.1.bn2._variance"] * 1.5 + 0.5
    corrupted = tmp_path / "resnet18-corrupted.pdparams"
    paddle.save(state, str(corrupted))
    config = make_config(
        profile="quick", dtype="float32", out=tmp_path / "out", image=reference_image,
        image_sha256=sha256_of(reference_image),
        weights={"resnet18": (torch_path, corrupted, weights_identity(torch_path, arch="resnet18"))},
        methods=["gradcam", "eigencam"], smooths=["no_smooth"], jobs=1, threads=1,
        setup_transform=lambda setup: Setup(model="resnet18", size=(64, 64)),
    )
    config.cache = ResultCache(tmp_path / "cache", enabled=False)
    records = run_matrix(config)
    assert len(records) == 2
    for record in records:
        assert not record["passed"] and record["first_divergent_stage"] in ("logits", "activations"), record["message"]
        layer = record["first_divergent_layer"]
        assert layer["found"], layer
        assert (layer["torch_path"], layer["paddle_path"], layer["kind"]) == ("layer3.1.bn2", "layer3.1.bn2", "weights")
        assert "layer3.1.bn2" in record["message"]


class PaddleNetCallingThroughAList(PaddleNet):
    """PaddleNet whose forward reaches its blocks through a plain list, as paddle.vision's DenseNet does."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = [self.stem, self.body]

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(paddle.flatten(self.pool(x), 1))


def test_ablationcam_swaps_a_target_the_model_reaches_through_a_list():
    """AblationCAM must swap every reference to the target, not only the registered one."""
    from paddle_impl.utils.find_layers import layer_references

    torch_model, plain = _cnn_pair()
    paddle_model = PaddleNetCallingThroughAList()
    paddle_model.set_state_dict(plain.state_dict())
    paddle_model.eval()
    assert len(layer_references(paddle_model, paddle_model.body)) == 2  # _sub_layers["body"] and blocks[1]
    (record,) = parity.compare_models(torch_model, paddle_model, _input(), torch_layers=["body"], paddle_layers=["body"],
                                      methods=["ablationcam"])
    assert record["passed"], record["message"]
