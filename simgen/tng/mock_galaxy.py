"""One galaxy of the TNG mock pipeline, from its particles (code units) to every projection's
images, kinematic maps, 3D targets and summary statistics (paper §2 and Table 1; see
:mod:`sim2obs.simgen.tng_mocks` for the definitions)."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
from threadpoolctl import threadpool_limits

import sim2obs.simgen.galaxy_stats as gst
import sim2obs.simgen.particle_maps as pm
from sim2obs.errors import Sim2obsValueError
from sim2obs.imaging import rebin
from sim2obs.simgen.particle_maps import PHOTOMETRIC_BANDS
from sim2obs.simgen.tng.code_units import to_physical
from sim2obs.simgen.tng.mock_config import BAND_WAVELENGTH, SUMMARY_FLAG_BITS, TNGMockConfig, image_sizes


def _log10(x: float) -> float:
    return float(np.log10(x)) if x > 0 else 0.0


def mock_galaxy(particles: Mapping[str, Mapping[str, np.ndarray]], centre_ckpc_h: np.ndarray,
                header: Mapping[str, Any], cfg: TNGMockConfig) -> list[dict[str, Any]]:
    """All projections of one galaxy: a list (one per ``cfg.projections``) of
    ``{"images": {stack: (C, H, W)}, "catalog": {column: value}}`` (subhalo columns excluded).

    Runs with one BLAS thread: its matrix products (re-binning, inertia tensors) are small, and
    BLAS threads spinning on them tripled the CPU time of an in-process run (measured)."""
    with threadpool_limits(limits=1, user_api="blas"):
        return _mock_galaxy(particles, centre_ckpc_h, header, cfg)


def _luminosities(stars: Mapping[str, np.ndarray], cfg: TNGMockConfig) -> dict[str, np.ndarray]:
    """g and r luminosities (Lsun per band) of the star particles, optionally dust-attenuated."""
    lum = {}
    for band, msun in (("g", pm.MSUN_G_AB), ("r", pm.MSUN_R_AB)):
        lum[band] = pm.band_luminosity(stars["mags"][:, PHOTOMETRIC_BANDS.index(band)], msun)
        if cfg.dust.enabled:
            lum[band] = lum[band] * pm.dust_transmission(
                stars["age_gyr"], BAND_WAVELENGTH[band], tau_v_birth=cfg.dust.tau_v_birth,
                tau_v_ism=cfg.dust.tau_v_ism, t_birth_gyr=cfg.dust.birth_cloud_gyr, slope=cfg.dust.slope)
    return lum


def _galaxy_columns(phys: dict, vel: np.ndarray, r_star: np.ndarray, rhalf: float, half_width: float,
                    cfg: TNGMockConfig) -> dict[str, Any]:
    """The columns every projection shares: 3D masses within R_half, the selection-aperture
    stellar mass, the 3D axis ratio and the orbit fractions."""
    stars = phys["stars"]
    enclosed = {name: float(gst.enclosed_mass(np.linalg.norm(p["pos"], axis=1), p["mass"], rhalf))
                for name, p in phys.items()}
    m_tot = sum(enclosed.values())
    all_pos = np.concatenate([p["pos"] for p in phys.values()])
    all_mass = np.concatenate([p["mass"] for p in phys.values()])
    s = cfg.summary
    q_ba, q_ca = gst.axis_ratios(stars["pos"], stars["mass"], s.q_start_rhalf * rhalf)
    eps = gst.circularities(stars["pos"], vel, stars["mass"], all_pos, all_mass, s.orbit_aperture_rhalf * rhalf)
    in_orbit = r_star < s.orbit_aperture_rhalf * rhalf
    orbits = gst.orbit_fractions(eps[in_orbit], stars["mass"][in_orbit], cold=s.cold, hot=s.hot)
    return {
        "rhalf_kpc": rhalf, "fov_kpc": 2 * half_width,
        "log_mstar_rhalf": _log10(enclosed["stars"]), "log_mdm_rhalf": _log10(enclosed["dm"]),
        "log_mgas_rhalf": _log10(enclosed["gas"]), "log_mtot_rhalf": _log10(m_tot),
        "f_dm_rhalf": enclosed["dm"] / m_tot if m_tot > 0 else 0.0,
        "log_mstar_30kpc": _log10(float(gst.enclosed_mass(r_star, stars["mass"], cfg.selection.aperture_kpc))),
        "q_3d": float(q_ca), "kin_bt": float(orbits["kin_bt"]), "f_cold": float(orbits["f_cold"]),
        "f_hot": float(orbits["f_hot"]), "n_star_particles": int(len(stars["mass"])),
    }


def _projection(stars: dict, vel: np.ndarray, lum: dict, h_sph: np.ndarray, los: int, rhalf: float,
                half_width: float, galaxy: dict, cfg: TNGMockConfig) -> dict[str, Any]:
    """One line of sight: the SPH light and colour images at every resolution, the NGP kinematic
    maps, and the projected columns (M/L, photometry, SFR, Sersic n, sigma_e, lambda_R, flags)."""
    s = cfg.summary
    kin_weights = lum["r"] if cfg.kin_weight == "luminosity" else stars["mass"]
    xy, v_los = pm.project(stars["pos"], vel, int(los))
    R = np.hypot(xy[:, 0], xy[:, 1])
    gr_img = pm.sph_image(xy, np.stack([lum["g"], lum["r"]], axis=1), h_sph, half_width, cfg.image_px)
    images = {}
    for n in image_sizes(cfg):
        # rebin averages; times the area ratio it conserves the luminosity per image
        lg, lr = (gr_img if n == cfg.image_px else rebin(gr_img, n) * (cfg.image_px / n) ** 2)
        images[f"r_{n}"] = lr[None].astype(np.float32)
        images[f"gr_{n}"] = pm.colour_map(lg, lr)[None].astype(np.float32)
    mean_v, sigma, count = pm.ngp_moments(xy, v_los, kin_weights, half_width, cfg.kin_px, cfg.kin_min_count)
    valid = count >= cfg.kin_min_count
    images["vmap"] = np.where(valid, mean_v, 0.0)[None].astype(np.float32)
    images["sigmamap"] = np.where(valid, sigma, 0.0)[None].astype(np.float32)
    images["kinmask"] = valid[None].astype(np.float32)

    in_re = R < rhalf
    in_phot = R < s.phot_aperture_rhalf * rhalf
    lr_re, lr_phot, lg_phot = lum["r"][in_re].sum(), lum["r"][in_phot].sum(), lum["g"][in_phot].sum()
    flux_kin = rebin(gr_img[1], cfg.kin_px) * (cfg.image_px / cfg.kin_px) ** 2
    cat = dict(galaxy)
    cat.update({
        "log_ml_r": _log10(stars["mass"][in_re].sum() / lr_re) if lr_re > 0 else 0.0,
        "log_lr_rhalf": _log10(lr_re),
        "mag_r": float(pm.MSUN_R_AB - 2.5 * np.log10(lr_phot)) if lr_phot > 0 else math.nan,
        "g_r": float(pm.colour_map(np.array([lg_phot]), np.array([lr_phot]))[0])
        if lr_phot > 0 and lg_phot > 0 else math.nan,
        "sfr_1gyr": float(gst.sfr_recent(stars["age_gyr"][in_phot], stars["initial_mass"][in_phot],
                                         s.sfr_window_gyr)),
        "sersic_n": float(gst.sersic_index(R, lum["r"], cfg.fov_rhalf * rhalf)),
        "sigma_e": float(gst.sigma_e(v_los, lum["r"], R, rhalf)),
        "lambda_r": float(gst.lambda_r(mean_v, sigma, flux_kin, valid, pm.pixel_radius(half_width, cfg.kin_px),
                                       rhalf)),
    })
    flags = 0
    for name, bit in SUMMARY_FLAG_BITS.items():
        if not math.isfinite(cat[name]):
            cat[name], flags = 0.0, flags | bit
    cat["summary_flags"] = flags
    return {"images": images, "catalog": cat}


def _mock_galaxy(particles: Mapping[str, Mapping[str, np.ndarray]], centre_ckpc_h: np.ndarray,
                 header: Mapping[str, Any], cfg: TNGMockConfig) -> list[dict[str, Any]]:
    phys = to_physical(particles, centre_ckpc_h, header)
    stars = phys["stars"]
    if len(stars["mass"]) < 2:
        raise Sim2obsValueError("a galaxy needs star particles to be mocked", value=len(stars["mass"]))
    r_star = np.linalg.norm(stars["pos"], axis=1)
    rhalf = float(gst.half_mass_radius(r_star, stars["mass"]))
    half_width = cfg.fov_rhalf * rhalf
    inner = r_star < 2 * rhalf
    v_sys = np.average(stars["vel"][inner], axis=0, weights=stars["mass"][inner]) if inner.any() else \
        np.average(stars["vel"], axis=0, weights=stars["mass"])
    vel = stars["vel"] - v_sys
    lum = _luminosities(stars, cfg)
    galaxy = _galaxy_columns(phys, vel, r_star, rhalf, half_width, cfg)
    h_sph = pm.smoothing_lengths(stars["pos"], cfg.sph_neighbours)
    return [_projection(stars, vel, lum, h_sph, los, rhalf, half_width, galaxy, cfg) for los in cfg.projections]
