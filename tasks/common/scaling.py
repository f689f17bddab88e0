"""Standard scaling and label coding: physical labels <-> network targets, fitted on the
training split only (the evaluation split's labels are never read)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from sim2obs.errors import Sim2obsValueError

__all__ = ["StandardScaler", "LabelCoder"]


@dataclass
class StandardScaler:
    """Per-column ``(y - mean_) / scale_`` on ``(N, T)`` values; a column of zero spread gets
    ``scale_ = 1``. Fitted state ends in ``_``."""

    mean_: np.ndarray | None = None
    scale_: np.ndarray | None = None

    def fit(self, y) -> "StandardScaler":
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != 2 or len(y) < 2:
            raise Sim2obsValueError("fit the scaler on (N >= 2, T) values", value=y.shape)
        self.mean_ = y.mean(axis=0)
        scale = y.std(axis=0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        return self

    def _check(self):
        if self.mean_ is None:
            raise Sim2obsValueError("the scaler is not fitted")

    def transform(self, y) -> np.ndarray:
        """``(..., T)`` values -> standardised (float64)."""
        self._check()
        return (np.asarray(y, dtype=np.float64) - self.mean_) / self.scale_

    def inverse_transform(self, z) -> np.ndarray:
        """``(..., T)`` standardised -> values (float64)."""
        self._check()
        return np.asarray(z, dtype=np.float64) * self.scale_ + self.mean_


@dataclass
class LabelCoder:
    """Physical labels <-> network targets: optional log10 of the ``log_targets`` columns, then
    standard scaling fitted on the training split (:meth:`fit`). ``targets`` names the columns
    of the ``(..., T)`` arrays."""

    targets: Sequence[str]
    log_targets: Sequence[str] = ()
    scaler: StandardScaler = field(default_factory=StandardScaler)

    def __post_init__(self):
        self.targets = tuple(self.targets)
        self.log_targets = tuple(self.log_targets)
        self._log = np.array([t in self.log_targets for t in self.targets], dtype=bool)

    def _forward(self, y) -> np.ndarray:
        y = np.array(y, dtype=np.float64)
        if self._log.any():
            logged = y[..., self._log]
            if (logged <= 0).any():
                names = [t for t, lg in zip(self.targets, self._log) if lg]
                bad = [n for n, neg in zip(names, (logged <= 0).reshape(-1, len(names)).any(axis=0)) if neg]
                raise Sim2obsValueError(f"log targets must be positive: {bad}", value=float(logged.min()))
            y[..., self._log] = np.log10(y[..., self._log])
        return y

    def fit(self, y) -> "LabelCoder":
        self.scaler.fit(self._forward(y))
        return self

    def encode(self, y) -> np.ndarray:
        """``(..., T)`` physical -> scaled network targets (float64)."""
        return self.scaler.transform(self._forward(y))

    def decode(self, z) -> np.ndarray:
        """``(..., T)`` network outputs -> physical units (float64)."""
        y = self.scaler.inverse_transform(z)
        if self._log.any():
            y[..., self._log] = 10.0 ** y[..., self._log]
        return y

    def decode_scale(self, sigma_z) -> np.ndarray:
        """Scaled 1σ -> σ in the training space (log10 dex for log targets)."""
        return np.asarray(sigma_z, dtype=np.float64) * self.scaler.scale_

    def to_dict(self) -> dict:
        return {"targets": list(self.targets), "log_targets": list(self.log_targets),
                "mean": self.scaler.mean_.tolist(), "scale": self.scaler.scale_.tolist()}
