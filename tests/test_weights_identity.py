"""The weights' identity is what they hold, not how the file was written.

It keys the upstream cache and names the weights in every report, so the same
tensors must give the same identity wherever and however they were saved, and
any change to a tensor must give another one.
"""
from __future__ import annotations

import numpy as np
import pytest

from parity.weights import ensure_default_weights, sha256_of, state_dict_identity, weights_identity


def test_default_weights_made_twice_in_two_places_are_one_identity(tmp_path, weights_pair):
    first = ensure_default_weights(tmp_path / "clone-a")
    second = ensure_default_weights(tmp_path / "clone-b")
    # the file itself is now byte-reproducible too (the save keeps the target's name) ...
    assert sha256_of(first) == sha256_of(second)
    # ... and the identity is the project's own default weights' identity
    identity = weights_identity(first, tmp_path / "clone-a")
    assert identity == weights_identity(second, tmp_path / "clone-b") == weights_pair[2]


def test_same_tensors_saved_differently_keep_their_identity(tmp_path):
    import torch

    torch.manual_seed(1)
    state = {"conv.weight": torch.randn(4, 3, 3, 3), "bn.running_var": torch.rand(4), "fc.weight": torch.randn(2, 4)}
    torch.save(state, tmp_path / "a.pth")
    torch.save(dict(reversed(list(state.items()))), tmp_path / "b.pth", _use_new_zipfile_serialization=False)
    assert sha256_of(tmp_path / "a.pth") != sha256_of(tmp_path / "b.pth")

    from parity.weights import load_torch_state_dict

    a, b = (state_dict_identity(load_torch_state_dict(tmp_path / name)) for name in ("a.pth", "b.pth"))
    assert a == b


@pytest.mark.parametrize("change", ["one value", "dtype", "shape", "name"])
def test_any_change_to_a_tensor_is_another_identity(change):
    rng = np.random.default_rng(0)
    state = {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": np.arange(5, dtype=np.int64)}
    changed = {name: value.copy() for name, value in state.items()}
    if change == "one value":
        changed["a"][2, 3] = np.nextafter(changed["a"][2, 3], np.float32(np.inf))
    elif change == "dtype":
        changed["b"] = changed["b"].astype(np.int32)
    elif change == "shape":
        changed["a"] = changed["a"].reshape(4, 3)
    else:
        changed["c"] = changed.pop("b")
    assert state_dict_identity(state) != state_dict_identity(changed)
    assert state_dict_identity(state) == state_dict_identity({name: state[name] for name in reversed(list(state))})
