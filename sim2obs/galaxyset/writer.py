"""Writing a galaxy set: shard by shard (possibly in parallel processes), each file atomically,
then the manifest with the content hash, last."""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from sim2obs.atomic import atomic_write
from sim2obs.errors import Sim2obsValueError
from sim2obs.galaxyset.hashing import combine_field_digests, field_digests
from sim2obs.galaxyset.schema import FORMAT_NAME, FORMAT_VERSION, MANIFEST_NAME, GalaxySetSchema
from sim2obs.galaxyset.validation import check_arrays
from sim2obs.parallel import run_shards
from sim2obs.provenance import file_sha256, package_versions


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
        arrays = check_arrays(self.schema, images, catalog, split, n, where)
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

    def build(self, job, shard_args: Sequence[tuple], cluster: Any, name: str,
              provenance: Mapping[str, Any], progress: bool = True) -> Path:
        """Run ``job(*args)`` for each tuple of ``shard_args`` (each writes one missing shard with
        :meth:`write_shard`) on the Dask cluster (a config, default local, or a
        :class:`~sim2obs.parallel.ClusterInBackground`), then :meth:`finalize` with
        ``provenance`` plus package versions, time of creation and what this run rendered."""
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
