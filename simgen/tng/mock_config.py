"""Settings of the TNG mock pipeline (:mod:`sim2obs.simgen.tng_mocks`; YAML:
``configs/simgen/tng.yaml``): the source, the selection, the maps, dust and summary statistics,
their validation (a bad value raises :class:`ConfigError` naming ``simgen.<key>``), and the
generator's constants."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sim2obs.config import coerce_dataclass
from sim2obs.errors import ConfigError
from sim2obs.simgen.tng.minisim_config import coerce_minisim_config, minisim_config_dict

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
    obj = coerce_dataclass(TNGMockConfig, cfg, "simgen")
    validate_config(obj)
    if obj.source.kind == "minisim":  # canonical: every mini-simulation key, defaults filled in
        # minisim_config_dict: every key (since minisim 1.1 the default node's set folder includes physics A)
        obj.source.minisim = minisim_config_dict(coerce_minisim_config(obj.source.minisim,
                                                                       prefix="simgen.source.minisim"))
    return obj


def image_sizes(cfg: TNGMockConfig) -> list[int]:
    """Side lengths (px) of the image stacks: the SPH resolution, then the re-binned ones."""
    return [int(cfg.image_px), *[int(n) for n in cfg.rebin_px]]
