"""From the mini-simulation's galaxies (physical units) to TNG's tables (code units: ckpc/h,
1e10 Msun/h, km/s sqrt(a)): the final subhalo order, the per-type particle arrays with their
IDs, the subhalo and group catalogue fields (measured on the particles, as in TNG, except the
analytic DM masses), the snapshot chunk boundaries and the offsets. Nothing here writes files
(:mod:`sim2obs.simgen.tng.minisim_writer` does)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from sim2obs.simgen.particle_maps import SOLAR_ABS_MAG
from sim2obs.simgen.tng.minisim_config import _STREAM_IDS, WIND_MAGNITUDE, MiniSimConfig
from sim2obs.simgen.tng.minisim_cosmology import _Cosmology
from sim2obs.simgen.tng.minisim_profiles import _half_mass_radius, _nfw_half_mass_radius

_CATALOGUE_KEYS = ("len_type", "mass_type", "hmr_type", "mir_type", "mihr_type", "sfr", "phot", "zstar", "cm", "vmax",
                   "vmax_rad", "spin_axis")


def _final_order(pop: dict, gals: list[dict]) -> tuple[np.ndarray, np.ndarray, int]:
    """Groups by total particle count (descending), centrals first: the generation indices in
    final subhalo order, each subhalo's group number and the number of groups."""
    n_sub = pop["group"].size
    len_sub = np.array([pop["n_dm"][i] + gals[i]["stars"]["mass"].size + gals[i]["gas"]["mass"].size +
                        gals[i]["wind"]["mass"].size for i in range(n_sub)])
    n_groups = int(pop["group"].max()) + 1
    group_len = np.bincount(pop["group"], weights=len_sub, minlength=n_groups)
    group_order = np.lexsort((np.arange(n_groups), -group_len))
    new_group = np.empty(n_groups, int)
    new_group[group_order] = np.arange(n_groups)
    order = np.lexsort((np.arange(n_sub), -len_sub, ~pop["central"], new_group[pop["group"]]))
    return order, new_group[pop["group"]][order], n_groups


def _subhalo_particles(cfg: MiniSimConfig, cosmo: _Cosmology, gal: dict, i: int, centre: np.ndarray,
                       vbulk: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
    """One subhalo's particle fields by type (4: stars and winds shuffled together, 1, 0) in code
    units, wrapped into the box."""
    h, a, box = cfg.h, cosmo.a, cfg.box_size
    kpc_to_code, msun_to_code, sqrt_a = h / a, h / 1e10, math.sqrt(a)
    a_max32 = np.float32(a) if float(np.float32(a)) <= a else np.nextafter(np.float32(a), np.float32(0))  # <= Time

    def to_code(rel_pos, vel):
        x = np.mod(centre + rel_pos * kpc_to_code, box)
        x[x >= box] -= box
        return x, ((vel + vbulk) / sqrt_a).astype(np.float32)

    st, wi, ga, dm = gal["stars"], gal["wind"], gal["gas"], gal["dm"]
    s_pos = np.concatenate([st["pos"], wi["pos"]])
    s_vel = np.concatenate([st["vel"], wi["vel"]])
    s_mass = np.concatenate([st["mass"], wi["mass"]])
    shuffle = np.random.default_rng(np.random.SeedSequence([cfg.seed, _STREAM_IDS, int(i)])).permutation(s_mass.size)
    x, v = to_code(s_pos[shuffle], s_vel[shuffle])
    mags = np.concatenate([st["mags"], np.full((wi["mass"].size, 8), WIND_MAGNITUDE)])
    out = {4: {
        "Coordinates": x, "Velocities": v, "Masses": (s_mass[shuffle] * msun_to_code).astype(np.float32),
        "GFM_StellarFormationTime": np.minimum(np.concatenate([st["a_form"], wi["a_form"]])[shuffle],
                                               a_max32).astype(np.float32),
        "GFM_Metallicity": np.concatenate([st["metallicity"], wi["metallicity"]])[shuffle].astype(np.float32),
        "GFM_InitialMass": (np.concatenate([st["init"], wi["mass"]])[shuffle] * msun_to_code).astype(np.float32),
        "GFM_StellarPhotometrics": mags[shuffle].astype(np.float32),
    }}
    x, v = to_code(dm["pos"], dm["vel"])
    out[1] = {"Coordinates": x, "Velocities": v}
    x, v = to_code(ga["pos"], ga["vel"])
    out[0] = {"Coordinates": x, "Velocities": v, "Masses": (ga["mass"] * msun_to_code).astype(np.float32),
              "StarFormationRate": ga["sfr"].astype(np.float32)}
    return out


def _subhalo_catalogue(cfg: MiniSimConfig, cosmo: _Cosmology, pop: dict, gal: dict, i: int) -> dict[str, Any]:
    """One subhalo's catalogue quantities, measured on its particles (physical, then code
    units); ``SubhaloMassType[1]`` and the DM half-mass radius are the analytic model's."""
    h, a, box = cfg.h, cosmo.a, cfg.box_size
    kpc_to_code, msun_to_code = h / a, h / 1e10
    m_dm_part = cfg.dm_particle_mass * 1e10 / h
    centre = pop["pos_ckpc_h"][i]
    st, wi, ga, dm = gal["stars"], gal["wind"], gal["gas"], gal["dm"]
    s_pos = np.concatenate([st["pos"], wi["pos"]])
    s_mass = np.concatenate([st["mass"], wi["mass"]])
    r4 = np.linalg.norm(s_pos, axis=1)
    r_half = _half_mass_radius(r4, s_mass)
    r0, r1 = np.linalg.norm(ga["pos"], axis=1), np.linalg.norm(dm["pos"], axis=1)
    m0, m1 = ga["mass"], np.full(r1.size, m_dm_part)
    len_type = np.zeros(6, np.int64)
    len_type[[0, 1, 4]] = [r0.size, r1.size, r4.size]
    mass_type = np.zeros(6)
    mass_type[[0, 1, 4]] = [m0.sum(), pop["m_dm_analytic_msun"][i], s_mass.sum()]
    hmr = np.zeros(6)
    r_out = pop["r_tidal_kpc"][i]
    hmr[[0, 1, 4]] = [_half_mass_radius(r0, m0), _nfw_half_mass_radius(mass_type[1], r_out, pop["r_s_kpc"][i]),
                      r_half]
    mir, mihr = np.zeros(6), np.zeros(6)
    for k, (rr, mm) in zip((0, 1, 4), ((r0, m0), (r1, m1), (r4, s_mass))):
        mir[k] = mm[rr < 2 * r_half].sum()
        mihr[k] = mm[rr < r_half].sum()
    lum = 10 ** (-0.4 * (st["mags"] - SOLAR_ABS_MAG))
    all_pos = np.concatenate([s_pos, ga["pos"], dm["pos"]])
    all_m = np.concatenate([s_mass, m0, m1])
    grid, vc2 = gal["vc2"]
    inside = grid <= r_out
    k_max = int(np.argmax(np.where(inside, vc2, 0.0)))
    return {
        "len_type": len_type, "mass_type": mass_type * msun_to_code, "hmr_type": hmr * kpc_to_code,
        "mir_type": mir * msun_to_code, "mihr_type": mihr * msun_to_code, "sfr": ga["sfr"].sum(),
        "phot": SOLAR_ABS_MAG - 2.5 * np.log10(lum.sum(axis=0)) if lum.size else np.full(8, WIND_MAGNITUDE),
        "zstar": np.average(st["metallicity"], weights=st["mass"]) if st["mass"].size else 0.0,
        "cm": np.mod(centre + np.average(all_pos, axis=0, weights=all_m) * kpc_to_code, box),
        "vmax": math.sqrt(vc2[k_max]), "vmax_rad": grid[k_max] * kpc_to_code, "spin_axis": gal["spin_axis"],
    }


def _particles_and_catalogue(cfg: MiniSimConfig, cosmo: _Cosmology, pop: dict, gals: list[dict],
                             order: np.ndarray) -> tuple[dict[int, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Global particle arrays per type (subhalos in final ``order``), with unique
    ``ParticleIDs`` (a seeded permutation, stream ``[seed, 2]``), and the subhalo catalogue
    columns (final order)."""
    types: dict[int, list] = {0: [], 1: [], 4: []}
    cat: dict[str, list] = {k: [] for k in _CATALOGUE_KEYS}
    for i in order:
        parts = _subhalo_particles(cfg, cosmo, gals[i], i, pop["pos_ckpc_h"][i], pop["vel_kms"][i])
        for k in (4, 1, 0):
            types[k].append(parts[k])
        row = _subhalo_catalogue(cfg, cosmo, pop, gals[i], i)
        for k in _CATALOGUE_KEYS:
            cat[k].append(row[k])
    cat_arrays = {k: np.asarray(v) for k, v in cat.items()}
    arrays = {k: {f: np.concatenate([d[f] for d in lst]) for f in lst[0]} for k, lst in types.items()}
    n_by_type = {k: arrays[k]["Coordinates"].shape[0] for k in arrays}
    ids = np.random.default_rng(np.random.SeedSequence([cfg.seed, _STREAM_IDS])).permutation(
        sum(n_by_type.values())).astype(np.uint64) + np.uint64(1)
    start = 0
    for k in (0, 1, 4):
        arrays[k]["ParticleIDs"] = ids[start:start + n_by_type[k]]
        start += n_by_type[k]
    return arrays, cat_arrays


def _type4_boundaries(n_total: int, starts: np.ndarray, lengths: np.ndarray, n_chunks: int) -> np.ndarray:
    """Chunk boundaries of the star array; one falling on a subhalo's first particle is moved
    into that subhalo, so subhalos span chunk boundaries as in real TNG output."""
    b = np.round(np.linspace(0, n_total, n_chunks + 1)).astype(np.int64)
    for j in range(1, n_chunks):
        k = np.searchsorted(starts, b[j], side="right") - 1
        if 0 <= k < starts.size and starts[k] == b[j] and lengths[k] >= 2:
            b[j] = starts[k] + lengths[k] // 2
    return np.maximum.accumulate(b)


def _groups_and_offsets(cfg: MiniSimConfig, pop: dict, cat: dict, order: np.ndarray, grnr: np.ndarray,
                        n_groups: int, n_by_type: dict[int, int]) -> dict[str, np.ndarray]:
    """Group quantities (sums over their subhalos; ``GroupVel`` still km/s), each subhalo's and
    group's offset in the snapshot by type, and the snapshot chunk boundaries (6, chunks + 1)."""
    len_type, n_sub = cat["len_type"], order.size
    first_sub = np.searchsorted(grnr, np.arange(n_groups))
    nsubs = np.bincount(grnr, minlength=n_groups)
    group_len_type = np.zeros((n_groups, 6), np.int64)
    np.add.at(group_len_type, grnr, len_type)
    group_mass_type = np.zeros((n_groups, 6))
    np.add.at(group_mass_type, grnr, cat["mass_type"])
    sub_mass = cat["mass_type"].sum(axis=1)
    group_vel = np.zeros((n_groups, 3))
    np.add.at(group_vel, grnr, sub_mass[:, None] * pop["vel_kms"][order])
    group_vel /= group_mass_type.sum(axis=1)[:, None]
    sub_offset = np.zeros((n_sub, 6), np.int64)
    sub_offset[1:] = np.cumsum(len_type, axis=0)[:-1]
    bounds = np.zeros((6, cfg.n_snapshot_chunks + 1), np.int64)
    for k in (0, 1):
        bounds[k] = np.round(np.linspace(0, n_by_type[k], cfg.n_snapshot_chunks + 1)).astype(np.int64)
    bounds[4] = _type4_boundaries(n_by_type[4], sub_offset[:, 4], len_type[:, 4], cfg.n_snapshot_chunks)
    return dict(first_sub=first_sub, nsubs=nsubs, group_len_type=group_len_type, group_mass_type=group_mass_type,
                sub_mass=sub_mass, group_vel=group_vel, central_gen=order[first_sub],  # each group's central
                group_sfr=np.bincount(grnr, weights=cat["sfr"], minlength=n_groups), sub_offset=sub_offset,
                group_offset=sub_offset[first_sub], bounds=bounds)


def _catalogue_fields(cfg: MiniSimConfig, cosmo: _Cosmology, pop: dict, cat: dict, order: np.ndarray,
                      grnr: np.ndarray, grp: dict) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The ``Subhalo`` and ``Group`` datasets of the group catalogue (float32 positions wrapped
    into [0, BoxSize))."""
    h, a, box = cfg.h, cosmo.a, cfg.box_size
    kpc_to_code, msun_to_code = h / a, h / 1e10
    n_sub, len_type, central_gen = order.size, cat["len_type"], grp["central_gen"]
    f32 = np.float32

    def wrap32(x):
        x = np.asarray(x, f32)
        x[x >= box] = 0.0
        return x

    subhalo_fields = {
        "SubhaloPos": wrap32(pop["pos_ckpc_h"][order]), "SubhaloVel": pop["vel_kms"][order].astype(f32),
        "SubhaloCM": wrap32(cat["cm"]), "SubhaloMass": grp["sub_mass"].astype(f32),
        "SubhaloMassType": cat["mass_type"].astype(f32), "SubhaloLenType": len_type.astype(np.int32),
        "SubhaloLen": len_type.sum(axis=1).astype(np.int32), "SubhaloHalfmassRadType": cat["hmr_type"].astype(f32),
        "SubhaloMassInRadType": cat["mir_type"].astype(f32), "SubhaloMassInHalfRadType": cat["mihr_type"].astype(f32),
        "SubhaloSFR": cat["sfr"].astype(f32), "SubhaloGrNr": grnr.astype(np.int32),
        "SubhaloFlag": np.ones(n_sub, np.uint8), "SubhaloStellarPhotometrics": cat["phot"].astype(f32),
        "SubhaloStarMetallicity": cat["zstar"].astype(f32), "SubhaloVmax": cat["vmax"].astype(f32),
        "SubhaloVmaxRad": cat["vmax_rad"].astype(f32),
    }
    nsubs, first_sub, gmt, glt = grp["nsubs"], grp["first_sub"], grp["group_mass_type"], grp["group_len_type"]
    group_fields = {
        "GroupPos": wrap32(pop["pos_ckpc_h"][central_gen]), "GroupVel": (grp["group_vel"] / a).astype(f32),
        "GroupMass": gmt.sum(axis=1).astype(f32), "GroupMassType": gmt.astype(f32),
        "GroupLenType": glt.astype(np.int32), "GroupLen": glt.sum(axis=1).astype(np.int32),
        "GroupFirstSub": np.where(nsubs > 0, first_sub, -1).astype(np.int32), "GroupNsubs": nsubs.astype(np.int32),
        "GroupSFR": grp["group_sfr"].astype(f32),
        "Group_M_Crit200": (pop["m200_msun"][central_gen] * msun_to_code).astype(f32),
        "Group_R_Crit200": (pop["r200_kpc"][central_gen] * kpc_to_code).astype(f32),
    }
    return subhalo_fields, group_fields
