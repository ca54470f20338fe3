"""``reshape_transform="auto"`` in the port's BaseCAM: the same CAM as the explicit transform, for every layout."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddle_impl import EigenCAM, GradCAM
from paddle_impl.utils.reshape_transforms import swinT_reshape_transform, vit_reshape_transform

PATCH = 8


class _PatchEmbed(paddle.nn.Layer):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.patch_size = (PATCH, PATCH)
        self.proj = paddle.nn.Conv2D(3, channels, PATCH, stride=PATCH)

    def forward(self, x):
        return self.proj(x)


class _Identity(paddle.nn.Layer):
    def forward(self, x):
        return x


class TinyTokens(paddle.nn.Layer):
    """Patch embedding, ``prefix`` learned tokens, a LayerNorm'd MLP block, a head on the first token's mean."""

    def __init__(self, layout: str, prefix: int = 1, channels: int = 12, classes: int = 5) -> None:
        super().__init__()
        self.layout, self.prefix = layout, prefix
        self.patch_embed = _PatchEmbed(channels)
        self.tokens = self.create_parameter([1, max(prefix, 1), channels])
        self.norm = paddle.nn.LayerNorm(channels)
        self.mlp = paddle.nn.Linear(channels, channels)
        self.block = _Identity()
        self.head = paddle.nn.Linear(channels, classes)

    def forward(self, x):
        maps = self.patch_embed(x)  # (B, C, H, W)
        batch, channels, height, width = maps.shape
        if self.layout == "channels_last":
            y = maps.transpose([0, 2, 3, 1])
            y = self.block(y + paddle.nn.functional.gelu(self.mlp(self.norm(y))))
            return self.head(y.mean(axis=[1, 2]))
        tokens = maps.flatten(2).transpose([0, 2, 1])
        if self.prefix:
            tokens = paddle.concat([self.tokens[:, : self.prefix].expand([batch, -1, -1]), tokens], axis=1)
        y = self.block(tokens + paddle.nn.functional.gelu(self.mlp(self.norm(tokens))))
        return self.head(y.mean(axis=1))


def _model(layout: str, prefix: int = 1) -> TinyTokens:
    paddle.seed(3)
    model = TinyTokens(layout, prefix)
    rng = np.random.default_rng(5)
    for param in model.parameters():
        param.set_value(rng.normal(0.3, 0.5, param.shape).astype("float32"))
    model.eval()
    return model


def _input(height: int, width: int) -> paddle.Tensor:
    return paddle.to_tensor(np.random.default_rng(7).normal(size=(2, 3, height, width)).astype("float32"))


@pytest.mark.parametrize("method", [GradCAM, EigenCAM])
@pytest.mark.parametrize(
    "layout, prefix, explicit",
    [
        ("tokens", 1, lambda h, w: (lambda t: vit_reshape_transform(t, h, w, prefix_tokens=1))),
        ("tokens", 2, lambda h, w: (lambda t: vit_reshape_transform(t, h, w, prefix_tokens=2))),
        ("tokens", 0, lambda h, w: (lambda t: swinT_reshape_transform(t, h, w))),
        ("channels_last", 0, lambda h, w: (lambda t: swinT_reshape_transform(t, h, w))),
    ],
    ids=["class-token", "class-and-distillation", "swin-tokens", "swin-channels-last"],
)
def test_auto_gives_the_explicit_transforms_cam(method, layout, prefix, explicit):
    model = _model(layout, prefix)
    x = _input(48, 64)  # a 6x8 patch grid: rows and columns must not be swapped
    with method(model=model, target_layers=[model.block], reshape_transform=explicit(6, 8)) as cam:
        expected = cam(input_tensor=x)
    with method(model=model, target_layers=[model.block], reshape_transform="auto") as cam:
        got = cam(input_tensor=x)
        # The size follows the input: a second call at another size reads its own grid.
        other = cam(input_tensor=_input(32, 32))
    assert np.ptp(expected[0]) > 0.5, "the explicit CAM is flat: the comparison would prove nothing"
    np.testing.assert_array_equal(got, expected)
    assert other.shape == (2, 32, 32)


def test_a_string_other_than_auto_is_refused():
    model = _model("tokens")
    with pytest.raises(ValueError, match="callable, None or 'auto', not 'vit'"):
        GradCAM(model=model, target_layers=[model.block], reshape_transform="vit")


def test_an_ambiguous_layout_is_one_clear_error():
    model = _model("channels_last")
    del model.patch_embed.patch_size  # without a patch grid a 4x4 map of 4 channels at 16x16 reads both ways
    model.patch_embed.proj = paddle.nn.Conv2D(3, 4, 4, stride=4)
    model.norm, model.mlp, model.head = paddle.nn.LayerNorm(4), paddle.nn.Linear(4, 4), paddle.nn.Linear(4, 5)
    with GradCAM(model=model, target_layers=[model.block], reshape_transform="auto") as cam:
        with pytest.raises(ValueError, match="ambiguous"):
            cam(input_tensor=_input(16, 16))
