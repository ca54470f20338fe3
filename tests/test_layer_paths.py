"""Target-layer expressions: parsed with ast (never evaluated), resolved on torch and Paddle models."""
from __future__ import annotations

import builtins

import paddle
import pytest
import torch

from paddle_impl.errors import UserError
from paddle_impl.layer_paths import (
    named_layer_paths,
    parse_layer_path,
    parse_layer_paths,
    path_of_layer,
    resolve_layer,
    resolve_layers,
)
from parity.model_zoo import ARCHS

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", autouse=True)
def _pinned_threads(one_thread):
    """Every test of this module on one thread (conftest.one_thread)."""


@pytest.fixture(scope="module")
def resnet18_pair():
    return ARCHS["resnet18"].new_torch_model().eval(), ARCHS["resnet18"].new_paddle_model()


@pytest.mark.parametrize(
    "text, steps, canonical",
    [
        ("layer4[-1]", (("attr", "layer4"), ("index", -1)), "layer4[-1]"),
        ("features[-1]", (("attr", "features"), ("index", -1)), "features[-1]"),
        ("features.denseblock4", (("attr", "features"), ("attr", "denseblock4")), "features.denseblock4"),
        ("blocks[2].norm1", (("attr", "blocks"), ("index", 2), ("attr", "norm1")), "blocks[2].norm1"),
        ("layer4.2.bn3", (("attr", "layer4"), ("index", 2), ("attr", "bn3")), "layer4[2].bn3"),
        ("  layer4 [ -1 ] ", (("attr", "layer4"), ("index", -1)), "layer4[-1]"),
        ("2_1._conv_dw.1", (("child", "2_1"), ("attr", "_conv_dw"), ("index", 1)), "2_1._conv_dw[1]"),
        ('features["denseblock4"]', (("attr", "features"), ("child", "denseblock4")), "features.denseblock4"),
    ],
)
def test_good_expressions_parse(text, steps, canonical):
    path = parse_layer_path(text)
    assert path.steps == steps
    assert str(path) == canonical
    assert str(parse_layer_path(str(path))) == canonical  # the canonical spelling parses back


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "__import__('os').system('touch PWNED')",
        "layer4[-1]()",
        "layer4[1:2]",
        "layer4[x]",
        "layer4['a' + 'b']",
        "features[1.5]",
        "features[True]",
        "features[--1]",
        "a + b",
        "lambda: 0",
        "f'{x}'",
        "1",
        "__class__",
        "layer4.__class__.__init__",
        "__root__['layer4']",
        "a['__dict__']",
        "a['a b']",
        "layer4[-1]; import os",
        "layer4..bn",
        ".layer4",
        "layer4.",
        "[layer4 for _ in ()]",
        "",
        "   ",
        "x" * 600,
    ],
)
def test_bad_expressions_are_one_line_user_errors(text):
    with pytest.raises(UserError) as info:
        parse_layer_path(text)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("bad target-layer expression ")
    assert repr(text.strip() if len(text) < 500 else text[:60] + "...")[1:-1] in message or not text.strip()


def test_nothing_is_evaluated(monkeypatch, tmp_path):
    """Parsing calls neither eval nor exec, and a payload runs nothing."""

    def forbidden(*args, **kwargs):
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    marker = tmp_path / "PWNED"
    with pytest.raises(UserError):
        parse_layer_path(f"__import__('os').system('touch {marker}')")
    assert not marker.exists()
    assert parse_layer_path("layer4[-1]").steps == (("attr", "layer4"), ("index", -1))


def test_list_form():
    paths = parse_layer_paths("layer4[-1],layer4[-2]")
    assert [str(p) for p in paths] == ["layer4[-1]", "layer4[-2]"]
    assert [str(p) for p in parse_layer_paths(" layer3 , layer4[-1] ")] == ["layer3", "layer4[-1]"]
    for bad in ("layer4[-1],", ",layer4", "layer4,,layer3", "layer4,__import__('os')"):
        with pytest.raises(UserError, match="bad target-layer expression"):
            parse_layer_paths(bad)


@pytest.mark.parametrize("side", [0, 1], ids=["torch", "paddle"])
def test_resolves_like_python_on_both_frameworks(resnet18_pair, side):
    model = resnet18_pair[side]
    assert resolve_layer(model, "layer4[-1]") is model.layer4[-1]
    assert resolve_layer(model, "layer4[-2]") is model.layer4[0]
    assert resolve_layer(model, "layer4") is model.layer4
    assert resolve_layer(model, "model.layer4[-1]") is model.layer4[-1]  # upstream's spelling
    assert resolve_layer(model, "layer4.1.bn2") is model.layer4[1].bn2
    assert resolve_layer(model, "layer4[1].bn2") is model.layer4[1].bn2
    assert resolve_layers(model, "layer4[-1],layer3") == [model.layer4[-1], model.layer3]
    assert resolve_layers(model, ["layer1", parse_layer_path("layer2[0]")]) == [model.layer1, model.layer2[0]]


@pytest.mark.parametrize("side", [0, 1], ids=["torch", "paddle"])
@pytest.mark.parametrize(
    "text, match",
    [
        ("layer5", "has no sub-layer 'layer5'"),
        ("layer4[2]", r"index 2 is out of range for layer4 \(2 entries\)"),
        ("layer4[-3]", "index -3 is out of range"),
        ("layer4[-1][0]", "cannot be indexed"),
        ("fc.weight", "has no sub-layer 'weight'"),
        ("training", "has no sub-layer 'training'"),
        ("layer4['nope']", "has no sub-layer named 'nope'"),
    ],
)
def test_unresolvable_paths_are_one_line_errors(resnet18_pair, side, text, match):
    with pytest.raises(UserError, match=match) as info:
        resolve_layer(resnet18_pair[side], text)
    assert "\n" not in str(info.value)
    assert repr(text) in str(info.value)


def test_not_a_model():
    with pytest.raises(UserError, match="not a torch Module or Paddle Layer"):
        resolve_layer(object(), "layer4")


@pytest.mark.parametrize("arch_name", ["shufflenet_v2_x1_0", "densenet121"])
def test_every_named_path_resolves_back(arch_name):
    """Paths as named_modules()/named_sublayers() print them (e.g. Paddle's `2_1._conv_dw.1`) resolve to that layer."""
    spec = ARCHS[arch_name]
    for model in (spec.new_torch_model(), spec.new_paddle_model()):
        named = [(path, layer) for path, layer in named_layer_paths(model) if path]
        assert len(named) > 100
        for path, layer in named:
            assert resolve_layer(model, path) is layer, path
            assert path_of_layer(model, layer) == path or resolve_layer(model, path_of_layer(model, layer)) is layer


def test_plain_list_attribute_of_layers():
    """Paddle's DenseNet keeps its blocks in a plain list next to the registered names."""
    model = ARCHS["densenet121"].new_paddle_model()
    assert resolve_layer(model, "dense_block_func_list[-1]") is resolve_layer(model, "db_conv_5")
    assert resolve_layer(model, "dense_block_func_list[0].conv2_1.bn_ac_func1") is model.db_conv_2.conv2_1.bn_ac_func1
