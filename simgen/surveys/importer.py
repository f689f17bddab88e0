"""``sim2obs data import``: your own images and catalogue into a ``kind: real`` galaxy set.

Images: a folder of FITS cutouts (one per galaxy, named by a template such as ``{id}.fits`` or by a
catalogue column), one FITS cube ``(N, [C,] H, W)``, an HDF5 dataset or a ``.npy`` stack of that
shape (in catalogue row order). Catalogue: anything astropy reads (FITS, CSV, ECSV, VOTable, ...)
with an id column, label columns (converted to the units you name, with astropy units), optional
error and extra columns, and either a split column (``train``/``val``/``test``/...) or split
fractions. Stamps are cropped or zero-padded about the centre (``fit: crop``) or resampled with
flux conservation (``fit: resample``, scipy ``zoom``) to ``stamp`` pixels. Every error names the
file, and the column and row where there is one.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from sim2obs.errors import ConfigError, DataFormatError
from sim2obs.galaxyset import ColumnSpec, StackSpec
from sim2obs.provenance import file_sha256
from sim2obs.simgen.surveys.realset import RealSetContent, write_real_set

log = logging.getLogger(__name__)

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz")


@dataclass
class ImportConfig:
    """What to import (keys of ``sim2obs data import``).

    ``images``: folder, FITS cube, ``.h5``/``.hdf5`` or ``.npy``; ``catalog``: the table;
    ``id_column``: unique integer ids; ``labels``: {column: unit} ("" keeps the file's unit);
    ``errors``: {label: error column} (same unit as the label); ``columns``: more columns to copy
    (their file units kept); ``split_column`` or ``split`` fractions with ``seed``; ``stamp``
    (None: keep the size) and ``fit`` (``crop`` | ``resample``); ``bands``: channel names;
    ``image_unit`` (converted from the FITS ``BUNIT`` when both are known); ``pixel_scale``
    (arcsec/px); ``file_template`` (folder mode: file name of a galaxy, ``{id}`` filled in) or
    ``file_column``; ``hdf5_dataset``; ``hdu`` (FITS HDU of the image, None: first with data)."""

    images: str = ""
    catalog: str = ""
    name: str = ""
    id_column: str = "id"
    labels: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)
    split_column: str | None = None
    split: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1})
    seed: int = 0
    stamp: int | None = None
    fit: str = "crop"
    bands: list[str] | None = None
    image_unit: str = ""
    pixel_scale: float | None = None
    file_template: str = "{id}.fits"
    file_column: str | None = None
    hdf5_dataset: str = "images"
    hdu: int | None = None
    shard_size: int = 1000


def _check(cfg: ImportConfig) -> None:
    for key in ("images", "catalog", "name"):
        if not getattr(cfg, key):
            raise ConfigError(key, "is required")
    if cfg.fit not in ("crop", "resample"):
        raise ConfigError("fit", "unknown stamp fitting", value=cfg.fit, allowed=["crop", "resample"])
    if cfg.stamp is not None and cfg.stamp < 4:
        raise ConfigError("stamp", "must be >= 4 pixels", value=cfg.stamp)
    for label, err in cfg.errors.items():
        if label not in cfg.labels:
            raise ConfigError(f"errors.{label}", "names a column that is not a label", value=label,
                              allowed=sorted(cfg.labels))


# --------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------
def read_catalog(path: str | Path) -> Table:
    """Any table astropy reads (format from the suffix, else guessed)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, None, "catalogue file not found")
    try:
        return Table.read(path, format="ascii.csv") if path.suffix.lower() == ".csv" else Table.read(path)
    except Exception as err:  # noqa: BLE001 - astropy raises many kinds
        raise DataFormatError(path, None, f"astropy cannot read this table ({type(err).__name__}: {err})") from None


def _column(table: Table, path: Path, name: str) -> Any:
    if name not in table.colnames:
        raise DataFormatError(path, name, f"column missing (found: {table.colnames[:25]})")
    return table[name]


def _finite(values: np.ndarray, path: Path, name: str) -> np.ndarray:
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise DataFormatError(path, f"{name}, row {int(bad[0])}", f"value is missing or not finite "
                              f"({len(bad)} row(s) in all)")
    return values


def _as_float(table: Table, path: Path, name: str, unit: str | None) -> tuple[np.ndarray, str]:
    """Column ``name`` as float64 in ``unit`` (converted from the file's unit, or assigned when the
    file has none); masked or non-finite values raise naming column and row."""
    col = _column(table, path, name)
    try:
        values = np.ma.filled(np.ma.asarray(col, dtype=np.float64), np.nan)
    except (TypeError, ValueError):
        bad = next(i for i, v in enumerate(col) if not _is_number(v))
        raise DataFormatError(path, f"{name}, row {bad}", f"{col[bad]!r} is not a number") from None
    have = col.unit
    if unit:
        want = u.Unit(unit)
        if have is not None and have != u.dimensionless_unscaled:
            try:
                values = (values * have).to_value(want)
            except u.UnitConversionError:
                raise DataFormatError(path, name, f"unit {have} cannot be converted to {want}") from None
        return _finite(values, path, name), want.to_string()
    return _finite(values, path, name), "" if have is None else have.to_string()


def _is_number(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _ids(table: Table, path: Path, name: str) -> np.ndarray:
    col = _column(table, path, name)
    try:
        ids = np.asarray(np.ma.filled(col, -1)).astype(np.int64)
    except (TypeError, ValueError):
        raise DataFormatError(path, name, "ids must be integers") from None
    uniq, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][0]
        rows = np.flatnonzero(ids == dup)[:3].tolist()
        raise DataFormatError(path, f"{name}, rows {rows}", f"id {dup} is not unique")
    return ids


def _split_codes(table: Table, path: Path, name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    col = np.asarray(np.ma.filled(_column(table, path, name).astype(str), "")).astype(str)
    col = np.char.strip(col)
    empty = np.flatnonzero(col == "")
    if len(empty):
        raise DataFormatError(path, f"{name}, row {int(empty[0])}", "empty split name")
    seen = list(dict.fromkeys(col.tolist()))
    names = tuple([s for s in ("train", "val", "test") if s in seen] + sorted(s for s in seen if s not in ("train", "val", "test")))
    return np.array([names.index(v) for v in col], dtype=np.int8), names


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------
def _fits_image(path: Path, hdu: int | None) -> tuple[np.ndarray, fits.Header]:
    try:
        with fits.open(path, memmap=False) as hdul:
            pick = hdu if hdu is not None else next((i for i, h in enumerate(hdul) if getattr(h, "data", None) is not None
                                                     and h.is_image), None)
            if pick is None or pick >= len(hdul) or hdul[pick].data is None:
                raise DataFormatError(path, f"HDU {pick}", "no image data")
            return np.asarray(hdul[pick].data, dtype=np.float32), hdul[pick].header
    except (OSError, ValueError, EOFError) as err:
        raise DataFormatError(path, None, f"not a readable FITS image ({err})") from None


def _as_chw(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim == 3:
        return arr
    raise DataFormatError(path, None, f"a cutout must be (H, W) or (C, H, W); got shape {arr.shape}")


def load_images(cfg: ImportConfig, ids: np.ndarray, table: Table, cat_path: Path) -> tuple[list[np.ndarray], list[str], list[fits.Header]]:
    """One ``(C, H, W)`` array per catalogue row, the files read, and their FITS headers."""
    src = Path(cfg.images)
    if src.is_dir():
        names = (np.asarray(_column(table, cat_path, cfg.file_column)).astype(str) if cfg.file_column
                 else [cfg.file_template.format(id=int(i)) for i in ids])
        out, headers = [], []
        for row, name in enumerate(names):
            p = src / str(name).strip()
            if not p.is_file():
                where = f"{cfg.file_column or cfg.id_column}, row {row}"
                raise DataFormatError(cat_path, where, f"no cutout file {p} for id {int(ids[row])}")
            data, hdr = _fits_image(p, cfg.hdu)
            out.append(_as_chw(data, p))
            headers.append(hdr)
        return out, [str(src / str(n).strip()) for n in names], headers
    if not src.is_file():
        raise DataFormatError(src, None, "image folder or file not found")
    low = src.name.lower()
    headers: list[fits.Header] = []
    if low.endswith(FITS_SUFFIXES):
        stack, hdr = _fits_image(src, cfg.hdu)
        headers = [hdr]
    elif low.endswith((".h5", ".hdf5")):
        import h5py

        with h5py.File(src, "r") as f:
            if cfg.hdf5_dataset not in f:
                raise DataFormatError(src, cfg.hdf5_dataset, f"dataset missing (found: {list(f)[:10]})")
            stack = np.asarray(f[cfg.hdf5_dataset][()], dtype=np.float32)
    elif low.endswith(".npy"):
        stack = np.load(src, allow_pickle=False).astype(np.float32)
    else:
        raise DataFormatError(src, None, "unknown image file type (FITS cube, .h5/.hdf5 or .npy, or a folder of FITS)")
    if stack.ndim not in (3, 4):
        raise DataFormatError(src, None, f"a stack must be (N, H, W) or (N, C, H, W); got shape {stack.shape}")
    if len(stack) != len(ids):
        raise DataFormatError(src, None, f"{len(stack)} images but the catalogue {cat_path} has {len(ids)} rows "
                              "(the stack is read in catalogue order)")
    return [_as_chw(a, src) for a in stack], [str(src)], headers


def fit_stamp(img: np.ndarray, size: int, mode: str) -> np.ndarray:
    """``(C, H, W)`` -> ``(C, size, size)``: central crop / zero-pad (``crop``), or a cubic zoom
    scaled by the pixel-area ratio so that the total flux is kept (``resample``)."""
    c, h, w = img.shape
    if mode == "resample" and (h, w) != (size, size):
        from scipy.ndimage import zoom

        out = zoom(img.astype(np.float64), (1, size / h, size / w), order=3, grid_mode=True, mode="grid-constant")
        return (out * (h * w) / (size * size)).astype(np.float32)
    out = np.zeros((c, size, size), dtype=np.float32)
    y0, x0 = (h - size) // 2, (w - size) // 2
    sy, sx = max(y0, 0), max(x0, 0)
    dy, dx = max(-y0, 0), max(-x0, 0)
    hh, ww = min(h - sy, size - dy), min(w - sx, size - dx)
    out[:, dy:dy + hh, dx:dx + ww] = img[:, sy:sy + hh, sx:sx + ww]
    return out


def _image_scale(cfg: ImportConfig, headers: Sequence[fits.Header], src: str) -> float:
    """Factor from the FITS ``BUNIT`` to ``image_unit`` (1 when either is unknown)."""
    if not cfg.image_unit or not headers or not headers[0].get("BUNIT"):
        return 1.0
    have = str(headers[0]["BUNIT"]).strip()
    try:
        return float(u.Unit(have, parse_strict="raise").to(u.Unit(cfg.image_unit)))
    except (ValueError, u.UnitConversionError):
        raise DataFormatError(src, "BUNIT", f"image unit {have!r} cannot be converted to {cfg.image_unit!r}") from None


# --------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------
def import_set(cfg: ImportConfig, out: str | Path, overwrite: bool = False, progress: bool = False) -> Path:
    """Build the galaxy set ``cfg`` describes at ``out``; returns its path."""
    _check(cfg)
    cat_path = Path(cfg.catalog)
    table = read_catalog(cat_path)
    ids = _ids(table, cat_path, cfg.id_column)
    images, files, headers = load_images(cfg, ids, table, cat_path)
    shapes = {a.shape for a in images}
    size = cfg.stamp or max(max(s[1], s[2]) for s in shapes)
    channels = {s[0] for s in shapes}
    if len(channels) != 1:
        raise DataFormatError(files[0], None, f"cutouts have different numbers of channels: {sorted(channels)}")
    nc = channels.pop()
    bands = list(cfg.bands) if cfg.bands else [str(headers[0].get("FILTER", "")).strip() or "c0"] if nc == 1 and headers \
        else [f"c{k}" for k in range(nc)]
    if len(bands) != nc:
        raise ConfigError("bands", f"the images have {nc} channel(s)", value=bands)
    scale = _image_scale(cfg, headers, files[0])
    stack = np.stack([fit_stamp(a, size, cfg.fit) for a in images]) * np.float32(scale)
    bad = np.flatnonzero(~np.isfinite(stack.reshape(len(stack), -1)).all(axis=1))
    if len(bad):
        src = files[bad[0]] if len(files) == len(stack) else files[0]
        raise DataFormatError(src, f"image of row {int(bad[0])} (id {int(ids[bad[0]])})", "holds NaN/inf")
    pixel_scale = cfg.pixel_scale
    cols: dict[ColumnSpec, np.ndarray] = {ColumnSpec("id", "int64", "", f"id ({cfg.id_column})"): ids}
    for name, unit in cfg.labels.items():
        values, unit_text = _as_float(table, cat_path, name, unit)
        err = cfg.errors.get(name)
        cols[ColumnSpec(name, "float64", unit_text, "label", error=err)] = values
        if err:
            evalues, eunit = _as_float(table, cat_path, err, unit)
            cols[ColumnSpec(err, "float64", eunit, f"1-sigma uncertainty of {name}")] = evalues
    for name in cfg.columns:
        values, unit_text = _as_float(table, cat_path, name, None)
        cols[ColumnSpec(name, "float64", unit_text, "imported column")] = values
    split_codes = _split_codes(table, cat_path, cfg.split_column) if cfg.split_column else None
    spec = StackSpec("image", tuple(bands), size, size, unit=cfg.image_unit, pixel_scale_arcsec=pixel_scale,
                     description=f"imported from {cfg.images} ({cfg.fit})")
    content = RealSetContent({spec: stack}, cols, {
        "recipe": "import", "config": asdict(cfg),
        "inputs": {"catalog": {"path": str(cat_path.resolve()), "sha256": file_sha256(cat_path)},
                   "images": {"path": str(Path(cfg.images).resolve()), "files": len(files),
                              "sha256": file_sha256(files[0]) if len(files) == 1 else None}}})
    return write_real_set(out, cfg.name, content, {} if split_codes else cfg.split, cfg.seed, cfg.shard_size,
                          overwrite=overwrite, progress=progress, split_codes=split_codes)
