"""Galaxy-formation physics of the TNG-format mini-simulation (:mod:`sim2obs.simgen.tng_minisim`),
kept apart from its writer: the published relations it draws galaxies from, and the two physics
variants a mini-simulation can be built with (config key ``physics``).

Units: masses Msun (physical, no h), radii kpc, velocities km/s, times Gyr, SFR Msun/yr.

Physics ``"A"`` (the default, TNG-like; generator version 1.0's relations plus, since 1.1, the
concentration coupling below; ``concentration_coupling: 0`` gives 1.0's data again):

- stellar-to-halo mass relation (SHMR): Moster, Naab & White (2013, MNRAS 428, 3121), eqs. 2 and
  11-14, for M200c;
- NFW concentration-mass relation: Dutton & Maccio (2014, MNRAS 441, 3359), eqs. 7-9 (Planck
  cosmology, c200 of M200c);
- bulge stars: isotropic velocities (anisotropy beta = 0), dispersion from the spherical Jeans
  equation in the total potential;
- one stellar initial mass function (IMF) for all stars, Chabrier (2003), through the M/L of
  :func:`ssp_log_mass_to_light` (BC03-like, Chabrier) and the mass loss of
  :func:`mass_loss_fraction`;
- halo concentration coupled to the stellar mass as in IllustrisTNG (issue 15): at fixed M200 the
  log M* residual correlates with the log-concentration residual, with coefficient 0.5 in haloes
  below ~1e12 Msun fading above (rho(M200) = 0.5 / (1 + exp((log10 M200 - 12.25) / 0.25)): 0.48,
  0.37, 0.13, 0.02 at M200 = 1e11.5, 1e12, 1e12.5, 1e13 Msun). TNG100-1: Pei et al. (2024,
  arXiv:2405.15191) find that in low-mass haloes more massive galaxies live in more concentrated,
  earlier-forming haloes, and that concentration and formation time drive the SHMR scatter below
  M_h ~ 1e12 Msun with an influence that diminishes at higher mass; TNG100/TNG300: Bose et al.
  (2019, MNRAS 490, 5693) find concentration the strongest secondary halo property of the central
  galaxy's stellar-mass threshold occupancy at low mass. Those papers give the trend and its mass
  dependence, not one coefficient; the low-mass amplitude 0.5 is the EAGLE measurement of Matthee
  et al. (2017; see physics B), which Pei et al. find behaves like TNG100-1 here. With the
  default 0.15 dex SHMR scatter, 0.5 leaves 0.13 dex at fixed concentration. Stellar observables
  (light, sizes through the disk mass, kinematics through the enclosed mass) follow M*, so at fixed
  halo mass they now carry the halo's concentration, as in TNG.

Physics ``"B"`` (a second galaxy-formation model, the sim-to-sim shift of issue 14):

- SHMR: Behroozi, Wechsler & Conroy (2013, ApJ 770, 57), eqs. 3-4 and the best fit of their
  section 5 (with its redshift evolution). It is defined for virial masses (Bryan & Norman 1998);
  it is applied to M200c here as a different model, not converted. At z = 0 it gives 0.34, 0.29,
  0.11, 0.02 dex less stellar mass than Moster et al. (2013) at M200 = 1e11, 1e11.5, 1e12,
  1e12.5 Msun (:func:`behroozi13_mstar` / :func:`moster13_mstar`), so a galaxy of given M*
  lives in a heavier halo;
- concentrations: Duffy et al. (2008, MNRAS 390, L64), Table 1, NFW, full sample, M200c,
  0 <= z <= 2: c200 = 5.71 (M200 / 2e12 h^-1 Msun)^-0.084 (1 + z)^-0.47, 0.10-0.14 dex below
  Dutton & Maccio (2014) over 1e11-1e13.3 Msun (less concentrated haloes, as in a model whose
  haloes respond less to the condensing baryons);
- bulge stars: radially biased velocities of constant anisotropy beta = 1 - sigma_t^2 / sigma_r^2
  = 0.3, within the moderately radial range found for round ellipticals (Gerhard et al. 2001,
  AJ 121, 1936); sigma_r from the Jeans equation for constant beta (Binney & Tremaine 2008,
  eq. 4.215), so the line-of-sight dispersion at a given mass differs from A's (the
  mass-anisotropy degeneracy);
- halo concentration coupled to the stellar mass (issue 15): at fixed M200 the log M* residual
  correlates with the log-concentration residual with coefficient 0.5 (more concentrated, earlier
  forming haloes hold more massive galaxies: Matthee et al. 2017, MNRAS 465, 2381, for EAGLE,
  where concentration accounts for up to 0.04 dex of a 0.12-0.25 dex scatter; Pei et al. 2024,
  arXiv:2405.15191, the same trend in TNG100-1 below M_h ~ 1e12 Msun). With the default 0.15 dex
  SHMR scatter, 0.5 leaves 0.13 dex at fixed concentration (0.02 dex removed). In B the
  coefficient is constant with mass (unlike A's, which fades above ~1e12 Msun as those papers
  find): the massive haloes of B keep the coupling. ``concentration_coupling`` sets the
  (low-mass) coefficient for either variant (null: the variant's); A's fade is kept;
- bulge stars formed with a bottom-heavy, Salpeter (1955) IMF, disk stars with Chabrier's: the
  IMF is heavier in massive early-type systems (Cappellari et al. 2012, Nature 484, 485; Conroy &
  van Dokkum 2012, ApJ 760, 71). At the same current mass, age and metallicity a bulge star
  particle emits 10^-0.24 of A's light in every band (colours unchanged; the low-mass stars that
  make the difference add mass, not light). 0.24 dex is log (M/L)_Salpeter / (M/L)_Chabrier of an
  old population (:func:`salpeter_over_chabrier_log_ml`: the light of a >~10 Gyr population is
  proportional to the IMF at the ~1 Msun turn-off; the mass is the living stars plus remnants).
  Masses, ages, metallicities and the mass loss are A's: only the light of the bulge changes, so
  log_ml_r and the light-to-mass relation of bulge-dominated galaxies shift.

Everything else (spin and disk sizes, bulge fractions and sizes, star formation, metallicity,
the disk's stellar populations, gas, winds) is shared by both variants.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import astropy.units as u
import numpy as np
from astropy import constants

from sim2obs.simgen.particle_maps import SOLAR_ABS_MAG

#: gravitational constant in kpc (km/s)^2 / Msun
G_KPC_KMS2_PER_MSUN = float(constants.G.to_value(u.kpc * u.km ** 2 / u.s ** 2 / u.Msun))
Z_SUN = 0.0127
# log10 M/L (Msun/Lsun, current mass) of a 10 Gyr solar-metallicity population, and its slopes
# d log(M/L) / d log(age) and d log(M/L) / d [Z/H]; chosen to give BC03-like colours
# (U-B 0.50, B-V 0.95, g-r 0.77, r-i 0.40, i-z 0.25, V-K 3.2 at 10 Gyr, solar).
_ML_LOG_10GYR = np.array([0.716, 0.584, 0.456, -0.208, 0.524, 0.400, 0.288, 0.200])
_ML_AGE_SLOPE = np.array([1.10, 0.98, 0.88, 0.55, 0.93, 0.80, 0.74, 0.70])
_ML_Z_SLOPE = np.array([0.45, 0.40, 0.33, 0.10, 0.36, 0.28, 0.24, 0.22])


# --------------------------------------------------------------------------------------------
# Halo-galaxy connection
# --------------------------------------------------------------------------------------------
def moster13_mstar(m200, z):
    """Moster, Naab & White (2013) eqs. 2, 11-14: mean stellar mass (Msun) of haloes of M200c
    ``m200`` (Msun) at redshift ``z``."""
    s = z / (1.0 + z)
    m1 = 10 ** (11.590 + 1.195 * s)
    norm = 0.0351 - 0.0247 * s
    beta = 1.376 - 0.826 * s
    gamma = 0.608 + 0.329 * s
    return 2.0 * norm * m200 / ((m200 / m1) ** (-beta) + (m200 / m1) ** gamma)


def behroozi13_mstar(m_halo, z):
    """Behroozi, Wechsler & Conroy (2013) eqs. 3-4 with their section-5 best fit: mean stellar
    mass (Msun) of haloes of mass ``m_halo`` (Msun) at redshift ``z``:
    log10 M* = log10(eps M1) + f(log10(M_h / M1)) - f(0),
    f(x) = -log10(10^(alpha x) + 1) + delta (log10(1 + e^x))^gamma / (1 + exp(10^-x))."""
    a = 1.0 / (1.0 + z)
    nu = math.exp(-4.0 * a * a)
    log_eps = -1.777 + (-0.006 * (a - 1.0) + 0.0 * z) * nu - 0.119 * (a - 1.0)
    log_m1 = 11.514 + (-1.793 * (a - 1.0) - 0.251 * z) * nu
    alpha = -1.412 + 0.731 * (a - 1.0) * nu
    delta = 3.508 + (2.608 * (a - 1.0) - 0.043 * z) * nu
    gamma = 0.316 + (1.319 * (a - 1.0) + 0.279 * z) * nu

    def f(x):
        return -np.log10(10 ** (alpha * x) + 1.0) + delta * np.log10(1.0 + np.exp(x)) ** gamma / \
            (1.0 + np.exp(10 ** (-x)))

    x = np.log10(np.asarray(m_halo, float)) - log_m1
    return 10 ** (log_eps + log_m1 + f(x) - f(0.0))


def dutton_maccio14_c(m200, z, h):
    """Dutton & Maccio (2014) NFW c200 for M200c ``m200`` (Msun), redshift ``z``, Hubble ``h``."""
    b = -0.101 + 0.026 * z
    a = 0.520 + (0.905 - 0.520) * np.exp(-0.617 * z ** 1.21)
    return 10 ** (a + b * np.log10(m200 / (1e12 / h)))


def duffy08_c(m200, z, h):
    """Duffy et al. (2008) Table 1 (NFW, full sample, M200c, 0 <= z <= 2): c200 =
    5.71 (M200 / M_pivot)^-0.084 (1 + z)^-0.47, M_pivot = 2e12 h^-1 Msun; ``m200`` in Msun."""
    return 5.71 * (np.asarray(m200, float) / (2e12 / h)) ** -0.084 * (1.0 + z) ** -0.47


def coupled_noise(conc_noise: np.ndarray, own_noise: np.ndarray, rho) -> np.ndarray:
    """Unit normal deviates correlated with ``conc_noise`` by ``rho`` (a number, or one per deviate):
    rho x conc_noise + sqrt(1 - rho^2) x own_noise (``own_noise`` itself, unchanged, where rho = 0
    everywhere)."""
    rho = np.asarray(rho, float)
    if not np.any(rho):
        return own_noise
    return rho * conc_noise + np.sqrt(1.0 - rho * rho) * own_noise


#: width (dex in M200) of the logistic fade of physics A's concentration coupling
COUPLING_FADE_WIDTH_DEX = 0.25


def mean_bulge_fraction(log_mstar):
    """Mean bulge-to-total stellar mass ratio at log10 M* (Msun): rises from 0.08 to 0.70
    (logistic centred on 10^10.7 Msun, width 0.3 dex)."""
    return 0.08 + 0.62 / (1.0 + np.exp(-(log_mstar - 10.7) / 0.3))


def mmw98_scale_length(spin, r200, c, m_d, j_over_m):
    """Mo, Mao & White (1998) eq. 28: disk scale length (kpc) R_d = lambda' r200 f_c^-1/2 f_R /
    sqrt(2) with lambda' = (j_d / m_d) lambda (f_c: their eq. 23; f_R: their eq. 32)."""
    lam = np.maximum(spin * j_over_m, 1e-3)
    f_c = 2.0 / 3.0 + (c / 21.5) ** 0.7
    f_r = (lam / 0.1) ** (-0.06 + 2.71 * m_d + 0.0047 / lam) * (1 - 3 * m_d + 5.2 * m_d ** 2) * \
        (1 - 0.019 * c + 0.00025 * c ** 2 + 0.52 / c)
    return lam * r200 * f_r / np.sqrt(2.0 * f_c)


def speagle14_log_sfr(log_mstar, t_gyr):
    """Speagle et al. (2014) star-forming main sequence, log10 Msun/yr, at cosmic time ``t_gyr``."""
    return (0.84 - 0.026 * t_gyr) * log_mstar - (6.51 - 0.11 * t_gyr)


def mean_log_metallicity(log_mstar):
    """Mean stellar [Z/H] (dex) at log10 M* (Msun); roughly Gallazzi et al. (2005)."""
    return -0.25 + 0.35 * np.tanh((log_mstar - 10.0) / 0.8)


# --------------------------------------------------------------------------------------------
# Stellar populations
# --------------------------------------------------------------------------------------------
def mass_loss_fraction(age_gyr: np.ndarray) -> np.ndarray:
    """Fraction of a stellar population's initial mass returned to the ISM after ``age_gyr``
    (Leitner & Kravtsov 2011, Chabrier IMF): 0.046 ln(age / 0.276 Myr + 1)."""
    return 0.046 * np.log(np.maximum(age_gyr, 0.0) / 2.76e-4 + 1.0)


def ssp_log_mass_to_light(age_gyr: np.ndarray, metallicity: np.ndarray) -> np.ndarray:
    """log10 M/L (Msun/Lsun, current stellar mass) in U, B, V, K, g, r, i, z, shape (N, 8), of
    simple stellar populations of age ``age_gyr`` (Gyr, clipped to [3 Myr, 14 Gyr]) and
    metallicity mass fraction ``metallicity`` ([Z/H] clipped to [-2.5, 0.7]): per band a power law
    in age (slope halved below 100 Myr) and metallicity, roughly matching BC03 (Chabrier IMF):
    10 Gyr solar M/L_r = 2.5, g - r = 0.77; 1 Gyr M/L_r = 0.4, g - r = 0.44."""
    age = np.clip(np.atleast_1d(np.asarray(age_gyr, float)), 3e-3, 14.0)
    zh = np.clip(np.log10(np.maximum(np.atleast_1d(np.asarray(metallicity, float)), 1e-12) / Z_SUN), -2.5, 0.7)
    x = np.log10(age / 10.0)
    x = np.where(x < -2.0, -2.0 + 0.5 * (x + 2.0), x)
    return _ML_LOG_10GYR + x[:, None] * _ML_AGE_SLOPE + zh[:, None] * _ML_Z_SLOPE


def ssp_magnitudes(mass_msun: np.ndarray, age_gyr: np.ndarray, metallicity: np.ndarray) -> np.ndarray:
    """Absolute magnitudes (N, 8) (U, B, V, K Vega; g, r, i, z AB) of populations of current mass
    ``mass_msun`` (Msun), age (Gyr) and metallicity (mass fraction)."""
    log_l = np.log10(np.asarray(mass_msun, float))[:, None] - ssp_log_mass_to_light(age_gyr, metallicity)
    return SOLAR_ABS_MAG - 2.5 * log_l


def _chabrier03_imf(m):
    """Chabrier (2003, Table 1) single-star IMF dN/dm (arbitrary normalisation): lognormal below
    1 Msun (m_c = 0.079 Msun, sigma = 0.69 dex), m^-2.3 above, continuous at 1 Msun."""
    m = np.asarray(m, float)
    low = np.exp(-(np.log10(m) - np.log10(0.079)) ** 2 / (2 * 0.69 ** 2)) / m
    at_one = math.exp(-(0.0 - math.log10(0.079)) ** 2 / (2 * 0.69 ** 2))
    return np.where(m <= 1.0, low, at_one * m ** -2.3)


def _salpeter55_imf(m):
    """Salpeter (1955) IMF dN/dm ~ m^-2.35 (arbitrary normalisation)."""
    return np.asarray(m, float) ** -2.35


def _remnant_mass(m):
    """Remnant mass (Msun) of a star of initial mass ``m`` (Renzini & Ciotti 1993): white dwarfs
    0.077 m + 0.48 below 8 Msun, neutron stars 1.4 Msun below 40 Msun, black holes 0.5 m above."""
    m = np.asarray(m, float)
    return np.where(m < 8.0, 0.077 * m + 0.48, np.where(m < 40.0, 1.4, 0.5 * m))


def salpeter_over_chabrier_log_ml(turnoff_msun: float = 1.0, m_min: float = 0.1, m_max: float = 100.0) -> float:
    """log10 of (M/L)_Salpeter / (M/L)_Chabrier of an old stellar population (dex): per unit
    light, taken proportional to the IMF at the main-sequence turn-off mass ``turnoff_msun``
    (Msun; the light of a >~10 Gyr population comes from stars near the turn-off), the mass in
    living stars (``m_min`` to the turn-off) plus remnants (:func:`_remnant_mass`, stars above it
    up to ``m_max``). About 0.24 dex for turn-offs of 0.9-1.1 Msun (physics B's
    ``bulge_imf_log_ml``)."""
    from scipy.integrate import quad  # deferred: only this derivation needs it

    def ml(imf):
        living = quad(lambda m: m * imf(m), m_min, turnoff_msun, limit=200)[0]
        remnants = quad(lambda m: _remnant_mass(m) * imf(m), turnoff_msun, m_max, limit=200, points=[8.0, 40.0])[0]
        return (living + remnants) / float(imf(turnoff_msun))

    return math.log10(ml(_salpeter55_imf) / ml(_chabrier03_imf))


def light_mass(mass: np.ndarray, is_bulge: np.ndarray, bulge_imf_log_ml: float) -> np.ndarray:
    """The mass (Msun) whose Chabrier-IMF light a star particle emits: ``mass`` divided by
    10^``bulge_imf_log_ml`` for bulge particles (``is_bulge``), unchanged for the others."""
    return np.where(is_bulge, mass * 10 ** (-bulge_imf_log_ml), mass)


# --------------------------------------------------------------------------------------------
# Spherical Jeans equation and anisotropic velocities
# --------------------------------------------------------------------------------------------
def jeans_sigma(r_grid: np.ndarray, rho: np.ndarray, m_tot: np.ndarray, beta: float = 0.0) -> np.ndarray:
    """Radial velocity dispersion sigma_r (km/s) on ``r_grid`` (kpc, increasing, shape (N,)) of a
    tracer of density ``rho`` (any units, (N,)) in the potential of the enclosed mass ``m_tot``
    (Msun, (N,)), for a constant anisotropy ``beta`` (Binney & Tremaine 2008, eq. 4.215):
    rho sigma_r^2 (r) = r^(-2 beta) int_r^inf r'^(2 beta) rho G M(r') / r'^2 dr', integrated in
    ln r (trapezoid) and cut at the grid's end. ``beta = 0``: the isotropic 1D dispersion."""
    from scipy.integrate import cumulative_trapezoid  # deferred: scipy.integrate is slow to import

    ln_r = np.log(r_grid)
    integrand = rho * G_KPC_KMS2_PER_MSUN * m_tot / r_grid  # rho G M / r^2 * r  (d ln r)
    if beta != 0:
        integrand = integrand * r_grid ** (2.0 * beta)
    tail = cumulative_trapezoid(integrand[::-1], ln_r[::-1], initial=0.0)[::-1]
    if beta != 0:
        tail = tail * r_grid ** (-2.0 * beta)
    return np.sqrt(np.maximum(-tail, 0.0) / np.maximum(rho, 1e-300))


def anisotropic_velocities(pos: np.ndarray, normals: np.ndarray, sigma_r: np.ndarray, beta: float) -> np.ndarray:
    """Velocities (km/s, (N, 3)) of particles at ``pos`` (kpc, (N, 3), about the centre) with
    Gaussian components of dispersion ``sigma_r`` ((N,)) along r-hat and sigma_r sqrt(1 - beta)
    along each tangential direction, made from the unit normal deviates ``normals`` ((N, 3)): the
    radial part of ``normals`` scaled by sigma_r, the tangential part by sigma_t. For
    ``beta = 0`` this is ``normals * sigma_r`` up to rounding (the generator then uses that
    product itself, so physics A's bytes do not depend on this function)."""
    r = np.linalg.norm(pos, axis=1, keepdims=True)
    r_hat = pos / np.maximum(r, 1e-300)
    radial = np.sum(normals * r_hat, axis=1, keepdims=True)
    tangential = normals - radial * r_hat
    sigma_t = sigma_r * math.sqrt(1.0 - beta)
    return radial * r_hat * sigma_r[:, None] + tangential * sigma_t[:, None]


# --------------------------------------------------------------------------------------------
# The physics variants
# --------------------------------------------------------------------------------------------
SHMR_RELATIONS = {"moster13": moster13_mstar, "behroozi13": behroozi13_mstar}
CONCENTRATION_RELATIONS = {"dutton_maccio14": dutton_maccio14_c, "duffy08": duffy08_c}


@dataclass(frozen=True)
class GalaxyPhysics:
    """One galaxy-formation model of the mini-simulation (see the module docstring for the
    references): ``shmr`` (a key of :data:`SHMR_RELATIONS`), ``concentration`` (a key of
    :data:`CONCENTRATION_RELATIONS`), ``bulge_beta`` (constant velocity anisotropy of bulge
    stars, in [-1, 1)), ``concentration_coupling`` (correlation, in [-1, 1], of the log M* and
    log-concentration residuals at fixed M200; in low-mass haloes when it fades),
    ``bulge_imf_log_ml`` (dex added to the M/L of bulge stars by their IMF, relative to
    Chabrier's), ``coupling_fade_log_m200`` (log10 M200 / Msun where the coupling has fallen to
    half, logistic of width :data:`COUPLING_FADE_WIDTH_DEX`; None: constant with mass)."""

    name: str
    shmr: str
    concentration: str
    bulge_beta: float
    concentration_coupling: float
    bulge_imf_log_ml: float
    coupling_fade_log_m200: float | None = None

    def coupling(self, m200: np.ndarray) -> np.ndarray:
        """Correlation of the log M* and log c residuals of haloes of M200c ``m200`` (Msun), (N,)."""
        m200 = np.asarray(m200, float)
        rho = np.full(m200.shape, float(self.concentration_coupling))
        if self.coupling_fade_log_m200 is None or self.concentration_coupling == 0:
            return rho
        return rho / (1.0 + np.exp((np.log10(m200) - self.coupling_fade_log_m200) / COUPLING_FADE_WIDTH_DEX))

    def mean_mstar(self, m200: np.ndarray, z: float) -> np.ndarray:
        """Mean stellar mass (Msun) of haloes of M200c ``m200`` (Msun) at redshift ``z``."""
        return SHMR_RELATIONS[self.shmr](m200, z)

    def mean_concentration(self, m200: np.ndarray, z: float, h: float) -> np.ndarray:
        """Mean NFW c200 of haloes of M200c ``m200`` (Msun) at redshift ``z``, Hubble ``h``."""
        return CONCENTRATION_RELATIONS[self.concentration](m200, z, h)


#: the variants. Changing one changes its mini-simulations without changing their configs: bump
#: tng_minisim.GENERATOR_VERSION then, so that cached mini-simulations and sets are rebuilt.
PHYSICS: dict[str, GalaxyPhysics] = {
    "A": GalaxyPhysics("A", shmr="moster13", concentration="dutton_maccio14", bulge_beta=0.0,
                       concentration_coupling=0.5, bulge_imf_log_ml=0.0, coupling_fade_log_m200=12.25),
    "B": GalaxyPhysics("B", shmr="behroozi13", concentration="duffy08", bulge_beta=0.3,
                       concentration_coupling=0.5, bulge_imf_log_ml=0.24),
}
PHYSICS_VARIANTS = tuple(PHYSICS)


def galaxy_physics(name: str, concentration_coupling: float | None = None) -> GalaxyPhysics:
    """The variant ``name`` (``"A"`` or ``"B"``), its coupling replaced if one is given."""
    phys = PHYSICS[name]
    if concentration_coupling is not None:
        phys = replace(phys, concentration_coupling=float(concentration_coupling))
    return phys



__all__ = ["GalaxyPhysics", "PHYSICS", "PHYSICS_VARIANTS", "galaxy_physics", "moster13_mstar", "behroozi13_mstar",
           "dutton_maccio14_c", "duffy08_c", "coupled_noise", "mean_bulge_fraction", "mmw98_scale_length",
           "speagle14_log_sfr", "mean_log_metallicity", "mass_loss_fraction", "ssp_log_mass_to_light",
           "ssp_magnitudes", "jeans_sigma", "anisotropic_velocities", "salpeter_over_chabrier_log_ml", "light_mass",
           "Z_SUN", "COUPLING_FADE_WIDTH_DEX"]
