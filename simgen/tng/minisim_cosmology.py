"""Time in the mini-simulation: the header's flat Lambda-CDM cosmology (scale factor <-> cosmic
time, critical density) and the tabulated star-formation histories that disk and bulge star
particles are drawn from (:mod:`sim2obs.simgen.tng_minisim`)."""
from __future__ import annotations

import numpy as np

from sim2obs.simgen.tng.minisim_config import _Z_FORMATION_START, MiniSimConfig
from sim2obs.simgen.tng_minisim_physics import mass_loss_fraction


class _Cosmology:
    """The header's flat Lambda-CDM cosmology: scale factor, ages (Gyr), critical density."""

    def __init__(self, cfg: MiniSimConfig):
        import astropy.units as u  # deferred: astropy.cosmology and units take ~1 s to import
        from astropy.cosmology import FlatLambdaCDM

        self.astropy = FlatLambdaCDM(H0=100.0 * cfg.h, Om0=cfg.Omega0, Ob0=cfg.OmegaBaryon)
        self.h, self.z = cfg.h, cfg.redshift
        self.a = 1.0 / (1.0 + cfg.redshift)
        self.omega_lambda = 1.0 - cfg.Omega0
        self.baryon_fraction = cfg.OmegaBaryon / cfg.Omega0
        a_grid = np.geomspace(1.0 / (1.0 + 40.0), 1.0, 4096)
        self._log_a = np.log(a_grid)
        self._log_t = np.log(self.astropy.age(1.0 / a_grid - 1.0).to_value(u.Gyr))
        self.t_obs = float(self.astropy.age(cfg.redshift).to_value(u.Gyr))
        self.t_start = float(self.astropy.age(_Z_FORMATION_START).to_value(u.Gyr))
        self.rho_crit = float(self.astropy.critical_density(cfg.redshift).to_value(u.Msun / u.kpc ** 3))

    def scale_factor(self, t_gyr: np.ndarray) -> np.ndarray:
        """Scale factor at cosmic time ``t_gyr`` (Gyr)."""
        return np.exp(np.interp(np.log(np.maximum(t_gyr, 1e-4)), self._log_t, self._log_a))

    def age(self, scale_factor: np.ndarray) -> np.ndarray:
        """Cosmic time (Gyr) at ``scale_factor``."""
        return np.exp(np.interp(np.log(scale_factor), self._log_a, self._log_t))


class _SFHTable:
    """Star formation histories psi(t) ~ (t - t0) exp(-k (t - t0)) from t_start to t_obs: delayed-tau
    (k = 1/tau > 0), linearly rising (k = 0) or exponentially rising (k < 0), tabulated on a grid
    of k with the mass formed in the last ``window`` Gyr per unit current mass, ``q``."""

    def __init__(self, cosmo: _Cosmology, window_gyr: float = 1.0):
        from scipy.integrate import trapezoid  # deferred: scipy.integrate takes ~0.3 s to import

        self.t = np.linspace(cosmo.t_start, cosmo.t_obs, 1025)
        self.k = np.concatenate([np.geomspace(50.0, 0.01, 200), [0.0], -np.geomspace(0.01, 5.0, 100)])
        self.window = min(window_gyr, cosmo.t_obs - cosmo.t_start)
        psi = self.psi(self.k[:, None])
        norm = trapezoid(psi, self.t, axis=1)
        recent = self.t >= cosmo.t_obs - self.window
        formed_recent = trapezoid(psi[:, recent], self.t[recent], axis=1) / norm
        remaining = trapezoid(psi * (1.0 - mass_loss_fraction(cosmo.t_obs - self.t)), self.t, axis=1) / norm
        self.q = np.maximum.accumulate(formed_recent / remaining)  # increases along the grid (k falling)
        self.q_max = float(self.q[-1])

    def psi(self, k):
        """Unnormalised history on the time grid (exponent shifted to stay <= 0)."""
        dt = self.t - self.t[0]
        return dt * np.exp(-k * dt + np.minimum(k, 0.0) * dt[-1])

    def k_for(self, recent_per_current_mass):
        """The k (1/Gyr) whose history forms ``recent_per_current_mass`` x current mass in the
        window (clipped to the table's range)."""
        return np.interp(recent_per_current_mass, self.q, self.k)

    def sample(self, rng, k, n):
        """``n`` formation times (Gyr) from the history ``k``."""
        psi = self.psi(k)
        cdf = np.concatenate([[0.0], np.cumsum((psi[1:] + psi[:-1]) / 2.0)])
        if not cdf[-1] > 0:  # history far narrower than the grid step: all at the start
            return np.full(n, self.t[0])
        return np.interp(rng.random(n) * cdf[-1], cdf, self.t)
