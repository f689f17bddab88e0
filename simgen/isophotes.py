"""D25, the isophotal diameter of the bulge + disk model galaxies (the size HyperLeda lists and
Dobbels et al. 2019 select and cut out by): the major-axis diameter of the B-band 25 mag arcsec⁻²
isophote of the noiseless, PSF-free model.

The B-band light of each component follows from its observed g and r fluxes through
B = g + 0.3130 (g − r) + 0.2271 (Lupton 2005, the SDSS DR4 transformations for galaxies' colours); the
observed surface brightness includes the (1 + z)⁴ dimming through the fluxes and angular sizes. Each
component is an elliptical (area-preserving shear) Sérsic profile, I(r) = I₀ exp(−b_n (r/R_e)^(1/n)),
I₀ = F b_n^(2n) / (2π n Γ(2n) R_e²); the isophote's semi-major axis is the largest radius, over
``n_angles`` directions, where the summed profile falls to 25 mag arcsec⁻². Used by the generator
(``population.d25_min_arcmin``: the cut before rendering) and by the ml_ratio task (its sample).
"""
from __future__ import annotations

import numpy as np
from scipy import special

from sim2obs.errors import Sim2obsValueError
from sim2obs.simgen.population import BAND_DATA

__all__ = ["d25_arcsec", "component_b_fluxes", "sersic_surface_brightness", "B_MINUS_G", "MU_25",
           "D25_MODEL_COLUMNS"]

#: Catalogue columns D25 is computed from when a set has no r band (with it: ``flux_r`` and ``bt_r`` too).
D25_MODEL_COLUMNS = ("bulge_hlr_arcsec", "bulge_sersic_n", "bulge_q", "bulge_position_angle_deg",
                     "disk_hlr_arcsec", "disk_q", "position_angle_deg", "flux_g", "bt_g",
                     "bulge_color_gr", "disk_color_gr", "bulge_av", "disk_av")

#: B − g = B_MINUS_G[0] (g − r) + B_MINUS_G[1] (Lupton 2005, SDSS DR4 transformations).
B_MINUS_G = (0.3130, 0.2271)
#: The isophote of D25 (B mag arcsec⁻²).
MU_25 = 25.0


def sersic_surface_brightness(radius: np.ndarray, flux: np.ndarray, hlr: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Surface brightness (flux per arcsec²) of a circular Sérsic profile of total ``flux``,
    half-light radius ``hlr`` (arcsec) and index ``n`` at ``radius`` (arcsec); broadcasting arrays."""
    b = special.gammaincinv(2.0 * n, 0.5)
    i0 = flux * b ** (2.0 * n) / (2.0 * np.pi * n * special.gamma(2.0 * n) * hlr**2)
    return i0 * np.exp(-b * (radius / hlr) ** (1.0 / n))


def _b_flux(flux_g: np.ndarray, flux_r: np.ndarray) -> np.ndarray:
    """B-band flux (nanomaggies) of a component from its g and r fluxes (Lupton 2005)."""
    g, r = np.maximum(flux_g, 1e-30), np.maximum(flux_r, 1e-30)
    gr = -2.5 * np.log10(g / r)
    return g * 10.0 ** (-0.4 * (B_MINUS_G[0] * gr + B_MINUS_G[1]))


def component_b_fluxes(cat: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(bulge, disk)`` observed B-band fluxes (nanomaggies, ``(N,)``) from ``flux_g``, ``bt_g`` and the
    components' observed g − r: from ``flux_r``, ``bt_r`` when the set has the r band, else from the
    generator's model (intrinsic ``*_color_gr`` through Bell et al. 2003 M/L_g and M/L_r, and the
    attenuation ``*_av`` through the CCM band ratios: the colours its g and r fluxes would have)."""
    g = np.asarray(cat["flux_g"], dtype=np.float64)
    bt = np.asarray(cat["bt_g"], dtype=np.float64)
    if "flux_r" in cat and "bt_r" in cat:
        r, bt_r = np.asarray(cat["flux_r"], dtype=np.float64), np.asarray(cat["bt_r"], dtype=np.float64)
        return _b_flux(g * bt, r * bt_r), _b_flux(g * (1.0 - bt), r * (1.0 - bt_r))
    gd, rd = BAND_DATA["g"], BAND_DATA["r"]
    out = []
    for part, gb in (("bulge", g * bt), ("disk", g * (1.0 - bt))):
        gr_int = np.asarray(cat[f"{part}_color_gr"], dtype=np.float64)
        log_ml_ratio = (gd["bell_a"] - rd["bell_a"]) + (gd["bell_b"] - rd["bell_b"]) * gr_int  # log M/L_g − log M/L_r
        gr = (gd["msun_ab"] - rd["msun_ab"]) + 2.5 * log_ml_ratio + \
            (gd["a_over_av"] - rd["a_over_av"]) * np.asarray(cat[f"{part}_av"], dtype=np.float64)
        out.append(gb * 10.0 ** (-0.4 * (B_MINUS_G[0] * gr + B_MINUS_G[1])))
    return out[0], out[1]


def d25_arcsec(cat: dict[str, np.ndarray], n_angles: int = 36, iterations: int = 45) -> np.ndarray:
    """``(N,)`` D25 in arcsec (major-axis diameter of the B = 25 mag arcsec⁻² isophote, no PSF) of the
    bulge + disk galaxies in ``cat``: the columns :func:`component_b_fluxes` reads, ``bulge_hlr_arcsec``,
    ``bulge_sersic_n``, ``bulge_q``, ``bulge_position_angle_deg``,
    ``disk_hlr_arcsec``, ``disk_q``, ``position_angle_deg``. Galaxies fainter than 25 mag arcsec⁻²
    everywhere get the smallest radius of the search (1e-3 arcsec)."""
    need = ("bulge_hlr_arcsec", "bulge_sersic_n", "bulge_q",
            "bulge_position_angle_deg", "disk_hlr_arcsec", "disk_q", "position_angle_deg")
    missing = [k for k in need if k not in cat]
    if missing:
        raise Sim2obsValueError("D25 needs the bulge + disk model columns", value=missing)
    c = {k: np.asarray(cat[k], dtype=np.float64)[:, None] for k in need}
    flux_b, flux_d = (v[:, None] for v in component_b_fluxes(cat))
    limit = 10.0 ** (-0.4 * (MU_25 - 22.5))  # nanomaggies per arcsec²
    angle = np.radians(np.arange(n_angles) * (180.0 / n_angles))[None, :]
    dd = angle - np.radians(c["position_angle_deg"])
    db = angle - np.radians(c["bulge_position_angle_deg"])
    # elliptical radius per unit distance along each direction (area-preserving shear of axis ratio q)
    kd = np.sqrt(c["disk_q"] * np.cos(dd) ** 2 + np.sin(dd) ** 2 / c["disk_q"])
    kb = np.sqrt(c["bulge_q"] * np.cos(db) ** 2 + np.sin(db) ** 2 / c["bulge_q"])

    def brightness(s: np.ndarray) -> np.ndarray:
        return (sersic_surface_brightness(s * kd, flux_d, c["disk_hlr_arcsec"], 1.0)
                + sersic_surface_brightness(s * kb, flux_b, c["bulge_hlr_arcsec"], c["bulge_sersic_n"]))

    lo = np.full(np.broadcast_shapes(kd.shape, kb.shape), -3.0)  # log10 radius (arcsec)
    hi = np.full(lo.shape, 3.5)
    for _ in range(int(iterations)):  # the profile falls monotonically along every ray: bisection
        mid = 0.5 * (lo + hi)
        above = brightness(10.0**mid) > limit
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    return 2.0 * 10.0 ** (0.5 * (lo + hi)).max(axis=1)
