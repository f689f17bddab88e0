"""The TNG mock pipeline's passes: the selection (cached in ``selection.json``), the rendering of
shards on Dask workers, and :func:`generate`, which writes (or completes) a TNG mock set."""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from sim2obs.atomic import atomic_write
from sim2obs.errors import Sim2obsValueError
from sim2obs.galaxyset import GalaxySetWriter, assign_splits
from sim2obs.parallel import run_shards
from sim2obs.provenance import stable_hash
from sim2obs.simgen.tng.code_units import to_physical
from sim2obs.simgen.tng.mock_config import (GENERATOR_NAME, GENERATOR_VERSION, SELECTION_FILE, TNGMockConfig,
                                            coerce_config)
from sim2obs.simgen.tng.mock_galaxy import mock_galaxy
from sim2obs.simgen.tng.mock_schema import build_schema
from sim2obs.simgen.tng.sources import _Source, open_source

_SELECTION_FIELDS = {"stars": ["Coordinates", "Velocities", "Masses", "GFM_StellarFormationTime",
                                "GFM_InitialMass", "GFM_StellarPhotometrics"]}


def _select_chunk(source: _Source, records: list[dict], aperture_kpc: float) -> list[dict]:
    """Worker job: stellar mass within the 3D aperture (Msun) and non-wind star count per subhalo."""
    out = []
    for rec in records:
        parts = source.particles(rec["subhalo_id"], _SELECTION_FIELDS)
        stars = to_physical({"stars": parts["stars"]}, np.asarray(rec["pos"]), source.header)["stars"]
        r = np.linalg.norm(stars["pos"], axis=1)
        m = float(stars["mass"][r < aperture_kpc].sum())
        out.append({**rec, "log_mstar_30kpc": math.log10(m) if m > 0 else -np.inf, "n_star": int(len(r))})
    return out


def select_galaxies(cfg: TNGMockConfig, out: Path, source: _Source, records: list[dict],
                    cluster: Mapping[str, Any] | None, progress: bool) -> list[dict]:
    """The selected subhalos (sorted by id), cached in ``<out>/selection.json`` under a key of the
    source and selection settings, so a restarted run does not redo it."""
    key = stable_hash({"source": asdict(cfg.source) | {"api": {**asdict(cfg.source.api), "api_key": None}},
                       "selection": asdict(cfg.selection), "candidates": [r["subhalo_id"] for r in records],
                       "version": GENERATOR_VERSION})
    path = out / SELECTION_FILE
    if path.exists():
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                return cached["selected"]
        except (OSError, ValueError):
            pass
    chunk = max(1, int(cfg.shard_size))
    args = [(source, records[a:a + chunk], cfg.selection.aperture_kpc) for a in range(0, len(records), chunk)]
    measured = [r for part in run_shards(_select_chunk, args, cluster or {"kind": "local"},
                                         desc=f"select {cfg.name}", progress=progress) for r in part]
    sel = cfg.selection
    selected = [r for r in measured if r["log_mstar_30kpc"] >= sel.log_mstar_30kpc_min
                and r["n_star"] >= sel.min_star_particles]
    if sel.max_galaxies is not None and len(selected) > sel.max_galaxies:
        rng = np.random.default_rng(cfg.seed)
        pick = np.sort(rng.choice(len(selected), sel.max_galaxies, replace=False))
        selected = [selected[i] for i in pick]
    selected.sort(key=lambda r: r["subhalo_id"])
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"key": key, "n_candidates": len(records), "selected": selected}, indent=1)
    atomic_write(path, lambda f: f.write(text), mode="w")
    return selected


def render_shard(cfg_dict: dict, writer: GalaxySetWriter, index: int, source: _Source, galaxies: list[dict],
                 split: np.ndarray) -> dict[str, float]:
    """Worker job: mock the galaxies of shard ``index`` (every projection) and write the shard."""
    cfg = coerce_config(cfg_dict)
    t0 = time.perf_counter()
    schema = writer.schema
    per_object: list[dict] = []
    for rec in galaxies:
        parts = source.particles(rec["subhalo_id"])
        for los, obj in zip(cfg.projections, mock_galaxy(parts, np.asarray(rec["pos"]), source.header, cfg)):
            obj["catalog"].update({"id": rec["subhalo_id"] * 3 + int(los), "subhalo_id": rec["subhalo_id"],
                                   "projection": int(los), "snapshot": source.snapshot,
                                   "redshift": float(source.header["Redshift"]), "log_msub": rec["log_msub"]})
            per_object.append(obj)
    images = {s.name: np.stack([o["images"][s.name] for o in per_object]) for s in schema.stacks}
    catalog = {c.name: np.asarray([o["catalog"][c.name] for o in per_object], dtype=c.dtype) for c in schema.columns}
    writer.write_shard(index, images, catalog, split)
    return {"shard": index, "objects": len(per_object), "seconds": time.perf_counter() - t0}


def generate(cfg: Any, out: str | Path, cluster: Mapping[str, Any] | None = None, overwrite: bool = False,
             progress: bool = True, resolved_config: Mapping[str, Any] | None = None) -> Path:
    """Write the TNG mock set of ``cfg`` at directory ``out``; return its path. A complete set of
    the same build is returned as it is; a partial one is completed (missing shards only)."""
    cfg = coerce_config(cfg)
    cfg_dict = asdict(cfg)
    out = Path(out)
    source, records = open_source(cfg, out, progress=progress)
    selected = select_galaxies(cfg, out, source, records, cluster, progress)
    if not selected:
        raise Sim2obsValueError(f"no galaxy of the source passes the selection ({len(records)} candidates after "
                                "the catalogue cut); lower simgen.selection.log_mstar_30kpc_min?",
                                value=asdict(cfg.selection))
    n_proj = len(cfg.projections)
    public_cfg = {**cfg_dict, "source": {**cfg_dict["source"], "api": {**cfg_dict["source"]["api"], "api_key": None}}}
    build_key = stable_hash({"generator": GENERATOR_NAME, "version": GENERATOR_VERSION, "config": public_cfg,
                             "selected": [r["subhalo_id"] for r in selected]})
    writer = GalaxySetWriter(out, build_schema(cfg), len(selected) * n_proj, cfg.shard_size * n_proj, build_key)
    writer.prepare(overwrite=overwrite)
    if writer.is_complete():
        return out
    codes_gal, _ = assign_splits(len(selected), cfg.split, cfg.seed)
    codes = np.repeat(codes_gal, n_proj)
    args = []
    for i in writer.missing_shards():
        a, b = writer.shard_range(i)
        args.append((cfg_dict, writer, i, source, selected[a // n_proj:b // n_proj], codes[a:b]))
    provenance = {
        "generator": GENERATOR_NAME, "generator_version": GENERATOR_VERSION, "seed": cfg.seed, "config": public_cfg,
        "resolved_config": dict(resolved_config) if resolved_config is not None else None,
        "source": {"kind": source.kind, "base_path": source.base_path, "snapshot": source.snapshot,
                   "header": source.header},
        "n_candidates": len(records), "n_selected": len(selected),
    }
    writer.build(render_shard, args, cluster, cfg.name, provenance, progress=progress)
    return out
