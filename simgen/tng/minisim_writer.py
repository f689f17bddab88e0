"""Writing the mini-simulation in the IllustrisTNG on-disk layout (see
:mod:`sim2obs.simgen.tng_minisim` for the files and units): snapshot and group-catalogue chunks,
the offsets file, the truth sidecar and the marker, built in a temporary directory and renamed
into place (:func:`write_minisim`); reading the truth back (:func:`read_truth`)."""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from sim2obs.errors import Sim2obsValueError
from sim2obs.provenance import package_versions
from sim2obs.simgen.tng.minisim_catalogue import (_catalogue_fields, _final_order, _groups_and_offsets,
                                                  _particles_and_catalogue)
from sim2obs.simgen.tng.minisim_config import (GENERATOR_VERSION, MARKER_NAME, TRUTH_NAME, MiniSimConfig, config_hash,
                                               coerce_minisim_config, minisim_config_dict)
from sim2obs.simgen.tng.minisim_cosmology import _Cosmology, _SFHTable
from sim2obs.simgen.tng.minisim_particles import _realise_galaxy
from sim2obs.simgen.tng.minisim_population import _draw_population


def _header_common(cfg: MiniSimConfig, cosmo: _Cosmology) -> dict:
    return {
        "BoxSize": float(cfg.box_size), "HubbleParam": float(cfg.h), "Omega0": float(cfg.Omega0),
        "OmegaLambda": float(cosmo.omega_lambda), "OmegaBaryon": float(cfg.OmegaBaryon),
        "Redshift": float(cfg.redshift), "Time": float(cosmo.a),
    }


def _set_attrs(obj, attrs: dict) -> None:
    for k, v in attrs.items():
        obj.attrs[k] = v


def _write_snapshot(cfg: MiniSimConfig, cosmo: _Cosmology, out: Path, arrays: dict, bounds: np.ndarray) -> None:
    """``snapdir_<snap>/snap_<snap>.<c>.hdf5``: the particle arrays cut at ``bounds`` (6, chunks + 1)."""
    n_by_type = {k: arrays[k]["Coordinates"].shape[0] for k in arrays}
    common = _header_common(cfg, cosmo)
    mass_table = np.zeros(6)
    mass_table[1] = cfg.dm_particle_mass
    snapdir = out / f"snapdir_{cfg.snapshot:03d}"
    snapdir.mkdir(parents=True)
    n_total = np.zeros(6, np.uint64)
    for k in n_by_type:
        n_total[k] = n_by_type[k]
    for c in range(cfg.n_snapshot_chunks):
        counts = (bounds[:, c + 1] - bounds[:, c]).astype(np.int32)
        with h5py.File(snapdir / f"snap_{cfg.snapshot:03d}.{c}.hdf5", "w") as f:
            hdr = f.create_group("Header")
            _set_attrs(hdr, common)
            _set_attrs(hdr, {
                "NumPart_ThisFile": counts, "NumPart_Total": (n_total & np.uint64(0xFFFFFFFF)).astype(np.uint32),
                "NumPart_Total_HighWord": (n_total >> np.uint64(32)).astype(np.uint32), "MassTable": mass_table,
                "NumFilesPerSnapshot": np.int32(cfg.n_snapshot_chunks), "Flag_Sfr": np.int32(1),
                "Flag_Cooling": np.int32(1), "Flag_StellarAge": np.int32(1), "Flag_Metals": np.int32(1),
                "Flag_Feedback": np.int32(1), "Flag_DoublePrecision": np.int32(1),
                "UnitLength_in_cm": 3.085678e21, "UnitMass_in_g": 1.989e43, "UnitVelocity_in_cm_per_s": 1e5,
            })
            for k in (0, 1, 4):
                if counts[k] == 0:
                    continue  # as in TNG: no group for an absent particle type
                grp = f.create_group(f"PartType{k}")
                for name, data in arrays[k].items():
                    grp.create_dataset(name, data=data[bounds[k, c]:bounds[k, c + 1]])


def _write_groupcat(cfg: MiniSimConfig, cosmo: _Cosmology, out: Path, fields: tuple[dict, dict], n_groups: int,
                    n_sub: int, g_bounds: np.ndarray, s_bounds: np.ndarray) -> None:
    """``groups_<snap>/fof_subhalo_tab_<snap>.<c>.hdf5``: groups split at ``g_bounds``, each
    group's subhalos (``s_bounds``) with it."""
    subhalo_fields, group_fields = fields
    common = _header_common(cfg, cosmo)
    gdir = out / f"groups_{cfg.snapshot:03d}"
    gdir.mkdir(parents=True)
    for c in range(cfg.n_groupcat_chunks):
        gs, ss = slice(g_bounds[c], g_bounds[c + 1]), slice(s_bounds[c], s_bounds[c + 1])
        with h5py.File(gdir / f"fof_subhalo_tab_{cfg.snapshot:03d}.{c}.hdf5", "w") as f:
            hdr = f.create_group("Header")
            _set_attrs(hdr, common)
            _set_attrs(hdr, {
                "Ngroups_ThisFile": np.int32(gs.stop - gs.start), "Ngroups_Total": np.int32(n_groups),
                "Nsubgroups_ThisFile": np.int32(ss.stop - ss.start), "Nsubgroups_Total": np.int32(n_sub),
                "Nids_ThisFile": np.int32(0), "Nids_Total": np.int32(0), "NumFiles": np.int32(cfg.n_groupcat_chunks),
                "FlagDoubleprecision": np.int32(0),
            })
            grp, sub = f.create_group("Group"), f.create_group("Subhalo")
            if gs.stop > gs.start:
                for name, data in group_fields.items():
                    grp.create_dataset(name, data=data[gs])
            if ss.stop > ss.start:
                for name, data in subhalo_fields.items():
                    sub.create_dataset(name, data=data[ss])


def _write_truth(cfg: MiniSimConfig, cosmo: _Cosmology, root: Path, pop: dict, cat: dict, order: np.ndarray,
                 grnr: np.ndarray, first_sub: np.ndarray) -> None:
    """``minisim_truth.h5``: the analytic model of every subhalo (physical units), by subhalo ID."""
    n_sub = order.size
    m_dm_part = cfg.dm_particle_mass * 1e10 / cfg.h
    truth_cols = {
        "subhalo_id": np.arange(n_sub), "group_id": grnr, "is_central": pop["central"][order].astype(np.int8),
        "spin_axis": cat["spin_axis"], "m_dm_particle_msun": np.full(n_sub, m_dm_part),
    }
    skip = {"group", "central", "host", "pos_ckpc_h", "vel_kms"}
    truth_cols.update({k: v[order] for k, v in pop.items() if k not in skip})
    truth_cols["host_subhalo_id"] = first_sub[grnr]
    truth_cols["center_ckpc_h"] = pop["pos_ckpc_h"][order]
    truth_cols["bulk_velocity_kms"] = pop["vel_kms"][order]
    with h5py.File(root / TRUTH_NAME, "w") as f:
        grp = f.create_group("subhalos")
        for k, v in truth_cols.items():
            grp.create_dataset(k, data=np.asarray(v))
        _set_attrs(f, {"config": json.dumps(minisim_config_dict(cfg), sort_keys=True), "scale_factor": cosmo.a,
                       "hubble": cfg.h, "t_obs_gyr": cosmo.t_obs, "generator_version": GENERATOR_VERSION,
                       "units": "physical kpc, Msun, km/s, Msun/yr, Gyr; center_ckpc_h in ckpc/h"})


def _build(cfg: MiniSimConfig, root: Path) -> dict:
    """Write the whole mini-simulation under ``root`` (a fresh directory); return counts."""
    t0 = time.perf_counter()
    cosmo = _Cosmology(cfg)
    sfh = _SFHTable(cosmo)
    pop = _draw_population(cfg, cosmo, sfh)
    n_sub = pop["group"].size
    gals = [_realise_galaxy(pop, i, cfg, cosmo, sfh) for i in range(n_sub)]
    order, grnr, n_groups = _final_order(pop, gals)
    arrays, cat = _particles_and_catalogue(cfg, cosmo, pop, gals, order)
    n_by_type = {k: arrays[k]["Coordinates"].shape[0] for k in arrays}
    grp = _groups_and_offsets(cfg, pop, cat, order, grnr, n_groups, n_by_type)
    out = root / "output"
    _write_snapshot(cfg, cosmo, out, arrays, grp["bounds"])
    g_bounds = np.round(np.linspace(0, n_groups, cfg.n_groupcat_chunks + 1)).astype(np.int64)
    s_bounds = np.concatenate([grp["first_sub"], [n_sub]])[g_bounds]
    _write_groupcat(cfg, cosmo, out, _catalogue_fields(cfg, cosmo, pop, cat, order, grnr, grp), n_groups, n_sub,
                    g_bounds, s_bounds)
    odir = root / "postprocessing" / "offsets"
    odir.mkdir(parents=True)
    with h5py.File(odir / f"offsets_{cfg.snapshot:03d}.hdf5", "w") as f:
        f.create_dataset("FileOffsets/Group", data=g_bounds[:-1].astype(np.int64))
        f.create_dataset("FileOffsets/Subhalo", data=s_bounds[:-1].astype(np.int64))
        f.create_dataset("FileOffsets/SnapByType", data=grp["bounds"][:, :-1].T.astype(np.int64))
        f.create_dataset("Group/SnapByType", data=grp["group_offset"].astype(np.int64))
        f.create_dataset("Subhalo/SnapByType", data=grp["sub_offset"].astype(np.int64))
    _write_truth(cfg, cosmo, root, pop, cat, order, grnr, grp["first_sub"])
    return {"n_groups": n_groups, "n_subhalos": n_sub, "n_gas": n_by_type[0], "n_dm": n_by_type[1],
            "n_stars": n_by_type[4], "seconds": round(time.perf_counter() - t0, 3)}


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def is_complete(root: str | os.PathLike, config: Any = None) -> bool:
    """Whether ``root`` holds a complete mini-simulation (of ``config``, if given)."""
    root = Path(root)
    marker = _read_marker(root)
    if marker is None or not all((root / p).is_file() for p in marker.get("files", [])):
        return False
    return config is None or marker.get("config_hash") == config_hash(coerce_minisim_config(config))


def write_minisim(config: Any, root: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the mini-simulation of ``config`` (a :class:`MiniSimConfig`, mapping or OmegaConf
    node; validated first) under ``root`` and return its basePath ``root/'output'``.

    Atomic: built in a temporary sibling directory, then renamed into place, the marker
    (``minisim.json``, with the config hash) written last. If ``root`` already holds a complete
    mini-simulation of the same config it is returned as is. A ``root`` holding anything else
    (another config, foreign files) is replaced only with ``overwrite=True``."""
    cfg = coerce_minisim_config(config)
    root = Path(root)
    digest = config_hash(cfg)
    if not overwrite and is_complete(root) and _read_marker(root)["config_hash"] == digest:
        return root / "output"
    if root.exists() and not overwrite and any(root.iterdir()):
        raise Sim2obsValueError(f"{root} already holds something other than this mini-simulation; "
                                "pass overwrite=True to replace it", value=str(root))
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        counts = _build(cfg, tmp)
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        marker = {"generator": "tng_minisim", "generator_version": GENERATOR_VERSION, "config_hash": digest,
                  "config": minisim_config_dict(cfg), "counts": counts, "files": files, "versions": package_versions(),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=1, sort_keys=True))
        if not overwrite and is_complete(root, cfg):  # another process finished it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
            return root / "output"
        old = None
        if root.exists():
            old = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:12]}"
            os.rename(root, old)
        try:
            os.rename(tmp, root)
        except OSError:
            if is_complete(root, cfg):  # another process finished the same mini-simulation first
                shutil.rmtree(tmp, ignore_errors=True)
                return root / "output"
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / "output"


# --------------------------------------------------------------------------------------------
# Truth sidecar
# --------------------------------------------------------------------------------------------
def read_truth(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The analytic model of every subhalo from ``minisim_truth.h5`` (``path``: that file, the
    mini-sim root or its basePath): arrays indexed by subhalo ID, physical units (kpc, Msun, km/s,
    Msun/yr). Keys include: ``group_id``, ``is_central``, ``host_subhalo_id``, ``m200_msun``
    (total M200c; satellites: at infall), ``m200_dm_msun``, ``r200_kpc``, ``concentration``,
    ``r_s_kpc``, ``r_tidal_kpc`` (r200 for centrals), ``r_trunc_kpc`` (DM particle truncation),
    ``m_dm_analytic_msun`` (= SubhaloMassType[1]), ``n_dm``, ``m_dm_particles_msun``,
    ``m_dm_particle_msun``, ``m_star_msun`` (bulge + disk, no winds), ``bulge_fraction``,
    ``m_bulge_msun``, ``a_hernquist_kpc``, ``r_bulge_max_kpc``, ``m_disk_msun``, ``r_d_kpc``,
    ``z_d_kpc``, ``spin_lambda``, ``spin_axis`` (n, 3; unit vector, box frame), ``m_gas_msun``,
    ``r_gas_kpc``, ``z_gas_kpc``, ``sfr_msun_yr``, ``quenched``, ``sfh_k_disk_per_gyr``,
    ``sfh_k_bulge_per_gyr``, ``log_z_mean`` ([Z/H], dex), ``r_half_kpc`` (3D stellar half-mass
    radius of the model), ``n_bulge``, ``n_disk``, ``n_gas``, ``n_wind``, ``center_ckpc_h``,
    ``bulk_velocity_kms``, ``satellite_distance_kpc``."""
    path = Path(path)
    if path.is_dir():
        path = path / TRUTH_NAME if (path / TRUTH_NAME).is_file() else path.parent / TRUTH_NAME
    with h5py.File(path, "r") as f:
        return {k: f["subhalos"][k][()] for k in f["subhalos"]}


def truth_row(truth: Mapping[str, np.ndarray], subhalo_id: int) -> dict[str, Any]:
    """One subhalo's parameters from :func:`read_truth`'s arrays."""
    return {k: v[int(subhalo_id)] for k, v in truth.items()}
