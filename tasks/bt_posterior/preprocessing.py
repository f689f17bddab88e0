"""Preprocessing of ``bt_posterior``: the arcsinh stretch of the r-band image, the picklable
DataLoader transforms of the lazily read datasets, and the clip of samples to the physical range."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from sim2obs.errors import Sim2obsValueError
from sim2obs.tasks.bt_posterior.config import BOUNDS
from sim2obs.tasks.common.scaling import LabelCoder

__all__ = ["arcsinh_stretch", "clip_to_bounds"]


def arcsinh_stretch(images, softening: float = 0.1):
    """``asinh(images / softening)`` elementwise (numpy array or torch tensor, any shape).

    Linear for |x| << softening (the noise), logarithmic for bright pixels; odd and strictly
    increasing, so the ordering of pixel values and the sign are kept."""
    if not softening > 0:
        raise Sim2obsValueError("the arcsinh softening must be positive", value=softening)
    if hasattr(images, "asinh"):  # torch
        return (images / softening).asinh()
    return np.arcsinh(np.asarray(images, dtype=np.float32) / np.float32(softening))


class _StretchChannel:
    """Picklable DataLoader transform: pick one channel of the ``image`` stack, arcsinh-stretch it."""

    def __init__(self, channel: int, softening: float):
        self.channel, self.softening = int(channel), float(softening)

    def __call__(self, inputs: dict) -> dict:
        x = inputs["image"][self.channel:self.channel + 1]
        return {"image": arcsinh_stretch(x.float(), self.softening)}


class _EncodeTarget:
    """Picklable DataLoader target transform: physical -> scaled (float32 tensor)."""

    def __init__(self, coder: LabelCoder):
        self.coder = coder

    def __call__(self, target):
        return torch.as_tensor(self.coder.encode(target.numpy()), dtype=torch.float32)


def clip_to_bounds(values: np.ndarray, targets: Sequence[str]) -> np.ndarray:
    """Clip the last axis of ``values`` to each target's physical range (in place; returned)."""
    for k, t in enumerate(targets):
        lo, hi = BOUNDS.get(t, (-math.inf, math.inf))
        np.clip(values[..., k], lo, hi, out=values[..., k])
    return values

