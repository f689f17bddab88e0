"""Tiny models and datasets for the engine tests (also the ``_target_`` of the DDP run file).

Not a test module: imported by tests in this folder and, with ``tests/models`` on PYTHONPATH,
by the torchrun worker processes of ``test_ddp.py``.
"""
from __future__ import annotations

import torch
from torch import nn

from sim2obs.models.engine import TensorDictDataset


def tiny_dataset(n: int = 32, seed: int = 0, size: int = 8, stacks: tuple = ("image",), n_targets: int = 2,
                 id_offset: int = 1000, channels: int = 1) -> TensorDictDataset:
    """``n`` random images per stack ``(channels, size, size)``; targets: mean, spread and maximum
    of the first stack."""
    g = torch.Generator().manual_seed(seed)
    inputs = {name: torch.randn(n, channels, size, size, generator=g) for name in tuple(stacks)}
    first = inputs[stacks[0]]
    columns = [first.mean((1, 2, 3)), first.std((1, 2, 3)), first.amax((1, 2, 3))][:n_targets]
    return TensorDictDataset(inputs, torch.stack(columns, 1), ids=torch.arange(n) + id_offset)


class TinyNet(nn.Module):
    """conv 3x3 -> [BN] -> ReLU -> global mean -> [dropout] -> linear. ``(B, C, H, W)`` -> ``(B, T)``."""

    def __init__(self, in_channels: int = 1, n_targets: int = 2, width: int = 4, dropout: float = 0.0,
                 batch_norm: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.n_targets = n_targets
        self.width = width
        self.dropout = dropout
        self.batch_norm = batch_norm
        layers = [nn.Conv2d(in_channels, width, 3, padding=1)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(width))
        layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, n_targets))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class TwoStackNet(nn.Module):
    """Takes ``{"image": (B, 1, H, W), "maps": (B, 1, H, W)}``; records what it was called with."""

    def __init__(self, n_targets: int = 2):
        super().__init__()
        self.n_targets = n_targets
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Linear(4, n_targets)
        self.seen: set = set()

    def forward(self, x: dict) -> torch.Tensor:
        self.seen.add(type(x).__name__)
        fa = self.a(x["image"]).mean((2, 3))
        fb = self.b(x["maps"]).mean((2, 3))
        return self.head(torch.cat([fa, fb], 1))


class FlatNet(nn.Module):
    """Predicts zeros whatever its weight: gradients vanish and the validation loss is flat."""

    def __init__(self, n_targets: int = 2):
        super().__init__()
        self.n_targets = n_targets
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), self.n_targets) * self.w


class PixelNet(nn.Module):
    """Linear in the pixels: not rotation invariant (for test-time augmentation)."""

    def __init__(self, size: int = 8, n_targets: int = 2):
        super().__init__()
        self.size = size
        self.n_targets = n_targets
        self.fc = nn.Linear(size * size, n_targets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))
