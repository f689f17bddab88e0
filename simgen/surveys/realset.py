"""Shared pieces of the real-set recipes (:mod:`.recipes`): remote catalogue files, the SDSS
photometry query, sky joins that keep column names apart, and writing a ``kind: real`` galaxy set
with :class:`~sim2obs.galaxyset.GalaxySetWriter` exactly as the generators do."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlencode

import numpy as np
from astropy.table import Table

from sim2obs.download import Downloader, Remote
from sim2obs.errors import DataFormatError, Sim2obsValueError
from sim2obs.galaxyset import ColumnSpec, GalaxySetSchema, GalaxySetWriter, StackSpec, assign_splits
from sim2obs.provenance import stable_hash
from sim2obs.simgen.surveys.crossmatch import match_catalogs

REAL_SET_VERSION = "1.0"


@dataclass
class SourceFile:
    """A remote catalogue file: ``url``, ``name`` (its path in the download cache), and its
    ``sha256`` / ``size`` (bytes) when known (checked after download)."""

    url: str = ""
    name: str = ""
    sha256: str | None = None
    size: int | None = None
    version: str = ""

    def remote(self, what: str = "") -> Remote:
        if not self.url or not self.name:
            raise Sim2obsValueError(f"{what or 'source file'}: needs a url and a cache name", value=(self.url, self.name))
        return Remote(self.url, self.name, sha256=self.sha256, size=self.size, description=what or self.name)


@dataclass
class PhotometryConfig:
    """SDSS photometry for the catalogue galaxies, from the SkyServer SQL search service as CSV.

    ``url``: the service (``?cmd=<sql>&format=csv``); ``sql``: the query, with ``{chunk}`` and
    ``{n_chunks}`` filled in for each of ``chunks`` requests (the service caps rows per answer:
    split a large query, e.g. ``AND (p.objID % {n_chunks}) = {chunk}``); ``match_arcsec``: the
    catalogue-photometry match radius. The columns must include ``objid, ra, dec, run, camcol,
    field`` (frames) and what the selection reads."""

    url: str = "https://skyserver.sdss.org/dr17/SkyServerWS/SearchTools/SqlSearch"
    sql: str = ""
    chunks: int = 1
    match_arcsec: float = 1.0
    release: str = "DR17"

    def remotes(self) -> list[Remote]:
        if self.chunks < 1:
            raise Sim2obsValueError("photometry.chunks must be >= 1", value=self.chunks)
        out = []
        for k in range(self.chunks):
            sql = " ".join(self.sql.format(chunk=k, n_chunks=self.chunks).split())
            key = stable_hash({"url": self.url, "sql": sql}, 12)
            out.append(Remote(f"{self.url}?{urlencode({'cmd': sql, 'format': 'csv'})}",
                              f"sdss_sql/{self.release}/{key}_{k}of{self.chunks}.csv", kind="text",
                              description=f"SDSS photometry query {k + 1}/{self.chunks}"))
        return out


def read_photometry(paths: Sequence[Path]) -> Table:
    """The SQL answers (CSV; SkyServer's ``#Table1`` line is a comment) stacked, lower-case names."""
    from astropy.table import vstack

    parts = []
    for p in paths:
        try:
            t = Table.read(p, format="ascii.csv", comment="#")
        except Exception as err:  # noqa: BLE001 - any parse failure is a bad file
            raise DataFormatError(p, None, f"not a CSV answer of the SDSS SQL service ({err})") from None
        t.rename_columns(t.colnames, [c.lower() for c in t.colnames])
        for need in ("objid", "ra", "dec"):
            if need not in t.colnames:
                raise DataFormatError(p, need, f"missing column of the photometry query (found: {t.colnames[:20]})")
        parts.append(t)
    out = vstack(parts, metadata_conflicts="silent") if len(parts) > 1 else parts[0]
    out.meta["source_files"] = [str(p) for p in paths]
    return out


def sky_join(left: Table, right: Table, radius_arcsec: float, suffix: str,
             names: tuple[str, str] = ("left", "right")) -> tuple[Table, dict[str, Any]]:
    """Match ``right`` onto ``left`` by position (:func:`match_catalogs`); every ``right`` column
    whose name ``left`` also has (``ra``, ``dec`` included) gets ``_<suffix>``, so the left
    names stay as they are. Returns the matched rows and the match report."""
    right = right.copy(copy_data=False)
    clash = [c for c in right.colnames if c in left.colnames]
    if clash:
        right.rename_columns(clash, [f"{c}_{suffix}" for c in clash])
    ra, dec = ("ra", "dec") if "ra" not in clash else (f"ra_{suffix}", f"dec_{suffix}")
    matched, report = match_catalogs(left, right, radius_arcsec, right_coords=(ra, dec), table_names=names)
    return matched, report


def subset(table: Table, max_galaxies: int | None, seed: int) -> Table:
    """At most ``max_galaxies`` rows, drawn at random with ``seed`` (kept in table order)."""
    if max_galaxies is None or len(table) <= max_galaxies:
        return table
    pick = np.sort(np.random.default_rng(seed).choice(len(table), int(max_galaxies), replace=False))
    return table[pick]


def float_column(table: Table, name: str) -> np.ndarray:
    """Column ``name`` as float64 with masked values as NaN."""
    if name not in table.colnames:
        raise DataFormatError(table.meta.get("source_file", "<table>"), name, "column missing")
    return np.asarray(np.ma.filled(np.ma.asarray(table[name], dtype=np.float64), np.nan))


@dataclass
class RealSetContent:
    """What a recipe writes: ``stacks`` {StackSpec: (n, c, h, w) array}, ``columns``
    {ColumnSpec: (n,) array} (``id`` included), and ``provenance``."""

    stacks: dict[StackSpec, np.ndarray] = field(default_factory=dict)
    columns: dict[ColumnSpec, np.ndarray] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


def finite_rows(content: RealSetContent, block: int = 512) -> np.ndarray:
    """Indices of the rows without NaN/inf in any float column or image (the format refuses
    them); image stacks (possibly disk-backed) are scanned ``block`` rows at a time."""
    n = len(next(iter(content.columns.values())))
    ok = np.ones(n, dtype=bool)
    for values in content.columns.values():
        v = np.asarray(values)
        if v.dtype.kind == "f":
            ok &= np.isfinite(v)
    for arr in content.stacks.values():
        for a in range(0, n, block):
            ok[a:a + block] &= np.isfinite(np.asarray(arr[a:a + block]).reshape(min(block, n - a), -1)).all(axis=1)
    return np.flatnonzero(ok)


def _write_shard(writer: GalaxySetWriter, index: int, stacks: dict, columns: dict, rows: np.ndarray,
                 split: np.ndarray) -> dict:
    """Worker job: shard ``index`` from the given ``rows`` of the (possibly disk-backed) stacks."""
    images = {spec.name: np.asarray(arr[rows]) for spec, arr in stacks.items()}
    catalog = {spec.name: np.asarray(values)[rows] for spec, values in columns.items()}
    writer.write_shard(index, images, catalog, split)
    return {"shard": index}


#: Image stacks larger than this (bytes) are built in a disk-backed memmap, not in memory.
SCRATCH_LIMIT_BYTES = 512e6


def scratch_stack(shape: tuple[int, ...], scratch: Path | None, name: str) -> np.ndarray:
    """A float32 array of ``shape``: in memory when at most :data:`SCRATCH_LIMIT_BYTES`, else a
    ``.npy`` memmap in ``scratch`` (the build's temporary folder), so that a large real set never
    sits in memory whole."""
    nbytes = 4 * int(np.prod(shape))
    if scratch is None or nbytes <= SCRATCH_LIMIT_BYTES:
        return np.zeros(shape, dtype=np.float32)
    scratch.mkdir(parents=True, exist_ok=True)
    return np.lib.format.open_memmap(scratch / f"{name}.npy", mode="w+", dtype=np.float32, shape=shape)


def write_real_set(out: str | Path, name: str, content: RealSetContent, split: Mapping[str, float], seed: int,
                   shard_size: int = 1000, overwrite: bool = False, progress: bool = False,
                   split_codes: tuple[np.ndarray, Sequence[str]] | None = None) -> Path:
    """Write ``content`` as a galaxy set at ``out`` (provenance ``kind: real``), split at random with
    ``split`` fractions and ``seed``, or as ``split_codes`` = (codes (n,), names) say. Rows with
    NaN/inf are left out (and counted). Returns ``out``. A set of the same build already there is kept."""
    rows = finite_rows(content)
    dropped = len(next(iter(content.columns.values()))) - len(rows)
    id_spec = next(c for c in content.columns if c.name == "id")
    ids = np.asarray(content.columns[id_spec], dtype=np.int64)[rows]
    n = len(ids)
    if n == 0:
        raise Sim2obsValueError(f"real set {name!r}: no galaxy survived the selection and image steps", value=0)
    if len(np.unique(ids)) != n:
        raise Sim2obsValueError(f"real set {name!r}: ids are not unique", value=int(n - len(np.unique(ids))))
    names = tuple(split_codes[1]) if split_codes is not None else tuple(split)
    schema = GalaxySetSchema(stacks=tuple(content.stacks), columns=tuple(content.columns), split_names=names)
    codes = (np.asarray(split_codes[0], dtype=np.int8)[rows] if split_codes is not None
             else assign_splits(n, dict(split), seed)[0])
    key = stable_hash({"name": name, "version": REAL_SET_VERSION, "schema": schema.to_dict(), "split": dict(split),
                       "seed": seed, "codes": stable_hash(codes.tolist()), "ids": stable_hash(ids.tolist()),
                       "provenance": stable_hash(content.provenance)})
    writer = GalaxySetWriter(Path(out), schema, n, int(shard_size), key)
    writer.prepare(overwrite=overwrite)
    if writer.is_complete():
        return Path(out)
    args = []
    for i in writer.missing_shards():
        a, b = writer.shard_range(i)
        args.append((writer, i, content.stacks, content.columns, rows[a:b], codes[a:b]))
    provenance = {"kind": "real", "source": name, "source_version": REAL_SET_VERSION, "seed": seed,
                  "split": dict(split), "n_dropped_non_finite": dropped,
                  "built_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), **content.provenance}
    writer.build(_write_shard, args, {"kind": "synchronous"}, name, provenance, progress=progress)
    return Path(out)


def download_records(dl: Downloader, remotes: Sequence[Remote]) -> list[dict[str, Any]]:
    """Provenance of downloaded files: url, cache name, size, sha256, download date."""
    out = []
    for r in remotes:
        rec = dl.record(r) or {}
        out.append({"name": r.name, "url": r.url, "size": rec.get("size"), "sha256": rec.get("sha256"),
                    "downloaded_utc": rec.get("date")})
    return out


def elapsed(t0: float) -> float:
    return round(time.perf_counter() - t0, 3)
