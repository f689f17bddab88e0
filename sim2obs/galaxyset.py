"""The galaxy-set format: one on-disk format for simulated and real galaxy samples.

A galaxy set is a directory::

    my_set/
      manifest.json          # schema, shards, provenance, content hash (written last, atomically)
      part-00000.h5          # shard 0: objects [0, n0)
      part-00001.h5          # shard 1: objects [n0, n0 + n1) ...

Each shard is an HDF5 file with

- ``/images/<stack>``: ``(n, channels, height, width)`` float32, chunked one object per chunk,
  gzip-compressed or stored raw (the writer's ``compression_level``). A set can hold several named stacks of different sizes (e.g. a 300x300 image
  and 48x48 kinematic maps per object).
- ``/catalog/<column>``: ``(n,)`` arrays, one per label, uncertainty and metadata column, with
  ``unit`` and ``description`` attributes. ``id`` (int64, unique) is always present.
- ``/split``: ``(n,)`` int8 codes into the split names (``train``, ``val``, ``test``, and any
  further named split such as ``ood_test``).
- attributes: format name and version, shard index, object offset, schema and build key.

Readers see one set: :func:`open_galaxy_set` validates the schema on opening and gives numpy
arrays, an astropy Table (and pandas) catalogue, and a lazy torch ``Dataset``.

The content hash identifies the data (images, catalogue, split), not the sharding or the file
bytes: the same objects written with a different shard size hash the same.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import h5py
import numpy as np

from sim2obs.atomic import atomic_write
from sim2obs.errors import DataFormatError, Sim2obsValueError
from sim2obs.provenance import file_sha256

FORMAT_NAME = "sim2obs.galaxyset"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DEFAULT_SPLIT_NAMES = ("train", "val", "test")
_AUTO_IMAGE_SCAN_BYTES = 2 * 1024**3  # below this, opening scans every image for NaN/inf


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------
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


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
@dataclass
class GalaxySetWriter:
    """Writes a galaxy set shard by shard; shards may be written by different processes.

    ``build_key`` identifies what is being built (e.g. a hash of the generator config and seed):
    an existing shard with the same key is complete and is kept, so a killed job, started
    again, writes only the missing shards. Every file is written to a temporary name and
    renamed into place, so a shard or manifest on disk is always whole.
    """

    path: Path
    schema: GalaxySetSchema
    n_objects: int
    shard_size: int
    build_key: str
    compression_level: int = 4  # gzip level of the image stacks; 0: stored uncompressed

    def __post_init__(self):
        self.path = Path(self.path)
        if not 0 <= int(self.compression_level) <= 9:
            raise Sim2obsValueError("gzip compression level must lie in 0..9 (0: none)", value=self.compression_level)
        #: {shard index: sha256 hex of the file} for shards this writer object wrote (a job
        #: returns it with its result, so that finalize need not read those files again)
        self.written_sha256: dict[int, str] = {}
        if self.n_objects <= 0:
            raise Sim2obsValueError("a galaxy set needs at least one object", value=self.n_objects)
        if self.shard_size <= 0:
            raise Sim2obsValueError("shard size must be positive", value=self.shard_size)

    # -- layout -------------------------------------------------------------------------------
    @property
    def n_shards(self) -> int:
        return -(-self.n_objects // self.shard_size)

    def shard_range(self, index: int) -> tuple[int, int]:
        """Global object indices ``[start, stop)`` of shard ``index``."""
        start = index * self.shard_size
        return start, min(start + self.shard_size, self.n_objects)

    def shard_path(self, index: int) -> Path:
        return self.path / f"part-{index:05d}.h5"

    def prepare(self, overwrite: bool = False) -> None:
        """Create the directory; refuse to mix with a different build unless ``overwrite``."""
        self.path.mkdir(parents=True, exist_ok=True)
        for tmp in self.path.glob("*.tmp"):
            tmp.unlink()  # leftovers of a killed writer
        stale = [p for p in sorted(self.path.glob("part-*.h5")) if self._shard_key(p) != self.build_key]
        if stale and not overwrite:
            raise Sim2obsValueError(
                f"{self.path} holds shards of a different build (other config, seed or size); "
                "choose another output path or set overwrite=true", value=str(stale[0]))
        for p in stale:
            p.unlink()
        if overwrite or stale:
            (self.path / MANIFEST_NAME).unlink(missing_ok=True)
        extra = [p for p in self.path.glob("part-*.h5") if int(p.stem.split("-")[1]) >= self.n_shards]
        for p in extra:
            p.unlink()

    def _shard_key(self, p: Path) -> str | None:
        try:
            with h5py.File(p, "r") as f:
                if f.attrs.get("complete", False):
                    return str(f.attrs.get("build_key", ""))
        except (OSError, KeyError):
            pass
        return None

    def shard_done(self, index: int) -> bool:
        p = self.shard_path(index)
        return p.exists() and self._shard_key(p) == self.build_key

    def missing_shards(self) -> list[int]:
        return [i for i in range(self.n_shards) if not self.shard_done(i)]

    # -- one shard ----------------------------------------------------------------------------
    def write_shard(self, index: int, images: Mapping[str, np.ndarray], catalog: Mapping[str, np.ndarray],
                    split: np.ndarray) -> Path:
        """Validate and write shard ``index`` atomically. Returns its path."""
        start, stop = self.shard_range(index)
        n = stop - start
        where = f"shard {index}"
        arrays = _check_arrays(self.schema, images, catalog, split, n, where)
        final = self.shard_path(index)
        fd, tmp = tempfile.mkstemp(prefix=final.name + ".", suffix=".tmp", dir=self.path)
        os.close(fd)
        try:
            with h5py.File(tmp, "w", track_order=True) as f:
                f.attrs["format"] = FORMAT_NAME
                f.attrs["format_version"] = FORMAT_VERSION
                f.attrs["shard_index"] = index
                f.attrs["object_offset"] = start
                f.attrs["n_objects"] = n
                f.attrs["build_key"] = self.build_key
                f.attrs["schema"] = json.dumps(self.schema.to_dict(), sort_keys=True)
                g = f.create_group("images")
                # gzip when asked (smooth maps shrink a lot); level 0 stores raw float32 (noisy
                # stamps: gzip + shuffle saves ~12 % of the bytes and costs ~100x the write time)
                packing = (dict(compression="gzip", compression_opts=self.compression_level, shuffle=True)
                           if self.compression_level else {})
                for spec in self.schema.stacks:
                    ds = g.create_dataset(spec.name, data=arrays["images"][spec.name], chunks=(1, *spec.shape),
                                          track_times=False, **packing)
                    ds.attrs["channels"] = json.dumps(list(spec.channels))
                    ds.attrs["unit"] = spec.unit
                    # Chunks wait in HDF5's chunk cache until the dataset is flushed or closed; when
                    # the close came with Python's garbage collection, the chunks landed at another
                    # place in the file in some processes (same data, other bytes). Flushed here,
                    # the layout is the same in every process.
                    ds.flush()
                c = f.create_group("catalog")
                for spec in self.schema.columns:
                    ds = c.create_dataset(spec.name, data=arrays["catalog"][spec.name], track_times=False)
                    ds.attrs["unit"] = spec.unit
                    ds.attrs["description"] = spec.description
                ds = f.create_dataset("split", data=arrays["split"], track_times=False)
                ds.attrs["names"] = json.dumps(list(self.schema.split_names))
                f.attrs["complete"] = True
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            self.written_sha256[index] = file_sha256(tmp)  # hashed here, in the (parallel) writer
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return final

    # -- the whole set ------------------------------------------------------------------------
    def is_complete(self) -> bool:
        """Whether a finished set of this build is already at :attr:`path` (manifest written,
        every shard present)."""
        manifest = self.path / MANIFEST_NAME
        if not manifest.exists() or self.missing_shards():
            return False
        try:
            return json.loads(manifest.read_text()).get("build_key") == self.build_key
        except (OSError, ValueError):
            return False

    def build(self, job, shard_args: Sequence[tuple], cluster: Mapping[str, Any] | None, name: str,
              provenance: Mapping[str, Any], progress: bool = True) -> Path:
        """Run ``job(*args)`` for each tuple of ``shard_args`` (each writes one missing shard with
        :meth:`write_shard`) on the Dask cluster (default: local), then :meth:`finalize` with
        ``provenance`` plus package versions, time of creation and what this run rendered."""
        import time

        from sim2obs.parallel import run_shards
        from sim2obs.provenance import package_versions

        t0 = time.perf_counter()
        results = run_shards(job, shard_args, cluster or {"kind": "local"}, desc=f"generate {name}",
                             progress=progress)
        for r in results:  # file digests the jobs computed while writing (a job may return None)
            if isinstance(r, Mapping) and "shard" in r and "sha256" in r:
                self.written_sha256[int(r["shard"])] = str(r["sha256"])
        return self.finalize(name, {**provenance, "package_versions": package_versions(),
                                    "created_unix": time.time(),
                                    "render_seconds_this_run": time.perf_counter() - t0,
                                    "shards_rendered_this_run": len(shard_args)})

    def finalize(self, name: str, provenance: Mapping[str, Any]) -> Path:
        """Check every shard, compute the content hash and write ``manifest.json`` atomically.

        Shard file digests come from :attr:`written_sha256` for the shards written in this run
        (computed by the writer as it wrote them), and are read from disk for the others."""
        missing = self.missing_shards()
        if missing:
            raise Sim2obsValueError(f"cannot finalize {self.path}: shards are missing", value=missing)
        shards = []
        for i in range(self.n_shards):
            p = self.shard_path(i)
            start, stop = self.shard_range(i)
            digest = self.written_sha256.get(i) or file_sha256(p)
            shards.append({"file": p.name, "object_offset": start, "n_objects": stop - start,
                           "bytes": p.stat().st_size, "sha256": digest})
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "name": name,
            "n_objects": self.n_objects,
            "build_key": self.build_key,
            "schema": self.schema.to_dict(),
            "shards": shards,
            "provenance": dict(provenance),
        }
        manifest["field_sha256"] = field_digests(self.path, manifest)  # lets readers check labels cheaply
        manifest["content_hash"] = combine_field_digests(manifest["schema"], manifest["field_sha256"])
        text = json.dumps(manifest, indent=1, sort_keys=False, default=str)
        atomic_write(self.path / MANIFEST_NAME, lambda f: f.write(text), mode="w")
        return self.path / MANIFEST_NAME


def _check_arrays(schema: GalaxySetSchema, images: Mapping[str, np.ndarray], catalog: Mapping[str, np.ndarray],
                  split: np.ndarray, n: int, where: str) -> dict[str, Any]:
    """Shape, dtype and finiteness checks before anything is written; returns cast arrays."""
    out: dict[str, Any] = {"images": {}, "catalog": {}}
    for key, have, want in (("image stack", set(images), {s.name for s in schema.stacks}),
                            ("catalogue column", set(catalog), {c.name for c in schema.columns})):
        if have != want:
            raise Sim2obsValueError(f"{where}: {key}s do not match the schema",
                                    value={"missing": sorted(want - have), "unexpected": sorted(have - want)})
    for spec in schema.stacks:
        arr = np.asarray(images[spec.name], dtype=np.float32)
        if arr.shape != (n, *spec.shape):
            raise Sim2obsValueError(f"{where}: image stack {spec.name!r} has the wrong shape",
                                    value=arr.shape, allowed=(n, *spec.shape))
        if not np.isfinite(arr).all():
            bad = int(np.argwhere(~np.isfinite(arr))[0][0])
            raise Sim2obsValueError(f"{where}: image stack {spec.name!r} holds NaN/inf (object {bad})")
        out["images"][spec.name] = arr
    for spec in schema.columns:
        arr = np.asarray(catalog[spec.name]).astype(spec.dtype, copy=False)
        if arr.shape != (n,):
            raise Sim2obsValueError(f"{where}: column {spec.name!r} has the wrong shape", value=arr.shape,
                                    allowed=(n,))
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise Sim2obsValueError(f"{where}: column {spec.name!r} holds NaN/inf")
        out["catalog"][spec.name] = arr
    codes = np.asarray(split)
    if codes.shape != (n,) or codes.min(initial=0) < 0 or codes.max(initial=0) >= len(schema.split_names):
        raise Sim2obsValueError(f"{where}: split codes must be (n,) in [0, {len(schema.split_names)})",
                                value=codes.shape)
    out["split"] = codes.astype(np.int8)
    return out


# --------------------------------------------------------------------------------------------
# Content hash
# --------------------------------------------------------------------------------------------
def compute_content_hash(directory: Path, manifest: Mapping[str, Any], block: int = 256) -> str:
    """sha256 over the schema and, field by field in object order, the bytes of every image
    stack, catalogue column and the split codes. Independent of how the set is sharded."""
    return combine_field_digests(manifest["schema"], field_digests(directory, manifest, block))


def _fields(schema_dict: Mapping[str, Any]) -> list[str]:
    schema = GalaxySetSchema.from_dict(schema_dict)
    return [f"images/{s.name}" for s in schema.stacks] + [f"catalog/{c.name}" for c in schema.columns] + ["split"]


def array_digest(values: np.ndarray) -> str:
    """sha256 (hex) of an array's little-endian bytes in order: the digest of one field of
    the content hash (e.g. a whole catalogue column in object order)."""
    a = np.ascontiguousarray(values)
    return hashlib.sha256(a.astype(a.dtype.newbyteorder("<")).tobytes()).hexdigest()


def combine_field_digests(schema_dict: Mapping[str, Any], digests: Mapping[str, str]) -> str:
    """The content hash from the per-field digests (hex, as :func:`field_digests` returns)."""
    top = hashlib.sha256()
    top.update(f"{FORMAT_NAME}/{FORMAT_VERSION}".encode())
    top.update(json.dumps(schema_dict, sort_keys=True).encode())
    for k in _fields(schema_dict):
        top.update(k.encode())
        top.update(bytes.fromhex(digests[k]))
    return top.hexdigest()


def field_digests(directory: Path, manifest: Mapping[str, Any], block: int = 256) -> dict[str, str]:
    """{field: sha256 hex} of every image stack, catalogue column and the split codes, each
    over the field's bytes in object order (reads every shard)."""
    fields = _fields(manifest["schema"])
    hashers = {k: hashlib.sha256() for k in fields}
    for shard in manifest["shards"]:
        path = Path(directory) / shard["file"]
        with h5py.File(path, "r") as f:
            n = int(f.attrs["n_objects"])
            for k in fields:
                ds = f[k]
                for a in range(0, n, block):
                    hashers[k].update(np.ascontiguousarray(ds[a:a + block]).astype(ds.dtype.newbyteorder("<")).tobytes())
    return {k: h.hexdigest() for k, h in hashers.items()}


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
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
        self._validate_manifest(manifest_path)
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
        image_bytes = sum(self.n * int(np.prod(s.shape)) * 4 for s in self.schema.stacks)
        if check == "full" or (check == "auto" and image_bytes <= _AUTO_IMAGE_SCAN_BYTES):
            self.check_images()
        self._handles: dict[int, h5py.File] = {}
        self._datasets: dict[tuple[int, str], h5py.Dataset] = {}
        self._pid = os.getpid()

    # -- validation ---------------------------------------------------------------------------
    def _validate_manifest(self, mpath: Path) -> None:
        m = self.manifest
        for key in ("format", "format_version", "name", "n_objects", "schema", "shards", "content_hash"):
            if key not in m:
                raise DataFormatError(mpath, key, "missing manifest field")
        if m["format"] != FORMAT_NAME:
            raise DataFormatError(mpath, "format", f"not a galaxy set (format {m['format']!r})")
        if int(m["format_version"]) > FORMAT_VERSION:
            raise DataFormatError(mpath, "format_version", f"written by a newer sim2obs (version "
                                  f"{m['format_version']}, this reader knows {FORMAT_VERSION})")
        try:
            self.schema = GalaxySetSchema.from_dict(m["schema"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataFormatError(mpath, "schema", f"invalid schema ({exc})") from None
        expected = 0
        for i, s in enumerate(m["shards"]):
            name = str(s.get("file", ""))
            if Path(name).name != name or name in ("", ".", "..") or not name.endswith(".h5"):
                raise DataFormatError(mpath, f"shards[{i}].file", f"{name!r} is not a shard file name inside "
                                      "the set's directory (no folders, no '..')")
            if int(s["object_offset"]) != expected:
                raise DataFormatError(mpath, f"shards[{i}].object_offset", "shards are not contiguous")
            expected += int(s["n_objects"])
            f = self.path / s["file"]
            if not f.exists():
                raise DataFormatError(f, None, "shard file listed in the manifest is missing")
            size = f.stat().st_size
            if "bytes" in s and size != int(s["bytes"]):
                raise DataFormatError(f, None, f"file is {size} bytes but the manifest records {s['bytes']} "
                                      "(truncated or modified)")
        if expected != int(m["n_objects"]):
            raise DataFormatError(mpath, "n_objects", f"shards hold {expected} objects, manifest says "
                                  f"{m['n_objects']}")

    def _read_shard_metadata(self, i: int, path: Path) -> None:
        start, stop = int(self._offsets[i]), int(self._offsets[i + 1])
        n = stop - start
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise DataFormatError(path, None, f"cannot open as HDF5 ({exc})") from None
        with f:
            for key in ("format", "n_objects", "object_offset"):
                if key not in f.attrs:
                    raise DataFormatError(path, f"attrs/{key}", "missing shard attribute")
            if f.attrs["format"] != FORMAT_NAME or int(f.attrs["n_objects"]) != n \
                    or int(f.attrs["object_offset"]) != start:
                raise DataFormatError(path, "attrs", "shard attributes do not match the manifest")
            for spec in self.schema.stacks:
                key = f"images/{spec.name}"
                if key not in f:
                    raise DataFormatError(path, key, "missing image stack")
                ds = f[key]
                if ds.shape != (n, *spec.shape):
                    raise DataFormatError(path, key, f"shape {ds.shape}, expected {(n, *spec.shape)}")
                if ds.dtype != np.float32:
                    raise DataFormatError(path, key, f"dtype {ds.dtype}, expected float32")
            for spec in self.schema.columns:
                key = f"catalog/{spec.name}"
                if key not in f:
                    raise DataFormatError(path, key, "missing catalogue column")
                ds = f[key]
                if ds.shape != (n,):
                    raise DataFormatError(path, key, f"shape {ds.shape}, expected {(n,)}")
                try:
                    values = ds[()]
                except OSError as exc:
                    raise DataFormatError(path, key, f"unreadable ({exc})") from None
                if values.dtype.kind == "f" and not np.isfinite(values).all():
                    bad = int(np.flatnonzero(~np.isfinite(values))[0])
                    raise DataFormatError(path, key, f"NaN/inf value (object {start + bad})")
                self._catalog.setdefault(spec.name, np.empty(self.n, dtype=values.dtype))[start:stop] = values
            if "split" not in f or f["split"].shape != (n,):
                raise DataFormatError(path, "split", "missing or wrongly shaped split codes")
            codes = f["split"][()]
            if codes.size and (codes.min() < 0 or codes.max() >= len(self.schema.split_names)):
                raise DataFormatError(path, "split", "split code outside the split names")
            self._split[start:stop] = codes
        ids = self._catalog["id"]
        if i == len(self._shard_files) - 1 and len(np.unique(ids)) != self.n:
            raise DataFormatError(self.path, "catalog/id", "object ids are not unique")

    def check_images(self, block: int = 256) -> None:
        """Read every image and raise :class:`DataFormatError` naming file, stack and object on
        a NaN/inf value or an unreadable (e.g. truncated) chunk."""
        for i, path in enumerate(self._shard_files):
            start = int(self._offsets[i])
            with h5py.File(path, "r") as f:
                for spec in self.schema.stacks:
                    ds = f[f"images/{spec.name}"]
                    for a in range(0, ds.shape[0], block):
                        try:
                            arr = ds[a:a + block]
                        except OSError as exc:
                            raise DataFormatError(path, f"images/{spec.name}",
                                                  f"unreadable near object {start + a} ({exc})") from None
                        finite = np.isfinite(arr).reshape(len(arr), -1).all(axis=1)
                        if not finite.all():
                            bad = start + a + int(np.flatnonzero(~finite)[0])
                            raise DataFormatError(path, f"images/{spec.name}", f"NaN/inf in object {bad}")

    def verify(self) -> None:
        """Full integrity check: image scan, shard file checksums, no unknown shard files, and
        the content hash."""
        listed = {s["file"] for s in self.manifest["shards"]}
        unknown = sorted(p.name for p in self.path.glob("*.h5") if p.name not in listed)
        if unknown:
            raise DataFormatError(self.path / unknown[0], None, f"{len(unknown)} shard file(s) not listed in the "
                                  f"manifest ({', '.join(unknown[:5])}): a leftover or foreign file")
        self.check_images()
        for s, path in zip(self.manifest["shards"], self._shard_files):
            if "sha256" in s and file_sha256(path) != s["sha256"]:
                raise DataFormatError(path, None, "sha256 differs from the manifest (file modified)")
        if compute_content_hash(self.path, self.manifest) != self.content_hash:
            raise DataFormatError(self.path / MANIFEST_NAME, "content_hash", "data do not match the content hash")

    def check_columns(self, names: Sequence[str]) -> None:
        """Check that the catalogue columns ``names`` and the split codes this reader holds (what
        a task scores against) are the data the content hash names. Each is hashed whole, in
        object order (:func:`array_digest`), and compared with the manifest's ``field_sha256``,
        whose digests must combine to ``content_hash`` (memory only: milliseconds). A manifest
        without ``field_sha256`` (older sets) is checked once per reader by hashing every field
        from the shards. A mismatch raises :class:`DataFormatError` naming the field."""
        mpath = self.path / MANIFEST_NAME
        digests = self.manifest.get("field_sha256")
        if digests is None:
            digests = getattr(self, "_disk_digests", None)
            if digests is None:
                digests = field_digests(self.path, self.manifest)
                if combine_field_digests(self.manifest["schema"], digests) != self.content_hash:
                    raise DataFormatError(self.path, "content_hash", "the shards do not hold the data the "
                                          f"manifest's content hash {self.content_hash[:12]}… names (modified after "
                                          "writing); refusing to score against them")
                self._disk_digests = digests
        elif combine_field_digests(self.manifest["schema"], digests) != self.content_hash:
            raise DataFormatError(mpath, "field_sha256", "the field digests do not give the content hash")
        fields = {f"catalog/{c}": self.column(c) for c in dict.fromkeys(names)}
        fields["split"] = self._split.astype(np.int8)
        for key, values in fields.items():
            if digests.get(key) != array_digest(values):
                raise DataFormatError(self.path, key, "values differ from the data the manifest's content hash "
                                      f"{self.content_hash[:12]}… names (edited after the set was written); "
                                      "refusing to score against them")

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
        import pandas as pd

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
        decompresses objects nobody asked for)."""
        spec = self.schema.stack(stack)
        idx = np.asarray(list(indices) if indices is not None else self.indices(split), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise IndexError(f"object indices outside [0, {self.n})")
        wanted, inverse = np.unique(idx, return_inverse=True)
        unique = np.empty((len(wanted), *spec.shape), dtype=np.float32)
        runs = np.flatnonzero(np.diff(wanted) != 1) + 1
        for a, b in zip(np.r_[0, runs], np.r_[runs, len(wanted)]) if len(wanted) else ():
            first, last = int(wanted[a]), int(wanted[b - 1])
            shard = int(np.searchsorted(self._offsets, first, side="right") - 1)
            while a < b:  # a run may cross shard boundaries
                stop = min(last + 1, int(self._offsets[shard + 1]))
                lo = first - int(self._offsets[shard])
                count = stop - first
                try:
                    self._stack(shard, stack).read_direct(unique, np.s_[lo:lo + count], np.s_[a:a + count])
                except OSError as exc:
                    raise DataFormatError(self._shard_files[shard], f"images/{stack}",
                                          f"unreadable near object {first} ({exc})") from None
                a, first, shard = a + count, stop, shard + 1
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
