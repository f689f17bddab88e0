"""A small simulation written in the IllustrisTNG on-disk layout, readable by ``illustris_python``.

:func:`write_minisim` writes, under ``root``::

    output/groups_<snap>/fof_subhalo_tab_<snap>.<N>.hdf5   group catalogue chunks (Header, Group, Subhalo)
    output/snapdir_<snap>/snap_<snap>.<N>.hdf5             snapshot chunks (Header, PartType0/1/4)
    postprocessing/offsets/offsets_<snap>.hdf5             FileOffsets/{Group,Subhalo,SnapByType},
                                                           {Group,Subhalo}/SnapByType
    minisim_truth.h5                                       the analytic model of every subhalo
    minisim.json                                           marker: config, hash, versions (written last)

and returns ``basePath = root/'output'``. Units are TNG's: positions ckpc/h, masses 1e10 Msun/h,
particle ``Velocities`` km/s sqrt(a) (peculiar velocity = value * sqrt(a)), ``SubhaloVel`` km/s,
``GroupVel`` km/s / a, SFR Msun/yr. Particles are ordered by group, within a group by subhalo
(central first), as in TNG (there is no inner or outer fuzz: every particle belongs to a
subhalo). Catalogue and snapshot files are split into chunks; the star chunk boundaries are moved,
where needed, so that some subhalo's stars span two snapshot chunks, as in real output.

Galaxies (one per subhalo; some FoF groups hold satellites besides their central) are particle
realisations of analytic models, all in physical units (kpc, Msun, km/s) before the conversion.
The galaxy-formation relations live in :mod:`sim2obs.simgen.tng_minisim_physics`; the config key
``physics`` picks a variant: ``"A"`` (default, the relations below) or ``"B"`` (Behroozi et al.
2013 SHMR, Duffy et al. 2008 concentrations, radially anisotropic bulges with a Salpeter IMF,
stellar mass coupled to halo concentration at every mass; the sim-to-sim shift of the transfer studies; A
couples them as TNG does, in haloes below ~1e12 Msun). ``concentration_coupling``
overrides the variant's coupling of the log M* and log-concentration residuals at fixed M200.

- Dark halo: NFW (Navarro, Frenk & White 1997) of mass ``(1 - Omega_b/Omega_0) M200c`` within
  r200c, concentration from Dutton & Maccio (2014, NFW c200-M200 at the snapshot redshift; B:
  Duffy et al. 2008) with ``concentration_scatter_dex``. Host M200c are drawn from a power law
  dN/dlog10 M ~ M^-slope between ``log_m200_min`` and ``log_m200_max`` (slope 0.5 by default,
  flatter than the halo mass function's ~0.9, so more galaxies pass a stellar-mass cut). To keep
  particle counts small, DM particles (mass ``MassTable[1]``) sample the NFW only out to a truncation radius
  r_t = max(``dm_truncation_min_kpc``, ``dm_truncation_rhalf`` x the analytic 3D stellar half-mass
  radius), at most r200 (or the satellite's tidal radius). ``SubhaloMassType[1]`` (and
  ``SubhaloMass``, ``SubhaloHalfmassRadType[1]``) hold the FULL analytic DM mass (centrals: within
  r200; satellites: within the Jacobi tidal radius, King 1962), while ``SubhaloLenType[1]`` counts
  the particles written; ``SubhaloMassInRadType`` / ``SubhaloMassInHalfRadType`` sum particles, as
  in TNG. Hot halo gas is not modelled.
- Satellites: M200 = host M200 x a ratio log-uniform in [``satellite_mass_ratio_min``,
  ``satellite_mass_ratio_max``], at least 10^(``log_m200_min`` - 0.5) Msun (hosts too light for
  that get none), at ``satellite_distance_min``-``satellite_distance_max`` r200 of the host,
  on a circular orbit.
- Stellar mass: Moster, Naab & White (2013) stellar-to-halo-mass relation (z-dependent; B:
  Behroozi, Wechsler & Conroy 2013) with ``shmr_scatter_dex`` (A, B: correlated with the
  concentration's scatter); satellites use their (infall) M200. Split into a Hernquist (1990) bulge
  (truncated at ``hernquist_truncation`` scale radii; half-mass size from the Shen et al. 2003
  early-type mass-size relation, R_e = 1.8153 a) and an exponential disk with sech^2 vertical
  profile (z_d = ``disk_height_ratio`` R_d). Bulge fraction rises with stellar mass (logistic in
  log M*). Disk scale length from Mo, Mao & White (1998, eq. 28 with their f_c and f_R fits), spin
  lambda lognormal (median ``spin_median``, Bullock et al. 2001) and
  j_d / m_d = ``disk_angular_momentum_retention`` x (1 - ``retention_bulge_slope`` x B/T):
  bulge-dominated galaxies keep less of the halo's specific angular momentum (Romanowsky & Fall
  2012); with the defaults (1, 0.8) the disks follow the Shen et al. (2003) late-type
  size-mass relation to ~30 %. Each disk has a random orientation (uniform on the sphere), so
  box-axis projections give all inclinations.
- Velocities: circular speed v_c^2 = G M(<r) / r of all components (NFW, Hernquist, and the
  disks' cylindrically enclosed masses). Disk stars: vertical dispersion of an isothermal sheet
  sigma_z^2 = pi G Sigma(R) z_d, sigma_R = sigma_z / ``sigma_z_over_sigma_r``,
  sigma_phi^2 / sigma_R^2 = kappa^2 / (4 Omega^2), mean rotation from the asymmetric-drift
  equation (Binney & Tremaine 2008, eq. 4.228). Bulge and DM: Gaussian velocities with the
  isotropic Jeans dispersion in the total potential (numerical integral; B: bulges of constant
  anisotropy beta = 0.3). Gas: circular rotation with ``gas_sigma_kms`` dispersion. The subhalo's
  bulk velocity is added (centrals: Gaussian, ``bulk_velocity_sigma_kms`` per axis; satellites:
  host velocity + circular orbital velocity).
- Star formation: SFR from the Speagle et al. (2014) main sequence (0.3 dex scatter), a quenched
  fraction rising with mass (SFR 1.5 dex lower); cold gas M_gas = SFR x ``depletion_time_gyr``
  in an exponential gas disk (R_gas = ``gas_scale_ratio`` R_d) whose particles carry
  StarFormationRate ~ Sigma_gas^0.4 (Kennicutt 1998 law per unit mass), summing to
  ``SubhaloSFR``. Disk stars follow a history psi ~ t exp(-k t) (delayed-tau, or rising for
  k <= 0) whose k is chosen so that the mass formed in the last Gyr equals SFR x 1 Gyr (SFRs
  above what the steepest tabulated history allows are capped); bulge stars form early (delayed
  tau of 0.2-0.8 Gyr). Current masses follow the Leitner & Kravtsov (2011) mass-loss law for a
  Chabrier IMF, f_ml = 0.046 ln(age / 0.276 Myr + 1), so ``GFM_InitialMass`` >= ``Masses`` and
  the bulge and disk particles sum to the model masses exactly (particle masses vary with age and
  from galaxy to galaxy, as in TNG).
- Metallicity: a Gallazzi et al. (2005)-like stellar mass-metallicity relation; bulge stars
  +0.1 dex, disk stars older -> poorer and a -0.05 dex/R_d gradient, 0.12-0.15 dex scatter.
  ``GFM_Metallicity`` is the mass fraction (Z_sun = 0.0127).
- Photometry: ``GFM_StellarPhotometrics`` (U, B, V, K Vega; g, r, i, z AB absolute magnitudes)
  from :func:`ssp_log_mass_to_light`, a power law in age and metallicity per band roughly matching
  Bruzual & Charlot (2003) Chabrier SSPs (10 Gyr solar: M/L_r = 2.5, g - r = 0.77; 1 Gyr: g - r ~
  0.44), with solar absolute magnitudes of Willmer (2018). B: bulge particles have a Salpeter
  IMF, 0.24 dex more mass per unit light (same colours).
- Wind particles (``wind_fraction`` of the star count in galaxies with gas) are type 4 with
  ``GFM_StellarFormationTime`` = -(launch scale factor) <= 0, placed above and below the gas disk
  and moving outwards at 200-600 km/s; their photometric magnitudes are +99 (no light).
  ``SubhaloMassType[4]`` counts them, as in TNG.

Positions are uniform in the periodic box; ``edge_fraction`` of the groups sit within half a
truncation radius of a box face so their particles wrap around (all coordinates in [0, BoxSize)).
Deterministic for a given config: population draws and each galaxy's draws have their own seeded
streams. Cosmic time <-> scale factor through astropy's FlatLambdaCDM(100 h, Omega0, OmegaBaryon).
Streams of the seeds: ``[seed, 0]`` the population, ``[seed, 1, i]`` galaxy ``i``, ``[seed, 2]``
the particle IDs (``[seed, 2, i]`` the order of galaxy ``i``'s star particles).

This module is the public entry point; the code lives in :mod:`sim2obs.simgen.tng`:
``minisim_config`` (settings, hash), ``minisim_cosmology`` (time, star-formation histories),
``minisim_profiles`` (analytic mass profiles), ``minisim_population`` (every subhalo's model),
``minisim_particles`` (one galaxy as particles), ``minisim_catalogue`` (TNG's tables in code
units) and ``minisim_writer`` (the files, the marker, the truth sidecar).
"""
from __future__ import annotations

# the names this module imported before the move stay importable from it
from sim2obs.errors import ConfigError, Sim2obsValueError
from sim2obs.provenance import package_versions, stable_hash
from sim2obs.simgen.particle_maps import PHOTOMETRIC_BANDS, SOLAR_ABS_MAG
from sim2obs.simgen.tng.minisim_catalogue import _type4_boundaries
from sim2obs.simgen.tng.minisim_config import (_KEYS_SINCE_1_0, _MAX_PARTICLES, _STREAM_GALAXY, _STREAM_IDS,
                                               _STREAM_POPULATION, _Z_FORMATION_START, GENERATOR_VERSION, MARKER_NAME,
                                               TRUTH_NAME, WIND_MAGNITUDE, MiniSimConfig, _check, coerce_minisim_config,
                                               config_hash, minisim_config_dict, physics_of, validate_minisim_config)
from sim2obs.simgen.tng.minisim_cosmology import _Cosmology, _SFHTable
from sim2obs.simgen.tng.minisim_particles import (_KPC_KMS2_PER_MSUN, _cylindrical_to_cartesian, _disk_sample,
                                                  _isotropic, _random_rotation, _realise_galaxy)
from sim2obs.simgen.tng.minisim_population import _draw_population
from sim2obs.simgen.tng.minisim_profiles import (_GL_W, _GL_X, _disk_cylindrical_mass, _disk_spherical_mass,
                                                 _half_mass_radius, _hernquist_fraction, _nfw_half_mass_radius,
                                                 _nfw_mu, _unit_vectors, analytic_enclosed_mass)
from sim2obs.simgen.tng.minisim_writer import (_build, _header_common, _read_marker, _set_attrs, is_complete,
                                               read_truth, truth_row, write_minisim)
from sim2obs.simgen.tng_minisim_physics import (G_KPC_KMS2_PER_MSUN, PHYSICS_VARIANTS, Z_SUN, GalaxyPhysics,
                                                anisotropic_velocities, coupled_noise, galaxy_physics, jeans_sigma,
                                                light_mass, mass_loss_fraction, mean_bulge_fraction,
                                                mean_log_metallicity, mmw98_scale_length, speagle14_log_sfr,
                                                ssp_log_mass_to_light, ssp_magnitudes)

__all__ = ["MiniSimConfig", "coerce_minisim_config", "validate_minisim_config", "config_hash", "minisim_config_dict",
           "physics_of", "PHYSICS_VARIANTS", "write_minisim",
           "is_complete", "read_truth", "truth_row", "analytic_enclosed_mass", "ssp_log_mass_to_light",
           "ssp_magnitudes", "mass_loss_fraction", "PHOTOMETRIC_BANDS", "SOLAR_ABS_MAG", "MARKER_NAME",
           "TRUTH_NAME"]
