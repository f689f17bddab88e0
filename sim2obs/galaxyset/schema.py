"""The galaxy-set schema: image stacks, catalogue columns and split names, and split assignment.

Format constants (name, version, manifest file name) live here, so that the writer, the reader,
validation and the content hash all read them from one place.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from sim2obs.errors import Sim2obsValueError

FORMAT_NAME = "sim2obs.galaxyset"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DEFAULT_SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class StackSpec:
    """A named image stack: ``channels`` images of ``height`` x ``width`` pixels per object.

    ``pixel_scale_arcsec`` is the pixel size (arcsec/px) when it is the same for every object,
    or None when the catalogue's ``pixel_scale_arcsec`` column gives it per object.
    """

    name: str
    channels: tuple[str, ...]
    height: int
    width: int
    unit: str = ""
    pixel_scale_arcsec: float | None = None
    description: str = ""

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(self.channels))
        if self.height <= 0 or self.width <= 0 or not self.channels:
            raise Sim2obsValueError(f"stack {self.name!r} needs positive size and at least one channel",
                                    value=(len(self.channels), self.height, self.width))

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.channels), self.height, self.width)


@dataclass(frozen=True)
class ColumnSpec:
    """A catalogue column: 1-D values per object with an astropy-parsable ``unit``.

    ``error`` names the column that holds this column's 1-sigma uncertainty, if any.
    """

    name: str
    dtype: str = "float64"
    unit: str = ""
    description: str = ""
    error: str | None = None


@dataclass(frozen=True)
class GalaxySetSchema:
    """What every shard of a set holds."""

    stacks: tuple[StackSpec, ...]
    columns: tuple[ColumnSpec, ...]
    split_names: tuple[str, ...] = DEFAULT_SPLIT_NAMES

    def __post_init__(self):
        object.__setattr__(self, "stacks", tuple(self.stacks))
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "split_names", tuple(self.split_names))
        names = [c.name for c in self.columns]
        if "id" not in names:
            raise Sim2obsValueError("a galaxy-set schema needs an 'id' column", value=names)
        for group, items in (("column", names), ("stack", [s.name for s in self.stacks])):
            dup = {n for n in items if items.count(n) > 1}
            if dup:
                raise Sim2obsValueError(f"duplicate {group} names", value=sorted(dup))
        for c in self.columns:
            if c.error is not None and c.error not in names:
                raise Sim2obsValueError(f"column {c.name!r} names a missing error column", value=c.error)
        if len(self.split_names) > 127 or len(set(self.split_names)) != len(self.split_names):
            raise Sim2obsValueError("split names must be unique (at most 127)", value=self.split_names)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def stack_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.stacks)

    def stack(self, name: str) -> StackSpec:
        for s in self.stacks:
            if s.name == name:
                return s
        raise Sim2obsValueError("unknown image stack", value=name, allowed=[s.name for s in self.stacks])

    def column(self, name: str) -> ColumnSpec:
        for c in self.columns:
            if c.name == name:
                return c
        raise Sim2obsValueError("unknown catalogue column", value=name, allowed=[c.name for c in self.columns])

    def to_dict(self) -> dict[str, Any]:
        return {"stacks": [asdict(s) for s in self.stacks], "columns": [asdict(c) for c in self.columns],
                "split_names": list(self.split_names)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GalaxySetSchema":
        return cls(stacks=tuple(StackSpec(**s) for s in d["stacks"]),
                   columns=tuple(ColumnSpec(**c) for c in d["columns"]),
                   split_names=tuple(d["split_names"]))


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------
def assign_splits(n: int, fractions: Mapping[str, float], seed: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Random split assignment with exact sizes: ``(codes (n,) int8, names)``.

    ``fractions`` maps split names to fractions summing to 1 (e.g. train 0.8, val 0.1, test 0.1);
    sizes are rounded so that they add up to ``n``. The same ``seed`` gives the same assignment.
    """
    names = tuple(fractions)
    frac = np.array([float(fractions[k]) for k in names])
    if np.any(frac < 0) or not np.isclose(frac.sum(), 1.0, atol=1e-6):
        raise Sim2obsValueError("split fractions must be non-negative and sum to 1", value=dict(fractions))
    sizes = np.floor(frac * n).astype(int)
    remainder = n - sizes.sum()
    order = np.argsort(-(frac * n - sizes), kind="stable")  # largest remainders first
    sizes[order[:remainder]] += 1
    codes = np.repeat(np.arange(len(names), dtype=np.int8), sizes)
    np.random.default_rng(seed).shuffle(codes)
    return codes, names

