"""``sim2obs data list|fetch|build|import`` through the command line (in process; no network)."""
from __future__ import annotations

import numpy as np
import pytest

from sim2obs.cli import main
from tests.surveys import formats
from tests.surveys.test_importer import catalog, write_cutouts
from tests.surveys.test_recipes import serve_sky


def run(capsys, *args):
    main(["data", *args])
    return capsys.readouterr()


def test_build_help_lists_recipes_and_keys(capsys):
    out = run(capsys, "build", "--help").out
    for name in ("ml_ratio_gswlc", "metallicity_mpajhu", "bt_simard", "gz2", "cosmos_bt"):
        assert name in out
    keys = run(capsys, "build", "bt_simard", "--help").out
    assert "split={'train': 0.7, 'val': 0.1, 'test': 0.2}" in keys  # configs/data/bt_simard.yaml
    assert "images.sas_base_url=" in keys and "simard.url=" in keys and "selection={" in keys
    assert "no galaxy sets under /nonexistent" in run(capsys, "list", "--data-dir", "/nonexistent").out


def test_unknown_recipe_and_key_exit_with_clear_errors(capsys):
    with pytest.raises(SystemExit) as err:
        main(["data", "build", "bt_simrd", "--dry-run"])
    assert err.value.code == 2 and "did you mean 'bt_simard'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "build", "bt_simard", "images.stamps=32", "--dry-run"])
    assert "bt_simard.images.stamps" in capsys.readouterr().err


def test_fetch_build_list_from_served_files(tmp_path, file_server, capsys, monkeypatch):
    monkeypatch.setenv("SIM2OBS_DATA", str(tmp_path / "data"))
    gals = serve_sky(file_server, bands="gr")
    rows = [{"objid": g[0], "ra": g[1], "dec": g[2]} for g in gals]
    file_server.add("/t1.fits", formats.write_simard_vizier(tmp_path / "t1.fits", rows).read_bytes())
    args = [f"simard.url={file_server.url('/t1.fits')}", f"images.sas_base_url={file_server.url('/sas')}",
            "images.stamp=32", "--quiet", "--retries", "0"]
    dry = run(capsys, "build", "bt_simard", *args, "--dry-run").out
    assert file_server.url("/t1.fits") in dry and "1 file(s) to fetch, 0 already cached" in dry
    assert str(tmp_path / "data" / "_downloads") in dry
    fetched = run(capsys, "fetch", "bt_simard", *args).out
    assert fetched.strip().endswith("simard2011/table1.fits")
    dry = run(capsys, "build", "bt_simard", *args, "--dry-run").out
    images = dry.split("images (")[1]
    assert "6 galaxies pass the cuts, 6 used" in images and "6 file(s) to fetch, 0 already cached" in images
    out = run(capsys, "build", "bt_simard", *args).out
    assert "(real)" in out and "objects: 6" in out
    listing = run(capsys, "list").out.splitlines()
    assert listing[0].split()[:4] == ["name", "kind", "n", "splits"]
    row = next(ln for ln in listing if ln.startswith("bt_simard "))
    assert " real " in row and " 6 " in row and "train=" in row and "bt_simard; image[gr]32px" in row


def test_import_from_fits_cutouts(tmp_path, capsys):
    ids = np.arange(20, 28)
    write_cutouts(tmp_path / "cut", ids, size=36, bands=1)
    cat = catalog(tmp_path / "cat.fits", ids)
    out = run(capsys, "import", "--images", str(tmp_path / "cut"), "--catalog", str(cat), "--name", "mine",
              "--id-column", "objid", "--label", "logm:dex", "--error", "logm:logm_err", "--label", "re_kpc:kpc",
              "--column", "mag_r", "--file-template", "gal_{id}.fits", "--stamp", "32", "--bands", "r",
              "--split", "train=0.5,val=0.25,test=0.25", "--data-dir", str(tmp_path / "data")).out
    assert "galaxy set 'mine' (real)" in out and "objects: 8" in out and "images/image: 1x32x32 [r]" in out
    with pytest.raises(SystemExit):
        main(["data", "import", "--images", str(tmp_path / "cut"), "--catalog", str(cat), "--name", "bad",
              "--id-column", "objid", "--label", "missing_col", "--file-template", "gal_{id}.fits",
              "--data-dir", str(tmp_path / "data")])
    assert "cat.fits [missing_col]: column missing" in capsys.readouterr().err


def test_cosmos_bt_through_the_cli(tmp_path, capsys):
    formats.write_real_galaxy_catalog(tmp_path / "rgc", n=4, stamp=48)
    keys = run(capsys, "build", "cosmos_bt", "--help").out
    assert "catalog_dir=" in keys and "preset='hsc'" in keys
    dry = run(capsys, "build", "cosmos_bt", f"catalog_dir={tmp_path / 'rgc'}", "--dry-run").out
    assert "galsim_download_cosmos" in dry and "tiny_real_galaxy_catalog" in dry
    out = run(capsys, "build", "cosmos_bt", f"catalog_dir={tmp_path / 'rgc'}", "preset=sdss", "stamp=32",
              "split={train: 0.5, val: 0.25, test: 0.25}", "--quiet", "--out", str(tmp_path / "cosmos")).out
    assert "(real)" in out and "objects: 4" in out
    with pytest.raises(SystemExit):
        main(["data", "build", "cosmos_bt", "presett=sdss"])
    assert "cosmos_bt.presett" in capsys.readouterr().err
