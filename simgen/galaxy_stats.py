"""Targets and summary statistics of simulated galaxies from particle arrays, in physical units.

Positions in kpc relative to the galaxy centre, velocities in km/s relative to its systemic
velocity, masses in Msun, luminosities in Lsun, ages in Gyr; the caller converts from code units
and selects particles (see SPEC: Table 1 of Chu et al. 2024 names the apertures).

* :func:`enclosed_mass`, :func:`half_mass_radius`: 3-D (or any) radii.
* :func:`sersic_index`: Sersic (1963) fit to the projected light profile in annuli.
* :func:`axis_ratios`: iterative (reduced) inertia tensor, Allgood et al. (2006).
* :func:`sigma_e`, :func:`lambda_r`: l.o.s. dispersion within R_e; spin of Emsellem et al. (2007).
* :func:`circularities`, :func:`orbit_fractions`: orbit circularity and kinematic B/T, cold and
  hot fractions (Xu et al. 2019 definitions).
* :func:`sfr_recent`: star-formation rate averaged over a recent window.
"""
from __future__ import annotations

import warnings

import astropy.units as u
import numpy as np
from astropy.constants import G
from scipy.special import gammaincinv

from sim2obs.errors import Sim2obsValueError

__all__ = [
    "G_KPC_KMS2_MSUN",
    "enclosed_mass",
    "half_mass_radius",
    "surface_brightness_profile",
    "sersic_b",
    "sersic_index",
    "axis_ratios",
    "sigma_e",
    "lambda_r",
    "circularities",
    "orbit_fractions",
    "sfr_recent",
]

#: Newton's constant in kpc (km/s)^2 / Msun.
G_KPC_KMS2_MSUN = float(G.to(u.kpc * u.km**2 / u.s**2 / u.Msun).value)


def enclosed_mass(r: np.ndarray, m: np.ndarray, radius: float | np.ndarray) -> float | np.ndarray:
    """Mass (Msun) of the particles with ``r <= radius`` (kpc); ``radius`` scalar or array."""
    r, m = _pair(r, m, "r", "m")
    order = np.argsort(r, kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(m[order])])
    result = cum[np.searchsorted(r[order], radius, side="right")]
    return float(result) if np.ndim(result) == 0 else result


def half_mass_radius(r: np.ndarray, m: np.ndarray) -> float:
    """Half-mass radius (kpc): the smallest particle radius ``r_i`` with mass(r <= r_i) >= half the
    total mass. ``r`` (N,) kpc (3-D for R_half), ``m`` (N,) Msun. NaN without mass."""
    r, m = _pair(r, m, "r", "m")
    if len(r) == 0 or not m.sum() > 0:
        return float("nan")
    order = np.argsort(r, kind="stable")
    cum = np.cumsum(m[order])
    return float(r[order][np.searchsorted(cum, 0.5 * cum[-1])])


def surface_brightness_profile(
    R_kpc: np.ndarray, lum: np.ndarray, r_max_kpc: float, n_bins: int = 20, r_min_kpc: float | None = None,
    min_particles: int = 5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binned projected light profile in ``n_bins`` logarithmic annuli from ``r_min_kpc`` (default
    ``r_max_kpc / 50``) to ``r_max_kpc``.

    ``R_kpc`` (N,) projected radii, ``lum`` (N,) Lsun. Returns, for annuli holding at least
    ``min_particles`` particles: radius (kpc; the area-weighted mean radius of the annulus), surface
    brightness (Lsun / kpc^2) and its Poisson uncertainty (Lsun / kpc^2; sigma / mu = 1 / sqrt(N_eff),
    N_eff = (sum L)^2 / sum L^2).
    """
    R, lum = _pair(R_kpc, lum, "R_kpc", "lum")
    if not r_max_kpc > 0:
        raise Sim2obsValueError("r_max_kpc must be > 0", value=r_max_kpc)
    r_min = r_max_kpc / 50.0 if r_min_kpc is None else float(r_min_kpc)
    if not 0 < r_min < r_max_kpc:
        raise Sim2obsValueError("need 0 < r_min_kpc < r_max_kpc", value=r_min_kpc, allowed=f"(0, {r_max_kpc})")
    edges = np.geomspace(r_min, r_max_kpc, int(n_bins) + 1)
    which = np.searchsorted(edges, R, side="right") - 1
    ok = (which >= 0) & (which < n_bins) & (lum > 0)
    which, lum = which[ok], lum[ok]
    total = np.bincount(which, weights=lum, minlength=n_bins)
    total_sq = np.bincount(which, weights=lum**2, minlength=n_bins)
    count = np.bincount(which, minlength=n_bins)
    area = np.pi * (edges[1:] ** 2 - edges[:-1] ** 2)
    radius = (2.0 / 3.0) * (edges[1:] ** 3 - edges[:-1] ** 3) / (edges[1:] ** 2 - edges[:-1] ** 2)
    keep = count >= max(int(min_particles), 1)
    mu = total[keep] / area[keep]
    n_eff = total[keep] ** 2 / total_sq[keep]
    return radius[keep], mu, mu / np.sqrt(n_eff)


def sersic_index(
    R_kpc: np.ndarray, lum: np.ndarray, r_max_kpc: float, n_bins: int = 20, r_min_kpc: float | None = None,
    n_bounds: tuple[float, float] = (0.3, 20.0),
) -> float:
    """Sersic index n of the projected light within ``r_max_kpc`` (kpc).

    Fits astropy's ``Sersic1D`` with the trust-region least-squares fitter to the binned surface
    brightness (:func:`surface_brightness_profile`: logarithmic annuli, Poisson weights). ``n`` is
    bounded to ``n_bounds`` (default 0.3..20; a fit at a bound returns the bound). NaN when fewer
    than four annuli are populated or the fit fails (fitter error, non-finite or unsuccessful result).
    """
    from astropy.modeling import fitting, models  # deferred: astropy.modeling takes ~1 s to import

    lo, hi = (float(b) for b in n_bounds)
    if not 0 < lo < hi:
        raise Sim2obsValueError("n_bounds must satisfy 0 < low < high", value=n_bounds)
    radius, mu, err = surface_brightness_profile(R_kpc, lum, r_max_kpc, n_bins=n_bins, r_min_kpc=r_min_kpc)
    if len(radius) < 4:
        return float("nan")
    # Dimensionless units for the fit (n does not depend on them): radii / r_max, mu / its median.
    x = radius / r_max_kpc
    scale = np.median(mu)
    y, sigma = mu / scale, err / scale
    R, L = _pair(R_kpc, lum, "R_kpc", "lum")
    inner = R <= r_max_kpc
    order = np.argsort(R[inner])
    cum = np.cumsum(L[inner][order])
    r_eff0 = R[inner][order][np.searchsorted(cum, 0.5 * cum[-1])] / r_max_kpc if cum[-1] > 0 else 0.3
    r_eff0 = float(np.clip(r_eff0, 1e-3, 10.0))
    n0 = float(np.clip(2.0, lo, hi))
    amp0 = float(np.interp(r_eff0, x, y))
    init = models.Sersic1D(amplitude=max(amp0, 1e-12), r_eff=r_eff0, n=n0,
                           bounds={"amplitude": (0.0, None), "r_eff": (1e-4, 1e3), "n": (lo, hi)})
    fitter = fitting.TRFLSQFitter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fitter(init, x, y, weights=1.0 / sigma, maxiter=1000)
    except (ValueError, RuntimeError, np.linalg.LinAlgError):
        return float("nan")
    n = float(fit.n.value)
    if not np.isfinite(n) or not fitter.fit_info.get("success", False):
        return float("nan")
    return n


def axis_ratios(
    pos: np.ndarray, mass: np.ndarray, r_start_kpc: float, max_iter: int = 100, tol: float = 1e-3,
    reduced: bool = True, min_particles: int = 10,
) -> tuple[float, float]:
    """Axis ratios (b/a, c/a) of a particle distribution (Allgood et al. 2006).

    ``pos`` (N, 3) kpc relative to the centre, ``mass`` (N,) Msun. Starts from the sphere of radius
    ``r_start_kpc``; each iteration diagonalises the inertia tensor sum m x_i x_j (``reduced``:
    divided by the ellipsoidal radius squared, x^2 + y^2/q^2 + z^2/s^2 in the principal frame) of the
    particles inside the current ellipsoid, then reshapes the ellipsoid to the new axis ratios
    keeping its volume (a b c = r_start^3). Stops when both ratios change by less than ``tol``
    (relative) or after ``max_iter`` iterations (returns the last iterate). (NaN, NaN) when fewer
    than ``min_particles`` particles lie inside.
    """
    pos = np.asarray(pos, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise Sim2obsValueError("pos must be (N, 3)", value=pos.shape)
    mass = np.asarray(mass, dtype=np.float64)
    if mass.shape != (len(pos),):
        raise Sim2obsValueError("mass must be (N,)", value=mass.shape)
    if not r_start_kpc > 0:
        raise Sim2obsValueError("r_start_kpc must be > 0", value=r_start_kpc)
    q = s = 1.0
    frame = np.eye(3)  # columns: major, intermediate, minor axis
    for _ in range(int(max_iter)):
        x = pos @ frame
        a2 = r_start_kpc**2 / (q * s) ** (2.0 / 3.0)
        ell2 = x[:, 0] ** 2 + (x[:, 1] / q) ** 2 + (x[:, 2] / s) ** 2
        inside = (ell2 <= a2) & (ell2 > 0)
        if inside.sum() < min_particles:
            return float("nan"), float("nan")
        weight = mass[inside] / ell2[inside] if reduced else mass[inside]
        p = pos[inside]
        tensor = (p * weight[:, None]).T @ p
        evals, evecs = np.linalg.eigh(tensor)  # ascending
        evals, frame = np.clip(evals[::-1], 0.0, None), evecs[:, ::-1]
        if not evals[0] > 0:
            return float("nan"), float("nan")
        q_new, s_new = np.sqrt(evals[1] / evals[0]), np.sqrt(evals[2] / evals[0])
        if not s_new > 0:
            return float(q_new), 0.0
        done = abs(q_new - q) <= tol * q and abs(s_new - s) <= tol * s
        q, s = float(q_new), float(s_new)
        if done:
            break
    return q, s


def sigma_e(v_los: np.ndarray, weights: np.ndarray, R: np.ndarray, R_e: float) -> float:
    """Weighted (e.g. by Lsun) line-of-sight velocity dispersion (km/s) of the particles within
    projected radius ``R_e`` (kpc), rotation included: sqrt(sum w (v - vbar)^2 / sum w).
    ``v_los``, ``weights``, ``R`` (N,). NaN without weight inside."""
    v, w = _pair(v_los, weights, "v_los", "weights")
    R = np.asarray(R, dtype=np.float64)
    if R.shape != v.shape:
        raise Sim2obsValueError("R must match v_los", value=R.shape)
    inside = R <= R_e
    wsum = w[inside].sum()
    if not wsum > 0:
        return float("nan")
    mean = (w[inside] * v[inside]).sum() / wsum
    return float(np.sqrt((w[inside] * (v[inside] - mean) ** 2).sum() / wsum))


def lambda_r(
    mean_v: np.ndarray, sigma: np.ndarray, flux: np.ndarray, valid: np.ndarray, radius: np.ndarray, R_e: float
) -> float:
    """Spin parameter lambda_R (Emsellem et al. 2007, eq. 6) from kinematic maps.

    lambda_R = sum F R |V| / sum F R sqrt(V^2 + sigma^2) over the pixels with ``valid`` and
    projected radius ``radius <= R_e`` (kpc). ``mean_v``, ``sigma`` (km/s, V relative to the
    systemic velocity), ``flux`` (e.g. Lsun per pixel; ``sph_image`` with h = 0 gives NGP sums),
    ``valid`` (bool) and ``radius`` (kpc, e.g. :func:`particle_maps.pixel_radius`): same shape.
    NaN when the denominator is 0.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (mean_v, sigma, flux, radius)]
    valid = np.asarray(valid, dtype=bool)
    if any(a.shape != valid.shape for a in arrays):
        raise Sim2obsValueError("maps must share one shape", value=[a.shape for a in arrays] + [valid.shape])
    v, sig, f, rad = arrays
    use = valid & (rad <= R_e)
    fr = f[use] * rad[use]
    denom = (fr * np.sqrt(v[use] ** 2 + sig[use] ** 2)).sum()
    if not denom > 0:
        return float("nan")
    return float((fr * np.abs(v[use])).sum() / denom)


def circularities(
    pos: np.ndarray, vel: np.ndarray, mass: np.ndarray, pos_all: np.ndarray, mass_all: np.ndarray, aperture: float
) -> np.ndarray:
    """Orbit circularity eps = j_z / (r v_c(r)) of each star particle (N,), dimensionless.

    ``pos`` (N, 3) kpc and ``vel`` (N, 3) km/s relative to the centre and systemic velocity,
    ``mass`` (N,) Msun. z is the direction of the total stellar angular momentum of the particles
    within 3-D radius ``aperture`` (kpc); j_z is the specific angular momentum along it, r the 3-D
    radius, v_c = sqrt(G M(<= r) / r) with M from all matter (``pos_all`` (M, 3) kpc, ``mass_all``
    (M,) Msun: stars, gas and dark matter). eps = 0 where r = 0 or M = 0. Raises
    Sim2obsValueError when the stars within the aperture have no net angular momentum.
    """
    pos = np.asarray(pos, dtype=np.float64)
    vel = np.asarray(vel, dtype=np.float64)
    mass = np.asarray(mass, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or vel.shape != pos.shape or mass.shape != (len(pos),):
        raise Sim2obsValueError("need pos, vel (N, 3) and mass (N,)", value=(pos.shape, vel.shape, mass.shape))
    pos_all = np.asarray(pos_all, dtype=np.float64)
    if pos_all.ndim != 2 or pos_all.shape[1] != 3:
        raise Sim2obsValueError("pos_all must be (M, 3)", value=pos_all.shape)
    r = np.linalg.norm(pos, axis=1)
    spin = np.cross(pos, vel)
    inside = r <= aperture
    total = (spin[inside] * mass[inside, None]).sum(axis=0)
    norm = np.linalg.norm(total)
    if not norm > 0:
        raise Sim2obsValueError("no stellar angular momentum within the aperture", value=aperture)
    j_z = spin @ (total / norm)
    m_enc = enclosed_mass(np.linalg.norm(pos_all, axis=1), mass_all, r)
    denom = np.sqrt(G_KPC_KMS2_MSUN * m_enc * r)  # r * v_c
    eps = np.zeros(len(pos))
    ok = denom > 0
    eps[ok] = j_z[ok] / denom[ok]
    return eps


def orbit_fractions(eps: np.ndarray, mass: np.ndarray, cold: float = 0.8, hot: float = 0.25) -> dict[str, float]:
    """Mass-weighted orbit fractions from circularities ``eps`` (N,) and ``mass`` (N,) Msun.

    ``kin_bt`` = 2 f(eps < 0) (kinematic bulge-to-total; not capped, so it exceeds 1 for
    counter-rotation-dominated systems; Chu et al. drop those), ``f_cold`` = f(eps > cold),
    ``f_hot`` = f(|eps| < hot). NaN without mass.
    """
    eps, mass = _pair(eps, mass, "eps", "mass")
    total = mass.sum()
    if not total > 0:
        return {"kin_bt": float("nan"), "f_cold": float("nan"), "f_hot": float("nan")}
    return {
        "kin_bt": float(2.0 * mass[eps < 0].sum() / total),
        "f_cold": float(mass[eps > cold].sum() / total),
        "f_hot": float(mass[np.abs(eps) < hot].sum() / total),
    }


def sfr_recent(ages_gyr: np.ndarray, initial_mass: np.ndarray, window_gyr: float = 1.0) -> float:
    """Mean star-formation rate (Msun/yr) over the last ``window_gyr``: the initial mass (Msun) of
    the particles with 0 <= age < window, divided by the window."""
    ages, m0 = _pair(ages_gyr, initial_mass, "ages_gyr", "initial_mass")
    if not window_gyr > 0:
        raise Sim2obsValueError("window_gyr must be > 0", value=window_gyr)
    young = (ages >= 0) & (ages < window_gyr)
    return float(m0[young].sum() / (window_gyr * 1e9))


def sersic_b(n: float) -> float:
    """b_n of the Sersic profile (half the light within r_eff): gamma(2n, b_n) = Gamma(2n) / 2."""
    return float(gammaincinv(2.0 * n, 0.5))


def _pair(a, b, name_a, name_b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.shape != a.shape:
        raise Sim2obsValueError(f"{name_a} and {name_b} must be (N,) arrays of one length", value=(a.shape, b.shape))
    return a, b
