"""TNG100-style mock observations of simulated galaxies, written as a galaxy set.

After Chu et al. (2024, the multi-branch mass study, §2) and the pipelines it cites (Xu et al.
2017, 2019; Lu et al. 2020). Any simulation in the IllustrisTNG on-disk layout is read through
``illustris_python`` (``groupcat.loadSubhalos``, ``snapshot.loadSubhalo``) from its ``basePath``
(``source.kind: basepath``: real TNG100-1 output, unchanged), or per-subhalo cutouts are fetched
from the TNG web API (``source.kind: api``; :mod:`sim2obs.simgen.tng_api`: API key, cache,
resumable downloads), or the embedded mini-simulation is written first and read like real output
(``source.kind: minisim``, the default; :mod:`sim2obs.simgen.tng_minisim`).

Selection (paper §2.1): stellar mass within a 3D aperture of ``selection.aperture_kpc`` (30 kpc)
above ``10**selection.log_mstar_30kpc_min`` Msun and total subhalo mass below
``10**selection.log_msub_max`` Msun (the cluster cut). The paper's two numbers were lost from the
text; the defaults (1e10 and 1e14 Msun) are documented choices. Each selected galaxy is projected
along the three box axes (``projections``); each projection is one object of the set.

Per projection, centred on the subhalo (``SubhaloPos``, the most bound particle) and spanning
``+- fov_rhalf`` (3) R_half, the 3D stellar half-mass radius:

- ``r_<N>``: the r-band luminosity per pixel (Lsun, r band) of the star particles
  (``GFM_StellarPhotometrics``; optionally dust-attenuated with the Charlot & Fall 2000 two-phase
  screen), smoothed with the 2D cubic-spline SPH kernel of smoothing length = distance to the
  ``sph_neighbours``-th (32nd) nearest star particle, on ``image_px`` (300) pixels, re-binned
  (flux-conserving) to each of ``rebin_px`` (150, 60);
- ``gr_<N>``: the g - r colour (AB mag) of each pixel, from the g and r images of that resolution;
- ``vmap``/``sigmamap``: the luminosity- (or mass-) weighted mean line-of-sight velocity
  (relative to the systemic velocity) and dispersion, km/s, on ``kin_px`` (48) pixels by
  nearest-grid-point assignment; ``kinmask`` is 1 where a pixel holds at least ``kin_min_count``
  particles, 0 where it is empty (those pixels are 0 in the maps, never NaN).

Targets (3D, within a sphere of R_half): stellar, dark-matter, gas and total masses, the
dark-matter fraction; the projected M*/L_r within a circle of R_half. Summary statistics (paper
Table 1) for the LightGBM study: r-band absolute magnitude and g - r within a projected
``summary.phot_aperture_rhalf`` R_half, SFR of the last Gyr, Sersic index, 3D axis ratio q,
sigma_e, lambda_R, kinematic B/T and cold/hot orbit fractions
(:mod:`sim2obs.simgen.galaxy_stats`).

Units: positions ckpc/h -> physical kpc (x a / h, with the periodic box unwrapped about the
centre), masses 1e10 Msun/h -> Msun, particle velocities km/s sqrt(a) -> km/s (x sqrt(a)). Wind
particles (``GFM_StellarFormationTime <= 0``) are dropped. Stellar ages come from the formation
scale factors through the header's flat Lambda-CDM cosmology (astropy).

Splits are drawn per galaxy: the three projections of one subhalo always share a split, so no
galaxy is seen in training and in testing.

Work is parallel per shard of ``shard_size`` subhalos on Dask (``cluster``); every shard is
written atomically, so a killed run, started again, renders only the missing shards. The
selection pass is cached (``selection.json``) the same way.

This module is the public entry point (the generator registered as ``tng``); the code lives in
:mod:`sim2obs.simgen.tng`: ``mock_config`` (settings), ``mock_schema`` (the set's schema),
``sources`` (basePath, web API, mini-simulation), ``code_units`` (code -> physical units),
``mock_galaxy`` (one galaxy's maps and columns) and ``mock_pipeline`` (selection, shards,
:func:`generate`).
"""
from __future__ import annotations

# the names this module imported before the move stay importable from it
from sim2obs.atomic import atomic_write
from sim2obs.errors import ConfigError, DataFormatError, Sim2obsValueError
from sim2obs.galaxyset import ColumnSpec, GalaxySetSchema, GalaxySetWriter, StackSpec, assign_splits
from sim2obs.provenance import stable_hash
from sim2obs.simgen.particle_maps import PHOTOMETRIC_BANDS
from sim2obs.simgen.tng.code_units import _cosmology, _flat_lcdm, stellar_ages_gyr, to_physical
from sim2obs.simgen.tng.mock_config import (BAND_WAVELENGTH, GENERATOR_NAME, GENERATOR_VERSION, KIN_WEIGHTS,
                                            SELECTION_FILE, SOURCE_KINDS, SUMMARY_FLAG_BITS, ApiSection, DustSection,
                                            SelectionSection, SourceSection, SummarySection, TNGMockConfig,
                                            coerce_config, image_sizes, validate_config)
from sim2obs.simgen.tng.mock_galaxy import _log10, _mock_galaxy, mock_galaxy
from sim2obs.simgen.tng.mock_pipeline import _SELECTION_FIELDS, _select_chunk, generate, render_shard, select_galaxies
from sim2obs.simgen.tng.mock_schema import COLUMNS, build_schema
from sim2obs.simgen.tng.sources import (_SUBHALO_FIELDS, _TRAILING, _field_lists, _minisim_root, _open_api, _Source,
                                        check_simulation, load_subhalo_particles, open_source)

__all__ = ["GENERATOR_NAME", "GENERATOR_VERSION", "SOURCE_KINDS", "KIN_WEIGHTS", "SELECTION_FILE", "BAND_WAVELENGTH",
           "SUMMARY_FLAG_BITS", "ApiSection", "SourceSection", "SelectionSection", "DustSection", "SummarySection",
           "TNGMockConfig", "validate_config", "coerce_config", "image_sizes", "COLUMNS", "build_schema",
           "check_simulation", "load_subhalo_particles", "stellar_ages_gyr", "to_physical", "mock_galaxy",
           "open_source", "select_galaxies", "render_shard", "generate"]
