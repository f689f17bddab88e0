"""A fully real B/T set: HST COSMOS (or AEGIS) galaxies with bulge + disk labels, seen from the ground.

Each galaxy of a GalSim RealGalaxyCatalog (:mod:`.realgal`) is drawn with ``galsim.RealGalaxy`` (the
HST image deconvolved by its own PSF) into a chosen ground-based PSF, pixel scale and noise, and
written as a ``kind: real`` galaxy set that the ``bt_posterior`` task reads unchanged: an ``image``
stack with one channel named ``band`` and the columns ``bt_<band>``, ``r_e_<band>`` (arcsec) and
``flux_<band>`` (nanomaggies).

Labels. With GalSim's parametric-fit table (COSMOS): B/T from ``bulgefit`` (de Vaucouleurs + exponential;
:func:`~.realgal.bulgefit_components`) and R_e the radius of the circle holding half the light of that
fit before any PSF (the definition the GalSim generator uses for ``r_e_<band>``). Without it (AEGIS):
our own bulge + disk fit of the HST stamp (:mod:`.bdfit`), recorded as the label source. The flux label
is the catalogue magnitude ``MAG`` (AB, HST filter) in nanomaggies, and the galaxy is drawn with exactly
that total flux, so image and label agree; the HST filter (F814W for COSMOS) is recorded, while the
labels carry ``band`` in their names so that a task reading r-band labels runs on the set.

Observing conditions. ``preset="hsc"``: 0.168"/px, Kolmogorov seeing FWHM uniform in 0.6-0.8", sky
noise 0.0013 nanomaggy/px (the HSC-Wide r-band 5-sigma point-source depth of about 26.0 mag (Aihara
et al. 2018) spread over the ~39 px noise-equivalent area of a 0.7" PSF). ``preset="sdss"``: 0.396"/px,
FWHM uniform in 1.2-1.6" (median 1.4"), 0.028 nanomaggy/px (the sky of the GalSim generator's SDSS-like
r band: 20.9 mag/arcsec^2, 900 e-/nanomaggy, 5 e- read noise). The HST noise carried by the real image
is whitened (``Image.whitenNoise``) and topped up with Gaussian noise to the target level.

Determinism: every galaxy's PSF and noise are seeded from (seed, IDENT), whatever the sharding.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from astropy.table import Table

from sim2obs.errors import ConfigError, DataFormatError
from sim2obs.galaxyset import ColumnSpec, GalaxySetSchema, GalaxySetWriter, StackSpec, assign_splits
from sim2obs.provenance import file_sha256, stable_hash
from sim2obs.simgen.surveys.realgal import read_real_galaxy_catalog

__all__ = ["PRESETS", "CosmosBTConfig", "find_catalog", "cosmos_labels", "build_cosmos_bt_set"]

BUILDER_NAME = "cosmos_bt"
BUILDER_VERSION = "1.0"
#: Ground-based observing presets (module docstring gives the sources).
PRESETS: dict[str, dict[str, Any]] = {
    "hsc": {"pixel_scale": 0.168, "psf": {"profile": "kolmogorov", "fwhm": [0.6, 0.8]},
            "noise": {"sky_sigma_nmgy": 0.0013}},
    "sdss": {"pixel_scale": 0.396, "psf": {"profile": "kolmogorov", "fwhm": [1.2, 1.6]},
             "noise": {"sky_sigma_nmgy": 0.028}},
}
_LABELS = ("auto", "bulgefit", "fit")


@dataclass
class CosmosBTConfig:
    """Settings of :func:`build_cosmos_bt_set`. ``pixel_scale``, ``psf``, ``noise``: null takes the
    preset's value (``psf``: ``{"profile": "kolmogorov"|"moffat", "fwhm": arcsec or [low, high],
    "moffat_beta": 3.5}``; ``noise``: ``{"sky_sigma_nmgy": ...}``). ``labels``: ``bulgefit`` (GalSim
    fits; needed for COSMOS), ``fit`` (our own fit), ``auto`` (bulgefit when the table is there).
    ``require_use_bulgefit``: keep only galaxies GalSim flags as better described by bulge + disk than
    by one Sersic profile. ``max_galaxies``: a random subset (``seed``). ``fit_max_nfev``: optimiser
    budget of the own fit."""

    preset: str = "hsc"
    pixel_scale: float | None = None
    psf: dict[str, Any] | None = None
    noise: dict[str, Any] | None = None
    stamp: int = 64
    band: str = "r"
    seed: int = 0
    split: dict[str, float] = field(default_factory=lambda: {"train": 0.7, "val": 0.15, "test": 0.15})
    labels: str = "auto"
    require_use_bulgefit: bool = False
    max_galaxies: int | None = None
    catalog_name: str | None = None
    shard_size: int = 256
    fit_max_nfev: int = 120

    def resolved(self) -> dict[str, Any]:
        """pixel_scale, psf and noise with the preset filled in, validated."""
        if self.preset not in PRESETS:
            raise ConfigError("preset", "unknown observing preset", value=self.preset, allowed=sorted(PRESETS))
        p = PRESETS[self.preset]
        out = {"pixel_scale": float(self.pixel_scale if self.pixel_scale is not None else p["pixel_scale"]),
               "psf": {**p["psf"], **(self.psf or {})}, "noise": {**p["noise"], **(self.noise or {})}}
        fwhm = out["psf"]["fwhm"]
        fwhm = [float(fwhm), float(fwhm)] if np.isscalar(fwhm) else [float(v) for v in fwhm]
        if len(fwhm) != 2 or not 0 < fwhm[0] <= fwhm[1]:
            raise ConfigError("psf.fwhm", "a positive FWHM (arcsec) or a [low, high] range", value=fwhm)
        out["psf"]["fwhm"] = fwhm
        if out["psf"]["profile"] not in ("kolmogorov", "moffat"):
            raise ConfigError("psf.profile", "unknown PSF profile", value=out["psf"]["profile"],
                              allowed=["kolmogorov", "moffat"])
        checks = (("pixel_scale", out["pixel_scale"], True), ("noise.sky_sigma_nmgy", out["noise"]["sky_sigma_nmgy"], False),
                  ("stamp", self.stamp, True), ("shard_size", self.shard_size, True))
        for key, value, strict in checks:
            if not (value > 0 if strict else value >= 0):
                raise ConfigError(key, "must be positive" if strict else "must be >= 0", value=value)
        if self.labels not in _LABELS:
            raise ConfigError("labels", "unknown label source", value=self.labels, allowed=list(_LABELS))
        return out


def _is_rgc_catalog(path: Path) -> bool:
    """Whether ``path`` is a FITS file whose first extension is a table with GAL_FILENAME."""
    from astropy.io import fits  # deferred: only the catalogue search needs it

    try:
        with fits.open(path, memmap=False) as hdul:
            return (len(hdul) > 1 and isinstance(hdul[1], fits.BinTableHDU)
                    and "GAL_FILENAME" in [n.upper() for n in hdul[1].columns.names])
    except (OSError, ValueError):
        return False


def find_catalog(catalog_dir: str | Path, name: str | None = None) -> Path:
    """The RealGalaxyCatalog file in ``catalog_dir`` (or ``catalog_dir`` itself if it is a file): the
    FITS table with a GAL_FILENAME column. Several catalogues (AEGIS has F606W and F814W): ``name`` picks one, else the F814W one."""
    p = Path(catalog_dir)
    if p.is_file():
        return p
    if not p.is_dir():
        raise DataFormatError(p, None, "no such folder (the RealGalaxyCatalog sample)")
    if name is not None:
        if not (p / name).exists():
            raise DataFormatError(p / name, None, "catalogue not found")
        return p / name
    cands = sorted(f for f in p.glob("*.fits") if _is_rgc_catalog(f))
    if len(cands) > 1:
        cands = [f for f in cands if "814" in f.name] or cands
    if len(cands) != 1:
        raise DataFormatError(p, "catalog_name", "cannot tell which RealGalaxyCatalog file to use; name one "
                              f"(found: {[f.name for f in cands] or 'none'})")
    return cands[0]


def _own_fit_labels(table: Table, catalog: Path, max_nfev: int) -> dict[str, np.ndarray]:
    import galsim  # deferred: galsim is a heavy import

    from sim2obs.simgen.surveys.bdfit import fit_bulge_disk

    rgc = galsim.RealGalaxyCatalog(str(catalog), dir=str(catalog.parent))
    index = {int(i): k for k, i in enumerate(rgc.ident)}
    out = {k: np.empty(len(table)) for k in ("bt", "r_e", "hlr_b", "hlr_d", "q_b", "q_d", "rchi2", "ok")}
    for j, ident in enumerate(np.asarray(table["ident"])):
        k = index[int(ident)]
        f = fit_bulge_disk(rgc.getGalImage(k).array, rgc.getPSFImage(k).array, float(rgc.pixel_scale[k]),
                           float(rgc.variance[k]), max_nfev=max_nfev)
        for key, value in (("bt", f.bt), ("r_e", f.r_e), ("hlr_b", f.hlr_bulge), ("hlr_d", f.hlr_disk),
                           ("q_b", f.q_bulge), ("q_d", f.q_disk), ("rchi2", f.rchi2), ("ok", f.converged)):
            out[key][j] = value
    return out


def cosmos_labels(catalog: Path, cfg: CosmosBTConfig) -> tuple[Table, dict[str, Any]]:
    """Read the catalogue, apply the cuts and attach the labels: a Table with ``ident, ra, dec, mag,
    bt, r_e, hlr_bulge, hlr_disk, q_bulge, q_disk, flux_nmgy`` (+ ``fit_dvc_btt, zphot`` with GalSim
    fits) and a report of the cuts and the label source."""
    table = read_real_galaxy_catalog(catalog)
    has_fits = bool(table.meta["has_fits"])
    source = cfg.labels if cfg.labels != "auto" else ("bulgefit" if has_fits else "fit")
    if source == "bulgefit" and not has_fits:
        raise DataFormatError(catalog, "_fits.fits", "labels='bulgefit' needs GalSim's parametric-fit table beside "
                              "the catalogue (COSMOS has it; use labels='fit' for a sample without)")
    report: dict[str, Any] = {"label_source": source, "n_catalog": len(table), "cuts": []}

    def cut(name: str, keep: np.ndarray, t: Table) -> Table:
        report["cuts"].append({"cut": name, "n_before": len(t), "n_after": int(keep.sum())})
        return t[keep]

    if cfg.max_galaxies is not None and len(table) > cfg.max_galaxies:
        pick = np.sort(np.random.default_rng(cfg.seed).choice(len(table), int(cfg.max_galaxies), replace=False))
        table = cut(f"random subset of {cfg.max_galaxies}", np.isin(np.arange(len(table)), pick), table)
    if source == "bulgefit":
        ok = np.asarray(table["bulgefit_ok"], dtype=bool)
        for c in ("bt_bulgefit", "r_e_arcsec"):
            ok &= ~np.ma.getmaskarray(table[c]) & np.isfinite(np.ma.filled(table[c], np.nan))
        table = cut("bulgefit converged (0 < fit_status[0] < 5) with finite B/T and R_e", ok, table)
        if cfg.require_use_bulgefit:
            table = cut("use_bulgefit == 1", np.asarray(table["use_bulgefit"]) == 1, table)
        labels = {"bt": np.asarray(table["bt_bulgefit"], float), "r_e": np.asarray(table["r_e_arcsec"], float),
                  "hlr_b": np.asarray(table["bulge_hlr_arcsec"], float), "hlr_d": np.asarray(table["disk_hlr_arcsec"], float),
                  "q_b": np.asarray(table["bulge_q"], float), "q_d": np.asarray(table["disk_q"], float)}
    else:
        labels = _own_fit_labels(table, catalog, cfg.fit_max_nfev)
        ok = np.isfinite(labels["bt"]) & np.isfinite(labels["r_e"])
        table = cut("own bulge + disk fit finite", ok, table)
        labels = {k: v[ok] for k, v in labels.items()}
    mag = np.ma.filled(np.ma.asarray(table["mag"], dtype=float), np.nan)
    ok = np.isfinite(mag) & (mag > 0)
    table = cut("catalogue magnitude present", ok, table)
    labels = {k: v[ok] for k, v in labels.items()}
    out = Table({"ident": np.asarray(table["ident"], np.int64), "ra": np.asarray(table["ra"], float),
                 "dec": np.asarray(table["dec"], float), "mag": mag[ok], "bt": labels["bt"], "r_e": labels["r_e"],
                 "hlr_bulge": labels["hlr_b"], "hlr_disk": labels["hlr_d"], "q_bulge": labels["q_b"],
                 "q_disk": labels["q_d"], "flux_nmgy": 10.0 ** (-0.4 * (mag[ok] - 22.5))})
    for c in ("fit_dvc_btt", "zphot"):
        if c in table.colnames and not np.ma.getmaskarray(table[c]).any():
            out[c] = np.asarray(table[c], float)
    report["n_selected"] = len(out)
    report["hst_band"] = sorted(set(np.asarray(table["band"]).tolist())) if "band" in table.colnames else []
    return out, report


def _schema(cfg: CosmosBTConfig, res: Mapping[str, Any], extra: list[str]) -> GalaxySetSchema:
    b, C = cfg.band, ColumnSpec
    cols = [C("id", "int64", "", "object id: the catalogue IDENT"),
            C("ra", "float64", "deg", "right ascension (J2000)"), C("dec", "float64", "deg", "declination (J2000)"),
            C(f"bt_{b}", "float64", "", "bulge-to-total flux ratio of the bulge (n=4) + disk (n=1) fit of the HST image"),
            C(f"r_e_{b}", "float64", "arcsec", "half-light radius of the bulge + disk fit: circular aperture, no PSF"),
            C(f"flux_{b}", "float64", "nanomaggy", "total flux drawn (catalogue HST magnitude)"),
            C(f"mag_{b}", "float64", "mag", "catalogue HST AB magnitude (MAG)"),
            C("bulge_hlr_arcsec", "float64", "arcsec", "bulge half-light radius (circularised)"),
            C("disk_hlr_arcsec", "float64", "arcsec", "disk half-light radius (circularised)"),
            C("bulge_q", "float64", "", "bulge axis ratio"), C("disk_q", "float64", "", "disk axis ratio"),
            C("pixel_scale_arcsec", "float64", "arcsec", "pixel size on the sky"),
            C(f"psf_fwhm_{b}", "float64", "arcsec", "FWHM of the ground-based PSF drawn"),
            C(f"sky_sigma_{b}", "float64", "nanomaggy", "background noise per pixel (target level)")]
    if "fit_dvc_btt" in extra:
        cols.append(C("fit_dvc_btt", "float64", "", "GalSim's B/T of the de Vaucouleurs + exponential fit"))
    if "zphot" in extra:
        cols.append(C("zphot", "float64", "", "COSMOS photometric redshift"))
    stack = StackSpec("image", (b,), cfg.stamp, cfg.stamp, unit="nanomaggy", pixel_scale_arcsec=res["pixel_scale"],
                      description="HST galaxy (galsim.RealGalaxy) in a ground-based PSF, pixel scale and noise")
    return GalaxySetSchema(stacks=(stack,), columns=tuple(cols), split_names=tuple(cfg.split))


def _object_seed(seed: int, ident: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(ident), 7]).generate_state(1)[0])


def render_shard(cfg_dict: dict, catalog: str, writer: GalaxySetWriter, index: int, rows: dict, split: np.ndarray) -> dict:
    """Worker job: draw the galaxies of shard ``index`` and write the shard atomically."""
    import galsim  # deferred: galsim is a heavy import

    cfg = CosmosBTConfig(**cfg_dict)
    res = cfg.resolved()
    t0 = time.perf_counter()
    rgc = galsim.RealGalaxyCatalog(catalog, dir=str(Path(catalog).parent))
    where = {int(i): k for k, i in enumerate(rgc.ident)}
    n = len(rows["ident"])
    images = np.empty((n, 1, cfg.stamp, cfg.stamp), dtype=np.float32)
    fwhms = np.empty(n)
    sigma = float(res["noise"]["sky_sigma_nmgy"])
    for j in range(n):
        seed = _object_seed(cfg.seed, rows["ident"][j])
        rng = np.random.default_rng(seed)
        lo, hi = res["psf"]["fwhm"]
        fwhms[j] = float(rng.uniform(lo, hi)) if hi > lo else lo
        if res["psf"]["profile"] == "moffat":
            psf = galsim.Moffat(beta=float(res["psf"].get("moffat_beta", 3.5)), fwhm=fwhms[j])
        else:
            psf = galsim.Kolmogorov(fwhm=fwhms[j])
        deviate = galsim.BaseDeviate(seed)
        gal = galsim.RealGalaxy(rgc, index=where[int(rows["ident"][j])], flux=float(rows["flux_nmgy"][j]), rng=deviate)
        final = galsim.Convolve(gal, psf)
        img = final.drawImage(nx=cfg.stamp, ny=cfg.stamp, scale=res["pixel_scale"])
        current = img.whitenNoise(final.noise)  # variance of the (now white) HST noise, nanomaggy^2
        if sigma**2 > current:
            img.addNoise(galsim.GaussianNoise(deviate, sigma=math.sqrt(sigma**2 - current)))
        images[j, 0] = img.array
    b = cfg.band
    catalog_cols = {"id": rows["ident"], "ra": rows["ra"], "dec": rows["dec"], f"bt_{b}": rows["bt"],
                    f"r_e_{b}": rows["r_e"], f"flux_{b}": rows["flux_nmgy"], f"mag_{b}": rows["mag"],
                    "bulge_hlr_arcsec": rows["hlr_bulge"], "disk_hlr_arcsec": rows["hlr_disk"],
                    "bulge_q": rows["q_bulge"], "disk_q": rows["q_disk"],
                    "pixel_scale_arcsec": np.full(n, res["pixel_scale"]), f"psf_fwhm_{b}": fwhms,
                    f"sky_sigma_{b}": np.full(n, sigma)}
    for c in ("fit_dvc_btt", "zphot"):
        if c in rows:
            catalog_cols[c] = rows[c]
    writer.write_shard(index, {"image": images}, catalog_cols, split)
    return {"shard": index, "objects": n, "seconds": time.perf_counter() - t0}


def build_cosmos_bt_set(catalog_dir: str | Path, out: str | Path, psf: Mapping[str, Any] | None = None,
                        pixel_scale: float | None = None, noise: Mapping[str, Any] | None = None, preset: str = "hsc",
                        stamp: int = 64, seed: int = 0, cluster: Mapping[str, Any] | None = None,
                        overwrite: bool = False, progress: bool = False, validate: bool = True, **options: Any) -> Path:
    """Build the real B/T set of ``catalog_dir`` (a RealGalaxyCatalog folder or file) at ``out``.

    Observing conditions: ``preset`` (``"hsc"`` or ``"sdss"``, see :data:`PRESETS`) with ``psf``,
    ``pixel_scale`` (arcsec/px) and ``noise`` overriding it; ``stamp`` pixels on a side; ``seed`` for PSF
    widths, noise and the split; further :class:`CosmosBTConfig` keys in ``options`` (``band``, ``split``,
    ``labels``, ``max_galaxies``, ``require_use_bulgefit``, ``catalog_name``, ...). ``cluster``: Dask
    cluster config (default synchronous, in-process). A complete set of the same build at ``out`` is
    kept; a partial one is completed. With ``validate`` the written set is opened with a full check.
    Returns ``out``.
    """
    cfg = CosmosBTConfig(preset=preset, pixel_scale=pixel_scale, psf=dict(psf) if psf else None,
                         noise=dict(noise) if noise else None, stamp=int(stamp), seed=int(seed), **options)
    res = cfg.resolved()
    catalog = find_catalog(catalog_dir, cfg.catalog_name)
    labels, report = cosmos_labels(catalog, cfg)
    if len(labels) == 0:
        raise DataFormatError(catalog, None, "no galaxy passed the cuts (see the label report)")
    cfg_dict = asdict(cfg)
    # Catalogue tables are hashed; the (multi-GB for COSMOS 25.2) image files are identified by size.
    tables = {catalog, *(f for f in catalog.parent.glob(catalog.stem + "_*.fits") if "image" not in f.name.lower())}
    sources = {p.name: (file_sha256(p) if p in tables else {"bytes": p.stat().st_size})
               for p in sorted(catalog.parent.glob("*.fits"))}
    build_key = stable_hash({"builder": BUILDER_NAME, "version": BUILDER_VERSION, "config": cfg_dict, "sources": sources})
    extra = [c for c in ("fit_dvc_btt", "zphot") if c in labels.colnames]
    writer = GalaxySetWriter(Path(out), _schema(cfg, res, extra), len(labels), cfg.shard_size, build_key)
    writer.prepare(overwrite=overwrite)
    if not writer.is_complete():
        codes, _ = assign_splits(len(labels), cfg.split, cfg.seed)
        cols = {c: np.asarray(labels[c]) for c in labels.colnames}
        args = []
        for i in writer.missing_shards():
            a, b = writer.shard_range(i)
            args.append((cfg_dict, str(catalog), writer, i, {k: v[a:b] for k, v in cols.items()}, codes[a:b]))
        provenance = {"kind": "real", "generator": BUILDER_NAME, "generator_version": BUILDER_VERSION,
                      "source": "GalSim RealGalaxyCatalog", "catalog": catalog.name, "source_sha256": sources,
                      "seed": cfg.seed, "config": cfg_dict, "observing": res, "labels": report}
        writer.build(render_shard, args, cluster or {"kind": "synchronous"}, f"{BUILDER_NAME}_{catalog.stem}",
                     provenance, progress=progress)
    if validate:
        from sim2obs.galaxyset import open_galaxy_set

        open_galaxy_set(out, check="full").close()
    return Path(out)
