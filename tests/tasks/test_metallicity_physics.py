"""The metallicity physics of the GalSim population (star formation, the fundamental metallicity
relation, structure terms), the task's star-forming sample and its §5.2 label-noise injection."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import SYNC
from sim2obs.simgen import population as P
from sim2obs.tasks import build_task, load_task_config
from sim2obs.tasks.base import Predictions
from sim2obs.tasks.metallicity import config as C
from sim2obs.tasks.metallicity.preprocessing import colour_variant, noisy_labels

METALLICITY_KEYS = ("oh12",)


def test_relations_reproduce_published_values():
    # Tremonti et al. 2004 as Wu & Boada eq. 3 at log M* = 10: -1.492 + 18.47 - 8.026
    assert P.mass_metallicity(np.array([10.0]))[0] == pytest.approx(8.952, abs=1e-9)
    # Speagle et al. 2014 eq. 28 at log M* = 10, t = 13 Gyr: (0.84 - 0.338) 10 - (6.51 - 1.43)
    assert P.main_sequence_sfr(np.array([10.0]), np.array([13.0]))[0] == pytest.approx(-0.06, abs=1e-9)
    # Curti et al. 2020 eq. 5 at M* = M0 (log SFR = 0, log M* = 10.11): Z - Z0 = -(0.31/2.1) log10 2
    assert P.curti_fmr_offset(np.array([10.11]), np.array([0.0]))[0] == pytest.approx(-0.31 / 2.1 * np.log10(2))
    # ... and far above the turnover mass it saturates at Z0
    assert P.curti_fmr_offset(np.array([12.5]), np.array([0.0]))[0] == pytest.approx(0.0, abs=1e-4)
    assert P.LOG_SSFR_STAR_FORMING == C.LOG_SSFR_STAR_FORMING == -11.0


def test_sfr_term_changes_oh_at_fixed_mass_by_the_documented_amount():
    age = np.array([12.44])
    for log_m, lo, hi in ((10.0, -0.16, -0.10), (9.5, -0.22, -0.14)):
        m = np.array([log_m])
        ms = P.main_sequence_sfr(m, age)
        assert P.sfr_metallicity_term(m, ms, age)[0] == pytest.approx(0.0, abs=1e-12)  # on the sequence
        per_dex = (P.sfr_metallicity_term(m, ms + 0.1, age) - P.sfr_metallicity_term(m, ms - 0.1, age))[0] / 0.2
        assert lo < per_dex < hi, (log_m, per_dex)  # "about -0.13 dex per dex at 1e10, steeper below"
        # the full noise-free O/H moves by exactly that term at fixed mass and structure
        z0 = P.gas_metallicity(m, ms, age, np.zeros(1))
        z1 = P.gas_metallicity(m, ms + 1.0, age, np.zeros(1))
        assert (z1 - z0)[0] == pytest.approx(P.sfr_metallicity_term(m, ms + 1.0, age)[0], abs=1e-12)
        assert z0[0] == pytest.approx(P.mass_metallicity(m)[0])
    # Ellison et al. 2008 size term: -0.15 dex per dex of disk-size offset; the aperture term adds as given
    m, ms = np.array([10.0]), P.main_sequence_sfr(np.array([10.0]), age)
    base = P.gas_metallicity(m, ms, age, np.zeros(1))[0]
    assert P.gas_metallicity(m, ms, age, np.ones(1))[0] - base == pytest.approx(-0.15)
    assert P.gas_metallicity(m, ms, age, np.zeros(1), np.array([0.04]))[0] - base == pytest.approx(0.04)


def test_sfr_follows_the_disk_colour_and_the_metallicity_scatter_touches_only_oh12():
    p = P.draw_population(np.random.default_rng(11), 600, ("g", "r", "i"), P.PopulationConfig())
    other = P.draw_population(np.random.default_rng(11), 600, ("g", "r", "i"),
                              P.PopulationConfig(metallicity_random_scatter_dex=0.2))
    assert sorted(p) == sorted(other) and not np.array_equal(p["oh12"], other["oh12"])
    assert all(np.array_equal(p[k], other[k]) for k in p if k not in METALLICITY_KEYS)
    sf = P.star_forming(p["log_mstar"], p["log_sfr"])
    assert 0.3 < sf.mean() < 0.9 and (~sf).sum() > 0 and np.mean(sf[~p["quenched"]]) > 0.9
    p = {k: v[~p["quenched"]] for k, v in p.items()}  # the main sequence: star-forming galaxies' colours
    # bluer disk at fixed mass and bulge fraction -> higher SFR: the colour signature in the images
    offset = p["log_sfr"] - P.main_sequence_sfr(p["log_mstar"] + np.log10(1 - p["bulge_mass_fraction"]),
                                               p["cosmic_age_gyr"])
    colour = p["disk_color_gr"] - P.mean_disk_color(p["log_mstar"])
    assert np.corrcoef(offset, colour)[0, 1] < -0.99
    assert 0.2 < np.std(offset) < 0.35  # the published 0.2-0.3 dex main-sequence scatter


def test_label_noise_adds_the_stated_scatter():
    y = np.full((40000, 1), 8.9)
    for sigma in (0.03, 0.1, 0.2):
        d = noisy_labels(y, sigma, seed=0, split="train") - y
        assert np.std(d) == pytest.approx(sigma, rel=0.02) and abs(np.mean(d)) < 4 * sigma / 200
    assert np.array_equal(noisy_labels(y, 0.1, 0, "train"), noisy_labels(y, 0.1, 0, "train"))
    assert not np.array_equal(noisy_labels(y, 0.1, 0, "train"), noisy_labels(y, 0.1, 0, "val"))
    assert np.array_equal(noisy_labels(y, 0.0, 0, "train"), y)


def test_colour_study_channels():
    x = np.random.default_rng(0).uniform(size=(2, 3, 4, 4)).astype(np.float32)  # R, G, B = i, r, g
    r = colour_variant(x, "r")
    assert all(np.array_equal(r[:, k], x[:, 1]) for k in range(3))
    gr = colour_variant(x, "gr")
    assert np.array_equal(gr[:, 0], x[:, 1]) and np.array_equal(gr[:, 2], x[:, 2])
    assert np.allclose(gr[:, 1], 0.5 * (x[:, 1] + x[:, 2]))


def test_task_excludes_quiescent_galaxies(tmp_path):
    cfg = load_task_config("metallicity", "quick", ["resolution.sizes=[16, 8]"])
    cfg["data"] = {"n": 240, "stamp": 16, "shard_size": 240, "seed": 7}
    task = build_task("metallicity", cfg, data_dir=tmp_path, cluster=SYNC)
    gs = task.prepare()
    n_quiescent = 0
    for split in ("train", "val", "test"):
        ssfr_all = gs.column("log_sfr", split) - gs.column("log_mstar", split)
        n_quiescent += int(np.sum(ssfr_all <= -11))
        ids = task.split_ids(split)
        keep = np.isin(gs.column("id", split), ids)
        assert np.all(ssfr_all[keep] > -11) and keep.sum() == np.sum(ssfr_all > -11)
        assert len(task.rgb_images(split)) == len(ids) == len(task.features(split, ["mag_r"]))
        if split != "test":
            assert np.array_equal(task.labels(split)[:, 0], gs.column("oh12", split)[keep])
    assert n_quiescent > 0  # the set has quiescent galaxies: the selection did something
    truth = task.truth("test")
    assert np.array_equal(truth.ids, task.split_ids("test")) and len(truth.extra["log_mstar"]) == len(truth.ids)
    with pytest.raises(Exception, match="not observables|label"):
        task.features("train", ["log_sfr"])


def test_studies_run_and_the_oracle_comparison_is_paired(tmp_path):
    """The §5.2 and Fig. 4 studies run as methods (a tiny network, one epoch) and mzr_oracle.csv
    holds every method against the exact MZR at the true M*, with paired bootstrap errors."""
    import csv

    from sim2obs.simgen.population import mass_metallicity

    cfg = load_task_config("metallicity", "quick", [
        "trainer.epochs=1", "trainer.stages=[]", "tta=false", "resolution.sizes=[]", "plots=false",
        "label_noise=[0.1]", "colour_study=[r]", "methods=[mean,label_noise_0.1,colour_r,mzr_of_cnn_mstar]"])
    cfg["model"] = {"_target_": "tests.tasks.test_metallicity.TinyNet", "in_channels": 3, "num_outputs": 1, "width": 4}
    cfg["data"] = {"n": 240, "stamp": 16, "shard_size": 240, "seed": 7}
    task = build_task("metallicity", cfg, data_dir=tmp_path / "data", cluster=SYNC)
    rows = task.run(tmp_path / "out")
    by = {r["method"]: r for r in rows}
    assert set(by) == {"mean", "label_noise_0.1", "colour_r", "mzr_of_cnn_mstar"}
    assert by["label_noise_0.1"]["info"]["label_noise_dex"] == 0.1 and by["colour_r"]["info"]["colour"] == "r"
    # Fig. 5: the network learnt log M*, the prediction is the Tremonti MZR at the predicted mass
    fig5 = by["mzr_of_cnn_mstar"]["info"]
    assert fig5["target"] == "log_mstar" and fig5["fit_dir"] != by["colour_r"]["info"]["fit_dir"]
    z = Predictions.load(tmp_path / "out" / "mzr_of_cnn_mstar" / "predictions_test.h5").values[:, 0]
    assert np.all(z <= mass_metallicity(np.array([11.5]))[0] + 1e-12)
    assert np.median(z) == pytest.approx(mass_metallicity(np.array([fig5["predicted_log_mstar_median"]]))[0], abs=0.02)
    table = {r["method"]: r for r in csv.DictReader(open(tmp_path / "out" / "mzr_oracle.csv"))}
    assert set(table) == {"mzr_oracle", "mzr_fit_oracle", "image_truth_ceiling", "mean", "label_noise_0.1",
                          "colour_r", "mzr_of_cnn_mstar"}
    truth = task.truth("test")
    # the ceiling: LightGBM on the exact image-visible truths (no redshift, mass or SFR), saved and re-read
    import lightgbm as lgb

    from sim2obs.tasks.metallicity.references import IMAGE_TRUTHS
    run = json.loads((tmp_path / "out" / "image_truth_ceiling" / "run.json").read_text())
    assert run["config"]["features"] == list(IMAGE_TRUTHS) and "redshift" not in IMAGE_TRUTHS
    assert "drawn afresh" in run["config"]["trained_on"]  # not the set's few training galaxies
    booster = lgb.Booster(model_file=str(tmp_path / "out" / "image_truth_ceiling" / "model.txt"))
    x = np.stack([task.galaxy_set.column(c, "test")[task.selection("test")] for c in IMAGE_TRUTHS], axis=1)
    ceiling = float(np.sqrt(np.mean((booster.predict(x) - truth.values[:, 0]) ** 2)))
    assert float(table["image_truth_ceiling"]["rmse"]) == pytest.approx(ceiling, abs=1e-5)
    oracle = float(np.sqrt(np.mean((mass_metallicity(truth.extra["log_mstar"]) - truth.values[:, 0]) ** 2)))
    assert float(table["mzr_oracle"]["rmse"]) == pytest.approx(oracle, abs=1e-5)
    # the fitted oracle: a cubic in the true log M* fitted to the (star-forming) training labels
    keep = task.selection("train")
    fit = np.polynomial.Polynomial.fit(task.galaxy_set.column("log_mstar", "train")[keep],
                                       task.labels("train")[:, 0], 3)
    fit_rmse = float(np.sqrt(np.mean((fit(truth.extra["log_mstar"]) - truth.values[:, 0]) ** 2)))
    assert float(table["mzr_fit_oracle"]["rmse"]) == pytest.approx(fit_rmse, abs=1e-5)
    mean = table["mean"]
    assert float(mean["minus_oracle"]) == pytest.approx(by["mean"]["metrics"]["rmse"] - oracle, abs=1e-5)
    assert float(mean["minus_fit_oracle"]) == pytest.approx(by["mean"]["metrics"]["rmse"] - fit_rmse, abs=1e-5)
    assert 0 < float(mean["minus_oracle_err"]) < 0.1 and 0 <= float(mean["fraction_below_oracle"]) <= 1
    assert 0 < float(mean["minus_fit_oracle_err"]) < 0.1


def test_the_cnn_is_deterministic_given_its_seed(tmp_path):
    """Two trainings of the preset's schedule (shortened, on a tiny set) from the same seed give the
    same predictions bit for bit; another seed gives others."""
    def run(out, seed):
        cfg = load_task_config("metallicity", "quick", ["trainer.epochs=2", "tta=false", "resolution.sizes=[]",
                                                        "plots=false", "methods=[cnn]", f"seed={seed}"])
        cfg["model"] = {"_target_": "tests.tasks.test_metallicity.TinyNet", "in_channels": 3, "num_outputs": 1,
                        "width": 4}
        cfg["trainer"]["stages"] = []
        cfg["data"] = {"n": 240, "stamp": 16, "shard_size": 240, "seed": 7}
        task = build_task("metallicity", cfg, data_dir=tmp_path / "data", cluster=SYNC)
        task.run(tmp_path / out)
        return Predictions.load(tmp_path / out / "cnn" / "predictions_test.h5").values

    a, b, c = run("a", 0), run("b", 0), run("c", 1)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_the_image_truth_ceiling_needs_the_generator_truths():
    """A set without the generator's structural columns (a real survey set) gets no ceiling row."""
    from sim2obs.tasks.metallicity.references import image_truth_ceiling

    schema = SimpleNamespace(column_names=("id", "oh12", "mag_g", "mag_r", "mag_i"))
    assert image_truth_ceiling(SimpleNamespace(galaxy_set=SimpleNamespace(schema=schema)), None) is None
