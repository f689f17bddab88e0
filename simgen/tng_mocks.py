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
"""
from __future__ import annotations

import functools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np
from threadpoolctl import threadpool_limits

from sim2obs.atomic import atomic_write
from sim2obs.errors import ConfigError, DataFormatError, Sim2obsValueError
from sim2obs.galaxyset import ColumnSpec, GalaxySetSchema, GalaxySetWriter, StackSpec, assign_splits
from sim2obs.provenance import stable_hash
from sim2obs.simgen.particle_maps import PHOTOMETRIC_BANDS

GENERATOR_NAME = "tng_mocks"
GENERATOR_VERSION = "1.0"
SOURCE_KINDS = ("minisim", "basepath", "api")
KIN_WEIGHTS = ("luminosity", "mass")
SELECTION_FILE = "selection.json"
#: effective wavelengths (Angstrom) of SDSS g and r, for the dust model
BAND_WAVELENGTH = {"g": 4770.0, "r": 6231.0}
#: bits of the ``summary_flags`` column: a statistic that could not be measured (e.g. a Sersic fit
#: that failed, a lambda_R without valid pixels) is stored as 0 with its bit set.
SUMMARY_FLAG_BITS = {"sersic_n": 1, "lambda_r": 2, "q_3d": 4, "sigma_e": 8, "g_r": 16, "mag_r": 32}
_SUBHALO_FIELDS = ["SubhaloPos", "SubhaloVel", "SubhaloMass", "SubhaloMassType", "SubhaloLenType"]


# --------------------------------------------------------------------------------------------
# Configuration (YAML: configs/simgen/tng.yaml)
# --------------------------------------------------------------------------------------------
@dataclass
class ApiSection:
    """The TNG web API source: ``api_key`` (null: environment variable ``TNG_API_KEY``),
    ``cache_dir`` (null: ``<set>/../_tng_api_cache``), ``subhalo_ids`` (null: search the API
    for subhalos passing the catalogue pre-cut)."""

    simulation: str = "TNG100-1"
    base_url: str = "https://www.tng-project.org/api"
    api_key: str | None = None
    cache_dir: str | None = None
    subhalo_ids: list[int] | None = None


@dataclass
class SourceSection:
    """Where the particles come from: ``minisim`` (written first, settings ``minisim``: keys of
    :class:`sim2obs.simgen.tng_minisim.MiniSimConfig`), ``basepath`` (``base_path``: a TNG
    ``output`` directory) or ``api`` (``api``). ``snapshot``: snapshot number (99: z = 0)."""

    kind: str = "minisim"
    base_path: str | None = None
    snapshot: int = 99
    minisim: dict[str, Any] = field(default_factory=dict)
    api: ApiSection = field(default_factory=ApiSection)


@dataclass
class SelectionSection:
    """Galaxy selection (paper §2.1): log10 Msun thresholds; ``aperture_kpc``: the 3D aperture of
    the stellar mass cut; ``min_star_particles``: galaxies with fewer (non-wind) star particles
    are skipped (too few to map); ``max_galaxies``: a random subset of this many (null: all)."""

    log_mstar_30kpc_min: float = 10.0
    log_msub_max: float = 14.0
    aperture_kpc: float = 30.0
    min_star_particles: int = 100
    max_galaxies: int | None = None


@dataclass
class DustSection:
    """Optional Charlot & Fall (2000) attenuation of particle luminosities: optical depth in V
    of the birth cloud (stars younger than ``birth_cloud_gyr``) and of the diffuse ISM, scaled
    with wavelength as (lambda / 5500 A)**slope."""

    enabled: bool = True
    tau_v_birth: float = 1.0
    tau_v_ism: float = 0.3
    birth_cloud_gyr: float = 0.01
    slope: float = -0.7


@dataclass
class SummarySection:
    """Apertures of the summary statistics, in units of R_half (paper Table 1; its numbers were
    lost: documented choices). ``phot_aperture_rhalf``: projected radius of mag_r, g_r and the
    SFR; ``sfr_window_gyr``: the SFR averaging window; ``q_start_rhalf``: 3D radius where the
    iterative axis-ratio measurement starts; ``orbit_aperture_rhalf``: 3D radius of the orbit
    fractions; ``cold``/``hot``: circularity thresholds (Xu et al. 2019)."""

    phot_aperture_rhalf: float = 2.0
    sfr_window_gyr: float = 1.0
    q_start_rhalf: float = 2.0
    orbit_aperture_rhalf: float = 1.0
    cold: float = 0.8
    hot: float = 0.25


@dataclass
class TNGMockConfig:
    """Configuration of the TNG mock pipeline; sizes in pixels, apertures in R_half."""

    generator: str = "tng"
    name: str = "tng_mocks"
    source: SourceSection = field(default_factory=SourceSection)
    selection: SelectionSection = field(default_factory=SelectionSection)
    projections: list[int] = field(default_factory=lambda: [0, 1, 2])
    fov_rhalf: float = 3.0
    image_px: int = 300
    rebin_px: list[int] = field(default_factory=lambda: [150, 60])
    sph_neighbours: int = 32
    kin_px: int = 48
    kin_min_count: int = 3
    kin_weight: str = "luminosity"
    dust: DustSection = field(default_factory=DustSection)
    summary: SummarySection = field(default_factory=SummarySection)
    seed: int = 0
    split: dict[str, float] = field(default_factory=lambda: {"train": 0.6, "val": 0.15, "test": 0.25})
    shard_size: int = 16


def validate_config(cfg: TNGMockConfig) -> None:
    """Raise :class:`ConfigError` naming the key for any value the pipeline cannot use."""
    def positive(key: str, value: float) -> None:
        if value is None or not math.isfinite(float(value)) or value <= 0:
            raise ConfigError(f"simgen.{key}", "must be positive", value=value)

    if cfg.generator != "tng":
        raise ConfigError("simgen.generator", "this config is not for the TNG mock pipeline", value=cfg.generator)
    src = cfg.source
    if src.kind not in SOURCE_KINDS:
        raise ConfigError("simgen.source.kind", "unknown source", value=src.kind, allowed=list(SOURCE_KINDS))
    if src.kind == "basepath" and not src.base_path:
        raise ConfigError("simgen.source.base_path", "source.kind=basepath needs the simulation's output "
                          "directory (e.g. .../TNG100-1/output)")
    if src.kind == "minisim":
        from sim2obs.simgen.tng_minisim import coerce_minisim_config

        coerce_minisim_config(src.minisim, prefix="simgen.source.minisim")  # typos raise here
    if not cfg.projections or any(p not in (0, 1, 2) for p in cfg.projections) or \
            len(set(cfg.projections)) != len(cfg.projections):
        raise ConfigError("simgen.projections", "distinct box axes among 0 (x), 1 (y), 2 (z)",
                          value=list(cfg.projections))
    positive("fov_rhalf", cfg.fov_rhalf)
    if cfg.image_px < 8:
        raise ConfigError("simgen.image_px", "images need at least 8 pixels", value=cfg.image_px)
    if any(int(n) != n or not 1 <= n < cfg.image_px for n in cfg.rebin_px) or len(set(cfg.rebin_px)) != len(
            cfg.rebin_px):
        raise ConfigError("simgen.rebin_px", f"distinct sizes below image_px ({cfg.image_px})",
                          value=list(cfg.rebin_px))
    if cfg.sph_neighbours < 1:
        raise ConfigError("simgen.sph_neighbours", "must be at least 1", value=cfg.sph_neighbours)
    if cfg.kin_px < 2:
        raise ConfigError("simgen.kin_px", "kinematic maps need at least 2 pixels", value=cfg.kin_px)
    if cfg.kin_min_count < 1:
        raise ConfigError("simgen.kin_min_count", "must be at least 1", value=cfg.kin_min_count)
    if cfg.kin_weight not in KIN_WEIGHTS:
        raise ConfigError("simgen.kin_weight", "unknown weighting", value=cfg.kin_weight, allowed=list(KIN_WEIGHTS))
    sel = cfg.selection
    positive("selection.aperture_kpc", sel.aperture_kpc)
    if sel.log_mstar_30kpc_min >= sel.log_msub_max:
        raise ConfigError("simgen.selection.log_mstar_30kpc_min", "must be below selection.log_msub_max",
                          value=(sel.log_mstar_30kpc_min, sel.log_msub_max))
    if sel.max_galaxies is not None and sel.max_galaxies < 1:
        raise ConfigError("simgen.selection.max_galaxies", "must be positive (or null)", value=sel.max_galaxies)
    for key in ("tau_v_birth", "tau_v_ism", "birth_cloud_gyr"):
        if getattr(cfg.dust, key) < 0:
            raise ConfigError(f"simgen.dust.{key}", "must be non-negative", value=getattr(cfg.dust, key))
    s = cfg.summary
    for key in ("phot_aperture_rhalf", "sfr_window_gyr", "q_start_rhalf", "orbit_aperture_rhalf"):
        positive(f"summary.{key}", getattr(s, key))
    if not 0 < s.hot < s.cold <= 1:
        raise ConfigError("simgen.summary.cold/hot", "need 0 < hot < cold <= 1", value=(s.cold, s.hot))
    if not cfg.split or any(v < 0 for v in cfg.split.values()) or not math.isclose(sum(cfg.split.values()), 1.0,
                                                                                     abs_tol=1e-6):
        raise ConfigError("simgen.split", "fractions must be non-negative and sum to 1", value=dict(cfg.split))
    positive("shard_size", cfg.shard_size)


def coerce_config(cfg: Any) -> TNGMockConfig:
    """A Hydra/OmegaConf node or dict -> validated :class:`TNGMockConfig` (typos raise
    :class:`ConfigError` naming the key)."""
    from sim2obs.config import coerce_dataclass

    obj = coerce_dataclass(TNGMockConfig, cfg, "simgen")
    validate_config(obj)
    if obj.source.kind == "minisim":  # canonical: every mini-simulation key, defaults filled in
        from sim2obs.simgen.tng_minisim import coerce_minisim_config, minisim_config_dict

        # minisim_config_dict: keys added since minisim 1.0 at their old behaviour are left out (same set folder)
        obj.source.minisim = minisim_config_dict(coerce_minisim_config(obj.source.minisim,
                                                                       prefix="simgen.source.minisim"))
    return obj


def image_sizes(cfg: TNGMockConfig) -> list[int]:
    """Side lengths (px) of the image stacks: the SPH resolution, then the re-binned ones."""
    return [int(cfg.image_px), *[int(n) for n in cfg.rebin_px]]


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------
COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("id", "int64", "", "object id = subhalo_id * 3 + projection"),
    ColumnSpec("subhalo_id", "int64", "", "subhalo index in the group catalogue"),
    ColumnSpec("projection", "int64", "", "box axis of the line of sight: 0 x, 1 y, 2 z"),
    ColumnSpec("snapshot", "int64", "", "snapshot number"),
    ColumnSpec("redshift", "float64", "", "redshift of the snapshot"),
    ColumnSpec("rhalf_kpc", "float64", "kpc", "3D stellar half-mass radius (physical kpc)"),
    ColumnSpec("fov_kpc", "float64", "kpc", "full width of the images and maps (2 fov_rhalf R_half)"),
    ColumnSpec("log_mstar_rhalf", "float64", "dex(solMass)", "log10 stellar mass within a 3D sphere of R_half"),
    ColumnSpec("log_mdm_rhalf", "float64", "dex(solMass)", "log10 dark-matter mass within a 3D sphere of R_half"),
    ColumnSpec("log_mgas_rhalf", "float64", "dex(solMass)",
               "log10 gas mass within a 3D sphere of R_half (0 when there is no gas)"),
    ColumnSpec("log_mtot_rhalf", "float64", "dex(solMass)", "log10 total (all types) mass within a 3D sphere of R_half"),
    ColumnSpec("f_dm_rhalf", "float64", "", "dark-matter mass fraction within a 3D sphere of R_half"),
    ColumnSpec("log_ml_r", "float64", "dex(solMass/solLum)",
               "log10 projected stellar mass-to-light ratio (r band, dust-attenuated) within a circle of R_half"),
    ColumnSpec("log_mstar_30kpc", "float64", "dex(solMass)", "log10 stellar mass within the 3D selection aperture"),
    ColumnSpec("log_msub", "float64", "dex(solMass)", "log10 total subhalo mass (SubhaloMass)"),
    ColumnSpec("mag_r", "float64", "mag", "r-band absolute AB magnitude within the projected photometric aperture"),
    ColumnSpec("g_r", "float64", "mag", "g - r colour within the projected photometric aperture"),
    ColumnSpec("log_lr_rhalf", "float64", "dex(solLum)", "log10 r-band luminosity within a projected circle of R_half"),
    ColumnSpec("sfr_1gyr", "float64", "solMass / yr",
               "mean star-formation rate over the SFR window within the projected photometric aperture"),
    ColumnSpec("sersic_n", "float64", "", "Sersic index of the projected r-band light profile"),
    ColumnSpec("q_3d", "float64", "", "shortest-to-longest axis ratio c/a of the stellar mass (inertia tensor)"),
    ColumnSpec("sigma_e", "float64", "km / s",
               "luminosity-weighted line-of-sight velocity dispersion (incl. rotation) within projected R_half"),
    ColumnSpec("lambda_r", "float64", "", "spin parameter lambda_R (Emsellem et al. 2007) within projected R_half"),
    ColumnSpec("kin_bt", "float64", "", "kinematic bulge-to-total: 2 x mass fraction with circularity < 0"),
    ColumnSpec("f_cold", "float64", "", "mass fraction on cold orbits (circularity > summary.cold)"),
    ColumnSpec("f_hot", "float64", "", "mass fraction on hot orbits (|circularity| < summary.hot)"),
    ColumnSpec("summary_flags", "int64", "", "bit mask of summary statistics that could not be measured (stored "
               "as 0): 1 sersic_n, 2 lambda_r, 4 q_3d, 8 sigma_e, 16 g_r, 32 mag_r"),
    ColumnSpec("n_star_particles", "int64", "", "number of (non-wind) star particles of the subhalo"),
)


def build_schema(cfg: TNGMockConfig) -> GalaxySetSchema:
    """The galaxy-set schema of a TNG mock set (stacks per resolution, kinematic maps, catalogue)."""
    stacks = []
    for n in image_sizes(cfg):
        stacks.append(StackSpec(f"r_{n}", ("r",), n, n, "solLum",
                                description=f"r-band luminosity per pixel ({n} px over {2 * cfg.fov_rhalf:g} R_half)"))
        stacks.append(StackSpec(f"gr_{n}", ("g_minus_r",), n, n, "mag",
                                description=f"g - r colour per pixel ({n} px; 0 where there is no light)"))
    k = int(cfg.kin_px)
    stacks += [
        StackSpec("vmap", ("v_los",), k, k, "km / s", description="mean line-of-sight velocity, NGP; 0 if masked"),
        StackSpec("sigmamap", ("sigma_los",), k, k, "km / s",
                  description="line-of-sight velocity dispersion, NGP; 0 if masked"),
        StackSpec("kinmask", ("valid",), k, k, "", description=f"1 where a pixel holds >= {cfg.kin_min_count} "
                                                                "star particles"),
    ]
    return GalaxySetSchema(tuple(stacks), COLUMNS, tuple(cfg.split))


# --------------------------------------------------------------------------------------------
# Reading particles: basePath (illustris_python) or web-API cutouts
# --------------------------------------------------------------------------------------------
def _field_lists() -> dict[str, tuple[int, list[str]]]:
    """``type name -> (PartType number, fields the pipeline reads)``."""
    from sim2obs.simgen.tng_api import PART_TYPES, PIPELINE_FIELDS

    return {name: (PART_TYPES[name], list(fields)) for name, fields in PIPELINE_FIELDS.items()}


_TRAILING = {"Coordinates": (3,), "Velocities": (3,), "GFM_StellarPhotometrics": (8,)}


def check_simulation(base_path: str | os.PathLike, snapshot: int) -> dict[str, Any]:
    """Check that ``base_path`` holds what the pipeline reads, before any work; return the
    snapshot header. A missing file, attribute or dataset, or a dataset of the wrong shape,
    raises :class:`DataFormatError` naming the file and the field."""
    import illustris_python as il

    base = str(base_path)
    gc0 = Path(il.groupcat.gcPath(base, snapshot, 0))
    if not gc0.exists():
        raise DataFormatError(gc0, None, "no group catalogue chunk 0 (is base_path the simulation's 'output' "
                                         "directory?)")
    with h5py.File(gc0, "r") as f:
        for key in ("Nsubgroups_Total", "NumFiles"):
            if key not in f["Header"].attrs:
                raise DataFormatError(gc0, f"Header/{key}", "missing group-catalogue header attribute")
        n_chunks = int(f["Header"].attrs["NumFiles"])
        n_sub = int(f["Header"].attrs["Nsubgroups_Total"])
    for i in range(n_chunks):
        path = Path(il.groupcat.gcPath(base, snapshot, i))
        if not path.exists():
            raise DataFormatError(path, None, f"group catalogue chunk {i} of {n_chunks} is missing")
        with h5py.File(path, "r") as f:
            n_here = int(f["Header"].attrs.get("Nsubgroups_ThisFile", n_sub if n_chunks == 1 else -1))
            for name in _SUBHALO_FIELDS:
                if n_here and f"Subhalo/{name}" not in f:
                    raise DataFormatError(path, f"Subhalo/{name}", "missing group-catalogue field")
                if n_here and f[f"Subhalo/{name}"].shape[0] != n_here:
                    raise DataFormatError(path, f"Subhalo/{name}", f"has {f[f'Subhalo/{name}'].shape[0]} rows, "
                                                                   f"Nsubgroups_ThisFile is {n_here}")
    offsets = Path(il.groupcat.offsetPath(base, snapshot))
    if not offsets.exists():
        raise DataFormatError(offsets, None, "the offsets file is missing (snapshot.loadSubhalo needs it)")
    with h5py.File(offsets, "r") as f:
        for name, shape in (("FileOffsets/Subhalo", (n_chunks,)), ("FileOffsets/SnapByType", None),
                            ("Subhalo/SnapByType", (n_sub, 6))):
            if name not in f:
                raise DataFormatError(offsets, name, "missing offsets dataset")
            if shape is not None and f[name].shape != shape:
                raise DataFormatError(offsets, name, f"shape {f[name].shape}, expected {shape}")
    snap0 = Path(il.snapshot.snapPath(base, snapshot, 0))
    if not snap0.exists():
        raise DataFormatError(snap0, None, "snapshot chunk 0 is missing")
    with h5py.File(snap0, "r") as f:
        attrs = dict(f["Header"].attrs)
    header = {}
    for key in ("HubbleParam", "Redshift", "Time", "Omega0", "OmegaLambda", "BoxSize", "MassTable",
                "NumFilesPerSnapshot", "NumPart_Total"):
        if key not in attrs:
            raise DataFormatError(snap0, f"Header/{key}", "missing snapshot header attribute")
        header[key] = attrs[key]
    header["OmegaBaryon"] = attrs.get("OmegaBaryon", 0.0486)
    types = _field_lists()
    for i in range(int(header["NumFilesPerSnapshot"])):
        path = Path(il.snapshot.snapPath(base, snapshot, i))
        if not path.exists():
            raise DataFormatError(path, None, f"snapshot chunk {i} is missing")
        with h5py.File(path, "r") as f:
            n_this = f["Header"].attrs.get("NumPart_ThisFile")
            if n_this is None:
                raise DataFormatError(path, "Header/NumPart_ThisFile", "missing snapshot header attribute")
            for _, (ptype, names) in types.items():
                n = int(n_this[ptype])
                if not n:
                    continue
                for name in names:
                    key = f"PartType{ptype}/{name}"
                    if key not in f:
                        raise DataFormatError(path, key, "missing particle field")
                    want = (n, *_TRAILING.get(name, ()))
                    if f[key].shape != want:
                        raise DataFormatError(path, key, f"shape {f[key].shape}, expected {want}")
    return {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in header.items()}


def load_subhalo_particles(base_path: str | os.PathLike, snapshot: int, subhalo_id: int,
                           types: Mapping[str, Sequence[str]] | None = None) -> dict[str, dict]:
    """Particles of one subhalo (code units) through ``illustris_python``: ``types`` maps type
    names to fields (default: every field the pipeline reads, of stars, DM and gas)."""
    import illustris_python as il

    out = {}
    lists = _field_lists()
    for name, fields in (types or {k: v[1] for k, v in lists.items()}).items():
        ptype, fields = lists[name][0], list(fields)
        data = il.snapshot.loadSubhalo(str(base_path), snapshot, int(subhalo_id), ptype, fields=fields)
        out[name] = {f: np.asarray(data[f]) if data.get("count", 0) else
                     np.zeros((0, *_TRAILING.get(f, ())), np.float64) for f in fields}
    return out


# --------------------------------------------------------------------------------------------
# One galaxy: unit conversion, maps, targets and statistics
# --------------------------------------------------------------------------------------------
def _cosmology(header: Mapping[str, Any]):
    return _flat_lcdm(float(header["HubbleParam"]), float(header["Omega0"]), float(header.get("OmegaBaryon", 0.0486)))


@functools.lru_cache(maxsize=8)
def _flat_lcdm(h: float, omega0: float, omega_baryon: float):
    from astropy.cosmology import FlatLambdaCDM

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


def _log10(x: float) -> float:
    return float(np.log10(x)) if x > 0 else 0.0


def mock_galaxy(particles: Mapping[str, Mapping[str, np.ndarray]], centre_ckpc_h: np.ndarray,
                header: Mapping[str, Any], cfg: TNGMockConfig) -> list[dict[str, Any]]:
    """All projections of one galaxy: a list (one per ``cfg.projections``) of
    ``{"images": {stack: (C, H, W)}, "catalog": {column: value}}`` (subhalo columns excluded).

    Runs with one BLAS thread: its matrix products (re-binning, inertia tensors) are small, and
    BLAS threads spinning on them tripled the CPU time of an in-process run (measured)."""
    with threadpool_limits(limits=1, user_api="blas"):
        return _mock_galaxy(particles, centre_ckpc_h, header, cfg)


def _mock_galaxy(particles: Mapping[str, Mapping[str, np.ndarray]], centre_ckpc_h: np.ndarray,
                 header: Mapping[str, Any], cfg: TNGMockConfig) -> list[dict[str, Any]]:
    from sim2obs.imaging import rebin
    from sim2obs.simgen import galaxy_stats as gst
    from sim2obs.simgen import particle_maps as pm

    phys = to_physical(particles, centre_ckpc_h, header)
    stars = phys["stars"]
    if len(stars["mass"]) < 2:
        raise Sim2obsValueError("a galaxy needs star particles to be mocked", value=len(stars["mass"]))
    r_star = np.linalg.norm(stars["pos"], axis=1)
    rhalf = float(gst.half_mass_radius(r_star, stars["mass"]))
    half_width = cfg.fov_rhalf * rhalf
    inner = r_star < 2 * rhalf
    v_sys = np.average(stars["vel"][inner], axis=0, weights=stars["mass"][inner]) if inner.any() else \
        np.average(stars["vel"], axis=0, weights=stars["mass"])
    vel = stars["vel"] - v_sys

    # luminosities (Lsun per band), optionally dust-attenuated
    lum = {}
    for band, msun in (("g", pm.MSUN_G_AB), ("r", pm.MSUN_R_AB)):
        lum[band] = pm.band_luminosity(stars["mags"][:, PHOTOMETRIC_BANDS.index(band)], msun)
        if cfg.dust.enabled:
            lum[band] = lum[band] * pm.dust_transmission(
                stars["age_gyr"], BAND_WAVELENGTH[band], tau_v_birth=cfg.dust.tau_v_birth,
                tau_v_ism=cfg.dust.tau_v_ism, t_birth_gyr=cfg.dust.birth_cloud_gyr, slope=cfg.dust.slope)

    # 3D targets within R_half
    enclosed = {name: float(gst.enclosed_mass(np.linalg.norm(p["pos"], axis=1), p["mass"], rhalf))
                for name, p in phys.items()}
    m_tot = sum(enclosed.values())
    all_pos = np.concatenate([p["pos"] for p in phys.values()])
    all_mass = np.concatenate([p["mass"] for p in phys.values()])
    s = cfg.summary
    q_ba, q_ca = gst.axis_ratios(stars["pos"], stars["mass"], s.q_start_rhalf * rhalf)
    eps = gst.circularities(stars["pos"], vel, stars["mass"], all_pos, all_mass, s.orbit_aperture_rhalf * rhalf)
    in_orbit = r_star < s.orbit_aperture_rhalf * rhalf
    orbits = gst.orbit_fractions(eps[in_orbit], stars["mass"][in_orbit], cold=s.cold, hot=s.hot)
    galaxy = {
        "rhalf_kpc": rhalf, "fov_kpc": 2 * half_width,
        "log_mstar_rhalf": _log10(enclosed["stars"]), "log_mdm_rhalf": _log10(enclosed["dm"]),
        "log_mgas_rhalf": _log10(enclosed["gas"]), "log_mtot_rhalf": _log10(m_tot),
        "f_dm_rhalf": enclosed["dm"] / m_tot if m_tot > 0 else 0.0,
        "log_mstar_30kpc": _log10(float(gst.enclosed_mass(r_star, stars["mass"], cfg.selection.aperture_kpc))),
        "q_3d": float(q_ca), "kin_bt": float(orbits["kin_bt"]), "f_cold": float(orbits["f_cold"]),
        "f_hot": float(orbits["f_hot"]), "n_star_particles": int(len(stars["mass"])),
    }

    h_sph = pm.smoothing_lengths(stars["pos"], cfg.sph_neighbours)
    kin_weights = lum["r"] if cfg.kin_weight == "luminosity" else stars["mass"]
    sizes = image_sizes(cfg)
    out = []
    for los in cfg.projections:
        xy, v_los = pm.project(stars["pos"], vel, int(los))
        R = np.hypot(xy[:, 0], xy[:, 1])
        gr_img = pm.sph_image(xy, np.stack([lum["g"], lum["r"]], axis=1), h_sph, half_width, cfg.image_px)
        images = {}
        for n in sizes:
            # rebin averages; times the area ratio it conserves the luminosity per image
            lg, lr = (gr_img if n == cfg.image_px else rebin(gr_img, n) * (cfg.image_px / n) ** 2)
            images[f"r_{n}"] = lr[None].astype(np.float32)
            images[f"gr_{n}"] = pm.colour_map(lg, lr)[None].astype(np.float32)
        mean_v, sigma, count = pm.ngp_moments(xy, v_los, kin_weights, half_width, cfg.kin_px, cfg.kin_min_count)
        valid = count >= cfg.kin_min_count
        images["vmap"] = np.where(valid, mean_v, 0.0)[None].astype(np.float32)
        images["sigmamap"] = np.where(valid, sigma, 0.0)[None].astype(np.float32)
        images["kinmask"] = valid[None].astype(np.float32)

        # projected quantities
        in_re = R < rhalf
        in_phot = R < s.phot_aperture_rhalf * rhalf
        lr_re, lr_phot, lg_phot = lum["r"][in_re].sum(), lum["r"][in_phot].sum(), lum["g"][in_phot].sum()
        flux_kin = rebin(gr_img[1], cfg.kin_px) * (cfg.image_px / cfg.kin_px) ** 2
        cat = dict(galaxy)
        cat.update({
            "log_ml_r": _log10(stars["mass"][in_re].sum() / lr_re) if lr_re > 0 else 0.0,
            "log_lr_rhalf": _log10(lr_re),
            "mag_r": float(pm.MSUN_R_AB - 2.5 * np.log10(lr_phot)) if lr_phot > 0 else math.nan,
            "g_r": float(pm.colour_map(np.array([lg_phot]), np.array([lr_phot]))[0])
            if lr_phot > 0 and lg_phot > 0 else math.nan,
            "sfr_1gyr": float(gst.sfr_recent(stars["age_gyr"][in_phot], stars["initial_mass"][in_phot],
                                             s.sfr_window_gyr)),
            "sersic_n": float(gst.sersic_index(R, lum["r"], cfg.fov_rhalf * rhalf)),
            "sigma_e": float(gst.sigma_e(v_los, lum["r"], R, rhalf)),
            "lambda_r": float(gst.lambda_r(mean_v, sigma, flux_kin, valid, pm.pixel_radius(half_width, cfg.kin_px),
                                           rhalf)),
        })
        flags = 0
        for name, bit in SUMMARY_FLAG_BITS.items():
            if not math.isfinite(cat[name]):
                cat[name], flags = 0.0, flags | bit
        cat["summary_flags"] = flags
        out.append({"images": images, "catalog": cat})
    return out


# --------------------------------------------------------------------------------------------
# Sources: catalogue pre-cut, particle access
# --------------------------------------------------------------------------------------------
@dataclass
class _Source:
    """What a worker needs to read one subhalo (picklable)."""

    kind: str
    base_path: str | None
    snapshot: int
    header: dict
    api: dict | None = None
    api_cache: str | None = None

    def particles(self, subhalo_id: int, types: Mapping[str, Sequence[str]] | None = None) -> dict:
        """The subhalo's particles (code units): ``types`` as in :func:`load_subhalo_particles`
        (a cutout is always fetched whole, so that one download serves every pass)."""
        if self.kind == "api":
            from sim2obs.simgen.tng_api import PIPELINE_FIELDS, TNGWebAPI, read_cutout

            client = TNGWebAPI(api_key=self.api.get("api_key"), base_url=self.api["base_url"],
                               cache_dir=self.api_cache)
            path = client.cutout(self.api["simulation"], self.snapshot, int(subhalo_id), PIPELINE_FIELDS)
            data = read_cutout(path, header=self.header)
            return {k: data[k] for k in (types or ("stars", "dm", "gas"))}
        return load_subhalo_particles(self.base_path, self.snapshot, subhalo_id, types)


def _minisim_root(cfg: TNGMockConfig, out: Path) -> Path:
    from sim2obs.simgen.tng_minisim import coerce_minisim_config, minisim_config_dict

    full = minisim_config_dict(coerce_minisim_config(cfg.source.minisim))
    return out.parent / f"_tng_minisim-{stable_hash(full, 8)}"


def open_source(cfg: TNGMockConfig, out: Path, progress: bool = True) -> tuple[_Source, list[dict]]:
    """Prepare the source (write the mini-simulation if needed, check a basePath, reach the
    API) and return it with the catalogue records of the candidate subhalos: those passing the
    cheap catalogue pre-cut (total stellar mass above the aperture threshold, subhalo mass below
    the cluster cut). Records: ``subhalo_id``, ``pos`` (ckpc/h), ``log_msub`` (Msun)."""
    src, sel = cfg.source, cfg.selection
    if src.kind == "api":
        return _open_api(cfg, out)
    if src.kind == "minisim":
        from sim2obs.simgen.tng_minisim import write_minisim

        base = write_minisim(src.minisim, _minisim_root(cfg, out))
    else:
        base = Path(str(src.base_path)).expanduser()
    header = check_simulation(base, src.snapshot)
    import illustris_python as il

    subs = il.groupcat.loadSubhalos(str(base), src.snapshot, fields=_SUBHALO_FIELDS)
    h = float(header["HubbleParam"])
    m_star = np.asarray(subs["SubhaloMassType"])[:, 4] * 1e10 / h
    m_sub = np.asarray(subs["SubhaloMass"]) * 1e10 / h
    n_star = np.asarray(subs["SubhaloLenType"])[:, 4]
    with np.errstate(divide="ignore"):
        keep = (np.log10(m_star) >= sel.log_mstar_30kpc_min) & (np.log10(m_sub) < sel.log_msub_max) & \
               (n_star >= sel.min_star_particles)
    records = [{"subhalo_id": int(i), "pos": np.asarray(subs["SubhaloPos"][i], float).tolist(),
                "log_msub": float(np.log10(m_sub[i]))} for i in np.flatnonzero(keep)]
    return _Source("basepath", str(base), int(src.snapshot), header), records


def _open_api(cfg: TNGMockConfig, out: Path) -> tuple[_Source, list[dict]]:
    from sim2obs.simgen.tng_api import TNGWebAPI

    api = asdict(cfg.source.api)
    cache = api["cache_dir"] or str(out.parent / "_tng_api_cache")
    client = TNGWebAPI(api_key=api["api_key"], base_url=api["base_url"], cache_dir=cache)
    sim, snap = api["simulation"], int(cfg.source.snapshot)
    header = client.snapshot_header(sim, snap)
    header["MassTable"] = np.asarray(header["MassTable"], float).tolist()
    header.setdefault("OmegaBaryon", 0.0486)
    h = float(header["HubbleParam"])
    sel = cfg.selection
    if api["subhalo_ids"] is not None:
        ids = [int(i) for i in api["subhalo_ids"]]
    else:  # catalogue masses in the API are 1e10 Msun/h
        ids = client.search_subhalos(sim, snap, mass_stars__gt=10 ** sel.log_mstar_30kpc_min * h / 1e10,
                                     mass__lt=10 ** sel.log_msub_max * h / 1e10)
    records = []
    for i in ids:
        rec = client.subhalo(sim, snap, i)
        m_sub = float(rec["mass"]) * 1e10 / h
        if math.log10(max(m_sub, 1e-30)) >= sel.log_msub_max:
            continue
        records.append({"subhalo_id": int(i), "pos": [float(rec["pos_x"]), float(rec["pos_y"]), float(rec["pos_z"])],
                        "log_msub": math.log10(max(m_sub, 1e-30))})
    return _Source("api", None, snap, header, api, cache), records


# --------------------------------------------------------------------------------------------
# Selection pass (cached) and rendering
# --------------------------------------------------------------------------------------------
_SELECTION_FIELDS = {"stars": ["Coordinates", "Velocities", "Masses", "GFM_StellarFormationTime",
                                "GFM_InitialMass", "GFM_StellarPhotometrics"]}


def _select_chunk(source: _Source, records: list[dict], aperture_kpc: float) -> list[dict]:
    """Worker job: stellar mass within the 3D aperture (Msun) and non-wind star count per subhalo."""
    out = []
    for rec in records:
        parts = source.particles(rec["subhalo_id"], _SELECTION_FIELDS)
        stars = to_physical({"stars": parts["stars"]}, np.asarray(rec["pos"]), source.header)["stars"]
        r = np.linalg.norm(stars["pos"], axis=1)
        m = float(stars["mass"][r < aperture_kpc].sum())
        out.append({**rec, "log_mstar_30kpc": math.log10(m) if m > 0 else -np.inf, "n_star": int(len(r))})
    return out


def select_galaxies(cfg: TNGMockConfig, out: Path, source: _Source, records: list[dict],
                    cluster: Mapping[str, Any] | None, progress: bool) -> list[dict]:
    """The selected subhalos (sorted by id), cached in ``<out>/selection.json`` under a key of the
    source and selection settings, so a restarted run does not redo it."""
    from sim2obs.parallel import run_shards

    key = stable_hash({"source": asdict(cfg.source) | {"api": {**asdict(cfg.source.api), "api_key": None}},
                       "selection": asdict(cfg.selection), "candidates": [r["subhalo_id"] for r in records],
                       "version": GENERATOR_VERSION})
    path = out / SELECTION_FILE
    if path.exists():
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                return cached["selected"]
        except (OSError, ValueError):
            pass
    chunk = max(1, int(cfg.shard_size))
    args = [(source, records[a:a + chunk], cfg.selection.aperture_kpc) for a in range(0, len(records), chunk)]
    measured = [r for part in run_shards(_select_chunk, args, cluster or {"kind": "local"},
                                         desc=f"select {cfg.name}", progress=progress) for r in part]
    sel = cfg.selection
    selected = [r for r in measured if r["log_mstar_30kpc"] >= sel.log_mstar_30kpc_min
                and r["n_star"] >= sel.min_star_particles]
    if sel.max_galaxies is not None and len(selected) > sel.max_galaxies:
        rng = np.random.default_rng(cfg.seed)
        pick = np.sort(rng.choice(len(selected), sel.max_galaxies, replace=False))
        selected = [selected[i] for i in pick]
    selected.sort(key=lambda r: r["subhalo_id"])
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"key": key, "n_candidates": len(records), "selected": selected}, indent=1)
    atomic_write(path, lambda f: f.write(text), mode="w")
    return selected


def render_shard(cfg_dict: dict, writer: GalaxySetWriter, index: int, source: _Source, galaxies: list[dict],
                 split: np.ndarray) -> dict[str, float]:
    """Worker job: mock the galaxies of shard ``index`` (every projection) and write the shard."""
    cfg = coerce_config(cfg_dict)
    t0 = time.perf_counter()
    schema = writer.schema
    per_object: list[dict] = []
    for rec in galaxies:
        parts = source.particles(rec["subhalo_id"])
        for los, obj in zip(cfg.projections, mock_galaxy(parts, np.asarray(rec["pos"]), source.header, cfg)):
            obj["catalog"].update({"id": rec["subhalo_id"] * 3 + int(los), "subhalo_id": rec["subhalo_id"],
                                   "projection": int(los), "snapshot": source.snapshot,
                                   "redshift": float(source.header["Redshift"]), "log_msub": rec["log_msub"]})
            per_object.append(obj)
    images = {s.name: np.stack([o["images"][s.name] for o in per_object]) for s in schema.stacks}
    catalog = {c.name: np.asarray([o["catalog"][c.name] for o in per_object], dtype=c.dtype) for c in schema.columns}
    writer.write_shard(index, images, catalog, split)
    return {"shard": index, "objects": len(per_object), "seconds": time.perf_counter() - t0}


def generate(cfg: Any, out: str | Path, cluster: Mapping[str, Any] | None = None, overwrite: bool = False,
             progress: bool = True, resolved_config: Mapping[str, Any] | None = None) -> Path:
    """Write the TNG mock set of ``cfg`` at directory ``out``; return its path. A complete set of
    the same build is returned as it is; a partial one is completed (missing shards only)."""
    cfg = coerce_config(cfg)
    cfg_dict = asdict(cfg)
    out = Path(out)
    source, records = open_source(cfg, out, progress=progress)
    selected = select_galaxies(cfg, out, source, records, cluster, progress)
    if not selected:
        raise Sim2obsValueError(f"no galaxy of the source passes the selection ({len(records)} candidates after "
                                "the catalogue cut); lower simgen.selection.log_mstar_30kpc_min?",
                                value=asdict(cfg.selection))
    n_proj = len(cfg.projections)
    public_cfg = {**cfg_dict, "source": {**cfg_dict["source"], "api": {**cfg_dict["source"]["api"], "api_key": None}}}
    build_key = stable_hash({"generator": GENERATOR_NAME, "version": GENERATOR_VERSION, "config": public_cfg,
                             "selected": [r["subhalo_id"] for r in selected]})
    writer = GalaxySetWriter(out, build_schema(cfg), len(selected) * n_proj, cfg.shard_size * n_proj, build_key)
    writer.prepare(overwrite=overwrite)
    if writer.is_complete():
        return out
    codes_gal, _ = assign_splits(len(selected), cfg.split, cfg.seed)
    codes = np.repeat(codes_gal, n_proj)
    args = []
    for i in writer.missing_shards():
        a, b = writer.shard_range(i)
        args.append((cfg_dict, writer, i, source, selected[a // n_proj:b // n_proj], codes[a:b]))
    provenance = {
        "generator": GENERATOR_NAME, "generator_version": GENERATOR_VERSION, "seed": cfg.seed, "config": public_cfg,
        "resolved_config": dict(resolved_config) if resolved_config is not None else None,
        "source": {"kind": source.kind, "base_path": source.base_path, "snapshot": source.snapshot,
                   "header": source.header},
        "n_candidates": len(records), "n_selected": len(selected),
    }
    writer.build(render_shard, args, cluster, cfg.name, provenance, progress=progress)
    return out
