"""Reading a galaxy set: :func:`open_galaxy_set` validates it on opening and serves numpy arrays, an
astropy Table (and pandas) catalogue and a torch ``Dataset``."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import h5py
import numpy as np

from sim2obs.errors import DataFormatError, Sim2obsValueError
from sim2obs.galaxyset.schema import MANIFEST_NAME
from sim2obs.galaxyset.validation import (check_field_values, check_images, check_unique_ids, disk_field_digests,
                                          read_shard_metadata, trusted_field_digests, validate_manifest,
                                          verify_set)

_RAW_GAP = 4  # objects of a raw (uncompressed) stack read and dropped rather than starting another read
_AUTO_IMAGE_SCAN_BYTES = 2 * 1024**3  # below this, opening scans every image for NaN/inf


class GalaxySet:
    """A galaxy set opened for reading. Use :func:`open_galaxy_set`.

    Attributes: ``path`` (directory), ``name``, ``schema``, ``n`` (objects), ``provenance``,
    ``content_hash``. Catalogue columns and split codes are held in memory; images are read
    lazily from the shards.
    """

    def __init__(self, path: str | os.PathLike, check: str = "auto"):
        if check not in ("auto", "full", "schema"):
            raise Sim2obsValueError("unknown check level", value=check, allowed=["auto", "full", "schema"])
        p = Path(path)
        if p.is_file() and p.name == MANIFEST_NAME:
            p = p.parent
        manifest_path = p / MANIFEST_NAME
        if not manifest_path.exists():
            raise DataFormatError(manifest_path, None, "no galaxy-set manifest here (is this a galaxy-set "
                                  "directory, and did its writer finish?)")
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataFormatError(manifest_path, None, f"manifest is not valid JSON ({exc})") from None
        self.path = p
        self.schema = validate_manifest(self.manifest, p, manifest_path)
        m = self.manifest
        self.name: str = m["name"]
        self.n: int = int(m["n_objects"])
        self.provenance: dict[str, Any] = m.get("provenance", {})
        #: "simulated" (a generator's set) or "real" (survey data: provenance ``kind: real``)
        self.kind: str = str(self.provenance.get("kind", "simulated"))
        self.content_hash: str = m["content_hash"]
        self._shard_files = [p / s["file"] for s in m["shards"]]
        self._offsets = np.array([s["object_offset"] for s in m["shards"]] + [self.n], dtype=np.int64)
        self._catalog: dict[str, np.ndarray] = {}
        self._split = np.empty(self.n, dtype=np.int8)
        for i, shard_path in enumerate(self._shard_files):
            self._read_shard_metadata(i, shard_path)
        if self._shard_files:
            check_unique_ids(self.path, self._catalog["id"])
        image_bytes = sum(self.n * int(np.prod(s.shape)) * 4 for s in self.schema.stacks)
        if check == "full" or (check == "auto" and image_bytes <= _AUTO_IMAGE_SCAN_BYTES):
            self.check_images()
        self._handles: dict[int, h5py.File] = {}
        self._datasets: dict[tuple[int, str], h5py.Dataset] = {}
        self._pid = os.getpid()
        self._disk_digests: dict[str, str] | None = None  # field digests hashed from the shards (check_columns)

    # -- validation (sim2obs.galaxyset.validation) ---------------------------------------------
    def _read_shard_metadata(self, i: int, path: Path) -> None:
        start, stop = int(self._offsets[i]), int(self._offsets[i + 1])
        columns, codes = read_shard_metadata(path, self.schema, start, stop)
        for name, values in columns.items():
            self._catalog.setdefault(name, np.empty(self.n, dtype=values.dtype))[start:stop] = values
        self._split[start:stop] = codes

    def check_images(self, block: int = 256) -> None:
        """Read every image and raise :class:`DataFormatError` naming file, stack and object on
        a NaN/inf value or an unreadable (e.g. truncated) chunk."""
        check_images(self._shard_files, self._offsets, self.schema, block)

    def verify(self) -> None:
        """Full integrity check: image scan, shard file checksums, no unknown shard files, and
        the content hash."""
        verify_set(self.path, self.manifest, self._shard_files, self._offsets, self.schema)

    def check_columns(self, names: Sequence[str]) -> None:
        """Check that the catalogue columns ``names`` and the split codes this reader holds (what
        a task scores against) are the data the content hash names. Each is hashed whole, in
        object order (:func:`array_digest`), and compared with the manifest's ``field_sha256``,
        whose digests must combine to ``content_hash`` (memory only: milliseconds). A manifest
        without ``field_sha256`` (older sets) is checked once per reader by hashing every field
        from the shards. A mismatch raises :class:`DataFormatError` naming the field."""
        digests = trusted_field_digests(self.path, self.manifest)
        if digests is None:
            if self._disk_digests is None:
                self._disk_digests = disk_field_digests(self.path, self.manifest)
            digests = self._disk_digests
        fields = {f"catalog/{c}": self.column(c) for c in dict.fromkeys(names)}
        fields["split"] = self._split.astype(np.int8)
        check_field_values(self.path, self.content_hash, digests, fields)

    # -- catalogue ----------------------------------------------------------------------------
    @property
    def split_names(self) -> tuple[str, ...]:
        return self.schema.split_names

    @property
    def ids(self) -> np.ndarray:
        return self._catalog["id"]

    def indices(self, split: str | None = None) -> np.ndarray:
        """Global object indices of ``split`` (all objects when None), ascending."""
        if split is None:
            return np.arange(self.n)
        if split not in self.split_names:
            raise Sim2obsValueError("unknown split", value=split, allowed=list(self.split_names))
        return np.flatnonzero(self._split == self.split_names.index(split))

    def split_of(self) -> np.ndarray:
        """Split name of every object, ``(n,)`` strings."""
        return np.asarray(self.split_names, dtype=object)[self._split]

    def column(self, name: str, split: str | None = None) -> np.ndarray:
        self.schema.column(name)
        values = self._catalog[name]
        return values if split is None else values[self.indices(split)]

    def catalog(self, split: str | None = None, columns: Sequence[str] | None = None):
        """The catalogue as an ``astropy.table.Table`` with units; ``meta`` holds provenance."""
        # deferred: astropy's import is slow, and `import sim2obs` must stay fast
        from astropy import units as u
        from astropy.table import Column, Table

        idx = self.indices(split)
        names = list(columns) if columns is not None else [c.name for c in self.schema.columns]
        table = Table(meta={"name": self.name, "content_hash": self.content_hash, "split": split or "all"})
        for name in names:
            spec = self.schema.column(name)
            unit = u.Unit(spec.unit, parse_strict="silent") if spec.unit else None
            table.add_column(Column(self._catalog[name][idx], name=name, unit=unit,
                                    description=spec.description))
        table.add_column(Column(self.split_of()[idx].astype(str), name="split"))
        return table

    def to_pandas(self, split: str | None = None, columns: Sequence[str] | None = None):
        """The catalogue as a ``pandas.DataFrame`` (units in ``df.attrs['units']``)."""
        import pandas as pd  # deferred: pandas' import is slow, and `import sim2obs` must stay fast

        idx = self.indices(split)
        names = list(columns) if columns is not None else [c.name for c in self.schema.columns]
        df = pd.DataFrame({n: self._catalog[n][idx] for n in names})
        df["split"] = self.split_of()[idx]
        df.attrs["units"] = {n: self.schema.column(n).unit for n in names}
        df.attrs["content_hash"] = self.content_hash
        return df

    # -- images -------------------------------------------------------------------------------
    def _locate(self, index: int) -> tuple[int, int]:
        if not 0 <= index < self.n:
            raise IndexError(f"object index {index} outside [0, {self.n})")
        shard = int(np.searchsorted(self._offsets, index, side="right") - 1)
        return shard, index - int(self._offsets[shard])

    def _handle(self, shard: int) -> h5py.File:
        # HDF5 handles must not cross a fork: each DataLoader worker opens its own.
        if os.getpid() != self._pid:
            self._handles, self._datasets, self._pid = {}, {}, os.getpid()
        f = self._handles.get(shard)
        if f is None:
            f = self._handles[shard] = h5py.File(self._shard_files[shard], "r")
        return f

    def _stack(self, shard: int, stack: str) -> h5py.Dataset:
        """The open ``images/<stack>`` dataset of ``shard`` (cached: an h5py path lookup costs tens of us)."""
        f = self._handle(shard)
        ds = self._datasets.get((shard, stack))  # cleared with the handles (fork, close, pickling)
        if ds is None:
            ds = self._datasets[(shard, stack)] = f[f"images/{stack}"]
        return ds

    def _raw(self, stack: str) -> bool:
        """Whether ``stack`` is stored uncompressed (checked on shard 0; a set is written one way)."""
        raw = self.__dict__.setdefault("_raw_stacks", {})
        if stack not in raw:
            raw[stack] = self._stack(0, stack).compression is None
        return raw[stack]

    def read_image(self, stack: str, index: int) -> np.ndarray:
        """One object's images ``(channels, height, width)`` float32, checked for NaN/inf."""
        self.schema.stack(stack)
        shard, local = self._locate(int(index))
        path = self._shard_files[shard]
        try:
            arr = self._stack(shard, stack)[local]
        except OSError as exc:
            raise DataFormatError(path, f"images/{stack}", f"unreadable object {index} ({exc})") from None
        if not np.isfinite(arr).all():
            raise DataFormatError(path, f"images/{stack}", f"NaN/inf in object {index}")
        return arr

    def images(self, stack: str, split: str | None = None, indices: Iterable[int] | None = None) -> np.ndarray:
        """Images of ``split`` (or of explicit global ``indices``, any order, repeats allowed) as one
        array ``(n, C, H, W)``. Each run of consecutive objects in a shard is one slice read (h5py's
        fancy indexing is ~20x slower per object, and reading a whole shard range for a sparse split
        decompresses objects nobody asked for); on a stack stored raw, objects up to ``_RAW_GAP`` apart
        count as one run (reading the few objects between costs less than another read)."""
        spec = self.schema.stack(stack)
        idx = np.asarray(list(indices) if indices is not None else self.indices(split), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"object indices outside [0, {self.n})")
        wanted, inverse = np.unique(idx, return_inverse=True)
        unique = np.empty((len(wanted), *spec.shape), dtype=np.float32)
        # one read per run of objects no more than _RAW_GAP apart (the gaps are read and dropped: cheaper
        # than another h5py call when the stack is stored raw; gzip stacks read exact runs only)
        gap = 1 + (_RAW_GAP if len(wanted) > 1 and self._raw(stack) else 0)
        runs = np.flatnonzero(np.diff(wanted) > gap) + 1
        for a, b in zip(np.r_[0, runs], np.r_[runs, len(wanted)]) if len(wanted) else ():
            first, last = int(wanted[a]), int(wanted[b - 1])
            while a < b:  # a run may cross shard boundaries
                shard = int(np.searchsorted(self._offsets, first, side="right") - 1)
                stop = min(last + 1, int(self._offsets[shard + 1]))
                lo = first - int(self._offsets[shard])
                take = int(np.searchsorted(wanted, stop, side="left")) - a  # wanted objects in [first, stop)
                try:
                    if take == stop - first:  # no gap: straight into the output
                        self._stack(shard, stack).read_direct(unique, np.s_[lo:lo + take], np.s_[a:a + take])
                    else:
                        span = self._stack(shard, stack)[lo:lo + stop - first]
                        unique[a:a + take] = span[wanted[a:a + take] - first]
                except OSError as exc:
                    raise DataFormatError(self._shard_files[shard], f"images/{stack}",
                                          f"unreadable near object {first} ({exc})") from None
                a = a + take
                first = int(wanted[a]) if a < b else stop
        out = unique if np.array_equal(wanted, idx) else unique[inverse.reshape(-1)]
        if not np.isfinite(out).all():
            bad = int(idx[np.flatnonzero(~np.isfinite(out).reshape(len(out), -1).all(axis=1))[0]])
            raise DataFormatError(self._shard_files[self._locate(bad)[0]], f"images/{stack}", f"NaN/inf in object {bad}")
        return out

    def torch_dataset(self, split: str | None = None, inputs: Sequence[str] | None = None,
                      targets: Sequence[str] = (), transform=None, target_transform=None,
                      in_memory: bool | str = "auto", max_memory_gb: float | None = None):
        """A map-style ``torch.utils.data.Dataset`` over ``split``, safe with DataLoader workers; see
        :class:`sim2obs.torchdata.GalaxySetDataset`. The split's images are held in memory when they
        fit in ``max_memory_gb`` (default 2 GiB; ``in_memory`` True / False forces it), else read lazily."""
        # deferred: torch takes seconds to import, and `import sim2obs` must not need it
        from sim2obs.torchdata import DEFAULT_MAX_MEMORY_GB, GalaxySetDataset

        return GalaxySetDataset(self, split=split, inputs=inputs, targets=targets, transform=transform,
                                target_transform=target_transform, in_memory=in_memory,
                                max_memory_gb=DEFAULT_MAX_MEMORY_GB if max_memory_gb is None else max_memory_gb)

    def close(self) -> None:
        for f in self._handles.values():
            f.close()
        self._handles, self._datasets = {}, {}

    def __getstate__(self):  # pickled into DataLoader workers: never ship open HDF5 handles
        state = self.__dict__.copy()
        state["_handles"], state["_datasets"] = {}, {}
        return state

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __len__(self) -> int:
        return self.n

    def summary(self) -> str:
        """A human-readable description: size, stacks, splits, columns and provenance."""
        lines = [f"galaxy set '{self.name}' ({self.kind}) at {self.path}",
                 f"  objects: {self.n} in {len(self._shard_files)} shard(s); content hash {self.content_hash[:16]}"]
        for s in self.schema.stacks:
            scale = f", {s.pixel_scale_arcsec:g} arcsec/px" if s.pixel_scale_arcsec else ""
            lines.append(f"  images/{s.name}: {len(s.channels)}x{s.height}x{s.width} "
                         f"[{', '.join(s.channels)}] {s.unit}{scale}")
        counts = np.bincount(self._split, minlength=len(self.split_names))
        lines.append("  splits: " + ", ".join(f"{n}={c}" for n, c in zip(self.split_names, counts)))
        lines.append(f"  columns ({len(self.schema.columns)}):")
        for c in self.schema.columns:
            v = self._catalog[c.name]
            if v.dtype.kind in "fiu" and c.name != "id":
                q = np.percentile(v, [5, 50, 95])
                lines.append(f"    {c.name:<22s} [{c.unit or '-'}]  median {q[1]:.4g}  (5-95%: {q[0]:.4g} .. {q[2]:.4g})")
        prov = self.provenance
        if prov:
            lines.append(f"  source: {prov.get('generator', prov.get('source', '?'))} "
                         f"{prov.get('generator_version', prov.get('source_version', ''))}, seed {prov.get('seed', '-')}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"GalaxySet(name={self.name!r}, n={self.n}, path='{self.path}')"


def open_galaxy_set(path: str | os.PathLike, check: str = "auto") -> GalaxySet:
    """Open and validate a galaxy set (its directory or its ``manifest.json``).

    ``check``: ``"schema"`` validates structure and catalogue; ``"full"`` also reads every
    image looking for NaN/inf; ``"auto"`` (default) does the full check for sets up to 2 GiB of
    images and otherwise checks each image when it is read. Problems raise
    :class:`~sim2obs.errors.DataFormatError` naming the file and the field.
    """
    return GalaxySet(path, check=check)
