"""``sim2obs data import`` from FITS cutouts, a FITS cube, HDF5 and .npy stacks."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from sim2obs.errors import ConfigError, DataFormatError
from sim2obs.galaxyset import open_galaxy_set
from sim2obs.simgen.surveys.importer import ImportConfig, fit_stamp, import_set


def _gauss(size, flux=100.0, sigma=3.0):
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    g = np.exp(-((xx - c) ** 2 + (yy - c) ** 2) / (2 * sigma ** 2))
    return (flux * g / g.sum()).astype(np.float32)


def write_cutouts(folder, ids, size=40, bunit="nanomaggy", bands=2):
    folder.mkdir(parents=True, exist_ok=True)
    for k, i in enumerate(ids):
        data = np.stack([_gauss(size, flux=10.0 * (k + 1) * (b + 1)) for b in range(bands)])
        hdu = fits.PrimaryHDU(data)
        hdu.header["BUNIT"] = bunit
        hdu.writeto(folder / f"gal_{i}.fits")
    return folder


def catalog(path, ids, **extra):
    t = Table({"objid": ids, "logm": np.linspace(9.5, 11, len(ids)), "logm_err": np.full(len(ids), 0.1),
               "re_kpc": np.linspace(1, 5, len(ids)), "mag_r": np.linspace(15, 17, len(ids))})
    t["re_kpc"].unit = u.kpc
    t["logm"].unit = t["logm_err"].unit = u.dex
    for k, v in extra.items():
        t[k] = v
    t.write(path, overwrite=True)
    return path


def test_import_fits_cutouts_with_units_and_split_column(tmp_path):
    ids = np.arange(100, 110)
    write_cutouts(tmp_path / "cut", ids, size=40)
    cat = catalog(tmp_path / "cat.ecsv", ids, split=np.array(["train"] * 6 + ["val"] * 2 + ["test", "ood"]))
    cfg = ImportConfig(images=str(tmp_path / "cut"), catalog=str(cat), name="mine", id_column="objid",
                       labels={"logm": "dex", "re_kpc": "pc"}, errors={"logm": "logm_err"}, columns=["mag_r"],
                       split_column="split", stamp=32, file_template="gal_{id}.fits", bands=["g", "r"],
                       image_unit="nanomaggy", pixel_scale=0.396)
    path = import_set(cfg, tmp_path / "sets" / "mine")
    gs = open_galaxy_set(path, check="full")
    gs.verify()
    assert gs.kind == "real" and gs.n == 10 and gs.split_names == ("train", "val", "test", "ood")
    assert gs.schema.stack("image").shape == (2, 32, 32) and gs.schema.stack("image").pixel_scale_arcsec == 0.396
    assert gs.column("id").tolist() == ids.tolist()
    cat_out = gs.catalog()
    assert np.allclose(cat_out["re_kpc"], np.linspace(1000, 5000, 10)) and gs.schema.column("re_kpc").unit == "pc"
    assert gs.schema.column("logm").error == "logm_err"
    assert len(gs.indices("ood")) == 1 and len(gs.indices("train")) == 6
    img = gs.images("image")
    # a central 32 px crop of a sigma = 3 px Gaussian keeps (almost) all of the flux
    assert img[3, 1].sum() == pytest.approx(80.0, rel=1e-3)
    assert gs.provenance["recipe"] == "import" and gs.provenance["inputs"]["catalog"]["sha256"]


def test_import_cube_resample_and_fraction_split(tmp_path):
    ids = np.arange(1, 13)
    cube = np.stack([_gauss(64, flux=50.0) for _ in ids])
    fits.PrimaryHDU(cube).writeto(tmp_path / "cube.fits")
    cat = catalog(tmp_path / "cat.fits", ids)
    cfg = ImportConfig(images=str(tmp_path / "cube.fits"), catalog=str(cat), name="cube", id_column="objid",
                       labels={"logm": ""}, stamp=32, fit="resample", split={"train": 0.5, "val": 0.25, "test": 0.25})
    gs = open_galaxy_set(import_set(cfg, tmp_path / "cube_set"))
    assert gs.schema.stack("image").shape == (1, 32, 32)
    assert gs.images("image")[0].sum() == pytest.approx(50.0, rel=0.01)  # flux kept by the resampling
    assert [len(gs.indices(s)) for s in ("train", "val", "test")] == [6, 3, 3]


@pytest.mark.parametrize("kind", ["h5", "npy"])
def test_import_hdf5_and_npy_stacks(tmp_path, kind):
    ids = np.arange(5)
    stack = np.stack([np.stack([_gauss(24)] * 3) for _ in ids])
    if kind == "h5":
        src = tmp_path / "s.h5"
        with h5py.File(src, "w") as f:
            f["images"] = stack
    else:
        src = tmp_path / "s.npy"
        np.save(src, stack)
    cat = catalog(tmp_path / "c.csv", ids)
    cfg = ImportConfig(images=str(src), catalog=str(cat), name=kind, id_column="objid", labels={"mag_r": "mag"},
                       bands=["g", "r", "i"])
    gs = open_galaxy_set(import_set(cfg, tmp_path / kind))
    assert gs.schema.stack("image").channels == ("g", "r", "i") and gs.n == 5


def test_import_errors_name_file_column_row(tmp_path):
    ids = np.arange(4)
    write_cutouts(tmp_path / "cut", ids[:3])
    cat = catalog(tmp_path / "cat.ecsv", ids)
    base = dict(images=str(tmp_path / "cut"), catalog=str(cat), name="x", id_column="objid",
                file_template="gal_{id}.fits", labels={"logm": "dex"})
    with pytest.raises(DataFormatError, match=r"objid, row 3.*gal_3.fits"):
        import_set(ImportConfig(**base), tmp_path / "o1")
    write_cutouts(tmp_path / "cut2", ids)
    base["images"] = str(tmp_path / "cut2")
    with pytest.raises(DataFormatError, match=r"cat.ecsv \[nope\]: column missing"):
        import_set(ImportConfig(**{**base, "labels": {"nope": ""}}), tmp_path / "o2")
    with pytest.raises(DataFormatError, match=r"re_kpc.*cannot be converted to s"):
        import_set(ImportConfig(**{**base, "labels": {"re_kpc": "s"}}), tmp_path / "o3")
    t = Table.read(cat)
    t["logm"][2] = np.nan
    t.write(tmp_path / "nan.ecsv")
    with pytest.raises(DataFormatError, match=r"nan.ecsv \[logm, row 2\]"):
        import_set(ImportConfig(**{**base, "catalog": str(tmp_path / "nan.ecsv")}), tmp_path / "o4")
    t = Table.read(cat)
    t["objid"][3] = 1
    t.write(tmp_path / "dup.ecsv")
    with pytest.raises(DataFormatError, match=r"objid, rows \[1, 3\].*not unique"):
        import_set(ImportConfig(**{**base, "catalog": str(tmp_path / "dup.ecsv")}), tmp_path / "o5")
    with pytest.raises(ConfigError, match="fit"):
        import_set(ImportConfig(**{**base, "fit": "squash"}), tmp_path / "o6")
    np.save(tmp_path / "short.npy", np.zeros((2, 8, 8), np.float32))
    with pytest.raises(DataFormatError, match=r"short.npy.*2 images but the catalogue"):
        import_set(ImportConfig(**{**base, "images": str(tmp_path / "short.npy")}), tmp_path / "o7")


def test_fit_stamp_pads_small_images():
    out = fit_stamp(np.ones((1, 10, 10), np.float32), 16, "crop")
    assert out.shape == (1, 16, 16) and out.sum() == 100 and out[0, 3:13, 3:13].min() == 1
