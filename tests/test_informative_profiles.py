"""Every committed profile must compare maps that have something in them: the zoo's seeded weights carry no
constant tensor, and upstream's own matrix also runs at a size where its maps are not flat."""
from __future__ import annotations

import numpy as np
import pytest

from parity.hubs.seeding import SEEDING_VERSION
from parity.model_zoo import ARCHS, DEFAULT_ARCH, SeededTwin
from parity.registry import METHODS, PROFILES, SEED_METHODS, all_cases
from parity.report_verdict import vacuous_allowed


def _constant_floating_tensors(state) -> list:
    """Names of the floating tensors (more than one element) whose elements are all equal."""
    constant = []
    for name, tensor in state.items():
        array = np.asarray(tensor.detach().numpy() if hasattr(tensor, "detach") else tensor)
        if np.issubdtype(array.dtype, np.floating) and array.size > 1 and np.ptp(array) == 0:
            constant.append(name)
    return constant


def test_the_zoo_seeding_leaves_no_constant_floating_tensor():
    """mobilenet_v3_large (its ScoreCAM at 64x64 was flat on torchvision's plain init): BatchNorm weights, biases,
    running statistics and zero conv biases all start constant, and none is after seeding."""
    import torch
    import torchvision

    from parity.weights import seeded_torch_state

    torch.manual_seed(0)
    plain = torchvision.models.mobilenet_v3_large().state_dict()
    before = _constant_floating_tensors(plain)
    assert "features.0.1.weight" in before and "features.0.1.running_var" in before  # the check can see them
    seeded = seeded_torch_state("mobilenet_v3_large")
    assert set(seeded) == set(plain)
    assert _constant_floating_tensors(seeded) == []
    # torchvision's own random draws are kept: only the constants were replaced
    assert all(torch.equal(seeded[name], plain[name]) for name in plain if name not in before)


def test_every_twin_but_resnet50_is_seeded_and_names_the_seeding_version():
    assert not isinstance(ARCHS[DEFAULT_ARCH], SeededTwin)  # the quick/full/tiny/all-methods numbers depend on it
    assert ARCHS[DEFAULT_ARCH].default_weights_name == "resnet50_seed0.pth"
    for name, spec in ARCHS.items():
        if name != DEFAULT_ARCH:
            assert isinstance(spec, SeededTwin), name
            assert spec.default_weights_name == f"{name}_s{SEEDING_VERSION}_seed0.pth"


def _matrix(profile_name: str, method: str) -> list:
    return [(s.model, s.torch_layers, s.paddle_layers, s.batch, s.target_category, s.size)
            for s in PROFILES[profile_name].setups(METHODS[method])]


@pytest.mark.parametrize("method", SEED_METHODS)
def test_the_informative_profile_is_upstreams_matrix_at_an_informative_size(method):
    original = _matrix("upstream-suite", method)
    informative = _matrix("upstream-suite-informative", method)
    assert len(original) == len(informative) == 8
    heavy = METHODS[method].reruns_network_per_channel
    square, oblong = ((64, 64), (64, 80)) if heavy else ((224, 224), (224, 280))
    for (*same, size), (*other, new_size) in zip(original, informative):
        assert same == other  # models, layers, batches and targets unchanged, in the same order
        assert new_size == {(32, 32): square, (32, 40): oblong}[size]  # upstream's aspect pair kept
        assert new_size[0] * new_size[1] > size[0] * size[1]
    profile = PROFILES["upstream-suite-informative"]
    assert profile.methods == PROFILES["upstream-suite"].methods and profile.smooths == PROFILES["upstream-suite"].smooths
    ids = [case.id for case in all_cases(profile=profile)]
    assert len(ids) == len(set(ids)) == len(all_cases(profile=PROFILES["upstream-suite"])) == 128


def test_only_upstreams_original_matrix_may_be_vacuous():
    assert vacuous_allowed("upstream-suite")
    for name in PROFILES:
        if name != "upstream-suite":
            assert not vacuous_allowed(name), name


def test_the_command_line_runs_the_informative_profile_on_its_own_setups():
    from paddle_impl.errors import UserError
    from parity.cli import _setup_transform, build_parser

    args = build_parser().parse_args(["--profile", "upstream-suite-informative"])
    setup = PROFILES[args.profile].setups(METHODS["gradcam"])[0]
    assert _setup_transform(args)(setup) == setup
    clashing = build_parser().parse_args(["--profile", "upstream-suite-informative", "--target-category", "3"])
    with pytest.raises(UserError, match="chooses its own"):
        _setup_transform(clashing)
