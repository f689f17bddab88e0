"""The real B/T set from a RealGalaxyCatalog: a tiny catalogue made here in GalSim's format (so CI
without the shared samples exercises the builder), and the real AEGIS sample when present."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim2obs import open_galaxy_set
from sim2obs.errors import ConfigError, DataFormatError
from sim2obs.simgen.surveys.cosmos import build_cosmos_bt_set, find_catalog
from sim2obs.tasks import build_task, load_task_config
from tests.surveys import formats as F

AEGIS = Path(__file__).resolve().parents[3] / "shared" / "real_samples" / "galsim_aegis"
SYNC = {"kind": "synchronous"}
SPLIT = {"train": 0.5, "val": 0.17, "test": 0.33}


@pytest.fixture(scope="module")
def tiny_rgc(tmp_path_factory):
    return F.write_real_galaxy_catalog(tmp_path_factory.mktemp("rgc"), n=6, seed=1, stamp=48)


@pytest.fixture(scope="module")
def tiny_set(tiny_rgc, tmp_path_factory):
    return build_cosmos_bt_set(tiny_rgc["dir"], tmp_path_factory.mktemp("sets") / "cosmos_bt", preset="hsc",
                               stamp=32, seed=3, split=SPLIT)


def _prior_run(path, tmp_path):
    cfg = load_task_config("bt_posterior", "quick", ["methods=[prior]", "n_samples=50"])
    cfg["data"] = {"path": str(path)}
    task = build_task("bt_posterior", cfg, data_dir=tmp_path, cluster=SYNC)
    return task.run(tmp_path / "run")


def test_tiny_catalogue_builds_a_valid_real_set(tiny_rgc, tiny_set):
    gs = open_galaxy_set(tiny_set, check="full")
    gs.verify()
    truth = tiny_rgc["truth"]
    assert gs.provenance["kind"] == "real" and gs.provenance["labels"]["label_source"] == "bulgefit"
    assert gs.n == 6 and gs.schema.stack("image").pixel_scale_arcsec == 0.168
    assert gs.schema.stack("image").channels == ("r",) and gs.schema.stack("image").shape == (1, 32, 32)
    assert {n: len(gs.indices(n)) for n in gs.split_names} == {"train": 3, "val": 1, "test": 2}
    cat = gs.catalog()
    assert cat["id"].tolist() == truth["ident"].tolist()
    assert np.allclose(cat["bt_r"], truth["bt"], atol=1e-10)
    assert np.allclose(cat["fit_dvc_btt"], truth["bt"], atol=1e-10)
    assert np.allclose(cat["flux_r"], 10 ** (-0.4 * (truth["mag"] - 22.5)))
    r_e = np.asarray(cat["r_e_r"])
    assert (r_e > np.minimum(truth["hlr_b"], truth["hlr_d"])).all() and (r_e < np.maximum(truth["hlr_b"], truth["hlr_d"]) * 1.5).all()
    psf = np.asarray(cat["psf_fwhm_r"])
    assert ((psf >= 0.6) & (psf <= 0.8)).all() and len(set(psf.round(6))) == 6
    sums = gs.images("image").sum(axis=(1, 2, 3))
    assert np.allclose(sums, cat["flux_r"], rtol=0.06)  # the image holds the label's flux (noise, stamp edge)


def test_same_seed_same_bytes_other_seed_other_noise(tiny_rgc, tiny_set, tmp_path):
    again = build_cosmos_bt_set(tiny_rgc["dir"], tmp_path / "again", preset="hsc", stamp=32, seed=3, split=SPLIT)
    assert open_galaxy_set(again).content_hash == open_galaxy_set(tiny_set).content_hash
    other = build_cosmos_bt_set(tiny_rgc["dir"], tmp_path / "other", preset="hsc", stamp=32, seed=4, split=SPLIT)
    a, b = open_galaxy_set(tiny_set), open_galaxy_set(other)
    assert a.content_hash != b.content_hash and np.allclose(a.column("bt_r"), b.column("bt_r"))


def test_sdss_preset_and_overrides(tiny_rgc, tmp_path):
    path = build_cosmos_bt_set(tiny_rgc["dir"], tmp_path / "sdss", preset="sdss", stamp=40, seed=0,
                               psf={"fwhm": 1.0, "profile": "moffat"}, noise={"sky_sigma_nmgy": 0.05})
    gs = open_galaxy_set(path)
    assert gs.schema.stack("image").pixel_scale_arcsec == 0.396
    assert np.allclose(gs.column("psf_fwhm_r"), 1.0) and np.allclose(gs.column("sky_sigma_r"), 0.05)
    images = gs.images("image")[:, 0]
    border = np.concatenate([images[:, :6, :].ravel(), images[:, -6:, :].ravel()])
    assert np.std(border) == pytest.approx(0.05, rel=0.1)  # whitened HST noise topped up to the target
    assert gs.provenance["observing"]["pixel_scale"] == 0.396


def test_refusals(tiny_rgc, tmp_path):
    with pytest.raises(ConfigError, match="unknown observing preset"):
        build_cosmos_bt_set(tiny_rgc["dir"], tmp_path / "x", preset="lsst")
    with pytest.raises(ConfigError, match="psf.fwhm"):
        build_cosmos_bt_set(tiny_rgc["dir"], tmp_path / "x", psf={"fwhm": [0.9, 0.5]})
    with pytest.raises(ConfigError, match="unknown label source"):
        build_cosmos_bt_set(tiny_rgc["dir"], tmp_path / "x", labels="simard")
    bare = F.write_real_galaxy_catalog(tmp_path / "bare", n=2, with_fits=False, stamp=32)
    with pytest.raises(DataFormatError, match="labels='bulgefit' needs GalSim's parametric-fit table"):
        build_cosmos_bt_set(bare["dir"], tmp_path / "x", labels="bulgefit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="cannot tell which RealGalaxyCatalog"):
        find_catalog(tmp_path / "empty")


def test_bt_posterior_runs_on_the_real_set(tiny_set, tmp_path):
    rows = _prior_run(tiny_set, tmp_path)
    assert rows[0]["data"]["generator"] == "cosmos_bt" and np.isfinite(rows[0]["value"])


@pytest.mark.slow
def test_own_fit_labels_without_the_fits_table(tmp_path):
    made = F.write_real_galaxy_catalog(tmp_path / "nofits", n=3, seed=5, stamp=64, with_fits=False)
    path = build_cosmos_bt_set(made["dir"], tmp_path / "set", preset="hsc", stamp=32, seed=0)
    gs = open_galaxy_set(path)
    assert gs.provenance["labels"]["label_source"] == "fit" and "fit_dvc_btt" not in gs.schema.column_names
    assert np.allclose(gs.column("bt_r"), made["truth"]["bt"], atol=0.03)  # the fit recovers the drawn B/T


@pytest.mark.skipif(not AEGIS.exists(), reason=f"real AEGIS sample not present ({AEGIS}); "
                    "the shared real samples are optional")
def test_aegis_catalogue_choice():
    assert find_catalog(AEGIS).name == "AEGIS_F814w_catalog.fits"  # two bands: F814W unless told
    assert find_catalog(AEGIS, "AEGIS_F606w_catalog.fits").name == "AEGIS_F606w_catalog.fits"


@pytest.mark.slow
@pytest.mark.skipif(not AEGIS.exists(), reason=f"real AEGIS sample not present ({AEGIS}); "
                    "the shared real samples are optional")
def test_aegis_sample_builds_validates_and_runs(tmp_path):
    path = build_cosmos_bt_set(AEGIS, tmp_path / "aegis", preset="sdss", stamp=48, seed=0,
                               split={"train": 0.4, "val": 0.2, "test": 0.4}, fit_max_nfev=60)
    gs = open_galaxy_set(path, check="full")
    gs.verify()
    assert gs.n == 5 and gs.provenance["kind"] == "real" and gs.provenance["labels"]["hst_band"] == ["F814W"]
    assert gs.provenance["labels"]["label_source"] == "fit"  # AEGIS has no parametric-fit table
    bt = gs.column("bt_r")
    assert ((bt > 0) & (bt < 1)).all() and (gs.column("r_e_r") > 0).all()
    rows = _prior_run(path, tmp_path)
    assert np.isfinite(rows[0]["metrics"]["posterior_score"])
