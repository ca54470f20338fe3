"""parity.dtype_cast.cast_floating: a float64 model whose integer buffers stay integer.

The layer here reads a table through an int64 index buffer, as Swin's
relative position bias does; Paddle 3.3.1's ``Layer.to(dtype=)`` turns that
index into float64 and the lookup then fails.
"""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from parity.dtype_cast import cast_floating, state_dtypes


class IndexedTable(paddle.nn.Layer):
    """A parameter table read through an integer index buffer, plus a bool mask and a float buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.table = self.create_parameter([5, 3])
        self.table.set_value(np.arange(15, dtype="float32").reshape(5, 3) / 7)
        self.register_buffer("index", paddle.to_tensor([4, 0, 2], dtype="int64"))
        self.register_buffer("mask", paddle.to_tensor([True, False, True]))
        self.register_buffer("offset", paddle.to_tensor([0.5, 0.25, 0.125], dtype="float32"))

    def forward(self) -> paddle.Tensor:
        return paddle.index_select(self.table, self.index) + self.offset


class Outer(paddle.nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        self.inner = IndexedTable()
        self.linear = paddle.nn.Linear(3, 2)

    def forward(self) -> paddle.Tensor:
        return self.linear(self.inner())


def test_integer_buffers_survive_a_float64_cast_and_still_index():
    model = Outer()
    # The float64 model computes with the float32 values widened, so numpy in float64 gives its result
    # (a comparison with the float32 output would hinge on how close to zero the random Linear puts it).
    widened = {name: value.numpy().astype("float64") for name, value in model.state_dict().items()}
    rows = widened["inner.table"][[4, 0, 2]] + widened["inner.offset"]
    expected = rows @ widened["linear.weight"] + widened["linear.bias"]
    table = model.inner.table
    cast_floating(model, "float64")
    assert state_dtypes(model) == {
        "inner.table": "float64", "inner.index": "int64", "inner.mask": "bool", "inner.offset": "float64",
        "linear.weight": "float64", "linear.bias": "float64",
    }
    assert model.inner.table is table, "the parameter objects must be converted in place"
    got = model()
    assert got.dtype == paddle.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(model.inner.index.numpy(), [4, 0, 2])


def test_the_cast_back_to_float32_also_leaves_integers_alone():
    model = cast_floating(cast_floating(Outer(), "float64"), "float32")
    assert state_dtypes(model)["inner.index"] == "int64"
    assert model().dtype == paddle.float32


def test_paddle_layer_to_still_casts_integer_buffers():
    """The framework behaviour cast_floating exists for; if this fails, Paddle fixed Layer.to and the helper can go."""
    model = IndexedTable()
    model.to(dtype="float64")
    assert str(model.index.dtype) == "paddle.float64"
    with pytest.raises(ValueError, match="Index"):
        model()


def test_a_non_floating_target_dtype_is_refused():
    with pytest.raises(ValueError, match="int64"):
        cast_floating(Outer(), "int64")
