"""Shared fixtures of the network tests: seeding, fixture files and example inputs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

FIXTURES = Path(__file__).parent / "fixtures"
MODEL_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Seed torch; run on one intra-op thread (the networks here are tiny, and OpenMP threads slow down
    10-20x when the few CPU cores are shared with other processes). The thread count is restored after."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def load_fixture():
    """``load_fixture("name.json")`` -> the parsed JSON file from ``tests/models/fixtures``."""

    def load(name: str) -> Any:
        return json.loads((FIXTURES / name).read_text())

    return load


def example_input(model: nn.Module, batch: int = 2, size: int = 32) -> torch.Tensor | dict[str, torch.Tensor]:
    """A random input for ``model``: ``(batch, in_channels, s, s)`` with ``s = max(size, min_input_size)``,
    or a dict of them for multi-branch models (``input_channels`` / ``min_input_size`` dicts)."""
    channels = getattr(model, "input_channels", None)
    if isinstance(channels, dict):
        minimum = model.min_input_size
        return {name: torch.randn(batch, c, max(size, minimum[name]), max(size, minimum[name]))
                for name, c in channels.items()}
    side = max(size, getattr(model, "min_input_size", 1))
    return torch.randn(batch, model.in_channels, side, side)


@pytest.fixture
def make_input():
    """The :func:`example_input` builder, as a fixture."""
    return example_input
