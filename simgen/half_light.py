"""Half-light radius of the bulge + disk model galaxies (no PSF), computed analytically: the radius of
the centred circle holding half the light of the sum of two elliptical (area-preserving shear) Sérsic
profiles. Radii in the units of the inputs (kpc or arcsec), fluxes in any common unit."""
from __future__ import annotations

import numpy as np
from scipy import special

def _sersic_b(n: np.ndarray) -> np.ndarray:
    return special.gammaincinv(2.0 * n, 0.5)


_N_THETA = 48  # midpoint rule over a quarter period: spectrally accurate for this smooth periodic integrand


class _EllipticalSersic:
    """Flux fraction of elliptical (area-preserving shear, axis ratio q) Sersic profiles inside
    centred circles, and its derivative in the radius; ``(n,)`` profiles, ``(n, N_THETA)`` work.

    E(R) = (1/2pi) int P(R s / hlr) / s^2 dtheta with s(theta)^2 = q cos^2 + sin^2 / q and
    P(x) = gammainc(2n, b_n x^(1/n)) the circular enclosed fraction; dE/dR follows from the
    gamma density. Everything that does not depend on R is computed once.
    """

    def __init__(self, hlr: np.ndarray, n: np.ndarray, q: np.ndarray):
        theta = (np.arange(_N_THETA) + 0.5) * (0.5 * np.pi / _N_THETA)  # quarter period suffices
        s2 = q[:, None] * np.cos(theta) ** 2 + np.sin(theta) ** 2 / q[:, None]
        self.weight = 1.0 / (s2 * _N_THETA)                            # mean over theta of (.)/s^2
        self.scale = np.sqrt(s2) / hlr[:, None]                        # x = R * scale
        self.a = 2.0 * n[:, None]
        self.inv_n = 1.0 / n[:, None]
        self.b = _sersic_b(n)[:, None]
        self.log_norm = special.gammaln(self.a)

    def subset(self, rows: np.ndarray) -> "_EllipticalSersic":
        """The same computation for the profiles ``rows`` only."""
        out = object.__new__(_EllipticalSersic)
        out.__dict__.update({k: v[rows] for k, v in self.__dict__.items()})
        return out

    def __call__(self, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(E(R), dE/dR)`` at ``radius`` (``(n,)``, > 0)."""
        r = radius[:, None]
        u = self.b * (r * self.scale) ** self.inv_n
        frac = special.gammainc(self.a, u)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            slope = np.exp((self.a - 1.0) * np.log(u) - u - self.log_norm) * u * self.inv_n / r
        slope = np.where(np.isfinite(slope), slope, 0.0)
        return np.sum(frac * self.weight, axis=1), np.sum(slope * self.weight, axis=1)


def _enclosed_fraction(radius: np.ndarray, hlr: np.ndarray, n: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Fraction of an elliptical Sersic profile's flux inside a centred circle of ``radius``."""
    return _EllipticalSersic(hlr, n, q)(radius)[0]


def half_light_radius(flux_bulge: np.ndarray, hlr_bulge: np.ndarray, n_bulge: np.ndarray, q_bulge: np.ndarray,
                      flux_disk: np.ndarray, hlr_disk: np.ndarray, q_disk: np.ndarray,
                      rtol: float = 1e-13, max_iterations: int = 200) -> np.ndarray:
    """Radius (same unit as the inputs) of the centred circle holding half the total light of
    a concentric elliptical Sersic bulge + exponential disk, before PSF. Position angles do not
    enter: a circle is rotation invariant. ``(n,)`` in and out.

    Solved to ``rtol`` (relative) by Newton's method on the exact enclosed flux, kept inside a
    bracket that every step narrows (a step leaving it bisects instead), so it always converges;
    about 6 evaluations instead of the 40 of plain bisection.
    """
    arrays = np.broadcast_arrays(*(np.asarray(a, dtype=float) for a in
                                   (flux_bulge, hlr_bulge, n_bulge, q_bulge, flux_disk, hlr_disk, q_disk)))
    fb, hb, nb, qb, fd, hd, qd = (a.ravel() for a in arrays)
    bulge, disk = _EllipticalSersic(hb, nb, qb), _EllipticalSersic(hd, np.ones_like(hd), qd)
    half = 0.5 * (fb + fd)
    lo = np.zeros_like(half)
    hi = 10.0 * np.maximum(hb / np.sqrt(qb), hd / np.sqrt(qd))
    radius = np.clip((fb * hb + fd * hd) / (fb + fd), 1e-3 * hi, 0.5 * hi)
    todo = np.arange(len(half))
    for _ in range(max_iterations):
        if not todo.size:
            break
        r = radius[todo]
        (eb, sb), (ed, sd) = bulge.subset(todo)(r), disk.subset(todo)(r)
        excess = fb[todo] * eb + fd[todo] * ed - half[todo]
        above = excess >= 0
        hi[todo] = np.where(above, r, hi[todo])
        lo[todo] = np.where(above, lo[todo], r)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = r - excess / (fb[todo] * sb + fd[todo] * sd)
        inside = np.isfinite(step) & (step > lo[todo]) & (step < hi[todo])
        new = np.where(inside, step, 0.5 * (lo[todo] + hi[todo]))
        radius[todo] = new
        todo = todo[np.abs(new - r) > rtol * new]
    return radius.reshape(arrays[0].shape)
