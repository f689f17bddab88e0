"""TNG code units -> physical units for any particle source (basePath, web-API cutout,
mini-simulation): positions relative to a centre in kpc, velocities in km/s, masses in Msun,
stellar ages from formation scale factors through the header's flat Lambda-CDM cosmology."""
from __future__ import annotations

import functools
import math
from typing import Any, Mapping

import numpy as np


def _cosmology(header: Mapping[str, Any]):
    return _flat_lcdm(float(header["HubbleParam"]), float(header["Omega0"]), float(header.get("OmegaBaryon", 0.0486)))


@functools.lru_cache(maxsize=8)
def _flat_lcdm(h: float, omega0: float, omega_baryon: float):
    from astropy.cosmology import FlatLambdaCDM  # deferred: astropy.cosmology takes ~1 s to import

    return FlatLambdaCDM(H0=100.0 * h, Om0=omega0, Ob0=omega_baryon, Tcmb0=0.0)


def stellar_ages_gyr(formation_a: np.ndarray, header: Mapping[str, Any]) -> np.ndarray:
    """Ages (Gyr) at the snapshot of stars formed at scale factors ``formation_a`` (> 0)."""
    cosmo = _cosmology(header)
    a_now = float(header["Time"])
    a = np.clip(np.asarray(formation_a, float), 1e-6, a_now)
    t_form = cosmo.age(1.0 / a - 1.0).to_value("Gyr")
    return np.clip(cosmo.age(1.0 / a_now - 1.0).to_value("Gyr") - t_form, 0.0, None)


def to_physical(particles: Mapping[str, Mapping[str, np.ndarray]], centre_ckpc_h: np.ndarray,
                header: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """Code units -> physical: positions relative to the centre in kpc (periodic box unwrapped),
    velocities in km/s, masses in Msun (DM: ``MassTable[1]``). Wind particles are dropped."""
    h, a, box = float(header["HubbleParam"]), float(header["Time"]), float(header["BoxSize"])
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, data in particles.items():
        d = np.asarray(data["Coordinates"], np.float64) - np.asarray(centre_ckpc_h, np.float64)
        d -= box * np.round(d / box)
        part = {"pos": d * a / h, "vel": np.asarray(data["Velocities"], np.float64) * math.sqrt(a)}
        if name == "dm":
            part["mass"] = np.full(len(d), float(np.asarray(header["MassTable"])[1]) * 1e10 / h)
        else:
            part["mass"] = np.asarray(data["Masses"], np.float64) * 1e10 / h
        if name == "stars":
            t_form = np.asarray(data["GFM_StellarFormationTime"], np.float64)
            keep = t_form > 0
            part = {k: v[keep] for k, v in part.items()}
            part["age_gyr"] = stellar_ages_gyr(t_form[keep], header)
            part["initial_mass"] = np.asarray(data["GFM_InitialMass"], np.float64)[keep] * 1e10 / h
            part["mags"] = np.asarray(data["GFM_StellarPhotometrics"], np.float64)[keep]
        out[name] = part
    return out
