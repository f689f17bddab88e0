"""Task ml_ratio (Dobbels et al. 2019): image scaling, luminosity statistics, power law, label
hygiene, and the quick pipeline end to end on a tiny generated set (with resume)."""
import json

import numpy as np
import pytest
import torch

from sim2obs.errors import ConfigError, Sim2obsValueError
from sim2obs.tasks import Predictions, build_task, load_task_config
from sim2obs.tasks import metrics as M
from sim2obs.tasks.ml_ratio import (WeightedL1Loss, fit_power_law, fit_scaling_value, flux_to_luminosity,
                                    image_statistics, log_scale, noise_level, rescale_unit, weighted_median)
from tests.conftest import SYNC, tiny_config
from tests.tasks.conftest import task_on_set

METHODS = ["best_constant", "gbm_lg_z", "gi_power_law", "gbm_gi", "gbm_gi_morph", "cnn_gbm"]
TINY = ["trainer.epochs=1", "ml_cnn_epochs=1", "image_size=42", "lightgbm.min_data_in_leaf=5",
        "lightgbm_rounds=40", "early_stopping_rounds=10", "importance_repeats=1", "gi_morph_top_features=20",
        "d25_min_arcmin=null"]  # the tiny set is too small and too far for the D25 cut; cutouts still follow D25


def _blob_images(amplitudes, noise=1.0, size=48, seed=0):
    """Gaussian noise plus a centred Gaussian galaxy of each amplitude (in units of the noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] - size / 2
    blob = np.exp(-(x ** 2 + y ** 2) / (2 * 3.0 ** 2))
    return np.stack([amp * blob + noise * rng.standard_normal((size, size)) for amp in amplitudes])


# --------------------------------------------------------------------------------------------
# Automatic scaling value (§2.2)
# --------------------------------------------------------------------------------------------
def test_scaling_value_maps_the_noise_level_to_0_2_on_synthetic_images():
    unit = rescale_unit(_blob_images([100.0, 300.0, 1000.0]))
    a, n, reached = fit_scaling_value(unit, 0.2)
    assert reached.all()
    np.testing.assert_allclose(n, noise_level(unit))
    # a pixel at the input noise level lands exactly on 0.2 after log scaling
    at_noise = log_scale(np.broadcast_to(n[:, None, None], unit.shape), a)
    np.testing.assert_allclose(at_noise, 0.2, atol=1e-6)
    # higher S/N -> larger scaling value (the paper's Fig. 1)
    assert a[0] < a[1] < a[2]
    assert a[0] > 1.0


def test_noise_level_is_the_sigma_clipped_mean_plus_two_sigma():
    rng = np.random.default_rng(5)
    img = 0.1 + 0.01 * rng.standard_normal((1, 64, 64))
    img[0, 28:36, 28:36] = 0.9  # a "galaxy": clipped away
    n = noise_level(img)[0]
    assert n == pytest.approx(0.1 + 2 * 0.01, abs=1.5e-3)
    assert noise_level(img, sigma=1e3)[0] > 0.25  # without clipping the galaxy dominates


def test_scaling_value_of_pure_noise_cannot_reach_0_2_and_stays_linear():
    unit = rescale_unit(_blob_images([0.0], seed=3))
    a, n, reached = fit_scaling_value(unit, 0.2)
    assert n[0] > 0.2 and not reached[0]
    assert a[0] <= 1e-3  # nearly linear: the output noise stays at its smallest possible value


def test_log_scaled_images_lie_in_unit_interval_and_keep_pixel_order(ml_set):
    from sim2obs.galaxyset import open_galaxy_set

    gs = open_galaxy_set(ml_set)
    raw = gs.images("image", "train")[:, 0].astype(np.float64)
    unit = rescale_unit(raw)
    a, n, reached = fit_scaling_value(unit, 0.2)
    assert reached.sum() >= len(a) // 2, "most generated stamps must reach the 0.2 noise level"
    np.testing.assert_allclose(np.log1p(a[reached] * n[reached]) / np.log1p(a[reached]), 0.2, atol=1e-6)
    scaled = log_scale(unit, a)
    assert scaled.min() >= 0.0 and scaled.max() <= 1.0
    np.testing.assert_allclose(scaled.max(axis=(1, 2)), 1.0)
    for k in range(5):  # monotonic: the pixel order of every image is unchanged
        order = np.argsort(unit[k].ravel(), kind="stable")
        assert (np.diff(scaled[k].ravel()[order]) >= -1e-12).all()
    # the curve itself is increasing in F and in a (for F in (0, 1))
    f = np.linspace(0, 1, 11)
    assert (np.diff(log_scale(f[None, None, :], 50.0)[0, 0]) > 0).all()
    assert log_scale(np.full((1, 1, 1), 0.1), 100.0)[0, 0, 0] > log_scale(np.full((1, 1, 1), 0.1), 10.0)[0, 0, 0]


# --------------------------------------------------------------------------------------------
# Luminosity statistics (§3.2)
# --------------------------------------------------------------------------------------------
def test_image_statistics_on_a_hand_made_image():
    img = np.zeros((7, 7))
    img[3, 3], img[1, 1], img[0, 0] = 10.0, 5.0, -2.0
    s = image_statistics(img)
    assert s["sum"][0] == pytest.approx(13.0)
    assert s["mean"][0] == pytest.approx(13.0 / 49)
    assert s["max"][0] == 10.0 and s["min"][0] == -2.0
    assert s["std"][0] == pytest.approx(np.sqrt(6152.0) / 49)  # E[x^2] - E[x]^2 = 129/49 - 169/2401
    assert s["centre"][0] == 10.0
    assert s["centre5"][0] == pytest.approx(15.0 / 25)  # (10 + 5) over the 5x5 box rows/cols 1..5


def test_flux_to_luminosity_matches_the_catalogue(ml_set):
    from sim2obs.galaxyset import open_galaxy_set

    # 1 nanomaggy at 10 pc is absolute magnitude 22.5; the Sun's g is 5.11 (AB)
    assert flux_to_luminosity(np.array([1e-5]))[0] == pytest.approx(10 ** (-0.4 * (22.5 - 5.11)))
    gs = open_galaxy_set(ml_set)
    ratio = gs.column("lum_g") / gs.column("flux_g")
    np.testing.assert_allclose(flux_to_luminosity(gs.column("luminosity_distance_mpc")), ratio, rtol=2e-3)


# --------------------------------------------------------------------------------------------
# Losses and fits
# --------------------------------------------------------------------------------------------
def test_power_law_fit_recovers_known_parameters():
    rng = np.random.default_rng(1)
    x = rng.uniform(0.4, 1.4, 3000)
    a0, b0 = -0.68, 0.97
    y = 10 ** (a0 + b0 * x) * np.exp(0.05 * rng.laplace(size=x.size))
    err = 0.1 * y * rng.uniform(0.8, 1.5, x.size)
    a, b = fit_power_law(x, y, err)
    assert abs(a - a0) < 0.01 and abs(b - b0) < 0.01
    l1_fit = M.l1(10 ** (a + b * x), y, err)
    assert l1_fit <= M.l1(10 ** (a0 + b0 * x), y, err) + 1e-9
    assert l1_fit < M.l1(10 ** (a0 + 0.05 + b0 * x), y, err)


def test_weighted_median_is_the_l1_optimal_constant():
    rng = np.random.default_rng(2)
    y = rng.lognormal(1.0, 0.5, 301)
    err = 0.1 * y * rng.uniform(0.5, 3.0, y.size)
    c = weighted_median(y, 1 / M.floored_error(y, err))
    grid = np.linspace(y.min(), y.max(), 2001)
    losses = [M.l1(np.full_like(y, g), y, err) for g in grid]
    assert M.l1(np.full_like(y, c), y, err) <= min(losses) + 1e-12


def test_torch_weighted_l1_equals_the_shared_metric():
    rng = np.random.default_rng(3)
    y = rng.uniform(0.5, 8, 50)
    err = rng.uniform(0.0, 0.6, 50)  # some below the 5 % floor
    pred = y + rng.normal(0, 1, 50)
    loss = WeightedL1Loss()(torch.tensor(pred[:, None]), torch.tensor(np.stack([y, err], 1)))
    assert float(loss) == pytest.approx(M.l1(pred, y, err), rel=1e-5)


def test_paper_preset_builds_three_morphology_cnns_and_cnn4(tmp_path):
    from sim2obs.tasks.common.networks import FeatureExtractor
    from sim2obs.tasks.ml_ratio import MLRatioNet, build_morphology_net

    task = build_task("ml_ratio", load_task_config("ml_ratio", "paper"), data_dir=tmp_path)
    c = task.config
    assert sorted(c.morphology_cnns) == ["cnn1", "cnn2", "cnn3"] and c.ml_cnn_from == "cnn1"
    assert c.lightgbm["num_leaves"] == 40 and c.lightgbm["min_data_in_leaf"] == 150
    assert c.lightgbm["feature_fraction"] == 0.4 and c.lightgbm["bagging_fraction"] == 0.8
    n = len(c.morphology_labels)
    for name, spec in c.morphology_cnns.items():
        net, backbone = build_morphology_net(task._cnn_model(spec), n)
        size = spec.image_size or c.image_size
        x = torch.rand(2, 1, size, size)
        feats = FeatureExtractor(net.eval(), spec.inner_features)(x)
        assert feats.shape[0] == 2 and feats.shape[1] >= n + (512 if spec.inner_features else 0)
    ml = MLRatioNet(backbone, n, centre=3.0, scale=1.5)
    assert ml.eval()(x).shape == (2, 1)


def test_gz2_head_outputs_normalised_probabilities():
    from sim2obs.tasks.ml_ratio import build_morphology_net

    net, backbone = build_morphology_net({"_target_": "sim2obs.models.cnn.DobbelsCNN", "output_relu": True}, 37,
                                         head="gz2")
    p = net.eval()(torch.rand(3, 1, 48, 48))
    assert p.shape == (3, 37) and (p >= 0).all()
    np.testing.assert_allclose(p[:, :3].sum(1).detach().numpy(), 1.0, rtol=1e-5)  # smooth / features / star
    assert backbone(torch.rand(1, 1, 48, 48)).min() >= 0  # CNN 4 sees the ReLU scores, not the normalisation


# --------------------------------------------------------------------------------------------
# The task on a tiny generated set
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ml_set(tmp_path_factory):
    from sim2obs.simgen import prepare_set

    return prepare_set({"generator": "galsim", **tiny_config(n=100, shard_size=50)},
                       data_dir=tmp_path_factory.mktemp("mldata"), cluster=SYNC, progress=False)


def _task(ml_set, data_dir, overrides=()):
    return task_on_set("ml_ratio", ml_set, data_dir, [*TINY, *overrides])


def test_labels_of_the_evaluation_split_and_label_features_are_refused(ml_set, tmp_path):
    task = _task(ml_set, tmp_path)
    with pytest.raises(Sim2obsValueError, match="held out"):
        task.labels("test")
    with pytest.raises(Sim2obsValueError, match="held out"):
        task.target_errors("test")
    for col in ("ml_g", "ml_g_err", "ml_i", "log_mstar", "bt_g", "disk_q", "bulge_sersic_n", "r_e_g",
                "inclination_deg", "disk_av"):
        with pytest.raises(Sim2obsValueError, match="labels"):
            task.features("train", ["redshift", col])
    assert task.features("test", ["lum_g", "lum_i", "mag_g", "redshift", "pixel_scale_kpc"]).shape[1] == 5
    assert task.labels("train").shape == (80, 1)


def test_config_errors_name_the_key(ml_set, tmp_path):
    with pytest.raises(ConfigError, match="ml_cnn_from"):
        _task(ml_set, tmp_path, ["ml_cnn_from=cnn9"])
    with pytest.raises(ConfigError, match="output_relu"):
        _task(ml_set, tmp_path, ["model.output_relu=true"])
    with pytest.raises(ConfigError, match="log_labels"):
        _task(ml_set, tmp_path, ["log_labels=[mag_g]"])


def test_quick_pipeline_end_to_end_with_resume(ml_set, tmp_path):
    task = _task(ml_set, tmp_path)
    gs = task.galaxy_set
    reads = []
    column = gs.column

    def spy(name, split=None):
        reads.append((name, split))
        return column(name, split)

    gs.column = spy
    out = tmp_path / "results"
    log = []
    rows = task.run(out, log=log.append)
    gs.column = column

    assert [r["method"] for r in rows] == METHODS
    assert [r["kind"] for r in rows] == ["baseline"] * 5 + ["model"]
    test_ids = np.sort(task.split_ids("test"))
    for r in rows:
        mdir = out / r["method"]
        p = Predictions.load(mdir / "predictions_test.h5")
        assert np.array_equal(np.sort(p.ids), test_ids)
        assert p.values.shape == (len(test_ids), 1) and (p.values > 0).all()
        assert set(r["metrics"]) == set(task.metadata.metrics)
        assert all(np.isfinite(v) for v in r["metrics"].values())
        for name in ("result.json", "pred_vs_true_ml_g.png", "residuals_ml_g.png", "dex_errors_ml_g.png",
                     "l1_terms_ml_g.png"):
            assert (mdir / name).exists(), (r["method"], name)
        assert r["paper"] is not None
    by = {r["method"]: r for r in rows}
    assert by["cnn_gbm"]["paper"]["value"] == 2.29 and by["gbm_gi"]["paper"]["value"] == 1.26

    # the morphology CNN trains on structural labels of train/val only; test-split reads of label
    # columns are only the truth of the evaluation (target and its error)
    morph = set(task.config.morphology_labels)
    assert any(name in morph and split == "train" for name, split in reads)
    leaked = {(n, s) for n, s in reads if s == "test" and n in task.label_columns()}
    assert leaked <= {("ml_g", "test"), ("ml_g_err", "test")}

    # the paper's diagnostics: importances (Fig. 5), ablation (Table 1), scaled images (Fig. 1)
    model_dir = out / "cnn_gbm"
    imp = (model_dir / "importances.csv").read_text().splitlines()
    assert imp[0].startswith("feature,group,importance_l1") and len(imp) > 10
    for name in ("importances.png", "scaled_examples.png"):
        assert (model_dir / name).exists()
    for name in ("ablation_table.csv", "ablation_table.md", "ablation_table.png", "l1_by_method.png"):
        assert (out / name).exists()
    table = (out / "ablation_table.csv").read_text().splitlines()
    assert len(table) == 1 + 6
    first = table[1].split(",")
    assert first[0] == "all" and float(first[7]) == pytest.approx(by["cnn_gbm"]["metrics"]["l1"], rel=1e-5)
    assert all(np.isfinite(float(line.split(",")[7])) for line in table[1:])
    assert "| ✓ | ✓ | ✓ |" in (out / "ablation_table.md").read_text()
    assert (out / "_shared").is_dir()

    # rerun: every method's result is reused, nothing is retrained
    again = _task(ml_set, tmp_path)
    log2 = []
    rows2 = again.run(out, log=log2.append)
    assert sum("done before, reusing" in line for line in log2) == len(METHODS)
    assert [r["value"] for r in rows2] == [r["value"] for r in rows]
    assert json.loads((out / "results.json").read_text())[-1]["method"] == "cnn_gbm"
