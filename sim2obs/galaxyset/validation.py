"""Validation of galaxy sets: arrays before they are written, and a set's manifest, shards, images,
file checksums and field digests when it is read.

Every problem on disk raises :class:`~sim2obs.errors.DataFormatError` naming the file and the field;
bad arrays handed to the writer raise :class:`~sim2obs.errors.Sim2obsValueError` naming the shard
and the stack or column.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from sim2obs.errors import DataFormatError, Sim2obsValueError
from sim2obs.galaxyset.hashing import array_digest, combine_field_digests, compute_content_hash, field_digests
from sim2obs.galaxyset.schema import FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, GalaxySetSchema
from sim2obs.provenance import file_sha256


# --------------------------------------------------------------------------------------------
# Before writing
# --------------------------------------------------------------------------------------------
def check_arrays(schema: GalaxySetSchema, images: Mapping[str, np.ndarray], catalog: Mapping[str, np.ndarray],
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
# On opening: manifest and shards
# --------------------------------------------------------------------------------------------
def validate_manifest(m: Mapping[str, Any], directory: Path, mpath: Path) -> GalaxySetSchema:
    """Check the manifest ``m`` (read from ``mpath``) of the set in ``directory``: required fields,
    format and version, schema, shard file names, contiguous object ranges, shard files present
    with their recorded sizes. Returns the parsed schema."""
    for key in ("format", "format_version", "name", "n_objects", "schema", "shards", "content_hash"):
        if key not in m:
            raise DataFormatError(mpath, key, "missing manifest field")
    if m["format"] != FORMAT_NAME:
        raise DataFormatError(mpath, "format", f"not a galaxy set (format {m['format']!r})")
    if int(m["format_version"]) > FORMAT_VERSION:
        raise DataFormatError(mpath, "format_version", f"written by a newer sim2obs (version "
                              f"{m['format_version']}, this reader knows {FORMAT_VERSION})")
    try:
        schema = GalaxySetSchema.from_dict(m["schema"])
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
        f = directory / s["file"]
        if not f.exists():
            raise DataFormatError(f, None, "shard file listed in the manifest is missing")
        size = f.stat().st_size
        if "bytes" in s and size != int(s["bytes"]):
            raise DataFormatError(f, None, f"file is {size} bytes but the manifest records {s['bytes']} "
                                  "(truncated or modified)")
    if expected != int(m["n_objects"]):
        raise DataFormatError(mpath, "n_objects", f"shards hold {expected} objects, manifest says "
                              f"{m['n_objects']}")
    return schema


def read_shard_metadata(path: Path, schema: GalaxySetSchema, start: int, stop: int
                        ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Check shard ``path`` (objects ``[start, stop)``) against ``schema``: attributes, the shape and
    dtype of every image stack, every catalogue column (read, finite) and the split codes.
    Returns ``({column: (n,) values}, (n,) split codes)`` of the shard."""
    n = stop - start
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DataFormatError(path, None, f"cannot open as HDF5 ({exc})") from None
    columns: dict[str, np.ndarray] = {}
    with f:
        for key in ("format", "n_objects", "object_offset"):
            if key not in f.attrs:
                raise DataFormatError(path, f"attrs/{key}", "missing shard attribute")
        if f.attrs["format"] != FORMAT_NAME or int(f.attrs["n_objects"]) != n \
                or int(f.attrs["object_offset"]) != start:
            raise DataFormatError(path, "attrs", "shard attributes do not match the manifest")
        for spec in schema.stacks:
            key = f"images/{spec.name}"
            if key not in f:
                raise DataFormatError(path, key, "missing image stack")
            ds = f[key]
            if ds.shape != (n, *spec.shape):
                raise DataFormatError(path, key, f"shape {ds.shape}, expected {(n, *spec.shape)}")
            if ds.dtype != np.float32:
                raise DataFormatError(path, key, f"dtype {ds.dtype}, expected float32")
        for spec in schema.columns:
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
            columns[spec.name] = values
        if "split" not in f or f["split"].shape != (n,):
            raise DataFormatError(path, "split", "missing or wrongly shaped split codes")
        codes = f["split"][()]
        if codes.size and (codes.min() < 0 or codes.max() >= len(schema.split_names)):
            raise DataFormatError(path, "split", "split code outside the split names")
    return columns, codes


def check_unique_ids(directory: Path, ids: np.ndarray) -> None:
    """Object ids ``(n,)`` of the whole set must be unique."""
    if len(np.unique(ids)) != len(ids):
        raise DataFormatError(directory, "catalog/id", "object ids are not unique")


# --------------------------------------------------------------------------------------------
# Images, files and content
# --------------------------------------------------------------------------------------------
def check_images(shard_files: Sequence[Path], offsets: np.ndarray, schema: GalaxySetSchema, block: int = 256) -> None:
    """Read every image of every shard (``offsets``: first global object index of each shard) and
    raise :class:`DataFormatError` naming file, stack and object on a NaN/inf value or an
    unreadable (e.g. truncated) chunk."""
    for i, path in enumerate(shard_files):
        start = int(offsets[i])
        with h5py.File(path, "r") as f:
            for spec in schema.stacks:
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


def verify_set(directory: Path, manifest: Mapping[str, Any], shard_files: Sequence[Path], offsets: np.ndarray,
               schema: GalaxySetSchema) -> None:
    """Full integrity check of the set in ``directory``: no unknown shard files, an image scan,
    shard file checksums, and the content hash."""
    listed = {s["file"] for s in manifest["shards"]}
    unknown = sorted(p.name for p in directory.glob("*.h5") if p.name not in listed)
    if unknown:
        raise DataFormatError(directory / unknown[0], None, f"{len(unknown)} shard file(s) not listed in the "
                              f"manifest ({', '.join(unknown[:5])}): a leftover or foreign file")
    check_images(shard_files, offsets, schema)
    for s, path in zip(manifest["shards"], shard_files):
        if "sha256" in s and file_sha256(path) != s["sha256"]:
            raise DataFormatError(path, None, "sha256 differs from the manifest (file modified)")
    if compute_content_hash(directory, manifest) != manifest["content_hash"]:
        raise DataFormatError(directory / MANIFEST_NAME, "content_hash", "data do not match the content hash")


def trusted_field_digests(directory: Path, manifest: Mapping[str, Any]) -> dict[str, str] | None:
    """The manifest's ``field_sha256`` after checking that they combine to its ``content_hash``
    (memory only), or None when the manifest has none (older sets: see :func:`disk_field_digests`)."""
    digests = manifest.get("field_sha256")
    if digests is not None and combine_field_digests(manifest["schema"], digests) != manifest["content_hash"]:
        raise DataFormatError(directory / MANIFEST_NAME, "field_sha256", "the field digests do not give the "
                              "content hash")
    return digests


def disk_field_digests(directory: Path, manifest: Mapping[str, Any]) -> dict[str, str]:
    """Per-field digests hashed from the shards (reads every shard), checked against the content hash."""
    digests = field_digests(directory, manifest)
    content_hash = manifest["content_hash"]
    if combine_field_digests(manifest["schema"], digests) != content_hash:
        raise DataFormatError(directory, "content_hash", "the shards do not hold the data the "
                              f"manifest's content hash {content_hash[:12]}… names (modified after "
                              "writing); refusing to score against them")
    return digests


def check_field_values(directory: Path, content_hash: str, digests: Mapping[str, str],
                       fields: Mapping[str, np.ndarray]) -> None:
    """Each array of ``fields`` ({``catalog/<column>`` or ``split``: values in object order}) must have
    the digest (:func:`array_digest`) recorded for it in ``digests``."""
    for key, values in fields.items():
        if digests.get(key) != array_digest(values):
            raise DataFormatError(directory, key, "values differ from the data the manifest's content hash "
                                  f"{content_hash[:12]}… names (edited after the set was written); "
                                  "refusing to score against them")
