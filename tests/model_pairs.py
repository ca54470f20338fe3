"""Small model pairs written in both frameworks for the tests: the Paddle twin loads the torch model's weights.

Not a test file: ``tests/test_ablation_vit.py`` and ``tests/test_compare_models.py`` import it.
"""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as PF
import torch

DIM, PATCH, GRID, DEPTH, HEADS, CLASSES = 16, 8, 4, 2, 2, 10


class TorchBlock(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1 = torch.nn.LayerNorm(DIM)
        self.qkv = torch.nn.Linear(DIM, 3 * DIM)
        self.proj = torch.nn.Linear(DIM, DIM)
        self.norm2 = torch.nn.LayerNorm(DIM)
        self.fc1 = torch.nn.Linear(DIM, 2 * DIM)
        self.fc2 = torch.nn.Linear(2 * DIM, DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, HEADS, c // HEADS).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attention = torch.softmax((q @ k.transpose(-2, -1)) * (c // HEADS) ** -0.5, dim=-1)
        x = x + self.proj((attention @ v).transpose(1, 2).reshape(b, n, c))
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))


class TorchViT(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = torch.nn.Conv2d(3, DIM, PATCH, stride=PATCH)
        self.cls_token = torch.nn.Parameter(torch.randn(1, 1, DIM) * 0.5)
        self.pos_embed = torch.nn.Parameter(torch.randn(1, 1 + GRID * GRID, DIM) * 0.5)
        self.blocks = torch.nn.Sequential(*[TorchBlock() for _ in range(DEPTH)])
        self.norm = torch.nn.LayerNorm(DIM)
        self.head = torch.nn.Linear(DIM, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


class PaddleBlock(paddle.nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        self.norm1 = paddle.nn.LayerNorm(DIM)
        self.qkv = paddle.nn.Linear(DIM, 3 * DIM)
        self.proj = paddle.nn.Linear(DIM, DIM)
        self.norm2 = paddle.nn.LayerNorm(DIM)
        self.fc1 = paddle.nn.Linear(DIM, 2 * DIM)
        self.fc2 = paddle.nn.Linear(2 * DIM, DIM)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape([b, n, 3, HEADS, c // HEADS]).transpose([2, 0, 3, 1, 4])
        q, k, v = qkv[0], qkv[1], qkv[2]
        attention = PF.softmax(paddle.matmul(q, k, transpose_y=True) * (c // HEADS) ** -0.5, axis=-1)
        x = x + self.proj(paddle.matmul(attention, v).transpose([0, 2, 1, 3]).reshape([b, n, c]))
        return x + self.fc2(PF.gelu(self.fc1(self.norm2(x))))


class PaddleViT(paddle.nn.Layer):
    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = paddle.nn.Conv2D(3, DIM, PATCH, stride=PATCH)
        self.cls_token = self.create_parameter([1, 1, DIM])
        self.pos_embed = self.create_parameter([1, 1 + GRID * GRID, DIM])
        self.blocks = paddle.nn.Sequential(*[PaddleBlock() for _ in range(DEPTH)])
        self.norm = paddle.nn.LayerNorm(DIM)
        self.head = paddle.nn.Linear(DIM, CLASSES)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.patch_embed(x).flatten(2).transpose([0, 2, 1])
        x = paddle.concat([self.cls_token.expand([x.shape[0], -1, -1]), x], axis=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def make_vit_pair(dtype: str):
    """The seeded torch ViT and a Paddle ViT with its weights (Linear weights transposed to (in, out))."""
    torch.manual_seed(0)
    torch_model = TorchViT()
    torch_model = (torch_model.double() if dtype == "float64" else torch_model.float()).eval()
    previous = paddle.get_default_dtype()
    paddle.set_default_dtype(dtype)
    try:
        paddle_model = PaddleViT()
    finally:
        paddle.set_default_dtype(previous)
    state = {}
    for name, value in torch_model.state_dict().items():
        array = value.detach().numpy()
        if array.ndim == 2 and name.endswith("weight"):
            array = array.T
        state[name] = np.ascontiguousarray(array)
    assert set(state) == set(paddle_model.state_dict()), set(state) ^ set(paddle_model.state_dict())
    paddle_model.set_state_dict(state)
    paddle_model.eval()
    return torch_model, paddle_model
