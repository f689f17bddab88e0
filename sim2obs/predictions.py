"""Predictions with object ids: the one file format for model outputs (HDF5), written by the
training engine (validation outputs), by every task run, and read by the leaderboard."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim2obs.atomic import atomic_write
from sim2obs.errors import DataFormatError

# --------------------------------------------------------------------------------------------
@dataclass
class Predictions:
    """Predictions for one split, in the targets' physical units.

    ``ids``: (N,) int64 object ids; ``values``: (N, T) point predictions; ``samples``:
    optional (S, N, T) posterior samples; ``sigma``: optional (N, T) 1σ uncertainties;
    ``targets``: the T target names.
    """

    ids: np.ndarray
    values: np.ndarray
    targets: tuple[str, ...]
    samples: np.ndarray | None = None
    sigma: np.ndarray | None = None

    def __post_init__(self):
        self.ids = np.asarray(self.ids).reshape(-1)
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.ndim == 1:
            self.values = self.values[:, None]
        self.targets = tuple(self.targets)
        if self.samples is not None:  # asanyarray: sorted samples keep their type (tasks.metrics)
            self.samples = np.asanyarray(self.samples, dtype=np.float64)
            if self.samples.ndim == 2:
                self.samples = self.samples[:, :, None]
        if self.sigma is not None:
            self.sigma = np.asarray(self.sigma, dtype=np.float64)
            if self.sigma.ndim == 1:
                self.sigma = self.sigma[:, None]

    def subset(self, order: np.ndarray) -> "Predictions":
        """Rows ``order`` (an index array) of every field."""
        return Predictions(self.ids[order], self.values[order], self.targets,
                           None if self.samples is None else self.samples[:, order],
                           None if self.sigma is None else self.sigma[order])

    def save(self, path: str | os.PathLike, **attrs: Any) -> Path:
        """Write an HDF5 file (datasets ``ids``, ``predictions``, optional ``samples`` and
        ``sigma``; attribute ``targets`` as JSON, plus ``attrs``) atomically."""
        import h5py

        path = Path(path)

        def write(f):
            with h5py.File(f, "w") as h5:
                h5.create_dataset("ids", data=self.ids.astype(np.int64))
                h5.create_dataset("predictions", data=self.values)
                if self.samples is not None:
                    h5.create_dataset("samples", data=self.samples.astype(np.float32), compression="gzip",
                                      shuffle=True)
                if self.sigma is not None:
                    h5.create_dataset("sigma", data=self.sigma)
                h5.attrs["targets"] = json.dumps(list(self.targets))
                for key, value in attrs.items():
                    h5.attrs[key] = json.dumps(value, default=str)

        atomic_write(path, write)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Predictions":
        """Read a file written by :meth:`save`; malformed files raise :class:`DataFormatError`."""
        import h5py

        path = Path(path)
        try:
            with h5py.File(path, "r") as h5:
                for key in ("ids", "predictions"):
                    if key not in h5:
                        raise DataFormatError(path, key, "missing dataset")
                if "targets" not in h5.attrs:
                    raise DataFormatError(path, "targets", "missing attribute (JSON list of target names)")
                return cls(ids=h5["ids"][()], values=h5["predictions"][()],
                           targets=tuple(json.loads(h5.attrs["targets"])),
                           samples=h5["samples"][()] if "samples" in h5 else None,
                           sigma=h5["sigma"][()] if "sigma" in h5 else None)
        except OSError as exc:
            if isinstance(exc, DataFormatError):
                raise
            raise DataFormatError(path, None, f"not a readable HDF5 predictions file ({exc})") from None
