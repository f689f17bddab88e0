"""Preprocessing of ``multibranch_mass`` (§2.2): each input branch scaled to [0, 1] with a linear
or logarithmic min-max fitted on the training split's valid pixels."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim2obs.errors import Sim2obsValueError
from sim2obs.tasks.multibranch_mass.config import SCALINGS

__all__ = ["UnitScaling", "fit_unit_scaling", "CHUNK"]

#: Objects scaled per step (bounds the float32 temporaries).
CHUNK = 1024


@dataclass(frozen=True)
class UnitScaling:
    """x' = (f(x) - lo) / (hi - lo), 0 where the pixel is invalid.

    ``mode``: ``linear`` (f(x) = x) or ``log`` (f(x) = log10(max(x, floor)); ``lo`` = log10(floor),
    so unlit pixels map to 0). ``lo``, ``hi`` are in f's units (the raw unit, or dex of it)."""

    mode: str
    lo: float
    hi: float
    floor: float | None = None

    def apply(self, images: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Scaled float32 copy of ``images`` (any shape); ``valid`` (same shape, bool) marks the
        pixels to scale, the others are set to 0."""
        x = np.asarray(images, dtype=np.float32)
        if self.mode == "log":
            x = np.log10(np.maximum(x, np.float32(self.floor)))
        span = self.hi - self.lo if self.hi > self.lo else 1.0
        out = ((x - np.float32(self.lo)) / np.float32(span)).astype(np.float32, copy=False)
        if valid is not None:
            out = np.where(valid, out, np.float32(0.0))
        return out


def fit_unit_scaling(images: np.ndarray, valid: np.ndarray | None = None, mode: str = "linear",
                     log_range_dex: float = 4.0) -> UnitScaling:
    """The :class:`UnitScaling` mapping the ``valid`` pixels of ``images`` (the training split)
    onto [0, 1]: min-max of the values (``linear``) or of log10 of the values floored at
    ``max x 10^-log_range_dex`` (``log``, for luminosities >= 0)."""
    if mode not in SCALINGS:
        raise Sim2obsValueError("unknown scaling", value=mode, allowed=list(SCALINGS))
    x = np.asarray(images)
    mask = None if valid is None else np.asarray(valid, bool)
    if mask is not None and mask.shape != x.shape:
        raise Sim2obsValueError(f"valid mask has shape {mask.shape}, images {x.shape}", value=mask.shape)
    if x.size == 0 or (mask is not None and not mask.any()):
        raise Sim2obsValueError("no valid pixel to fit a scaling on", value=x.shape)
    extra = {} if mask is None else {"where": mask}
    hi = float(np.max(x, initial=-np.inf, **extra))
    if mode == "linear":
        return UnitScaling("linear", float(np.min(x, initial=np.inf, **extra)), hi)
    if not log_range_dex > 0:
        raise Sim2obsValueError("log_range_dex must be positive", value=log_range_dex)
    if not hi > 0:
        raise Sim2obsValueError("a logarithmic scaling needs some positive pixel", value=hi)
    floor = hi * 10.0 ** (-float(log_range_dex))
    return UnitScaling("log", math.log10(floor), math.log10(hi), floor)

