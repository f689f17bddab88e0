"""Analytic mass profiles of the mini-simulation's galaxies (physical kpc, Msun): NFW halos,
truncated Hernquist bulges, exponential x sech^2 disks; the enclosed masses of a subhalo's model
(:func:`analytic_enclosed_mass`), half-mass radii, and random unit vectors."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from sim2obs.errors import Sim2obsValueError


def _nfw_mu(x):
    x = np.asarray(x, float)
    return np.log1p(x) - x / (1.0 + x)


def _hernquist_fraction(r, a):
    r = np.asarray(r, float)
    return (r / (r + a)) ** 2


_GL_X, _GL_W = np.polynomial.legendre.leggauss(24)


def _disk_spherical_mass(r, mass, r_d, z_d):
    """Mass (Msun) of an exponential (scale ``r_d``) sech^2 (``z_d``) disk within spheres of
    radius ``r`` (kpc): (M / R_d^2) int_0^r R exp(-R/R_d) tanh(sqrt(r^2 - R^2) / z_d) dR, by
    composite Gauss-Legendre in R = r sin(theta) over [0, theta_max], theta_max cutting the
    exp(-40) tail."""
    r = np.atleast_1d(np.asarray(r, float))
    if mass <= 0:
        return np.zeros_like(r)
    out = np.zeros_like(r)
    pos = r > 0
    rr = r[pos][:, None, None]
    theta_max = np.arcsin(np.minimum(1.0, 40.0 * r_d / rr))
    panels = 8
    edges = np.linspace(0.0, 1.0, panels + 1)
    lo, hi = edges[:-1][None, :, None], edges[1:][None, :, None]
    frac = lo + (hi - lo) * (_GL_X[None, None, :] + 1.0) / 2.0
    theta = theta_max * frac
    big_r = rr * np.sin(theta)
    height = rr * np.cos(theta)
    integrand = big_r * np.exp(-big_r / r_d) * np.tanh(height / z_d) * rr * np.cos(theta)
    weights = (theta_max * (hi - lo) / 2.0) * _GL_W[None, None, :]
    out[pos] = mass / r_d ** 2 * np.sum(integrand * weights, axis=(1, 2))
    return out


def _disk_cylindrical_mass(r, mass, r_d):
    """Mass (Msun) of an exponential disk within cylindrical radius ``r`` (kpc)."""
    x = np.asarray(r, float) / r_d
    return mass * (1.0 - (1.0 + x) * np.exp(-x))


def analytic_enclosed_mass(params: Mapping[str, Any], r_kpc, component: str = "total") -> np.ndarray:
    """Mass (Msun) within spheres of radius ``r_kpc`` (physical kpc) about the subhalo centre,
    of one component of a subhalo's model. ``params``: a truth row (:func:`truth_row`, or any
    mapping with the keys of :func:`read_truth`). ``component``:

    - ``dm``: the realised DM particles: N_dm m_dm x M_NFW(<min(r, r_t)) / M_NFW(<r_t);
    - ``dm_nfw``: the untruncated analytic NFW DM profile;
    - ``bulge`` (truncated Hernquist), ``disk`` (exponential x sech^2), ``stars`` (bulge + disk,
      wind particles excluded), ``gas`` (exponential x sech^2);
    - ``total``: dm + stars + gas.
    """
    r = np.asarray(r_kpc, float)
    p = {k: float(np.asarray(params[k]).ravel()[0]) for k in
         ("m_dm_particles_msun", "m200_dm_msun", "r_s_kpc", "r200_kpc", "r_trunc_kpc", "m_bulge_msun",
          "a_hernquist_kpc", "r_bulge_max_kpc", "m_disk_msun", "r_d_kpc", "z_d_kpc", "m_gas_msun",
          "r_gas_kpc", "z_gas_kpc")}
    if component == "dm":
        x_t = p["r_trunc_kpc"] / p["r_s_kpc"]
        return p["m_dm_particles_msun"] * _nfw_mu(np.minimum(r, p["r_trunc_kpc"]) / p["r_s_kpc"]) / _nfw_mu(x_t)
    if component == "dm_nfw":
        c = p["r200_kpc"] / p["r_s_kpc"]
        return p["m200_dm_msun"] * _nfw_mu(r / p["r_s_kpc"]) / _nfw_mu(c)
    if component == "bulge":
        if p["m_bulge_msun"] <= 0:
            return np.zeros_like(r)
        a, r_max = p["a_hernquist_kpc"], p["r_bulge_max_kpc"]
        return p["m_bulge_msun"] * _hernquist_fraction(np.minimum(r, r_max), a) / _hernquist_fraction(r_max, a)
    if component == "disk":
        return _disk_spherical_mass(r, p["m_disk_msun"], p["r_d_kpc"], p["z_d_kpc"]).reshape(r.shape)
    if component == "gas":
        return _disk_spherical_mass(r, p["m_gas_msun"], p["r_gas_kpc"], p["z_gas_kpc"]).reshape(r.shape)
    if component == "stars":
        return analytic_enclosed_mass(params, r, "bulge") + analytic_enclosed_mass(params, r, "disk")
    if component == "total":
        return sum(analytic_enclosed_mass(params, r, c) for c in ("dm", "stars", "gas"))
    raise Sim2obsValueError("unknown component", value=component,
                            allowed=["dm", "dm_nfw", "bulge", "disk", "stars", "gas", "total"])


def _half_mass_radius(r, m):
    if r.size == 0:
        return 0.0
    order = np.argsort(r)
    cum = np.cumsum(m[order])
    return float(np.interp(0.5 * cum[-1], cum, r[order]))


def _nfw_half_mass_radius(mass_within, r_out, r_s):
    x = np.geomspace(1e-5, r_out / r_s, 2000)
    return float(np.interp(0.5 * _nfw_mu(r_out / r_s), _nfw_mu(x), x) * r_s) if mass_within > 0 else 0.0


def _unit_vectors(rng, n):
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)
