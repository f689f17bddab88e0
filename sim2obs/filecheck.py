"""Format checks of downloaded (or hand-placed) files: a whole, readable file of its kind.

:func:`check_format` opens FITS with astropy (a truncation warning is an error), decodes JPEG/PNG
with Pillow, opens HDF5 with h5py, reads gzip/bz2 streams to their end (CRC), parses JSON, and
refuses text that is an HTML page or holds binary bytes. Used by :mod:`sim2obs.download` before a
file is renamed into the cache.
"""
from __future__ import annotations

import bz2
import gzip
import json
import os
import warnings
from pathlib import Path
from typing import Callable

from sim2obs.errors import DataFormatError, Sim2obsValueError

CHUNK = 1 << 20


def _short(err: BaseException) -> str:
    text = str(err)
    return text if len(text) < 300 else text[:300] + "..."


# --------------------------------------------------------------------------------------------
_KIND_SUFFIXES = (
    ("fits", (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.bz2", ".fit.bz2", ".fits.fz")),
    ("jpeg", (".jpg", ".jpeg")), ("png", (".png",)),
    ("hdf5", (".h5", ".hdf5", ".he5")), ("json", (".json",)),
    ("gzip", (".gz",)), ("bz2", (".bz2",)),
    ("text", (".csv", ".dat", ".txt", ".tsv", ".ecsv")),
)
KINDS = ("auto", "fits", "jpeg", "png", "hdf5", "json", "gzip", "bz2", "text", "any")


def guess_kind(name: str) -> str:
    """The format check a file name implies (``any``: none)."""
    low = name.lower()
    for kind, suffixes in _KIND_SUFFIXES:
        if low.endswith(suffixes):
            return kind
    return "any"


def check_format(path: str | os.PathLike, kind: str = "auto", display: str | None = None) -> None:
    """Raise :class:`DataFormatError` (naming ``display``, default ``path``) unless the file is a
    whole, readable file of ``kind`` (``auto``: from the name)."""
    path = Path(path)
    where = display or str(path)
    kind = guess_kind(path.name.removesuffix(".part")) if kind == "auto" else kind
    if kind not in KINDS:
        raise Sim2obsValueError("unknown file kind", value=kind, allowed=KINDS)
    if path.stat().st_size == 0:
        raise DataFormatError(where, None, "empty file")
    try:
        _CHECKS.get(kind, lambda p: None)(path)
    except DataFormatError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure to parse means a bad file
        raise DataFormatError(where, None, f"not a whole {kind.upper()} file ({type(err).__name__}: "
                              f"{_short(err)})") from None


def _check_fits(path: Path) -> None:
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyUserWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyUserWarning)  # odd column names etc. are fine...
        warnings.filterwarnings("error", message=r"(?i).*truncat")  # ...a short file is not
        with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
            for hdu in hdul:
                if hdu.data is not None:
                    _ = hdu.data.shape


def _check_image(fmt: str) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        from PIL import Image

        with Image.open(path) as im:
            if im.format != fmt:
                raise ValueError(f"a {im.format} image, not {fmt}")
            im.load()  # decodes every byte: a truncated file raises
    return check


def _check_hdf5(path: Path) -> None:
    import h5py

    with h5py.File(path, "r") as f:
        f.visit(lambda name: None)


def _check_stream(opener: Callable) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        with opener(path, "rb") as f:  # reading to the end checks the CRC / end of stream
            while f.read(CHUNK):
                pass
    return check


def _check_text(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(4096)
    low = head.lstrip().lower()
    if low.startswith((b"<!doctype html", b"<html")):
        raise ValueError("an HTML page, not data (an error page served as the file?)")
    if b"\0" in head:
        raise ValueError("binary bytes in a text file")


def _check_json(path: Path) -> None:
    json.loads(path.read_text())


_CHECKS: dict[str, Callable[[Path], None]] = {
    "fits": _check_fits, "jpeg": _check_image("JPEG"), "png": _check_image("PNG"), "hdf5": _check_hdf5, "json": _check_json,
    "gzip": _check_stream(gzip.open), "bz2": _check_stream(bz2.open), "text": _check_text,
}
