"""Task ml_ratio's sample and measurements (Dobbels et al. 2019 §2.1-2.2, §4.3): D25 of the bulge + disk
model, the 1.125 D25 cutouts, aperture photometry on the noisy images, SED-fit-like label noise and the
M/L error model of the generator."""
import numpy as np
import pytest

from sim2obs.simgen.population import ML_REL_ERR_SPREAD_DEX, ml_relative_error
from sim2obs.tasks.ml_ratio.sample import (B_MINUS_G, MU_25, aperture_fluxes, crop_centre, cutout_sides,
                                           d25_arcsec, noisy_labels)
from tests.conftest import SYNC, tiny_config
from tests.tasks.conftest import task_on_set

TINY = ["trainer.epochs=1", "ml_cnn_epochs=1", "image_size=42", "lightgbm.min_data_in_leaf=5",
        "lightgbm_rounds=40", "early_stopping_rounds=10", "importance_repeats=1", "gi_morph_top_features=20"]


def _disk_only(flux_g, flux_r, hlr, q, pa=0.0):
    n = len(flux_g)
    one = np.ones(n)
    return {"flux_g": np.asarray(flux_g, float), "flux_r": np.asarray(flux_r, float), "bt_g": 0 * one,
            "bt_r": 0 * one, "bulge_hlr_arcsec": one, "bulge_sersic_n": 4 * one, "bulge_q": one,
            "bulge_position_angle_deg": 0 * one, "disk_hlr_arcsec": np.asarray(hlr, float) * one,
            "disk_q": np.asarray(q, float) * one, "position_angle_deg": pa * one}


def test_d25_of_an_exponential_disk_is_the_analytic_isophote():
    # face-on exponential: mu(r) = mu0 + 1.0857 r/h, I0 = F / (2 pi h^2); B = g + 0.313 (g - r) + 0.2271
    flux_g, flux_r, hlr = np.array([200.0, 50.0]), np.array([300.0, 80.0]), 6.0
    cat = _disk_only(flux_g, flux_r, hlr, 1.0)
    h = hlr / 1.678346990
    gr = -2.5 * np.log10(flux_g / flux_r)
    flux_b = flux_g * 10 ** (-0.4 * (B_MINUS_G[0] * gr + B_MINUS_G[1]))
    mu0 = 22.5 - 2.5 * np.log10(flux_b / (2 * np.pi * h**2))
    expected = 2 * h * (MU_25 - mu0) / (2.5 / np.log(10))
    assert np.allclose(d25_arcsec(cat), expected, rtol=1e-4)
    # an inclined disk (area-preserving shear): the major axis grows by 1/sqrt(q), whatever its angle
    tilted = _disk_only(flux_g, flux_r, hlr, 0.25, pa=37.0)
    assert np.allclose(d25_arcsec(tilted, n_angles=180), expected / np.sqrt(0.25), rtol=2e-3)


def test_d25_needs_the_model_columns():
    cat = _disk_only([1.0], [1.0], 1.0, 1.0)
    del cat["disk_q"]
    with pytest.raises(Exception, match="D25 needs"):
        d25_arcsec(cat)


def test_cutouts_follow_d25_keep_the_stamp_parity_and_are_capped_at_the_stamp():
    sides = cutout_sides(np.array([10.0, 30.0, 200.0, 0.1]), 0.396, 96)
    assert sides[0] == 28 and sides[1] == 86          # 1.125 * 10 / 0.396 = 28.4; 1.125 * 30 / 0.396 = 85.2 -> 86
    assert sides[2] == 96 and sides[3] == 8
    assert (sides % 2 == 0).all()
    img = np.arange(96 * 96, dtype=float).reshape(96, 96)
    crop = crop_centre(img, 28)
    assert crop.shape == (28, 28) and crop[0, 0] == img[34, 34]  # centred on the stamp's centre (47.5, 47.5)


def test_aperture_fluxes_sum_the_pixels_inside_the_circle():
    img = np.ones((2, 2, 64, 64))
    img[1, 1] *= 3.0
    out = aperture_fluxes(img, np.array([10.0, 20.0]))
    assert out.shape == (2, 2)
    assert abs(out[0, 0] - np.pi * 10**2) < 0.03 * np.pi * 10**2
    assert abs(out[1, 1] / out[1, 0] - 3.0) < 1e-12


def test_label_noise_is_log_normal_with_the_error_width_and_depends_on_the_id_only():
    n = 20000
    ids = np.arange(n) + 5
    values = np.full(n, 3.0)
    labels = noisy_labels(values, np.full(n, 0.1), ids, seed=15)
    assert abs(np.std(np.log(labels / values)) - 0.1) < 0.003
    assert abs(np.mean(np.log(labels / values))) < 0.003
    perm = np.random.default_rng(0).permutation(n)
    assert np.array_equal(noisy_labels(values[perm], np.full(n, 0.1), ids[perm], 15), labels[perm])
    assert not np.array_equal(noisy_labels(values, np.full(n, 0.1), ids, 16), labels)


def test_ml_error_model_grows_with_magnitude_and_respects_the_floor():
    rng = np.random.default_rng(1)
    bright, faint = (ml_relative_error(rng, np.full(20000, m), 0.01) for m in (15.0, 17.5))
    ratio = np.median(faint) / np.median(bright)
    assert abs(np.log10(ratio) - 0.2 * 2.5) < 0.02            # photon noise: 0.2 dex per mag
    assert abs(np.std(np.log10(bright)) - ML_REL_ERR_SPREAD_DEX) < 0.01
    floored = ml_relative_error(rng, np.full(1000, 14.0), 0.05)
    assert floored.min() == 0.05 and (floored == 0.05).mean() > 0.2


@pytest.fixture(scope="module")
def gi_set(tmp_path_factory):
    from sim2obs.simgen import prepare_set

    return prepare_set({"generator": "galsim", **tiny_config(n=80, shard_size=40, stamp=64, bands=["g", "i"],
                                                             population={"z_max": 0.06, "mag_limit_r": 16.5})},
                       data_dir=tmp_path_factory.mktemp("mlsample"), cluster=SYNC, progress=False)


def _task(gi_set, data_dir, overrides=()):
    return task_on_set("ml_ratio", gi_set, data_dir, [*TINY, *overrides])


def test_the_sample_labels_and_measurements_of_the_task(gi_set, tmp_path):
    from sim2obs.galaxyset import open_galaxy_set

    task = _task(gi_set, tmp_path, ["d25_min_arcmin=0.3"])
    gs = open_galaxy_set(gi_set)
    kept = 0
    for split in ("train", "val", "test"):
        rows, d25 = task.sample_rows(split), task.d25(split)
        assert (d25 > 18.0).all() and len(rows) >= 2
        kept += len(rows)
        ids = task.split_ids(split)
        assert np.array_equal(ids, gs.column("id", split)[rows])
        assert len(task.features(split, ["redshift"])) == len(ids) == len(task.image_features(split)["a"])
    assert kept < gs.n
    # labels: the catalogue M/L times a log-normal of width ml_g_err / ml_g, the same in labels and truth
    rows = task.sample_rows("train")
    true, err = gs.column("ml_g", "train")[rows], gs.column("ml_g_err", "train")[rows]
    y = task.labels("train")[:, 0]
    z = np.log(y / true) / (err / true)
    assert not np.allclose(y, true) and abs(np.mean(z)) < 0.6 and 0.5 < np.std(z) < 1.6
    t = task.truth("test")
    assert np.array_equal(t.extra["ml_g_noiseless"], gs.column("ml_g", "test")[task.sample_rows("test")])
    assert not np.allclose(t.values[:, 0], t.extra["ml_g_noiseless"])
    # cutouts follow D25; measured photometry is close to the catalogue's total flux
    f = task.image_features("train")
    assert np.array_equal(f["size_px"], cutout_sides(task.d25("train"), 0.396, 64))
    assert f["scaled"].shape[1:] == (42, 42)
    phot = task.photometry("train")
    ratio = 10 ** (-0.4 * (phot["mag_g"] - gs.column("mag_g", "train")[rows]))
    inside = task.d25("train") < 64 * 0.396      # apertures inside the stamp: all of the D25 isophote
    assert inside.sum() >= 3 and 0.85 < np.median(ratio[inside]) < 1.05
    assert np.median(ratio[~inside]) < np.median(ratio[inside])  # capped at the stamp: flux is lost
    clean = _task(gi_set, tmp_path / "clean", ["d25_min_arcmin=0.3", "label_noise=false", "photometry=catalogue"])
    assert np.array_equal(clean.labels("train")[:, 0], true)
    assert np.array_equal(clean.photometry("train")["mag_g"], gs.column("mag_g", "train")[rows])
