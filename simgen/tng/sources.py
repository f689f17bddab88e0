"""Where the TNG mock pipeline's particles come from, in the IllustrisTNG layout and code units:
a simulation's ``basePath`` read through ``illustris_python`` (checked before any work), per-subhalo
cutouts from the TNG web API (:mod:`sim2obs.simgen.tng.webapi`), or the embedded mini-simulation,
written first and then read like real output (:mod:`sim2obs.simgen.tng.minisim_writer`).

:func:`open_source` prepares a source and returns it (picklable, for Dask workers) with the
catalogue records of the subhalos passing the cheap catalogue pre-cut."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import h5py
import illustris_python as il
import numpy as np

from sim2obs.errors import DataFormatError
from sim2obs.provenance import stable_hash
from sim2obs.simgen.tng.minisim_config import coerce_minisim_config, minisim_config_dict
from sim2obs.simgen.tng.minisim_writer import write_minisim

if TYPE_CHECKING:  # annotations only: the mock config reads sources, not the other way round
    from sim2obs.simgen.tng.mock_config import TNGMockConfig

_SUBHALO_FIELDS = ["SubhaloPos", "SubhaloVel", "SubhaloMass", "SubhaloMassType", "SubhaloLenType"]


def _field_lists() -> dict[str, tuple[int, list[str]]]:
    """``type name -> (PartType number, fields the pipeline reads)``."""
    # deferred: the web API client loads requests (~0.15 s)
    from sim2obs.simgen.tng.webapi import PART_TYPES, PIPELINE_FIELDS

    return {name: (PART_TYPES[name], list(fields)) for name, fields in PIPELINE_FIELDS.items()}


_TRAILING = {"Coordinates": (3,), "Velocities": (3,), "GFM_StellarPhotometrics": (8,)}


def _check_groupcat(base: str, snapshot: int) -> tuple[int, int]:
    """Every group-catalogue chunk with the subhalo fields the pipeline reads; returns (number of
    chunks, number of subhalos)."""
    gc0 = Path(il.groupcat.gcPath(base, snapshot, 0))
    if not gc0.exists():
        raise DataFormatError(gc0, None, "no group catalogue chunk 0 (is base_path the simulation's 'output' "
                                         "directory?)")
    with h5py.File(gc0, "r") as f:
        for key in ("Nsubgroups_Total", "NumFiles"):
            if key not in f["Header"].attrs:
                raise DataFormatError(gc0, f"Header/{key}", "missing group-catalogue header attribute")
        n_chunks = int(f["Header"].attrs["NumFiles"])
        n_sub = int(f["Header"].attrs["Nsubgroups_Total"])
    for i in range(n_chunks):
        path = Path(il.groupcat.gcPath(base, snapshot, i))
        if not path.exists():
            raise DataFormatError(path, None, f"group catalogue chunk {i} of {n_chunks} is missing")
        with h5py.File(path, "r") as f:
            n_here = int(f["Header"].attrs.get("Nsubgroups_ThisFile", n_sub if n_chunks == 1 else -1))
            for name in _SUBHALO_FIELDS:
                if n_here and f"Subhalo/{name}" not in f:
                    raise DataFormatError(path, f"Subhalo/{name}", "missing group-catalogue field")
                if n_here and f[f"Subhalo/{name}"].shape[0] != n_here:
                    raise DataFormatError(path, f"Subhalo/{name}", f"has {f[f'Subhalo/{name}'].shape[0]} rows, "
                                                                   f"Nsubgroups_ThisFile is {n_here}")
    return n_chunks, n_sub


def _check_offsets(base: str, snapshot: int, n_chunks: int, n_sub: int) -> None:
    """The offsets file ``snapshot.loadSubhalo`` needs, with datasets of the right shapes."""
    offsets = Path(il.groupcat.offsetPath(base, snapshot))
    if not offsets.exists():
        raise DataFormatError(offsets, None, "the offsets file is missing (snapshot.loadSubhalo needs it)")
    with h5py.File(offsets, "r") as f:
        for name, shape in (("FileOffsets/Subhalo", (n_chunks,)), ("FileOffsets/SnapByType", None),
                            ("Subhalo/SnapByType", (n_sub, 6))):
            if name not in f:
                raise DataFormatError(offsets, name, "missing offsets dataset")
            if shape is not None and f[name].shape != shape:
                raise DataFormatError(offsets, name, f"shape {f[name].shape}, expected {shape}")


def _check_snapshot_fields(base: str, snapshot: int, n_files: int) -> None:
    """Every snapshot chunk with the particle fields the pipeline reads, of the right shapes."""
    types = _field_lists()
    for i in range(n_files):
        path = Path(il.snapshot.snapPath(base, snapshot, i))
        if not path.exists():
            raise DataFormatError(path, None, f"snapshot chunk {i} is missing")
        with h5py.File(path, "r") as f:
            n_this = f["Header"].attrs.get("NumPart_ThisFile")
            if n_this is None:
                raise DataFormatError(path, "Header/NumPart_ThisFile", "missing snapshot header attribute")
            for _, (ptype, names) in types.items():
                n = int(n_this[ptype])
                if not n:
                    continue
                for name in names:
                    key = f"PartType{ptype}/{name}"
                    if key not in f:
                        raise DataFormatError(path, key, "missing particle field")
                    want = (n, *_TRAILING.get(name, ()))
                    if f[key].shape != want:
                        raise DataFormatError(path, key, f"shape {f[key].shape}, expected {want}")


def check_simulation(base_path: str | os.PathLike, snapshot: int) -> dict[str, Any]:
    """Check that ``base_path`` holds what the pipeline reads, before any work; return the
    snapshot header. A missing file, attribute or dataset, or a dataset of the wrong shape,
    raises :class:`DataFormatError` naming the file and the field."""
    base = str(base_path)
    n_chunks, n_sub = _check_groupcat(base, snapshot)
    _check_offsets(base, snapshot, n_chunks, n_sub)
    snap0 = Path(il.snapshot.snapPath(base, snapshot, 0))
    if not snap0.exists():
        raise DataFormatError(snap0, None, "snapshot chunk 0 is missing")
    with h5py.File(snap0, "r") as f:
        attrs = dict(f["Header"].attrs)
    header = {}
    for key in ("HubbleParam", "Redshift", "Time", "Omega0", "OmegaLambda", "BoxSize", "MassTable",
                "NumFilesPerSnapshot", "NumPart_Total"):
        if key not in attrs:
            raise DataFormatError(snap0, f"Header/{key}", "missing snapshot header attribute")
        header[key] = attrs[key]
    header["OmegaBaryon"] = attrs.get("OmegaBaryon", 0.0486)
    _check_snapshot_fields(base, snapshot, int(header["NumFilesPerSnapshot"]))
    return {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in header.items()}


def load_subhalo_particles(base_path: str | os.PathLike, snapshot: int, subhalo_id: int,
                           types: Mapping[str, Sequence[str]] | None = None) -> dict[str, dict]:
    """Particles of one subhalo (code units) through ``illustris_python``: ``types`` maps type
    names to fields (default: every field the pipeline reads, of stars, DM and gas)."""
    out = {}
    lists = _field_lists()
    for name, fields in (types or {k: v[1] for k, v in lists.items()}).items():
        ptype, fields = lists[name][0], list(fields)
        data = il.snapshot.loadSubhalo(str(base_path), snapshot, int(subhalo_id), ptype, fields=fields)
        out[name] = {f: np.asarray(data[f]) if data.get("count", 0) else
                     np.zeros((0, *_TRAILING.get(f, ())), np.float64) for f in fields}
    return out


@dataclass
class _Source:
    """What a worker needs to read one subhalo (picklable)."""

    kind: str
    base_path: str | None
    snapshot: int
    header: dict
    api: dict | None = None
    api_cache: str | None = None

    def particles(self, subhalo_id: int, types: Mapping[str, Sequence[str]] | None = None) -> dict:
        """The subhalo's particles (code units): ``types`` as in :func:`load_subhalo_particles`
        (a cutout is always fetched whole, so that one download serves every pass)."""
        if self.kind == "api":
            # deferred: the web API client loads requests (~0.15 s)
            from sim2obs.simgen.tng.webapi import PIPELINE_FIELDS, TNGWebAPI, read_cutout

            client = TNGWebAPI(api_key=self.api.get("api_key"), base_url=self.api["base_url"],
                               cache_dir=self.api_cache)
            path = client.cutout(self.api["simulation"], self.snapshot, int(subhalo_id), PIPELINE_FIELDS)
            data = read_cutout(path, header=self.header)
            return {k: data[k] for k in (types or ("stars", "dm", "gas"))}
        return load_subhalo_particles(self.base_path, self.snapshot, subhalo_id, types)


def _minisim_root(cfg: TNGMockConfig, out: Path) -> Path:
    """``<out's parent>/_tng_minisim-<hash>``: one folder per mini-simulation config, shared by
    the sets made from it."""
    full = minisim_config_dict(coerce_minisim_config(cfg.source.minisim))
    return out.parent / f"_tng_minisim-{stable_hash(full, 8)}"


def open_source(cfg: TNGMockConfig, out: Path, progress: bool = True) -> tuple[_Source, list[dict]]:
    """Prepare the source (write the mini-simulation if needed, check a basePath, reach the
    API) and return it with the catalogue records of the candidate subhalos: those passing the
    cheap catalogue pre-cut (total stellar mass above the aperture threshold, subhalo mass below
    the cluster cut). Records: ``subhalo_id``, ``pos`` (ckpc/h), ``log_msub`` (Msun)."""
    src, sel = cfg.source, cfg.selection
    if src.kind == "api":
        return _open_api(cfg, out)
    if src.kind == "minisim":
        base = write_minisim(src.minisim, _minisim_root(cfg, out))
    else:
        base = Path(str(src.base_path)).expanduser()
    header = check_simulation(base, src.snapshot)
    subs = il.groupcat.loadSubhalos(str(base), src.snapshot, fields=_SUBHALO_FIELDS)
    h = float(header["HubbleParam"])
    m_star = np.asarray(subs["SubhaloMassType"])[:, 4] * 1e10 / h
    m_sub = np.asarray(subs["SubhaloMass"]) * 1e10 / h
    n_star = np.asarray(subs["SubhaloLenType"])[:, 4]
    with np.errstate(divide="ignore"):
        keep = (np.log10(m_star) >= sel.log_mstar_30kpc_min) & (np.log10(m_sub) < sel.log_msub_max) & \
               (n_star >= sel.min_star_particles)
    records = [{"subhalo_id": int(i), "pos": np.asarray(subs["SubhaloPos"][i], float).tolist(),
                "log_msub": float(np.log10(m_sub[i]))} for i in np.flatnonzero(keep)]
    return _Source("basepath", str(base), int(src.snapshot), header), records


def _open_api(cfg: TNGMockConfig, out: Path) -> tuple[_Source, list[dict]]:
    """The web-API source: the header, and the records of ``api.subhalo_ids`` (or of an API
    search with the catalogue pre-cut) below the cluster cut."""
    from sim2obs.simgen.tng.webapi import TNGWebAPI  # deferred: the web API client loads requests (~0.15 s)

    api = asdict(cfg.source.api)
    cache = api["cache_dir"] or str(out.parent / "_tng_api_cache")
    client = TNGWebAPI(api_key=api["api_key"], base_url=api["base_url"], cache_dir=cache)
    sim, snap = api["simulation"], int(cfg.source.snapshot)
    header = client.snapshot_header(sim, snap)
    header["MassTable"] = np.asarray(header["MassTable"], float).tolist()
    header.setdefault("OmegaBaryon", 0.0486)
    h = float(header["HubbleParam"])
    sel = cfg.selection
    if api["subhalo_ids"] is not None:
        ids = [int(i) for i in api["subhalo_ids"]]
    else:  # catalogue masses in the API are 1e10 Msun/h
        ids = client.search_subhalos(sim, snap, mass_stars__gt=10 ** sel.log_mstar_30kpc_min * h / 1e10,
                                     mass__lt=10 ** sel.log_msub_max * h / 1e10)
    records = []
    for i in ids:
        rec = client.subhalo(sim, snap, i)
        m_sub = float(rec["mass"]) * 1e10 / h
        if math.log10(max(m_sub, 1e-30)) >= sel.log_msub_max:
            continue
        records.append({"subhalo_id": int(i), "pos": [float(rec["pos_x"]), float(rec["pos_y"]), float(rec["pos_z"])],
                        "log_msub": math.log10(max(m_sub, 1e-30))})
    return _Source("api", None, snap, header, api, cache), records
