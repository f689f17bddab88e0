"""Recipes that assemble the real galaxy sets of the benchmark tasks from survey data.

Each recipe: fetch the catalogues (through :mod:`sim2obs.download`) -> read them (:mod:`.catalogs`,
:mod:`.gz2_tables`) -> cross-match (:mod:`.crossmatch`) -> apply the paper's cuts (:mod:`.selection`)
-> fetch SDSS images (:mod:`.sdss_images`) -> write a galaxy set with ``kind: real``, the labels and
their uncertainties, and provenance (catalogue files with URLs, sizes, checksums and download
dates, the photometry query, every cut with its counts, the match radii and reports).

=====================  ==========================  ====================================================
recipe                 task                        sources
=====================  ==========================  ====================================================
``ml_ratio_gswlc``     ``ml_ratio``                GSWLC-2 + SDSS photometry + HyperLeda D25 (+ GZ2)
``metallicity_mpajhu`` ``metallicity``             MPA-JHU DR7 (info, O/H, mass) + SDSS photometry
``bt_simard``          ``bt_posterior``            Simard et al. 2011 table 1 (n_b = 4)
``gz2``                (morphology labels)         Galaxy Zoo 2 (Hart et al. 2016)
``cosmos_bt``          ``bt_posterior``            GalSim COSMOS/AEGIS RealGalaxyCatalog (:mod:`.cosmos`)
=====================  ==========================  ====================================================

Configs: one dataclass per recipe (defaults = the papers' choices), YAML in ``configs/data/``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from astropy import units as u
from astropy.table import Table

from sim2obs.download import Downloader
from sim2obs.errors import ConfigError
from sim2obs.galaxyset import ColumnSpec, StackSpec
from sim2obs.simgen.surveys import sdss_images as sdss
from sim2obs.simgen.surveys.realset import (PhotometryConfig, RealSetContent, SourceFile, float_column,
                                            read_photometry, scratch_stack, sky_join)

C = ColumnSpec
_PHOTO_COLUMNS = ("p.objID AS objid, p.ra, p.dec, p.run, p.rerun, p.camcol, p.field, "
                  "p.modelMag_u, p.modelMag_g, p.modelMag_r, p.modelMag_i, p.modelMag_z, "
                  "p.modelMagErr_g, p.modelMagErr_i, p.extinction_g, p.extinction_i, p.petroMag_r, p.petroR90_r")


def _split() -> dict[str, float]:
    return {"train": 0.8, "val": 0.1, "test": 0.1}


@dataclass
class GZ2Source:
    """Galaxy Zoo 2 cross-match: ``enabled``, the table file, the match radius (arcsec) and
    which vote fractions become unconditional probabilities."""

    enabled: bool = True
    file: SourceFile = field(default_factory=lambda: SourceFile(
        "https://gz2hart.s3.amazonaws.com/gz2_hart16.csv.gz", "gz2/gz2_hart16.csv.gz", version="Hart et al. 2016"))
    match_arcsec: float = 1.0
    fraction_kind: str = "weighted_fraction"


@dataclass
class HyperLedaSource:
    """HyperLeda D25 (arcmin = 0.1 * 10**logd25) as a CSV with positions: ``ra_column`` in
    ``ra_unit`` (HyperLeda ``al2000`` is in hours), ``dec_column`` (deg), ``logd25_column``."""

    file: SourceFile = field(default_factory=lambda: SourceFile(
        "http://leda.univ-lyon1.fr/fG.cgi?n=meandata&c=o&of=1,leda,simbad&nra=l&nakd=1&d=objname,al2000,de2000,"
        "logd25&sql=logd25>0.6&ob=&a=csv[,]", "hyperleda/d25_gt_0.4arcmin.csv", version="HyperLeda meandata"))
    ra_column: str = "al2000"
    ra_unit: str = "hourangle"
    dec_column: str = "de2000"
    logd25_column: str = "logd25"
    match_arcsec: float = 3.0


@dataclass
class RecipeBase:
    """Keys every recipe has: ``name`` (set name; folder ``<data_dir>/<name>``), ``max_galaxies``
    (a random subset after the cuts; null = all), ``seed`` (subset and split), ``split``
    fractions, ``shard_size`` and ``images`` (:class:`~.sdss_images.SDSSImageConfig`)."""

    name: str = ""
    max_galaxies: int | None = None
    seed: int = 0
    split: dict[str, float] = field(default_factory=_split)
    shard_size: int = 1000
    images: sdss.SDSSImageConfig = field(default_factory=sdss.SDSSImageConfig)


@dataclass
class MLRatioGSWLCConfig(RecipeBase):
    """Dobbels et al. (2019) §2.1: GSWLC-2 M/L_g with the chi2, redshift and D25 cuts."""

    name: str = "ml_ratio_gswlc"
    gswlc: SourceFile = field(default_factory=lambda: SourceFile(
        "https://salims.pages.iu.edu/gswlc/GSWLC-X2.dat.gz", "gswlc/GSWLC-X2.dat.gz", version="GSWLC-X2"))
    photometry: PhotometryConfig = field(default_factory=lambda: PhotometryConfig(sql=(
        f"SELECT {_PHOTO_COLUMNS} FROM PhotoObj AS p JOIN SpecObj AS s ON s.bestObjID = p.objID "
        "WHERE s.class = 'GALAXY' AND s.z BETWEEN 0.01 AND 0.3 AND p.petroMag_r < 18 "
        "AND (p.objID % {n_chunks}) = {chunk}"), chunks=4))
    hyperleda: HyperLedaSource = field(default_factory=HyperLedaSource)
    gz2: GZ2Source = field(default_factory=GZ2Source)
    selection: dict[str, Any] = field(default_factory=dict)
    images: sdss.SDSSImageConfig = field(default_factory=lambda: sdss.SDSSImageConfig(bands=["g", "i"], stamp=96))


@dataclass
class MetallicityMPAJHUConfig(RecipeBase):
    """Wu & Boada (2019) §2: MPA-JHU DR7 oh_p50 with the paper's cuts; gri FITS stamps and the
    paper's 128 x 128 JPEG cutouts at 0.296"/px."""

    name: str = "metallicity_mpajhu"
    info: SourceFile = field(default_factory=lambda: SourceFile(
        "https://wwwmpa.mpa-garching.mpg.de/SDSS/DR7/Data/gal_info_dr7_v5_2.fit.gz", "mpajhu/gal_info_dr7_v5_2.fit.gz",
        version="MPA-JHU DR7 v5_2"))
    oh: SourceFile = field(default_factory=lambda: SourceFile(
        "https://wwwmpa.mpa-garching.mpg.de/SDSS/DR7/Data/gal_fiboh_dr7_v5_2.fits.gz",
        "mpajhu/gal_fiboh_dr7_v5_2.fits.gz", version="MPA-JHU DR7 v5_2"))
    mass: SourceFile = field(default_factory=lambda: SourceFile(
        "https://wwwmpa.mpa-garching.mpg.de/SDSS/DR7/Data/totlgm_dr7_v5_2b.fit.gz", "mpajhu/totlgm_dr7_v5_2b.fit.gz",
        version="MPA-JHU DR7 v5_2b"))
    photometry: PhotometryConfig = field(default_factory=lambda: PhotometryConfig(sql=(
        f"SELECT {_PHOTO_COLUMNS}, s.rChi2 AS rchi2 FROM PhotoObj AS p JOIN SpecObj AS s ON s.bestObjID = p.objID "
        "WHERE s.class = 'GALAXY' AND s.z > 0.02 AND s.zErr < 0.01 AND p.petroMag_r < 18 "
        "AND (p.objID % {n_chunks}) = {chunk}"), chunks=4))
    selection: dict[str, Any] = field(default_factory=dict)
    images: sdss.SDSSImageConfig = field(default_factory=lambda: sdss.SDSSImageConfig(
        source="both", bands=["g", "r", "i"], stamp=96))


@dataclass
class BTSimardConfig(RecipeBase):
    """GaMPEN §3 labels: Simard et al. (2011) table 1 (n_b = 4) B/T, R_e and flux in r."""

    name: str = "bt_simard"
    simard: SourceFile = field(default_factory=lambda: SourceFile(
        "https://vizier.cds.unistra.fr/viz-bin/asu-fits?-source=J/ApJS/196/11/table1&-out.all&-out.add=_RA,_DE"
        "&-out.max=unlimited", "simard2011/table1.fits", version="J/ApJS/196/11 table1"))
    selection: dict[str, Any] = field(default_factory=dict)
    images: sdss.SDSSImageConfig = field(default_factory=lambda: sdss.SDSSImageConfig(bands=["g", "r"], stamp=64))


@dataclass
class GZ2Config(RecipeBase):
    """Galaxy Zoo 2 morphology labels (37 vote fractions and unconditional probabilities)."""

    name: str = "gz2"
    gz2: GZ2Source = field(default_factory=GZ2Source)
    images: sdss.SDSSImageConfig = field(default_factory=lambda: sdss.SDSSImageConfig(bands=["g", "r", "i"], stamp=96))


# --------------------------------------------------------------------------------------------
# Catalogue stages: config + cached files -> selected Table (+ provenance)
# --------------------------------------------------------------------------------------------
def _catalog_remotes_ml(cfg: MLRatioGSWLCConfig) -> list:
    out = [cfg.gswlc.remote("GSWLC-2"), *cfg.photometry.remotes(), cfg.hyperleda.file.remote("HyperLeda D25")]
    return out + ([cfg.gz2.file.remote("Galaxy Zoo 2")] if cfg.gz2.enabled else [])


def _read_hyperleda(path, src: HyperLedaSource) -> Table:
    from sim2obs.simgen.surveys.catalogs import read_any_table

    t = read_any_table(path)
    t.rename_columns(t.colnames, [c.strip().lower() for c in t.colnames])
    for need in (src.ra_column, src.dec_column, src.logd25_column):
        if need.lower() not in t.colnames:
            from sim2obs.errors import DataFormatError

            raise DataFormatError(path, need, f"missing column of the HyperLeda table (found: {t.colnames[:12]})")
    ra = (float_column(t, src.ra_column.lower()) * u.Unit(src.ra_unit)).to_value(u.deg)
    out = Table({"ra": ra, "dec": float_column(t, src.dec_column.lower()),
                 "d25_arcmin": 0.1 * 10.0 ** float_column(t, src.logd25_column.lower())})
    out["ra"].unit = out["dec"].unit = u.deg
    return out


def _gz2_join(table: Table, src: GZ2Source, path, info: dict) -> Table:
    from sim2obs.simgen.surveys.gz2_tables import fraction_columns, probability_columns, read_gz2

    gz2 = read_gz2(path, kind=src.fraction_kind)
    keep = ["ra", "dec", *fraction_columns(src.fraction_kind), *probability_columns()]
    matched, info["gz2_match"] = sky_join(table, gz2[keep], src.match_arcsec, "gz2", ("sample", "gz2"))
    return matched


def _sample_ml(cfg: MLRatioGSWLCConfig, paths: list, info: dict) -> Table:
    from sim2obs.simgen.surveys.catalogs import read_gswlc
    from sim2obs.simgen.surveys.selection import MLSampleConfig, select_ml_sample

    n_phot = cfg.photometry.chunks
    gswlc = read_gswlc(paths[0])
    phot = read_photometry(paths[1:1 + n_phot])
    table, info["photometry_match"] = sky_join(gswlc, phot, cfg.photometry.match_arcsec, "sdss", ("gswlc", "sdss"))
    leda = _read_hyperleda(paths[1 + n_phot], cfg.hyperleda)
    table, info["hyperleda_match"] = sky_join(table, leda, cfg.hyperleda.match_arcsec, "leda", ("sample", "leda"))
    if cfg.gz2.enabled:
        table = _gz2_join(table, cfg.gz2, paths[2 + n_phot], info)
    return select_ml_sample(table, MLSampleConfig(**cfg.selection))


def _sample_metallicity(cfg: MetallicityMPAJHUConfig, paths: list, info: dict) -> Table:
    from sim2obs.simgen.surveys.catalogs import read_mpajhu
    from sim2obs.simgen.surveys.selection import MetallicitySampleConfig, select_metallicity_sample

    mpa = read_mpajhu(*paths[:3])
    phot = read_photometry(paths[3:])
    table, info["photometry_match"] = sky_join(mpa, phot, cfg.photometry.match_arcsec, "sdss", ("mpajhu", "sdss"))
    return select_metallicity_sample(table, MetallicitySampleConfig(**cfg.selection))


def _sample_simard(cfg: BTSimardConfig, paths: list, info: dict) -> Table:
    from sim2obs.simgen.surveys.catalogs import read_simard
    from sim2obs.simgen.surveys.selection import SimardBTConfig, select_simard_bt

    return select_simard_bt(read_simard(paths[0]), SimardBTConfig(**cfg.selection))


def _sample_gz2(cfg: GZ2Config, paths: list, info: dict) -> Table:
    from sim2obs.simgen.surveys.gz2_tables import probability_columns, read_gz2

    table = read_gz2(paths[0], kind=cfg.gz2.fraction_kind)
    ok = np.ones(len(table), dtype=bool)
    for c in probability_columns():
        ok &= ~np.ma.getmaskarray(table[c])
    info["gz2_rows_without_complete_votes"] = int((~ok).sum())
    return table[ok]


# --------------------------------------------------------------------------------------------
# Label columns per recipe
# --------------------------------------------------------------------------------------------
def _gz2_columns(table: Table, kind: str) -> dict[ColumnSpec, np.ndarray]:
    from sim2obs.simgen.surveys.gz2_tables import answer_stems

    out = {}
    for stem in answer_stems():
        out[C(f"{stem}_{kind}", "float64", "", f"GZ2 within-question vote fraction ({kind})")] = \
            float_column(table, f"{stem}_{kind}")
        out[C(f"{stem}_prob", "float64", "", "GZ2 unconditional answer probability")] = float_column(table, f"{stem}_prob")
    return out


def _photometry_columns(table: Table, bands: str) -> dict[ColumnSpec, np.ndarray]:
    out = {}
    for b in bands:
        mag = float_column(table, f"modelmag_{b}")
        if f"extinction_{b}" in table.colnames:
            mag = mag - np.nan_to_num(float_column(table, f"extinction_{b}"))
        out[C(f"mag_{b}", "float64", "mag", f"SDSS model magnitude {b} (AB), Galactic-extinction corrected "
              "where the photometry gives extinction")] = mag
    return out


def _columns_ml(cfg: MLRatioGSWLCConfig, t: Table) -> dict[ColumnSpec, np.ndarray]:
    from sim2obs.simgen.surveys.selection import cosmology

    z = float_column(t, "z")
    cosmo = cosmology(cfg.selection.get("cosmology", "Planck18"))
    kpc_per_arcsec = cosmo.kpc_proper_per_arcmin(z).to_value(u.kpc / u.arcsec)
    cols = {
        C("redshift", "float64", "", "spectroscopic redshift (GSWLC-2)"): z,
        C("luminosity_distance_mpc", "float64", "Mpc", "luminosity distance"): float_column(t, "lum_distance_mpc"),
        C("pixel_scale_arcsec", "float64", "arcsec", "pixel size on the sky"): np.full(len(t), sdss.SDSS_PIXEL_SCALE),
        C("pixel_scale_kpc", "float64", "kpc", "pixel size at the galaxy (proper kpc)"): sdss.SDSS_PIXEL_SCALE * kpc_per_arcsec,
        C("log_mstar", "float64", "dex(solMass)", "GSWLC-2 SED stellar mass", error="log_mstar_err"): float_column(t, "logmstar"),
        C("log_mstar_err", "float64", "dex", "1-sigma error of log_mstar"): float_column(t, "logmstar_err"),
        C("lum_g", "float64", "solLum", "g luminosity from the model magnitude"): float_column(t, "lum_g"),
        C("lum_i", "float64", "solLum", "i luminosity from the model magnitude"): float_column(t, "lum_i"),
        C("ml_g", "float64", "solMass / solLum", "stellar M/L_g (GSWLC-2 mass / L_g)", error="ml_g_err"):
            float_column(t, "ml_g"),
        C("ml_g_err", "float64", "solMass / solLum", "1-sigma uncertainty of ml_g"): float_column(t, "ml_g_err"),
        C("d25_arcmin", "float64", "arcmin", "HyperLeda D25"): float_column(t, "d25_arcmin"),
        C("chi2_sed", "float64", "", "GSWLC-2 SED-fit reduced chi2"): float_column(t, "chi2_r"),
    }
    cols.update(_photometry_columns(t, "gi"))
    if cfg.gz2.enabled:
        cols.update(_gz2_columns(t, cfg.gz2.fraction_kind))
    return cols


def _columns_metallicity(cfg: MetallicityMPAJHUConfig, t: Table) -> dict[ColumnSpec, np.ndarray]:
    cols = {
        C("redshift", "float64", "", "spectroscopic redshift (MPA-JHU)"): float_column(t, "z"),
        C("oh12", "float64", "dex", "12 + log(O/H), MPA-JHU median (oh_p50)", error="oh12_err"): float_column(t, "oh12"),
        C("oh12_err", "float64", "dex", "(oh_p84 - oh_p16) / 2"): float_column(t, "oh12_err"),
        C("oh12_p16", "float64", "dex", "MPA-JHU 16th percentile"): float_column(t, "oh_p16"),
        C("oh12_p84", "float64", "dex", "MPA-JHU 84th percentile"): float_column(t, "oh_p84"),
        C("log_mstar", "float64", "dex(solMass)", "MPA-JHU total stellar mass (lgm_tot_p50)"): float_column(t, "lgm_tot_p50"),
        C("petro_mag_r", "float64", "mag", "SDSS Petrosian r magnitude"): float_column(t, "petromag_r"),
    }
    cols.update(_photometry_columns(t, "ugriz"))
    return cols


def _columns_simard(cfg: BTSimardConfig, t: Table) -> dict[ColumnSpec, np.ndarray]:
    b = cfg.selection.get("band", "r")
    cols = {
        C("redshift", "float64", "", "spectroscopic redshift (Simard et al. 2011)"): float_column(t, "z"),
        C(f"bt_{b}", "float64", "", f"bulge-to-total ratio in {b} (Simard n_b = 4)", error=f"bt_{b}_err"):
            float_column(t, f"bt_{b}"),
        C(f"bt_{b}_err", "float64", "", f"1-sigma error of bt_{b}"): float_column(t, f"bt_{b}_err"),
        C(f"r_e_{b}", "float64", "arcsec", f"half-light semi-major axis in {b} (Rhl / Scale)"): float_column(t, f"r_e_{b}"),
        C(f"flux_{b}", "float64", "nanomaggy", f"total {b} flux of the bulge + disk fit"): float_column(t, f"flux_{b}"),
    }
    if f"flux_{b}_err" in t.colnames:
        spec = C(f"flux_{b}", "float64", "nanomaggy", f"total {b} flux of the bulge + disk fit", error=f"flux_{b}_err")
        cols = {(spec if k.name == f"flux_{b}" else k): v for k, v in cols.items()}
        cols[C(f"flux_{b}_err", "float64", "nanomaggy", f"1-sigma error of flux_{b}")] = float_column(t, f"flux_{b}_err")
    return cols


def _columns_gz2(cfg: GZ2Config, t: Table) -> dict[ColumnSpec, np.ndarray]:
    return _gz2_columns(t, cfg.gz2.fraction_kind)


@dataclass(frozen=True)
class Recipe:
    """A real-set recipe: its config class, the catalogue files it needs, the stage that reads,
    matches and selects them, and the label columns it writes."""

    name: str
    task: str
    description: str
    config_class: type
    catalog_remotes: Callable[[Any], list]
    sample: Callable[[Any, list, dict], Table]
    columns: Callable[[Any, Table], dict]
    sources: Callable[[Any], dict] = lambda cfg: {}


def _versions(*names: str) -> Callable[[Any], dict]:
    def get(cfg) -> dict:
        out = {}
        for n in names:
            src = getattr(cfg, n)
            src = getattr(src, "file", src)
            if isinstance(src, SourceFile):
                out[n] = {"version": src.version, "url": src.url}
            elif isinstance(src, PhotometryConfig):
                out[n] = {"release": src.release, "url": src.url, "sql": src.sql, "chunks": src.chunks}
        return out
    return get


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("ml_ratio_gswlc", "ml_ratio", "Dobbels et al. 2019 §2.1: GSWLC-2 M/L_g, chi2 < 5, 0.01 < z < 0.3, "
           "D25 > 0.4' (HyperLeda), GZ2 labels; SDSS g, i stamps", MLRatioGSWLCConfig, _catalog_remotes_ml,
           _sample_ml, _columns_ml, _versions("gswlc", "photometry", "hyperleda", "gz2")),
    Recipe("metallicity_mpajhu", "metallicity", "Wu & Boada 2019 §2: MPA-JHU DR7 oh_p50 with rChi2, magnitude, "
           "colour, z, z_err and petroMag_r < 18 cuts; SDSS gri stamps + 128x128 JPEG at 0.296\"/px",
           MetallicityMPAJHUConfig,
           lambda c: [c.info.remote("MPA-JHU gal_info"), c.oh.remote("MPA-JHU gal_fiboh"),
                      c.mass.remote("MPA-JHU totlgm"), *c.photometry.remotes()],
           _sample_metallicity, _columns_metallicity, _versions("info", "oh", "mass", "photometry")),
    Recipe("bt_simard", "bt_posterior", "GaMPEN §3: Simard et al. 2011 n_b = 4 B/T, R_e, flux (r), z < 0.25; "
           "SDSS g, r stamps", BTSimardConfig, lambda c: [c.simard.remote("Simard et al. 2011 table 1")],
           _sample_simard, _columns_simard, _versions("simard")),
    Recipe("gz2", "ml_ratio (morphology)", "Galaxy Zoo 2 (Hart et al. 2016): 37 vote fractions and unconditional "
           "probabilities; SDSS gri stamps", GZ2Config, lambda c: [c.gz2.file.remote("Galaxy Zoo 2")],
           _sample_gz2, _columns_gz2, _versions("gz2")),
)}


def check_recipe_config(recipe: Recipe, cfg: Any) -> None:
    """Refuse unusable settings before any download, naming the key."""
    sdss.check_config(cfg.images, "images")
    if cfg.max_galaxies is not None and cfg.max_galaxies < 1:
        raise ConfigError("max_galaxies", "must be >= 1 or null", value=cfg.max_galaxies)
    if not cfg.split or abs(sum(cfg.split.values()) - 1.0) > 1e-6 or min(cfg.split.values()) < 0:
        raise ConfigError("split", "fractions must be non-negative and sum to 1", value=dict(cfg.split))
    if cfg.shard_size < 1:
        raise ConfigError("shard_size", "must be >= 1", value=cfg.shard_size)
    for key in ("photometry", "hyperleda", "gz2"):
        sub = getattr(cfg, key, None)
        radius = getattr(sub, "match_arcsec", None)
        if radius is not None and not radius > 0:
            raise ConfigError(f"{key}.match_arcsec", "must be positive (arcsec)", value=radius)
    if recipe.task == "bt_posterior" and "r" not in cfg.images.bands and sdss.uses_fits(cfg.images):
        raise ConfigError("images.bands", "bt_posterior reads the r band", value=list(cfg.images.bands))


def image_content(cfg: Any, table: Table, dl: Downloader, scratch: Path | None = None
                  ) -> tuple[dict[StackSpec, np.ndarray], dict, np.ndarray]:
    """The image stacks of the selected rows (disk-backed in ``scratch`` when large), per-object
    image columns and the ``ok`` mask."""
    im = cfg.images
    n = len(table)
    stacks: dict[StackSpec, np.ndarray] = {}
    cols: dict[ColumnSpec, np.ndarray] = {}
    ok = np.ones(len(table), dtype=bool)
    if sdss.uses_fits(im):
        out = scratch_stack((n, len(im.bands), im.stamp, im.stamp), scratch, "image")
        images, extra, ok = sdss.fits_stamps(dl, im, table, out=out)
        stacks[StackSpec("image", tuple(im.bands), im.stamp, im.stamp, unit="nanomaggy",
                         pixel_scale_arcsec=sdss.SDSS_PIXEL_SCALE,
                         description="SDSS frame stamp (Cutout2D, frame WCS), residual background subtracted")] = images
        for b in im.bands:
            cols[C(f"sky_sigma_{b}", "float64", "nanomaggy", f"frame noise per pixel in {b}")] = extra[f"sky_sigma_{b}"]
            cols[C(f"background_{b}", "float64", "nanomaggy", f"residual background removed in {b}")] = extra[f"background_{b}"]
            if im.psf_width:
                cols[C(f"psf_fwhm_{b}", "float64", "arcsec", f"PSF FWHM in {b} (psField PSF_WIDTH)")] = extra[f"psf_fwhm_{b}"]
        for k in ("run", "camcol", "field"):
            cols[C(k, "int64", "", f"SDSS imaging {k} of the frames")] = np.asarray(extra[k], dtype=np.int64)
        # NaN marks an object whose stamp failed: the writer leaves rows with NaN out
        cols[C("edge_fraction", "float64", "", "fraction of the stamp off the frame (set to 0)")] = \
            np.where(ok, extra["edge_fraction"], np.nan)
    if sdss.uses_jpeg(im):
        out = scratch_stack((n, 3, im.jpeg_size, im.jpeg_size), scratch, "jpeg")
        jpeg = sdss.jpeg_cutouts(dl, im, np.asarray(table["ra"]), np.asarray(table["dec"]), out=out)
        stacks[StackSpec("jpeg", sdss.JPEG_CHANNELS, im.jpeg_size, im.jpeg_size, unit="",
                         pixel_scale_arcsec=float(im.jpeg_scale),
                         description="SDSS SkyServer ImgCutout gri composite (R, G, B = i, r, g), 0..1")] = jpeg
    return stacks, cols, ok


def recipe_content(recipe: Recipe, cfg: Any, table: Table, dl: Downloader, scratch: Path | None = None
                   ) -> RealSetContent:
    """Images and columns of the selected ``table``; rows whose images failed get NaN in
    ``edge_fraction`` and are left out when the set is written."""
    stacks, image_cols, ok = image_content(cfg, table, dl, scratch)
    ids = np.asarray(np.ma.filled(table["objid"], -1), dtype=np.int64)
    cols = {C("id", "int64", "", "SDSS photometric objID"): ids,
            C("ra", "float64", "deg", "right ascension (J2000)"): float_column(table, "ra"),
            C("dec", "float64", "deg", "declination (J2000)"): float_column(table, "dec")}
    cols.update(recipe.columns(cfg, table))
    cols.update(image_cols)
    content = RealSetContent(stacks, cols)
    content.provenance["n_dropped_images"] = int((~ok).sum())
    content.provenance["images"] = asdict(cfg.images)
    return content
