"""Full builds of the real-set recipes from files served on 127.0.0.1 in the surveys' formats."""
from __future__ import annotations

from urllib.parse import urlsplit

import numpy as np
import pytest

from sim2obs.download import Downloader
from sim2obs.errors import ConfigError, UnknownNameError
from sim2obs.galaxyset import open_galaxy_set
from sim2obs.simgen.surveys.pipeline import build_recipe, dry_run, load_recipe_config
from sim2obs.simgen.surveys.recipes import RECIPES
from tests.surveys import formats
from tests.surveys.sdss_formats import frame_bytes, jpeg_bytes, objid_for, psfield_bytes

PIX = 0.396 / 3600
#: Two SDSS fields: (run, camcol, field, ra0, dec0); three galaxies in each at pixel offsets.
FIELDS = [(756, 3, 206, 150.0, 1.0), (1000, 2, 50, 150.2, 1.2)]
OFFSETS = [(-80, -40), (0, 30), (90, -20)]


def sky():
    """[(objid, ra, dec, run, camcol, field)] of the six test galaxies."""
    out = []
    for run, camcol, fld, ra0, dec0 in FIELDS:
        for k, (dx, dy) in enumerate(OFFSETS):
            ra = ra0 - dx * PIX / np.cos(np.radians(dec0))  # east is left on the frame
            out.append((objid_for(run, camcol, fld, k + 1), ra, dec0 + dy * PIX, run, camcol, fld))
    return out


def serve_sky(server, bands="gri", jpeg=False):
    gals = sky()
    for run, camcol, fld, ra0, dec0 in FIELDS:
        mine = [(g[1], g[2], 40.0 + 10 * i, 2.0) for i, g in enumerate(gals) if g[3] == run]
        for k, b in enumerate(bands):
            server.add(f"/sas/photoObj/frames/301/{run}/{camcol}/frame-{b}-{run:06d}-{camcol}-{fld:04d}.fits.bz2",
                       frame_bytes(b, run, camcol, fld, ra0, dec0, mine, shape=(200, 260), seed=run + k))
        server.add(f"/sas/photo/redux/301/{run}/objcs/{camcol}/psField-{run:06d}-{camcol}-{fld:04d}.fit",
                   psfield_bytes())
    if jpeg:
        server.add("/ImgCutout/getjpeg", jpeg_bytes(128))
    return gals


def photometry_csv(gals, per_row=None) -> bytes:
    """The SkyServer SQL answer (CSV with its ``#Table1`` first line)."""
    cols = ["objid", "ra", "dec", "run", "rerun", "camcol", "field", "modelMag_u", "modelMag_g", "modelMag_r",
            "modelMag_i", "modelMag_z", "modelMagErr_g", "modelMagErr_i", "extinction_g", "extinction_i",
            "petroMag_r", "petroR90_r", "rchi2"]
    lines = ["#Table1", ",".join(cols)]
    for i, (oid, ra, dec, run, camcol, fld) in enumerate(gals):
        row = {"objid": oid, "ra": f"{ra:.8f}", "dec": f"{dec:.8f}", "run": run, "rerun": 301, "camcol": camcol,
               "field": fld, "modelMag_u": 18.9, "modelMag_g": 17.5, "modelMag_r": 16.9, "modelMag_i": 16.6,
               "modelMag_z": 16.4, "modelMagErr_g": 0.01, "modelMagErr_i": 0.01, "extinction_g": 0.1,
               "extinction_i": 0.05, "petroMag_r": 17.0, "petroR90_r": 8.0, "rchi2": 1.1}
        row.update((per_row or {}).get(i, {}))
        lines.append(",".join(str(row[c]) for c in cols))
    return ("\n".join(lines) + "\n").encode()


def serve_photometry(server, cfg, data: bytes):
    """Serve the photometry answer at each chunk's exact URL (one chunk gets all rows)."""
    for k, r in enumerate(cfg.photometry.remotes()):
        parts = urlsplit(r.url)
        server.add(f"{parts.path}?{parts.query}", data if k == 0 else data.split(b"\n", 2)[0] + b"\n"
                   + data.split(b"\n", 2)[1] + b"\n")


def base_overrides(server, name):
    return [f"images.sas_base_url={server.url('/sas')}", f"images.jpeg_base_url={server.url('/ImgCutout/getjpeg')}",
            "images.stamp=48", "shard_size=4", f"name={name}_test"]


@pytest.fixture
def dl(tmp_path):
    return Downloader(tmp_path / "cache", timeout=5, retries=1, backoff=0.001, progress=False)


def _check_real_set(path, n, stack_bands):
    gs = open_galaxy_set(path, check="full")
    gs.verify()
    assert gs.kind == "real" and gs.provenance["kind"] == "real" and gs.n == n
    assert gs.schema.stack("image").channels == tuple(stack_bands)
    assert gs.schema.stack("image").unit == "nanomaggy"
    assert sorted(gs.split_names) == ["test", "train", "val"]
    prov = gs.provenance
    assert all(d["sha256"] and d["downloaded_utc"] for d in prov["downloads"])
    assert prov["download_date_utc"] and prov["selection"]["cuts"]
    return gs


def test_ml_ratio_gswlc_full_build(tmp_path, file_server, dl, tmp_path_factory):
    gals = serve_sky(file_server, bands="gi")
    extra = [(objid_for(756, 3, 206, 9), 150.001, 1.001, 756, 3, 206), (objid_for(756, 3, 206, 10), 149.999, 0.999, 756, 3, 206)]
    all_gals = gals + extra
    d = tmp_path_factory.mktemp("served")
    rows = [{"objid": g[0], "ra": g[1], "dec": g[2], "z": 0.05 + 0.01 * i, "logMstar": 10.0 + 0.1 * i,
             "logMstar_err": 0.08} for i, g in enumerate(all_gals)]
    rows[6]["chi2_r"] = 8.0  # fails chi2 < 5
    file_server.add("/gswlc/GSWLC-X2.dat.gz", formats.write_gswlc_dat(d / "GSWLC-X2.dat.gz", rows).read_bytes())
    leda = ["objname,al2000,de2000,logd25"] + [f"G{i},{g[1] / 15:.9f},{g[2]:.8f},{0.8 if i != 7 else 0.5}"
                                                for i, g in enumerate(all_gals)]  # row 7: D25 = 0.32'
    file_server.add("/leda.csv", ("\n".join(leda) + "\n").encode())
    gz2_rows = [{"objid": g[0], "ra": g[1], "dec": g[2], "fractions": {"a01": 0.7, "a02": 0.25, "a03": 0.05}}
                for g in all_gals]
    file_server.add("/gz2.csv.gz", formats.write_gz2_csv(d / "gz2.csv.gz", gz2_rows).read_bytes())
    cfg = load_recipe_config("ml_ratio_gswlc", base_overrides(file_server, "ml") + [
        f"gswlc.url={file_server.url('/gswlc/GSWLC-X2.dat.gz')}", f"hyperleda.file.url={file_server.url('/leda.csv')}",
        f"gz2.file.url={file_server.url('/gz2.csv.gz')}", f"photometry.url={file_server.url('/sql')}",
        "photometry.chunks=2"])
    serve_photometry(file_server, cfg, photometry_csv(all_gals))
    text = dry_run("ml_ratio_gswlc", cfg, dl)
    assert "5 file(s) to fetch, 0 already cached" in text and file_server.url("/leda.csv") in text
    assert file_server.count(method="GET") == 0
    path = build_recipe("ml_ratio_gswlc", cfg, data_dir=tmp_path / "data", dl=dl, progress=False)
    assert path == tmp_path / "data" / "ml_test"
    gs = _check_real_set(path, 6, "gi")
    assert sorted(gs.column("id").tolist()) == sorted(g[0] for g in gals)
    cat = gs.catalog()
    order = {g[0]: i for i, g in enumerate(all_gals)}
    for row in cat:
        i = order[int(row["id"])]
        lum_g = 10 ** (-0.4 * ((17.5 - 0.1) - 5 * np.log10(row["luminosity_distance_mpc"] * 1e5) - 5.11))
        assert row["ml_g"] == pytest.approx(10 ** (10.0 + 0.1 * i) / lum_g, rel=1e-6)
        assert row["redshift"] == pytest.approx(0.05 + 0.01 * i, abs=1e-6)
    assert np.all(cat["ml_g_err"] > 0) and np.allclose(cat["pixel_scale_arcsec"], 0.396)
    assert np.allclose(cat["t01_smooth_or_features_a01_smooth_weighted_fraction"], 0.7, atol=1e-3)
    assert np.allclose(cat["psf_fwhm_g"], 1.4) and np.all(cat["sky_sigma_i"] > 0)
    prov = gs.provenance
    assert prov["matches"]["hyperleda_match"]["radius_arcsec"] == 3.0
    assert prov["matches"]["photometry_match"]["n_matched"] == 8
    cuts = {c["cut"]: c for c in prov["selection"]["cuts"]}
    assert cuts["SED-fit reduced chi2"]["n_after"] == 7 and cuts["D25"]["n_after"] == 6
    assert "SELECT" in prov["catalogs"]["photometry"]["sql"]
    # the dry run now knows the images: two fields x two bands + two psFields
    text = dry_run("ml_ratio_gswlc", cfg, dl)
    assert "0 file(s) to fetch, 5 already cached" in text and "6 galaxies pass the cuts" in text
    assert "0 file(s) to fetch, 6 already cached" in text.split("images")[1]
    # built again: nothing downloaded, same set
    before = len(file_server.requests)
    assert build_recipe("ml_ratio_gswlc", cfg, data_dir=tmp_path / "data", dl=dl, progress=False) == path
    assert len(file_server.requests) == before


def test_metallicity_mpajhu_full_build(tmp_path, file_server, dl, tmp_path_factory):
    gals = serve_sky(file_server, bands="gri", jpeg=True)
    d = tmp_path_factory.mktemp("mpa")
    rows = [{"ra": g[1], "dec": g[2], "z": 0.05, "oh_p16": 8.8 + 0.02 * i, "oh_p50": 8.9 + 0.02 * i,
             "oh_p84": 9.0 + 0.02 * i} for i, g in enumerate(gals)]
    rows[2]["oh_avg"] = -99.9  # no O/H
    info, oh, mass = formats.write_mpajhu_fits(d, rows)
    for p in (info, oh, mass):
        file_server.add(f"/mpa/{p.name}", p.read_bytes())
    cfg = load_recipe_config("metallicity_mpajhu", base_overrides(file_server, "met") + [
        f"info.url={file_server.url('/mpa/' + info.name)}", f"oh.url={file_server.url('/mpa/' + oh.name)}",
        f"mass.url={file_server.url('/mpa/' + mass.name)}", f"photometry.url={file_server.url('/sql')}",
        "photometry.chunks=1", "images.jpeg_size=128"])
    serve_photometry(file_server, cfg, photometry_csv(gals, {4: {"petroMag_r": 18.2}}))  # row 4: too faint
    path = build_recipe("metallicity_mpajhu", cfg, data_dir=tmp_path / "data", dl=dl, progress=False)
    gs = _check_real_set(path, 4, "gri")
    assert gs.schema.stack("jpeg").shape == (3, 128, 128)
    assert sorted(gs.column("id").tolist()) == sorted(g[0] for i, g in enumerate(gals) if i not in (2, 4))
    cat = gs.catalog()
    assert np.allclose(cat["oh12_err"], 0.1, atol=1e-5) and gs.schema.column("oh12").error == "oh12_err"
    assert np.allclose(cat["log_mstar"], 10.2, atol=1e-5)
    assert {"mag_g", "mag_r", "mag_i"} <= set(cat.colnames)
    cuts = {c["cut"]: c["n_after"] for c in gs.provenance["selection"]["cuts"]}
    assert cuts["oh_p50 available"] == 5 and cuts["petroMag_r"] == 4
    from sim2obs.tasks import build_task, load_task_config

    task_cfg = load_task_config("metallicity", "quick")
    task_cfg["data"] = {"path": str(path)}
    task = build_task("metallicity", task_cfg)
    assert task.prepare(generate=False).n == 4  # the task accepts the real set as it is


def test_bt_simard_full_build_and_task_accepts_it(tmp_path, file_server, dl, tmp_path_factory):
    gals = serve_sky(file_server, bands="gr")
    d = tmp_path_factory.mktemp("simard")
    rows = [{"objid": g[0], "ra": g[1], "dec": g[2], "bt_r": 0.1 * (i + 1), "rhlr": 3.0 + 0.3 * i, "scale": 1.5,
             "rg2d": 16.0 + 0.1 * i} for i, g in enumerate(gals)]
    rows[5]["z"] = 0.3  # beyond z < 0.25
    p = formats.write_simard_vizier(d / "table1.fits", rows)
    file_server.add("/viz/table1.fits", p.read_bytes())
    cfg = load_recipe_config("bt_simard", base_overrides(file_server, "bt") + [
        f"simard.url={file_server.url('/viz/table1.fits')}", "split={train: 0.4, val: 0.2, test: 0.4}"])
    path = build_recipe("bt_simard", cfg, data_dir=tmp_path / "data", dl=dl, progress=False)
    gs = _check_real_set(path, 5, "gr")
    cat = gs.catalog()
    by_id = {g[0]: i for i, g in enumerate(gals)}
    for row in cat:
        i = by_id[int(row["id"])]
        assert row["bt_r"] == pytest.approx(0.1 * (i + 1)) and row["r_e_r"] == pytest.approx((3.0 + 0.3 * i) / 1.5)
        assert row["flux_r"] == pytest.approx(10 ** (-0.4 * (16.0 + 0.1 * i - 22.5)))
    assert gs.schema.column("bt_r").error == "bt_r_err"
    # the run/camcol/field came from the objIDs: the stamps hold the galaxies
    img = gs.images("image")
    assert np.all(img[:, 1, 20:28, 20:28].mean(axis=(1, 2)) > 5 * cat["sky_sigma_r"])
    from sim2obs.tasks import build_task, load_task_config

    from sim2obs.predictions import Predictions

    task_cfg = load_task_config("bt_posterior", "quick")
    task_cfg["data"] = {"path": str(path)}
    task = build_task("bt_posterior", task_cfg)
    assert task.prepare(generate=False).kind == "real"
    # the task scores predictions against the real labels of the held-out split
    ids = task.split_ids(task.config.eval_split)
    truth = np.stack([gs.column(t, task.config.eval_split) for t in task.targets], axis=1)
    rng = np.random.default_rng(0)
    samples = truth[None] * (1 + 0.05 * rng.standard_normal((200, *truth.shape)))
    metrics = task.evaluate(Predictions(ids=ids, values=truth, targets=task.targets, samples=samples))
    assert np.isfinite(metrics["posterior_score"]) and metrics["bt_r/rmse"] < 0.05


def test_gz2_recipe_build(tmp_path, file_server, dl, tmp_path_factory, monkeypatch):
    gals = serve_sky(file_server, bands="gri")
    d = tmp_path_factory.mktemp("gz2")
    rows = [{"objid": g[0], "ra": g[1], "dec": g[2], "fractions": {"a01": 0.2, "a02": 0.8, "a03": 0.0}}
            for g in gals]
    rows[1]["t01_smooth_or_features_a02_features_or_disk_weighted_fraction"] = None  # incomplete votes
    file_server.add("/gz2.csv.gz", formats.write_gz2_csv(d / "gz2.csv.gz", rows).read_bytes())
    cfg = load_recipe_config("gz2", base_overrides(file_server, "gz2") + [f"gz2.file.url={file_server.url('/gz2.csv.gz')}"])
    path = build_recipe("gz2", cfg, data_dir=tmp_path / "data", dl=dl, progress=False)
    gs = open_galaxy_set(path)
    assert gs.kind == "real" and gs.n == 5
    cat = gs.catalog()
    assert np.allclose(cat["t01_smooth_or_features_a02_features_or_disk_prob"], 0.8, atol=1e-3)
    # a large set builds its stacks in disk-backed memmaps: same data, scratch folder removed
    from sim2obs.simgen.surveys import realset

    monkeypatch.setattr(realset, "SCRATCH_LIMIT_BYTES", 0)
    again = build_recipe("gz2", cfg, data_dir=tmp_path / "data2", dl=dl, progress=False)
    assert open_galaxy_set(again).content_hash == gs.content_hash
    assert not list((tmp_path / "data2").glob(".*images-tmp"))


def test_recipe_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="images.bands"):
        load_recipe_config("bt_simard", ["images.bands=[g,y]"])
    with pytest.raises(ConfigError, match="bt_simard.max_galaxie"):
        load_recipe_config("bt_simard", ["max_galaxie=3"])
    with pytest.raises(ConfigError, match="split"):
        load_recipe_config("gz2", ["split={train: 0.5, test: 0.2}"])
    with pytest.raises(UnknownNameError, match="bt_simard"):
        load_recipe_config("bt_simrd")
    assert {"ml_ratio_gswlc", "metallicity_mpajhu", "bt_simard", "gz2"} <= set(RECIPES)


def test_dry_runs_of_every_recipe_offline(tmp_path, monkeypatch):
    """Each recipe's default dry run with no network (SIM2OBS_OFFLINE): names every catalogue URL
    and the cache path, and says how the images will be counted; nothing is requested."""
    monkeypatch.setenv("SIM2OBS_OFFLINE", "1")
    dl = Downloader(tmp_path / "cache", progress=False)
    for name in RECIPES:
        cfg = load_recipe_config(name)
        text = dry_run(name, cfg, dl)
        assert f"recipe {name}" in text and str(dl.cache_dir) in text and "total to download" in text
        for r in RECIPES[name].catalog_remotes(cfg):
            assert r.url[:120] in text and str(dl.path(r)) in text
        assert "images: known once the catalogues are here" in text
