"""The content hash of a galaxy set: sha256 over the schema and, field by field in object order, the
bytes of every image stack, catalogue column and the split codes (independent of the sharding)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from sim2obs.galaxyset.schema import FORMAT_NAME, FORMAT_VERSION, GalaxySetSchema


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
