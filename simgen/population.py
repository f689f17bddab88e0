"""Physical population model behind the GalSim bulge + disk galaxies.

Every relation below is a published low-redshift (SDSS-era) scaling relation or a documented
simplification of one. They are used as published; none is tuned to make any model look good.

Masses in solar masses, radii in kpc (half-light, area-preserving), angles in radians inside the
model (degrees in the catalogue), magnitudes AB, fluxes in nanomaggies (22.5 AB mag = 1 nmgy).

References
----------
- Stellar mass function: Baldry et al. 2012, MNRAS 421, 621 (GAMA, double Schechter, z < 0.06):
  log M* = 10.66, phi1 = 3.96e-3, alpha1 = -0.35, phi2 = 0.79e-3, alpha2 = -1.47; drawn over
  8.5 < log M* < 11.8 (Wu & Boada's sample spans 8.5-11.5, the range of Tremonti et al. 2004).
- Redshifts: uniform in comoving volume (astropy ``Planck18``), then the SDSS main-sample flux
  limit r <= 17.77 (Strauss et al. 2002) applied to the total r magnitude.
- Bulge mass fraction: mean rises with stellar mass, as in the bulge + disk decompositions of
  SDSS galaxies (Simard et al. 2011; Mendel et al. 2014); a Beta distribution around a logistic
  mean in log M*. ``bulge_fraction_model: uniform`` draws it flat instead (the uniform priors of
  GaMPEN's simulations, Ghosh et al. 2021); ``single_component_fraction`` makes that share of the
  galaxies bulge-only or disk-only (half each; B/T exactly 1 or 0), 25 % in GaMPEN's training set.
- Sizes: Shen et al. 2003, MNRAS 343, 978, eqs. 17-19: early-type R50 = 2.88e-6 M^0.56 kpc for the
  bulge (at the bulge's mass); late-type R50 = 0.10 M^0.14 (1 + M/3.98e10)^0.25 kpc for the disk
  (at the disk's mass); log-normal scatter sigma_lnR = s2 + (s1 - s2) / (1 + (M/M0)^2).
- Disk inclination: isotropic (cos i uniform); apparent axis ratio q = sqrt(cos^2 i + q0^2 sin^2 i)
  with intrinsic thickness q0 (Hubble 1926; Holmberg 1958).
- Colours and mass-to-light: intrinsic g - r per component (bulge red and old, disk bluer and
  redder with mass, after the SDSS colour-mass sequences of Baldry et al. 2004), then
  log(M/L_band) = a_band + b_band (g - r) from Bell et al. 2003, ApJS 149, 289, Table 7, plus an
  age-metallicity scatter at fixed colour (Bell & de Jong 2001; Zibetti et al. 2009 find ~0.1 dex).
- Dust: inclination-dependent disk attenuation A = A_0 + gamma log10(a/b) (Giovanelli et al. 1994;
  Masters et al. 2010, who find gamma rising with galaxy mass), bulges lightly attenuated;
  band ratios A_band / A_V from Cardelli et al. 1989 (R_V = 3.1) as tabulated by Schlegel et al.
  1998, Table 6. The catalogue M/L is M* over the observed (attenuated) luminosity, as in
  SED-fitting catalogues such as GSWLC.
- Absolute magnitudes of the Sun (AB): Willmer 2018, ApJS 236, 47.
- Quenching (:func:`quenched_fraction`): the mass-quenching efficiency of Peng et al. 2010, ApJ
  721, 193, eps_m = 1 - exp(-(M*/p1)^p2), p1 = 10^10.56 Msun, p2 = 0.70 (their fit to the SDSS
  red fractions of Baldry et al. 2006; environment quenching, which adds red satellites at low
  mass, is left out). A quenched galaxy's disk gets the red-sequence colour of its bulge (no new
  random number), so it is red and passive in the images, has a higher M/L, and lies about a dex
  below the main sequence (below). In the default flux-limited set about 58 % of the galaxies are
  quenched (70 % of those above 10^10.5), the star-forming ones have a median log M* of 10.4
  (quartiles 10.0-10.7) and a median redshift of 0.066 (Wu & Boada: 0.07, most at 9.5-10.5).
- Star formation (:func:`star_formation_rate`): the star-forming main sequence of Speagle et al.
  2014, ApJS 214, 15, eq. 28, log SFR = (0.84 - 0.026 t) log M* - (6.51 - 0.11 t) (Msun/yr, t the
  age of the Universe in Gyr at the galaxy's redshift), evaluated for the disk: stars form in the
  disk at the main-sequence rate of the disk's mass, bulges are passive. The offset from the
  sequence is the disk's colour offset: delta log SFR = (g-r)_disk,offset / k with
  k = d(g-r)/d log sSFR = 0.12 / (a_MS - 1), the slope the disk colour-mass sequence (0.12 mag/dex)
  and the main sequence (slope a_MS ~ 0.52) of this model imply together (about -0.25 mag/dex).
  With the 0.07 mag disk colour scatter this gives ~0.28 dex scatter about the sequence, within
  the 0.2-0.3 dex published (Speagle et al. 2014; Salim et al. 2007). The colour *is* the SFR's
  signature in the images (bluer disk at fixed mass = more star formation); no random number is
  drawn, so every other column is unchanged. Star-forming: sSFR > 1e-11 / yr (the usual division
  of star-forming and quiescent galaxies, e.g. Wetzel et al. 2012); the metallicity task keeps
  those only, as the MPA-JHU strong-line O/H exists only for star-forming galaxies.
- Gas-phase metallicity (:func:`gas_metallicity`): Tremonti et al. 2004 mass-metallicity relation
  as written in Wu & Boada 2019, eq. 3, Z = -1.492 + 1.847 x - 0.08026 x^2 (x = log M*, flat above
  its 11.5 peak) at main-sequence SFR; the SFR dependence at fixed mass of the fundamental
  metallicity relation of Curti et al. 2020, MNRAS 491, 944, eq. 5: Z = Z0 - (gamma / beta)
  log10(1 + (M*/M0(SFR))^-beta), log M0 = 10.11 + 0.56 log SFR, gamma = 0.31, beta = 2.1
  (Z0 cancels: the term is Z_FMR(M*, SFR) - Z_FMR(M*, SFR_MS)), about -0.13 dex per dex of SFR
  at 1e10 Msun and steeper below; structure: larger galaxies at fixed mass are more metal-poor
  (Ellison et al. 2008, ApJ 672, L107: up to 0.2 dex between the smallest and largest r_h at fixed
  mass; here -0.15 dex per dex of disk-size offset); no term in the bulge fraction (an earlier
  +0.15 dex per unit of B/T excess had no published amplitude and was removed); the fibre
  aperture term (:func:`fibre_aperture_term`): O/H falls outwards with the common gradient
  of Sanchez et al. 2014, A&A 563, A49, -0.10 dex per disk effective radius, and the 3-arcsec SDSS
  fibre sees the light-weighted mean O/H of the part of the disk inside it (Kewley, Jansen & Geller
  2005, PASP 117, 227: fibre metallicities of large nearby galaxies are biased high). The H-alpha
  light is taken to follow the disk's exponential profile; the mean galactocentric radius inside
  the fibre is integrated exactly for the inclined disk (seeing is left out). Tremonti's MZR was
  itself measured through these fibres, so the term is zero at the mean coverage of the default
  star-forming sample (0.43 R_e); it spans -0.05 to +0.03 dex (1st-99th percentile, 0.018 dex rms)
  there. For disks larger than the fibre an inclined one is measured more metal-poor (the fibre
  reaches larger galactocentric radii along the minor axis), in the sense Wu & Boada (§5.4) find
  their CNN predicts edge-on galaxies. Then ``metallicity_random_scatter_dex``, the
  residual scatter about the FMR: 0.054 dex, the value Curti et al. 2020 measure for SDSS galaxies,
  drawn as an intrinsic part sqrt(0.054^2 - 0.03^2) = 0.045 dex plus the 0.03 dex strong-line
  measurement error of Tremonti et al. (2004, quoted by Wu & Boada §5.2), which also enters the
  test labels, as in the real catalogue.
  Check, not a knob: the resulting scatter of the star-forming sample's labels about the MZR is
  0.061 dex, below the 0.10 dex Tremonti et al. 2004 report: the published terms above do not add
  up to the observed MZR scatter (the SFR term gives 0.024 dex, the size term 0.029, the aperture
  term 0.018, the FMR residual 0.054). Measured by ``tests/simgen/test_population_metallicity.py``.
- M/L uncertainty (:func:`ml_relative_error`): an SED fit's relative error, growing with magnitude
  as photon noise (0.2 dex per mag) with a 0.15 dex log-normal spread (the varying UV/IR depth of
  GSWLC, Salim et al. 2016), normalised so that about a quarter of a D25 > 0.4' sample falls below
  5 % (Dobbels et al. 2019 §2.3); at least ``ml_rel_err_min``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from sim2obs.simgen.half_light import _N_THETA, half_light_radius  # noqa: F401 (half_light_radius: re-exported)
from sim2obs.simgen.cosmology_grid import redshift_grids

# Effective wavelengths (nm), solar absolute AB magnitudes (Willmer 2018), Bell et al. 2003
# (g - r) -> log M/L coefficients, and CCM A_band / A_V (Schlegel et al. 1998 Table 6 / 3.1).
BAND_DATA: dict[str, dict[str, float]] = {
    "g": {"wavelength_nm": 477.0, "msun_ab": 5.11, "bell_a": -0.499, "bell_b": 1.519, "a_over_av": 1.224},
    "r": {"wavelength_nm": 623.0, "msun_ab": 4.65, "bell_a": -0.306, "bell_b": 1.097, "a_over_av": 0.887},
    "i": {"wavelength_nm": 763.0, "msun_ab": 4.53, "bell_a": -0.222, "bell_b": 0.864, "a_over_av": 0.673},
    "z": {"wavelength_nm": 913.0, "msun_ab": 4.50, "bell_a": -0.223, "bell_b": 0.689, "a_over_av": 0.477},
}

# Baldry et al. 2012 double Schechter function (h = 0.7).
GSMF_LOGMSTAR, GSMF_PHI1, GSMF_ALPHA1, GSMF_PHI2, GSMF_ALPHA2 = 10.66, 3.96e-3, -0.35, 0.79e-3, -1.47


@dataclass(frozen=True)
class PopulationConfig:
    """Knobs of the population model (units in the names)."""

    z_min: float = 0.02
    z_max: float = 0.25
    log_mass_min: float = 8.5
    log_mass_max: float = 11.8
    mag_limit_r: float | None = 17.77
    disk_thickness_q0: float = 0.15
    bulge_sersic_n: tuple[float, ...] = (3.0, 3.5, 4.0, 4.5, 5.0)
    bulge_fraction_model: str = "mass"   # "mass": Beta around the mass trend; "uniform": GaMPEN-like prior
    bulge_fraction_min: float = 0.0
    bulge_fraction_max: float = 1.0
    metallicity_random_scatter_dex: float = 0.054  # Curti et al. 2020 FMR residual (incl. the 0.03 error)
    ml_rel_err_min: float = 0.05
    single_component_fraction: float = 0.0  # bulge-only or disk-only galaxies (half each); GaMPEN: 0.25
    d25_min_arcmin: float | None = None     # keep only D25 above this (arcmin; Dobbels et al. 2019: 0.4), before rendering


def schechter_log_mass_pdf(log_m: np.ndarray) -> np.ndarray:
    """Baldry et al. 2012 double Schechter dn/dlogM (Mpc^-3 dex^-1) at ``log_m`` (log Msun)."""
    x = 10.0 ** (log_m - GSMF_LOGMSTAR)
    return np.log(10) * np.exp(-x) * (GSMF_PHI1 * x ** (GSMF_ALPHA1 + 1) + GSMF_PHI2 * x ** (GSMF_ALPHA2 + 1))


def _inverse_cdf_sampler(grid: np.ndarray, pdf: np.ndarray):
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (pdf[1:] + pdf[:-1]) * np.diff(grid))])
    cdf /= cdf[-1]
    return lambda u: np.interp(u, cdf, grid)


def mean_bulge_fraction(log_m: np.ndarray) -> np.ndarray:
    """Mean bulge mass fraction at stellar mass ``log_m``: ~0.05 for dwarfs, ~0.6 above 10^11."""
    return 0.05 + 0.55 / (1.0 + np.exp(-(log_m - 10.6) / 0.3))


def shen_size_early(mass: np.ndarray) -> np.ndarray:
    """Shen et al. 2003 eq. 17: median R50 (kpc) of early types of stellar mass ``mass`` (Msun)."""
    return 2.88e-6 * mass ** 0.56


def shen_size_late(mass: np.ndarray) -> np.ndarray:
    """Shen et al. 2003 eq. 18: median R50 (kpc) of late types of stellar mass ``mass`` (Msun)."""
    return 0.10 * mass ** 0.14 * (1.0 + mass / 3.98e10) ** (0.39 - 0.14)


def shen_scatter_ln(mass: np.ndarray, s1: float, s2: float) -> np.ndarray:
    """Shen et al. 2003 eq. 19: scatter in ln R50 at stellar mass ``mass`` (Msun)."""
    return s2 + (s1 - s2) / (1.0 + (mass / 3.98e10) ** 2)


def mass_metallicity(log_m: np.ndarray) -> np.ndarray:
    """Tremonti et al. 2004 MZR, 12 + log(O/H), as Wu & Boada 2019 eq. 3 (flat above 11.5)."""
    x = np.minimum(log_m, 11.5)
    return -1.492 + 1.847 * x - 0.08026 * x**2


# Curti et al. 2020, eq. 5 (FMR): gamma, beta, log M0 = m0 + m1 log SFR.
CURTI_GAMMA, CURTI_BETA, CURTI_M0, CURTI_M1 = 0.31, 2.1, 10.11, 0.56
# Colour-mass slope of the disk sequence (mag per dex of M*), and its scatter (mag); see _draw_batch.
DISK_COLOR_MASS_SLOPE, DISK_COLOR_SCATTER = 0.12, 0.07
#: log sSFR (1/yr) above which a galaxy counts as star-forming (Wetzel et al. 2012).
LOG_SSFR_STAR_FORMING = -11.0
#: Peng et al. 2010 mass-quenching efficiency eps_m = 1 - exp(-(M*/p)^a): p = 10^10.56 Msun, a = 0.70.
PENG_LOG_MASS, PENG_EXPONENT = 10.56, 0.70
#: Curti et al. 2020: residual scatter of measured O/H about their FMR (dex), and the strong-line
#: measurement error within it (Tremonti et al. 2004, as quoted by Wu & Boada 2019 §5.2).
FMR_SCATTER_DEX, OH_MEASUREMENT_ERROR_DEX = 0.054, 0.03
#: Sanchez et al. 2014: common radial O/H gradient (dex per disk effective radius).
OH_GRADIENT_DEX_PER_RE = -0.10
#: SDSS spectroscopic fibre radius (arcsec; 3 arcsec diameter).
SDSS_FIBRE_RADIUS_ARCSEC = 1.5
#: Exponential disk: half-light radius = 1.678 scale lengths.
EXP_B1 = 1.678
#: Mean light-weighted fibre radius (disk R_e) of the default star-forming sample (r <= 17.77, median
#: z 0.07): Tremonti's MZR is itself a fibre relation, so the aperture term is zero at this coverage.
FIBRE_REFERENCE_RADIUS_RE = 0.43


def quenched_fraction(log_m: np.ndarray) -> np.ndarray:
    """Peng et al. 2010 mass-quenching efficiency: the fraction of galaxies of stellar mass
    ``log_m`` (log Msun) that are quenched, 1 - exp(-(M*/10^10.56)^0.70). ``(n,)`` in and out."""
    return 1.0 - np.exp(-(10.0 ** (np.asarray(log_m) - PENG_LOG_MASS)) ** PENG_EXPONENT)


def fibre_mean_radius(hlr_arcsec: np.ndarray, q: np.ndarray,
                      fibre_radius_arcsec: float = SDSS_FIBRE_RADIUS_ARCSEC) -> np.ndarray:
    """Light-weighted mean galactocentric radius, in disk effective radii, of the exponential disk
    light inside a centred circular fibre. The disk (half-light radius ``hlr_arcsec``, area-preserving,
    apparent axis ratio ``q``) is an inclined thin disk, so its isophotes are the projected circles and
    the galactocentric radius over R_e is the elliptical radius rho / hlr. ``(n,)`` in and out;
    -> 2 / 1.678 = 1.19 for a fibre much larger than the galaxy, -> 0 for a much smaller one.

    With s(theta)^2 = q cos^2 + sin^2 / q and c = 1.678 s / hlr, the radial integrals over the fibre
    are incomplete gamma functions: <rho/hlr> = int s/hlr G(3, c R) / c^3 dtheta / int G(2, c R) / c^2
    dtheta (G the lower incomplete gamma), evaluated by the midpoint rule over a quarter period.
    """
    hlr = np.asarray(hlr_arcsec, float)[:, None]
    qq = np.asarray(q, float)[:, None]
    theta = (np.arange(_N_THETA) + 0.5) * (0.5 * np.pi / _N_THETA)
    s = np.sqrt(qq * np.cos(theta) ** 2 + np.sin(theta) ** 2 / qq)
    c = EXP_B1 * s / hlr
    x = c * fibre_radius_arcsec
    num = np.sum(s / hlr * 2.0 * special.gammainc(3.0, x) / c**3, axis=1)
    den = np.sum(special.gammainc(2.0, x) / c**2, axis=1)
    return num / den


def fibre_aperture_term(hlr_arcsec: np.ndarray, q: np.ndarray) -> np.ndarray:
    """O/H offset (dex) of a galaxy's 3-arcsec SDSS fibre measurement from that of a typical SDSS
    galaxy of the same O/H profile: the Sanchez et al. 2014 gradient (-0.10 dex / R_e) times the
    fibre's light-weighted mean radius (:func:`fibre_mean_radius`) minus the typical one
    (:data:`FIBRE_REFERENCE_RADIUS_RE`); between +0.043 (a galaxy much larger than the fibre: only
    its metal-rich centre is seen) and -0.076 (the whole disk inside the fibre)."""
    return OH_GRADIENT_DEX_PER_RE * (fibre_mean_radius(hlr_arcsec, q) - FIBRE_REFERENCE_RADIUS_RE)


def mean_disk_color(log_m: np.ndarray) -> np.ndarray:
    """Mean intrinsic (dust-free) disk g - r (mag) at stellar mass ``log_m`` (log Msun)."""
    return 0.45 + DISK_COLOR_MASS_SLOPE * (log_m - 10.0)


def main_sequence_sfr(log_m: np.ndarray, age_gyr: np.ndarray) -> np.ndarray:
    """Speagle et al. 2014 eq. 28: log10 SFR (Msun/yr) of the star-forming main sequence at
    stellar mass ``log_m`` (log Msun) and cosmic age ``age_gyr`` (Gyr). ``(n,)`` in and out."""
    return (0.84 - 0.026 * age_gyr) * log_m - (6.51 - 0.11 * age_gyr)


def star_formation_rate(log_m: np.ndarray, bulge_fraction: np.ndarray, disk_color_gr: np.ndarray,
                        age_gyr: np.ndarray) -> np.ndarray:
    """log10 SFR (Msun/yr): the disk (mass (1 - B/T) M*) on the Speagle et al. 2014 main sequence,
    offset by its colour offset at fixed total mass through k = d(g-r)/d log sSFR (see the module
    docstring); a galaxy without a disk gets log SFR = -5 (passive). ``(n,)`` arrays."""
    slope = 0.84 - 0.026 * age_gyr
    k = DISK_COLOR_MASS_SLOPE / (slope - 1.0)          # mag per dex of sSFR, negative
    disk = np.maximum(1.0 - bulge_fraction, 1e-12)
    log_md = log_m + np.log10(disk)
    offset = (disk_color_gr - mean_disk_color(log_m)) / k
    return np.where(bulge_fraction < 1.0, np.maximum(main_sequence_sfr(log_md, age_gyr) + offset, -5.0), -5.0)


def star_forming(log_m: np.ndarray, log_sfr: np.ndarray) -> np.ndarray:
    """True where log sSFR = log SFR - log M* exceeds :data:`LOG_SSFR_STAR_FORMING` (-11, 1/yr)."""
    return np.asarray(log_sfr) - np.asarray(log_m) > LOG_SSFR_STAR_FORMING


def curti_fmr_offset(log_m: np.ndarray, log_sfr: np.ndarray) -> np.ndarray:
    """Curti et al. 2020 eq. 5 without its normalisation: -(gamma/beta) log10(1 + (M*/M0)^-beta)
    with log M0 = 10.11 + 0.56 log SFR (dex; add Z0 = 8.779 for their 12 + log(O/H))."""
    log_m0 = CURTI_M0 + CURTI_M1 * np.asarray(log_sfr)
    return -(CURTI_GAMMA / CURTI_BETA) * np.log10(1.0 + 10.0 ** (-CURTI_BETA * (np.asarray(log_m) - log_m0)))


def sfr_metallicity_term(log_m: np.ndarray, log_sfr: np.ndarray, age_gyr: np.ndarray) -> np.ndarray:
    """O/H change (dex) at fixed mass from the SFR's offset from the main sequence (Curti et al.
    2020 FMR): Z_FMR(M*, SFR) - Z_FMR(M*, SFR_MS(M*)); 0 on the sequence, negative above it."""
    return curti_fmr_offset(log_m, log_sfr) - curti_fmr_offset(log_m, main_sequence_sfr(log_m, age_gyr))


def gas_metallicity(log_m: np.ndarray, log_sfr: np.ndarray, age_gyr: np.ndarray, size_residual_dex: np.ndarray,
                    aperture_dex: np.ndarray | float = 0.0) -> np.ndarray:
    """Noise-free 12 + log(O/H): Tremonti MZR + Curti FMR SFR term + Ellison et al. 2008 size term
    (-0.15 dex per dex of disk-size offset) + the fibre aperture term ``aperture_dex``
    (:func:`fibre_aperture_term`). ``(n,)`` arrays."""
    return (mass_metallicity(log_m) + sfr_metallicity_term(log_m, log_sfr, age_gyr)
            - 0.15 * np.asarray(size_residual_dex) + np.asarray(aperture_dex))


def bell_log_ml(band: str, g_minus_r: np.ndarray) -> np.ndarray:
    """Bell et al. 2003 Table 7: log10 M/L_band (solar units) from intrinsic g - r."""
    d = BAND_DATA[band]
    return d["bell_a"] + d["bell_b"] * g_minus_r


def apparent_axis_ratio(cos_i: np.ndarray, q0: float) -> np.ndarray:
    """Projected axis ratio of an oblate disk of intrinsic thickness ``q0`` at inclination i."""
    return np.sqrt(cos_i**2 + q0**2 * (1.0 - cos_i**2))


def draw_population(rng: np.random.Generator, n: int, bands: tuple[str, ...], cfg: PopulationConfig,
                    cosmology=None) -> dict[str, np.ndarray]:
    """Draw ``n`` galaxies that pass the flux limit. Returns a dict of ``(n,)`` arrays.

    Keys include the structural parameters (bulge and disk half-light radii in kpc and arcsec,
    Sersic index, axis ratios, position angles), physical labels (log M*, M/L per band, 12 +
    log(O/H)), per-band observed bulge and disk fluxes (nmgy), redshift and distances.
    """
    grids = redshift_grids(np.linspace(cfg.z_min, cfg.z_max, 512),
                           np.linspace(max(cfg.z_min - 1e-3, 1e-4), cfg.z_max + 1e-3, 1024), cosmology)
    draw_z = _inverse_cdf_sampler(grids["z_volume"], grids["differential_comoving_volume"])
    m_grid = np.linspace(cfg.log_mass_min, cfg.log_mass_max, 512)
    draw_m = _inverse_cdf_sampler(m_grid, schechter_log_mass_pdf(m_grid))
    zs, distmod_grid, arcsec_per_kpc_grid = grids["z"], grids["distmod"], grids["arcsec_per_kpc_proper"]
    dl_grid, age_grid = grids["luminosity_distance_mpc"], grids["age_gyr"]

    obs_bands = tuple(dict.fromkeys((*bands, "r")))  # the flux limit is in r
    parts: list[dict[str, np.ndarray]] = []
    have = 0
    batch = min(max(256, 4 * n), 200_000)
    for _ in range(1000):
        p = _draw_batch(rng, batch, obs_bands, cfg, draw_z, draw_m)
        p["distmod"] = np.interp(p["redshift"], zs, distmod_grid)
        p["arcsec_per_kpc"] = np.interp(p["redshift"], zs, arcsec_per_kpc_grid)
        p["luminosity_distance_mpc"] = np.interp(p["redshift"], zs, dl_grid)
        p["cosmic_age_gyr"] = np.interp(p["redshift"], zs, age_grid)
        _observe(p, obs_bands)
        if cfg.mag_limit_r is not None:
            keep = p["mag_r"] <= cfg.mag_limit_r
            p = {k: v[keep] for k, v in p.items()}
        if cfg.d25_min_arcmin is not None:
            keep = _d25_arcmin(p) > cfg.d25_min_arcmin
            p = {k: v[keep] for k, v in p.items()}
        parts.append(p)
        have += len(p["redshift"])
        if have >= n:
            break
    else:
        raise RuntimeError("the flux limit (or the D25 cut) rejected almost every galaxy; loosen mag_limit_r, "
                           "d25_min_arcmin or the mass range")
    out = {k: np.concatenate([q[k] for q in parts])[:n] for k in parts[0]}
    _metallicity_and_errors(rng, out, cfg)
    return out


def _d25_arcmin(p: dict[str, np.ndarray]) -> np.ndarray:
    """D25 (arcmin, ``(n,)``) of the drawn galaxies, from the columns a stored set keeps whatever its bands
    (so the ml_ratio task, recomputing it from the catalogue, selects the same galaxies)."""
    from sim2obs.simgen.isophotes import D25_MODEL_COLUMNS, d25_arcsec  # deferred: isophotes imports this module

    return d25_arcsec({c: p[c] for c in D25_MODEL_COLUMNS}) / 60.0


def _draw_batch(rng, m: int, bands, cfg: PopulationConfig, draw_z, draw_m) -> dict[str, np.ndarray]:
    p: dict[str, np.ndarray] = {}
    p["redshift"] = draw_z(rng.uniform(size=m))
    log_m = draw_m(rng.uniform(size=m))
    p["log_mstar"] = log_m
    mass = 10.0**log_m

    # Bulge mass fraction: Beta distribution (concentration 4) around the mass-dependent mean, or
    # uniform (the flat priors GaMPEN trains on). Kept off exactly 0 and 1 so both components exist.
    if cfg.bulge_fraction_model == "uniform":
        f_b = rng.uniform(cfg.bulge_fraction_min, cfg.bulge_fraction_max, m)
    else:
        mu = mean_bulge_fraction(log_m)
        kappa = 4.0
        f_b = rng.beta(mu * kappa, (1.0 - mu) * kappa)
    f_b = np.clip(f_b, max(cfg.bulge_fraction_min, 1e-3), min(cfg.bulge_fraction_max, 1.0 - 1e-3))
    if cfg.single_component_fraction > 0:
        # GaMPEN's training set (Ghosh et al. 2021, 2022): a quarter of the galaxies have a bulge
        # only or a disk only (half each), the rest both; their B/T is then exactly 1 or 0.
        single = rng.uniform(size=m) < cfg.single_component_fraction
        bulge_only = rng.uniform(size=m) < 0.5
        f_b = np.where(single, np.where(bulge_only, 1.0, 0.0), f_b)
    p["bulge_mass_fraction"] = f_b
    m_b, m_d = f_b * mass, (1.0 - f_b) * mass
    # A missing component keeps a nominal size (>= 1 Msun in the size relations) and no light.
    s_b, s_d = np.maximum(m_b, 1.0), np.maximum(m_d, 1.0)

    # Sizes (kpc): Shen et al. 2003 at each component's own mass, log-normal scatter.
    eps_b = rng.normal(size=m)
    eps_d = rng.normal(size=m)
    p["bulge_hlr_kpc"] = np.clip(shen_size_early(s_b) * np.exp(shen_scatter_ln(s_b, 0.45, 0.27) * eps_b), 0.05, 30)
    p["disk_hlr_kpc"] = np.clip(shen_size_late(s_d) * np.exp(shen_scatter_ln(s_d, 0.47, 0.34) * eps_d), 0.2, 50)
    # Disk size offset from the median relation (dex): drives part of the metallicity scatter.
    p["disk_size_residual_dex"] = np.log10(p["disk_hlr_kpc"] / shen_size_late(s_d))

    # Orientation and shape.
    cos_i = rng.uniform(size=m)
    p["inclination_deg"] = np.degrees(np.arccos(cos_i))
    p["disk_q"] = apparent_axis_ratio(cos_i, cfg.disk_thickness_q0)
    p["position_angle_deg"] = rng.uniform(0.0, 180.0, size=m)
    p["bulge_q"] = rng.uniform(0.6, 1.0, size=m)
    p["bulge_position_angle_deg"] = (p["position_angle_deg"] + rng.normal(0.0, 10.0, size=m)) % 180.0
    p["bulge_sersic_n"] = rng.choice(np.asarray(cfg.bulge_sersic_n, dtype=float), size=m)

    # Intrinsic colours: red old bulges; disks bluer, redder at higher mass.
    p["bulge_color_gr"] = np.clip(0.74 + 0.04 * (log_m - 10.0) + rng.normal(0, 0.04, m), 0.55, 0.95)
    # (the disk colour offset is also the galaxy's SFR offset from the main sequence: star_formation_rate)
    p["disk_color_gr"] = np.clip(mean_disk_color(log_m) + rng.normal(0, DISK_COLOR_SCATTER, m), 0.15, 0.85)
    # Age-metallicity degeneracy: M/L scatter at fixed colour (dex), the same in every band.
    p["bulge_ml_offset_dex"] = rng.normal(0.0, 0.05, m)
    p["disk_ml_offset_dex"] = rng.normal(0.0, 0.10, m)

    # Mass quenching (Peng et al. 2010): a quenched galaxy's disk is red and passive, on the red
    # sequence of the bulges (its colour sets its SFR far below the main sequence: star_formation_rate).
    p["quenched"] = rng.uniform(size=m) < quenched_fraction(log_m)
    p["disk_color_gr"] = np.where(p["quenched"], p["bulge_color_gr"], p["disk_color_gr"])

    # Dust (V band, mag): face-on disk attenuation plus inclination term; light bulge attenuation.
    a0 = rng.lognormal(np.log(0.2), 0.5, m)
    gamma = np.clip(0.6 + 0.4 * (log_m - 10.0), 0.2, 1.4)
    p["disk_av"] = a0 + gamma * np.log10(1.0 / p["disk_q"])
    p["bulge_av"] = 0.3 * a0

    # Intrinsic luminosities per band (Lsun) from Bell M/L, then attenuation.
    for band in bands:
        ml_b = 10.0 ** (bell_log_ml(band, p["bulge_color_gr"]) + p["bulge_ml_offset_dex"])
        ml_d = 10.0 ** (bell_log_ml(band, p["disk_color_gr"]) + p["disk_ml_offset_dex"])
        k = BAND_DATA[band]["a_over_av"]
        p[f"lum_bulge_{band}"] = m_b / ml_b * 10.0 ** (-0.4 * k * p["bulge_av"])
        p[f"lum_disk_{band}"] = m_d / ml_d * 10.0 ** (-0.4 * k * p["disk_av"])
    return p


def _observe(p: dict[str, np.ndarray], bands) -> None:
    """Observed fluxes, magnitudes, B/T and M/L per band (in place)."""
    mass = 10.0 ** p["log_mstar"]
    for band in bands:
        msun = BAND_DATA[band]["msun_ab"]
        lum = p[f"lum_bulge_{band}"] + p[f"lum_disk_{band}"]
        abs_mag = msun - 2.5 * np.log10(lum)
        mag = abs_mag + p["distmod"]
        flux = 10.0 ** (-0.4 * (mag - 22.5))
        bt = p[f"lum_bulge_{band}"] / lum
        p[f"lum_{band}"] = lum
        p[f"abs_mag_{band}"] = abs_mag
        p[f"mag_{band}"] = mag
        p[f"flux_{band}"] = flux
        p[f"bt_{band}"] = bt
        p[f"ml_{band}"] = mass / lum
    p["bulge_hlr_arcsec"] = p["bulge_hlr_kpc"] * p["arcsec_per_kpc"]
    p["disk_hlr_arcsec"] = p["disk_hlr_kpc"] * p["arcsec_per_kpc"]


def _metallicity_and_errors(rng, p: dict[str, np.ndarray], cfg: PopulationConfig) -> None:
    n = len(p["redshift"])
    log_m = p["log_mstar"]
    p["log_sfr"] = star_formation_rate(log_m, p["bulge_mass_fraction"], p["disk_color_gr"], p["cosmic_age_gyr"])
    aperture = fibre_aperture_term(p["disk_hlr_arcsec"], p["disk_q"])
    # the total scatter is the knob; the measurement error is 0.03 dex of it (all of it if smaller)
    measurement = min(OH_MEASUREMENT_ERROR_DEX, cfg.metallicity_random_scatter_dex)
    intrinsic = np.sqrt(cfg.metallicity_random_scatter_dex**2 - measurement**2)
    p["oh12"] = (gas_metallicity(log_m, p["log_sfr"], p["cosmic_age_gyr"], p["disk_size_residual_dex"], aperture)
                 + rng.normal(0.0, intrinsic, n)                    # intrinsic scatter about the FMR
                 + rng.normal(0.0, measurement, n))                 # strong-line measurement error
    p["oh12_aperture_dex"] = aperture
    p["ml_rel_err"] = ml_relative_error(rng, p["mag_r"], cfg.ml_rel_err_min)


#: SED-fit M/L error model (:func:`ml_relative_error`): median ΔΥ/Υ at r = 16 mag, its growth with
#: magnitude (dex per mag: relative errors ∝ 1/(S/N) ∝ flux^-1/2 for photon noise) and its spread (dex).
ML_REL_ERR_AT_R16, ML_REL_ERR_MAG_SLOPE, ML_REL_ERR_SPREAD_DEX = 0.08, 0.2, 0.15


def ml_relative_error(rng, mag_r: np.ndarray, floor: float) -> np.ndarray:
    """ΔΥ/Υ, the 1σ relative error an SED fit reports on M/L, ``(n,)`` from the r magnitudes ``(n,)``:
    log10 ΔΥ/Υ = log10 0.08 + 0.2 (r − 16) + N(0, 0.15 dex), at least ``floor``.

    - The magnitude term is the photon-noise scaling of the fit's input photometry (relative flux
      errors ∝ flux^-1/2, 0.2 dex per mag): fainter galaxies get wider likelihoods.
    - The log-normal spread stands for what varies at fixed magnitude in GSWLC (Salim et al. 2016,
      ApJS 227, 2): the depth of the GALEX UV data (shallow AIS, medium MIS, deep DIS: its A/M/D
      catalogues) and of the WISE 22 µm constraint on the dust, i.e. how well the SFH and attenuation
      are pinned down.
    - Normalisation: Dobbels et al. (2019, §2.3) report that the 5 % floor of their ℒ1 affects about a
      quarter of their (D25 > 0.4′) GSWLC sample; 0.08 at r = 16 with the 0.15 dex spread puts
      ~25 % of this population's D25 > 0.4′ galaxies (median r = 15.8) at or below 5 %. The colour
      dependence of the errors is not modelled (no published relation is used here); ΔΥ ∝ Υ at fixed magnitude, so redder, high-M/L
      galaxies have larger absolute ΔΥ, as the paper notes.
    The draw is the last of the population's, so it changes no other column."""
    log_rel = (np.log10(ML_REL_ERR_AT_R16) + ML_REL_ERR_MAG_SLOPE * (np.asarray(mag_r) - 16.0)
               + rng.normal(0.0, ML_REL_ERR_SPREAD_DEX, len(mag_r)))
    return np.maximum(10.0**log_rel, floor)
