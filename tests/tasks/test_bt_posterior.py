"""Task bt_posterior (GaMPEN posteriors): preprocessing, posterior summaries, dropout-rate
selection, evaluation, and the quick path end to end on a tiny generated set."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sim2obs.errors import ConfigError, Sim2obsValueError
from sim2obs.tasks import Predictions, build_task, load_task_config
from sim2obs.tasks.bt_posterior import (TARGETS, LabelCoder, StandardScaler, aleatoric_draws, arcsinh_stretch,
                                        clip_to_bounds, posterior_mode, select_dropout_rate)

SYNC = {"kind": "synchronous"}
TINY = ["data.n=150", "data.stamp=64", "trainer.epochs=1", "trainer.batch_size=16", "dropout_rates=[0.1,0.3]",
        "fixed_dropout=0.1", "n_samples=20", "val_samples=20", "stn_plot_galaxies=3"]


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    task = build_task("bt_posterior", load_task_config("bt_posterior", "quick", TINY),
                      data_dir=tmp_path_factory.mktemp("data"), cluster=SYNC)
    task.prepare()
    return task


# ---------------------------------------------------------------------------------- preprocessing
def test_arcsinh_stretch_shape_monotonic_range():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.05, (3, 1, 16, 16)).astype(np.float32)
    x[:, :, 8, 8] += np.array([1.0, 10.0, 100.0], np.float32)[:, None]
    y = arcsinh_stretch(x, 0.1)
    assert y.shape == x.shape and y.dtype == np.float32
    ramp = np.linspace(-50, 50, 1001)
    out = arcsinh_stretch(ramp, 0.1)
    assert np.all(np.diff(out) > 0)                                   # strictly increasing
    assert np.allclose(arcsinh_stretch(-ramp, 0.1), -out, atol=1e-6)  # odd: the sign is kept
    assert abs(arcsinh_stretch(np.array([1e-4]), 0.1)[0] - 1e-3) < 1e-5  # linear in the noise
    bound = np.arcsinh(np.abs(x).max() / 0.1)
    assert np.abs(y).max() <= bound + 1e-5 and np.abs(y).max() < 8.0  # 1000x dynamic range -> < 8
    torch_out = arcsinh_stretch(torch.from_numpy(x), 0.1).numpy()
    assert np.allclose(torch_out, y, atol=1e-5)
    with pytest.raises(Sim2obsValueError):
        arcsinh_stretch(x, 0.0)


def test_standard_scaler_and_label_coder_round_trip():
    rng = np.random.default_rng(1)
    y = np.stack([rng.uniform(0, 1, 500), rng.lognormal(0.7, 0.4, 500), rng.lognormal(5, 0.8, 500)], axis=1)
    scaler = StandardScaler().fit(y)
    z = scaler.transform(y)
    assert np.allclose(z.mean(0), 0, atol=1e-12) and np.allclose(z.std(0), 1)
    assert np.allclose(scaler.inverse_transform(z), y)
    for logs in ((), ("r_e_r", "flux_r")):
        coder = LabelCoder(TARGETS, logs).fit(y[:400])  # fitted on a "training" subset only
        assert np.allclose(coder.decode(coder.encode(y)), y)
        assert np.allclose(coder.encode(y[:400]).mean(0), 0, atol=1e-12)
        assert not np.allclose(coder.encode(y[400:]).mean(0), 0, atol=1e-3)
    assert np.allclose(LabelCoder(TARGETS, ("flux_r",)).fit(y).scaler.mean_[2], np.log10(y[:, 2]).mean())
    clipped = clip_to_bounds(np.array([[-0.2, -1.0, -5.0], [1.3, 2.0, 5.0]]), TARGETS)
    assert clipped.tolist() == [[0.0, 0.0, 0.0], [1.0, 2.0, 5.0]]


# ---------------------------------------------------------------------------------- posterior summaries
def test_posterior_mode_of_skewed_samples():
    rng = np.random.default_rng(2)
    s = np.stack([rng.gamma(3.0, 1.0, 4000), 5.0 + rng.lognormal(0.0, 0.5, 4000), np.full(4000, 2.5)], axis=1)
    mode = posterior_mode(s)
    assert abs(mode[0] - 2.0) < 0.3 and abs(mode[0] - 2.0) < abs(np.median(s[:, 0]) - 2.0) / 2
    assert abs(mode[1] - (5.0 + np.exp(-0.25))) < 0.15 and mode[1] < np.median(s[:, 1]) - 0.1
    assert mode[2] == 2.5
    many = rng.gamma(3.0, 1.0, (1000, 40, 3))
    m = posterior_mode(many)
    assert m.shape == (40, 3) and abs(m.mean() - 2.0) < 0.25
    with pytest.raises(Sim2obsValueError):
        posterior_mode(s[:1])


def test_aleatoric_draws_follow_the_head():
    out = torch.tensor([[1.0, -2.0, np.log(4.0), 0.0]]).repeat(20000, 1)  # means 1, -2; variances 4, 1
    g = torch.Generator().manual_seed(0)
    d = aleatoric_draws(out, 2, g).numpy()
    assert d.shape == (20000, 2)
    assert np.allclose(d.mean(0), [1.0, -2.0], atol=0.05) and np.allclose(d.std(0), [2.0, 1.0], atol=0.05)


def test_dropout_rate_selection_picks_closest_to_nominal():
    cov = {0.05: {0.6827: 0.41, 0.9545: 0.70, 0.9973: 0.85},   # over-confident
           0.1: {0.6827: 0.66, 0.9545: 0.94, 0.9973: 0.99},    # about nominal
           0.3: {0.6827: 0.90, 0.9545: 0.999, 0.9973: 1.0}}    # under-confident
    rate, dist = select_dropout_rate(cov)
    assert rate == 0.1 and dist[0.1] < dist[0.3] < dist[0.05]
    # per-target coverages: averaged over targets; a tie goes to the smaller rate
    per_target = {0.2: {0.6827: [0.60, 0.76]}, 0.1: {0.6827: [0.76, 0.60]}, 0.4: {0.6827: [0.70, 0.70]}}
    assert select_dropout_rate(per_target)[0] == 0.4
    assert select_dropout_rate({0.2: {0.6827: [0.6]}, 0.1: {0.6827: [0.7654]}})[0] == 0.1
    with pytest.raises(Sim2obsValueError):
        select_dropout_rate({})


def test_metric_keys_are_shared_keys():
    from sim2obs.tasks.bt_posterior import BTPosteriorTask
    from sim2obs.tasks.metrics import ranking_loss

    keys = BTPosteriorTask.metadata.metrics
    assert {"posterior_score", "coverage_68", "coverage_95", "coverage_99", "calibration_error",
            "bt_r/nmad", "r_e_r/bias_median", "flux_r/posterior_width", "median_point/bt_r/nmad"} <= set(keys)
    assert all(np.isfinite(ranking_loss(k, 0.5)) for k in keys)  # every key is rankable by its last part


def test_config_refuses_unknown_covariance_and_draws_without_a_gaussian_head():
    with pytest.raises(ConfigError, match="covariance"):
        build_task("bt_posterior", load_task_config("bt_posterior", "quick", ["covariance=tied"]))
    with pytest.raises(ConfigError, match="draws_per_pass"):
        build_task("bt_posterior", load_task_config("bt_posterior", "quick", ["aleatoric=false"]))
    build_task("bt_posterior", load_task_config("bt_posterior", "quick", ["aleatoric=false", "draws_per_pass=1"]))
    with pytest.raises(ConfigError, match="mean_mse_weight"):
        build_task("bt_posterior", load_task_config("bt_posterior", "quick", ["mean_mse_weight=-1"]))


def test_quick_preset_is_hsc_like_with_gampen_population_and_posterior():
    """The quick data: HSC pixels, ~0.6-0.9 arcsec seeing, sky noise 3 mag below SDSS per arcsec^2,
    z < 0.25, r <= 17.77, 25 % single-component galaxies; the posterior: full-covariance head,
    >= 1000 samples, the same S for selection and test, recalibration on."""
    from sim2obs.simgen import galsim_bulge_disk as G

    cfg = load_task_config("bt_posterior", "quick")
    assert cfg["aleatoric"] and cfg["covariance"] == "full" and cfg["recalibrate"]
    assert cfg["n_samples"] >= 1000 and cfg["val_samples"] is None
    task = build_task("bt_posterior", cfg)
    sim = task.simgen_config()
    assert sim["pixel_scale"] == 0.168 and sim["stamp"] * 0.168 >= 16.0
    sdss = G.coerce_config({"bands": ["r"]})
    hsc = G.coerce_config({**sim, "n": 3000})
    per_arcsec = [G.sky_sigma_nmgy(c, "r") / c.pixel_scale for c in (sdss, hsc)]
    assert 2.5 * np.log10(per_arcsec[0] / per_arcsec[1]) == pytest.approx(3.0, abs=0.1)
    p = G.draw_parameters(hsc)
    assert 0.6 < np.median(p["psf_fwhm_r"]) < 0.8 and np.percentile(p["psf_fwhm_r"], 95) < 0.95
    assert p["redshift"].max() <= 0.25 and p["mag_r"].max() <= 17.77
    single = (p["bt_r"] == 0) | (p["bt_r"] == 1)
    assert np.mean(single) == pytest.approx(0.25, abs=0.03)
    assert np.mean(p["bt_r"] == 0) == pytest.approx(0.125, abs=0.025)
    both = p["bt_r"][~single]
    assert both.min() > 0 and both.max() < 1 and 0.3 < np.mean(both < 0.5) < 0.7  # flat B/T prior
    assert np.all(np.isfinite(p["bulge_hlr_arcsec"])) and np.all(np.isfinite(p["disk_size_residual_dex"]))


def test_config_refuses_label_changing_augmentation_and_log_bt():
    with pytest.raises(ConfigError, match="zoom"):
        build_task("bt_posterior", load_task_config("bt_posterior", "quick", ["trainer.augment={zoom: [0.7, 1.3]}"]))
    with pytest.raises(ConfigError, match="log_targets"):
        build_task("bt_posterior", load_task_config("bt_posterior", "quick", ["log_targets=[bt_r]"]))
    with pytest.raises(ConfigError, match="dropout_rates"):
        build_task("bt_posterior", load_task_config("bt_posterior", "quick", ["dropout_rates=[0.0,0.1]"]))
    with pytest.raises(ConfigError):
        build_task("bt_posterior", {"dropout_ratez": [0.1]})
    assert load_task_config("bt_posterior", "paper")["n_samples"] == 1000
    assert [m.name for m in build_task("bt_posterior").methods()] == ["prior", "gampen_fixed_dropout", "gampen"]


# ---------------------------------------------------------------------------------- evaluation
def _synthetic(task, split, width, seed=0, n_samples=400):
    """A Gaussian posterior of per-target width ``width`` x sigma around a centre drawn from
    N(truth, sigma): calibrated when width == 1, over-confident when < 1."""
    truth = task.truth(split)
    rng = np.random.default_rng(seed)
    # B/T: 0.1; R_e and flux: 5 % of the truth, so the centres (the point estimates) stay positive
    sigma = np.array([0.1, 0.05, 0.05]) * np.where([False, True, True], truth.values, 1.0)
    centre = truth.values + sigma * rng.standard_normal(truth.values.shape)
    samples = centre + width * sigma * rng.standard_normal((n_samples, *truth.values.shape))
    return Predictions(truth.ids, centre, task.targets, samples=samples)


def test_coverage_of_calibrated_and_overconfident_posteriors(tiny_task):
    split = "train"  # the largest split of the tiny set: 120 galaxies x 3 targets
    n = len(tiny_task.split_ids(split)) * len(TARGETS)
    good = tiny_task.evaluate(_synthetic(tiny_task, split, 1.0), split)
    for key, level in (("coverage_68", 0.6827), ("coverage_95", 0.9545)):
        assert abs(good[key] - level) < 4 * np.sqrt(level * (1 - level) / n) + 0.01, (key, good[key])
    assert good["calibration_error"] < 0.06
    bad = tiny_task.evaluate(_synthetic(tiny_task, split, 0.3), split)
    assert bad["coverage_68"] < 0.4 and bad["coverage_95"] < 0.6
    assert bad["calibration_error"] > 3 * good["calibration_error"]
    assert bad["posterior_score"] > good["posterior_score"]
    assert np.isclose(good["bt_r/posterior_width"], 2 * 0.1, rtol=0.1)


def test_evaluation_refuses_wrong_ids_and_missing_samples(tiny_task):
    split = tiny_task.config.eval_split
    p = _synthetic(tiny_task, split, 1.0)
    assert np.isfinite(tiny_task.evaluate(p)["posterior_score"])
    with pytest.raises(Sim2obsValueError, match="ids do not match"):
        tiny_task.evaluate(p.subset(np.arange(1, len(p.ids))))
    other = Predictions(p.ids + 100000, p.values, p.targets, samples=p.samples)
    with pytest.raises(Sim2obsValueError, match="ids do not match"):
        tiny_task.evaluate(other)
    with pytest.raises(Sim2obsValueError, match="posterior samples are required"):
        tiny_task.evaluate(Predictions(p.ids, p.values, p.targets))
    with pytest.raises(Sim2obsValueError, match="held out"):
        tiny_task.labels(split)


# ---------------------------------------------------------------------------------- end to end
def test_quick_path_end_to_end(tiny_task, tmp_path):
    out = tmp_path / "results"
    rows = tiny_task.run(out, log=lambda s: None)
    assert [r["method"] for r in rows] == ["prior", "gampen_fixed_dropout", "gampen_no_stn", "gampen"]
    assert [r["kind"] for r in rows] == ["baseline", "baseline", "baseline", "model"]
    test_ids = np.sort(tiny_task.split_ids("test"))
    for r in rows:
        p = Predictions.load(out / r["method"] / "predictions_test.h5")
        assert np.array_equal(np.sort(p.ids), test_ids)
        assert p.samples is not None and p.samples.shape == (20, len(test_ids), 3)
        assert (p.samples[..., 0] >= 0).all() and (p.samples[..., 0] <= 1).all()
        assert all(np.isfinite(v) for v in r["metrics"].values())
        assert r["main_score"] == "posterior_score" and r["value"] == r["metrics"]["posterior_score"]
        for name in ("coverage.png", "posterior_examples.png", "pred_vs_true_bt_r.png", "result.json"):
            assert (out / r["method"] / name).exists(), (r["method"], name)
    gampen = rows[-1]
    assert gampen["info"]["dropout"] in (0.1, 0.3)
    assert gampen["paper"]["value"] == 0.19
    for name in ("stn_input_output.png", "dropout_selection.csv", "dropout_selection.md", "dropout_selection.png"):
        assert (out / "gampen" / name).exists(), name
    table = (out / "gampen" / "dropout_selection.csv").read_text().splitlines()
    assert len(table) == 3 and sum(line.endswith("True") for line in table) == 1
    selected = [line.split(",")[0] for line in table[1:] if line.endswith("True")][0]
    assert float(selected) == gampen["info"]["dropout"]
    assert not (out / "gampen_fixed_dropout" / "dropout_selection.csv").exists()
    assert (out / "summary.md").exists() and (out / "coverage_curves.csv").exists()
    # GaMPEN 2022 posterior: full-covariance Gaussian head, recalibrated widths recorded per method
    for r in rows[1:]:
        info = r["info"]
        assert info["likelihood"] == "gaussian_full" and info["draws_per_pass"] == 20
        recal = json.loads((out / r["method"] / "recalibration.json").read_text())
        assert recal["fitted_on"] == "val" and set(recal["width_scale"]) == set(TARGETS)
        assert all(0.2 <= v <= 5.0 for v in recal["width_scale"].values())
        assert info["recalibration"]["width_scale"] == recal["width_scale"]
        for t in TARGETS:
            assert r["metrics"][f"{t}/crps"] > 0 and 0 <= r["metrics"][f"{t}/pit_ks"] <= 1
    assert "width_scale" in gampen["info"]["dropout_table"][0]
    # the rate is chosen by the validation calibration of the reported (recalibrated) posterior
    dtab = gampen["info"]["dropout_table"]
    assert all({"raw_distance", "distance"} <= set(r) for r in dtab)
    assert min(dtab, key=lambda r: (round(r["distance"], 12), r["rate"]))["rate"] == gampen["info"]["dropout"]
    boot = (out / "coverage_bootstrap.csv").read_text().splitlines()
    assert boot[0].startswith("method,target,coverage_68,coverage_68_err") and len(boot) == 1 + 4 * 3
    assert all(0 < float(line.split(",")[3]) < 0.5 for line in boot[1:])  # a bootstrap error, not 0
    pit = (out / "pit_histogram.csv").read_text().splitlines()
    assert len(pit) == 1 + 4 * 3 * 10
    assert "± " in (out / "summary.md").read_text() and (out / "gampen" / "pit_histogram.png").exists()
    # rerun: every method's result is reused, nothing retrained
    stamps = {r["method"]: (out / r["method"] / "result.json").stat().st_mtime_ns for r in rows}
    messages = []
    again = tiny_task.run(out, log=messages.append)
    assert sum("reusing" in m for m in messages) == 4
    assert [r["value"] for r in again] == [r["value"] for r in rows]
    assert stamps == {r["method"]: (out / r["method"] / "result.json").stat().st_mtime_ns for r in again}
    assert json.loads((out / "results.json").read_text())[-1]["method"] == "gampen"
