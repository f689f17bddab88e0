"""Redshift grids of a cosmology (volume, distances, angular scale, age), computed by astropy and
kept on disk for the default cosmology.

The population model interpolates every per-galaxy distance on these grids. Importing
``astropy.cosmology`` and integrating the age on the grid cost ~0.7 s of CPU, a tenth of a
2,000-galaxy GalSim run, and the grids depend only on the cosmology, the grid and astropy's
version: for ``Planck18`` they are computed once and read back from
``$SIM2OBS_DATA/_cache/cosmology/`` (bit-identical arrays; a file that does not load, or holds
other grids, is computed again and replaced atomically).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from importlib.metadata import version
from pathlib import Path

import numpy as np

from sim2obs.atomic import atomic_write

__all__ = ["GRID_NAMES", "redshift_grids", "cache_dir"]

#: Arrays of :func:`redshift_grids`: comoving volume element (Mpc^3 / sr per unit z) on ``z_volume``;
#: distance modulus (mag), proper angular scale (arcsec / kpc), luminosity distance (Mpc) and
#: cosmic age (Gyr) on ``z``.
GRID_NAMES = ("z_volume", "differential_comoving_volume", "z", "distmod", "arcsec_per_kpc_proper",
              "luminosity_distance_mpc", "age_gyr")


def cache_dir() -> Path:
    """``$SIM2OBS_DATA/_cache/cosmology`` (``SIM2OBS_DATA`` defaults to ``sim2obs_data``)."""
    return Path(os.environ.get("SIM2OBS_DATA", "sim2obs_data")) / "_cache" / "cosmology"


def _compute(cosmo, z_volume: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    return {"z_volume": z_volume, "differential_comoving_volume": cosmo.differential_comoving_volume(z_volume).value,
            "z": z, "distmod": cosmo.distmod(z).value, "arcsec_per_kpc_proper": cosmo.arcsec_per_kpc_proper(z).value,
            "luminosity_distance_mpc": cosmo.luminosity_distance(z).value, "age_gyr": cosmo.age(z).value}


def _load(path: Path, z_volume: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            grids = {k: np.array(f[k], dtype=np.float64) for k in GRID_NAMES}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # missing, truncated or foreign: computed again
        return None
    same = np.array_equal(grids["z_volume"], z_volume) and np.array_equal(grids["z"], z)
    finite = all(v.shape == (z_volume if k.endswith("volume") else z).shape and np.isfinite(v).all()
                 for k, v in grids.items())
    return grids if same and finite else None


def redshift_grids(z_volume: np.ndarray, z: np.ndarray, cosmology=None) -> dict[str, np.ndarray]:
    """The :data:`GRID_NAMES` arrays of ``cosmology`` (an astropy cosmology; None: ``Planck18``,
    cached) with the volume element on ``z_volume`` and the rest on ``z`` (both 1-d)."""
    z_volume, z = np.asarray(z_volume, dtype=np.float64), np.asarray(z, dtype=np.float64)
    if cosmology is not None:
        return _compute(cosmology, z_volume, z)
    key = hashlib.sha256(json.dumps({"cosmology": "Planck18", "astropy": version("astropy"),
                                     "z_volume": z_volume.tolist(), "z": z.tolist()}).encode()).hexdigest()[:20]
    path = cache_dir() / f"planck18-{key}.npz"
    grids = _load(path, z_volume, z)
    if grids is None:
        from astropy.cosmology import Planck18  # deferred: the import alone is ~0.5 s

        grids = _compute(Planck18, z_volume, z)
        buffer = io.BytesIO()
        np.savez(buffer, **grids)
        try:
            atomic_write(path, lambda f: f.write(buffer.getvalue()))
        except OSError:  # a read-only data folder: the grids are still right, only not kept
            pass
    return grids
