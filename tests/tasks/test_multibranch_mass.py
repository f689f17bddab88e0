"""Task multibranch_mass (Chu et al. 2024): config validation, train-only scaling, metrics on known
arrays, every method end to end on a tiny synthetic set that follows the tng schema (one epoch),
the LightGBM study / correlation / ablation files, the power law, label hygiene, resuming, and a
run on a tiny set of the real tng generator."""
from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from sim2obs.errors import ConfigError, DataFormatError, Sim2obsValueError
from sim2obs.galaxyset import ColumnSpec, GalaxySetSchema, GalaxySetWriter, StackSpec
from sim2obs.imaging import rebin
from sim2obs.tasks import build_task, load_task_config
from sim2obs.tasks.base import Predictions, Truth
from sim2obs.tasks.multibranch_mass import (OBSERVABLE_COLUMNS, PAPER_GBDT, SUMMARY_FEATURES, TARGETS, UnitScaling,
                                            fit_power_law, fit_unit_scaling, paper_ablation_value)
from sim2obs.tasks.bootstrap import bootstrap_indices
from tests.tasks.conftest import run_recording_reads

SIZES = (32, 16)
KIN_PX = 16
N_SUBHALOS = 20
INT_COLUMNS = ("id", "subhalo_id", "projection", "snapshot", "summary_flags")
FLOAT_COLUMNS = ("redshift", "rhalf_kpc", "fov_kpc", "log_mstar_rhalf", "log_mdm_rhalf", "log_mgas_rhalf",
                 "log_mtot_rhalf", "log_ml_r", "f_dm_rhalf", "log_mstar_30kpc", "log_msub", "mag_r", "g_r",
                 "log_lr_rhalf", "sfr_1gyr", "sersic_n", "q_3d", "sigma_e", "lambda_r", "kin_bt", "f_cold", "f_hot")
POWER_LAW_SLOPE = 1.0  # log M* = log L + log M/L, with M/L nearly independent of L in the tiny set


def _schema() -> GalaxySetSchema:
    stacks = []
    for n in SIZES:
        stacks.append(StackSpec(f"r_{n}", ("r",), n, n, unit="solLum"))
        stacks.append(StackSpec(f"gr_{n}", ("g_minus_r",), n, n, unit="mag"))
    stacks += [StackSpec("vmap", ("v_los",), KIN_PX, KIN_PX, unit="km/s"),
               StackSpec("sigmamap", ("sigma_los",), KIN_PX, KIN_PX, unit="km/s"),
               StackSpec("kinmask", ("valid",), KIN_PX, KIN_PX)]
    columns = [ColumnSpec(c, dtype="int64") for c in INT_COLUMNS] + [ColumnSpec(c) for c in FLOAT_COLUMNS]
    return GalaxySetSchema(stacks=tuple(stacks), columns=tuple(columns))


def make_tng_like_set(path, n_subhalos: int = N_SUBHALOS, seed: int = 0):
    """A galaxy set with the tng generator's schema (shared spec): 3 projections per subhalo,
    exponential-disc r images whose total light sets the masses, colour maps, rotation and
    dispersion maps whose amplitude follows M*, splits per subhalo."""
    rng = np.random.default_rng(seed)
    n = 3 * n_subhalos
    sub = np.repeat(np.arange(n_subhalos), 3)
    proj = np.tile(np.arange(3), n_subhalos)
    log_l = np.repeat(rng.uniform(9.5, 11.0, n_subhalos), 3)           # log L_r within R_half
    g_r = np.repeat(rng.uniform(0.3, 0.9, n_subhalos), 3) + rng.normal(0, 0.01, n)
    log_ml = 0.1 + 0.3 * (g_r - 0.6) + rng.normal(0, 0.01, n)
    log_mstar = log_l + log_ml
    f_dm = np.repeat(rng.uniform(0.2, 0.6, n_subhalos), 3)
    log_mtot = log_mstar - np.log10(1.0 - f_dm)
    sigma = 10.0 ** (2.1 + 0.3 * (log_mstar - 10.0)) * (1 + rng.normal(0, 0.02, n))
    inclination = rng.uniform(0.2, 1.0, n)
    rhalf = 10.0 ** (0.3 * (log_mstar - 10.0) + 0.5)

    images, kin = {}, {}
    big = SIZES[0]
    yy, xx = np.mgrid[0:big, 0:big] + 0.5 - big / 2
    axis_ratio = np.sqrt(1 - 0.5 * inclination**2)[:, None, None]
    rr = np.hypot(xx[None], yy[None] / axis_ratio)
    profile = np.exp(-rr / (big / 10.0)) * (rr < big / 2)
    profile /= profile.sum(axis=(1, 2), keepdims=True)
    r_big = profile * (2 * 10.0 ** log_l)[:, None, None]               # L_sun per pixel; total = 2 L(R_half)
    gr_big = np.where(r_big > 0, g_r[:, None, None] + 0.05 * (1 - rr / big), 0.0)
    for s in SIZES:
        factor = (big // s) ** 2
        images[f"r_{s}"] = (rebin(r_big, s) * factor)[:, None]            # totals conserved
        lit = images[f"r_{s}"][:, 0] > 0
        images[f"gr_{s}"] = np.where(lit, rebin(gr_big, s), 0.0)[:, None]
    ky, kx = np.mgrid[0:KIN_PX, 0:KIN_PX] + 0.5 - KIN_PX / 2
    mask = (np.hypot(kx, ky) < 6)[None].repeat(n, 0)
    mask[:, 0, 0] = False
    v = 1.5 * sigma[:, None, None] * inclination[:, None, None] * np.tanh(kx / 3.0)[None]
    sig = sigma[:, None, None] * np.exp(-np.hypot(kx, ky) / 10.0)[None]
    kin["vmap"] = np.where(mask, v, 0.0)[:, None]
    kin["sigmamap"] = np.where(mask, sig, 0.0)[:, None]
    kin["kinmask"] = mask[:, None].astype(np.float32)

    sub_split = np.zeros(n_subhalos, np.int8)
    order = rng.permutation(n_subhalos)
    n_tr, n_va = int(0.6 * n_subhalos), int(0.15 * n_subhalos)
    sub_split[order[n_tr:n_tr + n_va]] = 1
    sub_split[order[n_tr + n_va:]] = 2
    catalog = {
        "id": sub * 3 + proj, "subhalo_id": sub, "projection": proj, "snapshot": np.full(n, 99),
        "redshift": np.zeros(n), "rhalf_kpc": rhalf, "fov_kpc": 6 * rhalf,
        "log_mstar_rhalf": log_mstar, "log_mdm_rhalf": np.log10(f_dm) + log_mtot,
        "log_mgas_rhalf": log_mstar - 3.0, "log_mtot_rhalf": log_mtot, "log_ml_r": log_ml, "f_dm_rhalf": f_dm,
        "log_mstar_30kpc": log_mstar + 0.3, "log_msub": log_mtot + 1.5,
        "mag_r": 4.65 - 2.5 * np.log10(2 * 10.0 ** log_l), "g_r": g_r, "log_lr_rhalf": log_l,
        "sfr_1gyr": 10.0 ** rng.normal(-0.5, 0.5, n), "sersic_n": rng.uniform(0.8, 6.0, n),
        "q_3d": rng.uniform(0.2, 1.0, n), "sigma_e": sigma, "lambda_r": inclination * 0.6,
        "kin_bt": rng.uniform(0.1, 0.9, n), "f_cold": rng.uniform(0.0, 0.6, n), "f_hot": rng.uniform(0.1, 0.6, n),
    }
    catalog["kin_bt"][0] = 1.5  # outside the §2.3 cut: left out of the LightGBM training if in train
    catalog["summary_flags"] = np.zeros(n, np.int64)
    catalog["summary_flags"][[1, 2]] = 1 | 2  # the generator could not fit sersic_n nor measure lambda_r
    catalog["sersic_n"][[1, 2]] = catalog["lambda_r"][[1, 2]] = 0.0
    writer = GalaxySetWriter(path, _schema(), n_objects=n, shard_size=n // 2, build_key=f"tiny-tng-{seed}")
    writer.prepare()
    for i in range(writer.n_shards):
        a, b = writer.shard_range(i)
        writer.write_shard(i, {k: v[a:b] for k, v in {**images, **kin}.items()},
                           {k: np.asarray(v)[a:b] for k, v in catalog.items()}, sub_split[sub[a:b]])
    writer.finalize("tiny_tng", {"generator": "test", "seed": seed})
    return path


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    return make_tng_like_set(tmp_path_factory.mktemp("tng") / "tiny")


def _tiny_config(path, **extra):
    overrides = [
        "trainer.epochs=1", "trainer.batch_size=16", "trainer.progress=false", "image_resolution=16",
        "lightgbm.num_boost_round=20", "lightgbm.params.min_data_in_leaf=3", "lightgbm.num_threads=1",
        "model.head_hidden=[16]",
    ]
    cfg = load_task_config("multibranch_mass", "ablation", overrides)
    cfg["data"] = {"path": str(path)}
    cfg.update(extra)
    return cfg


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
def test_presets_compose_and_bad_settings_are_refused(tmp_path):
    quick = build_task("multibranch_mass", load_task_config("multibranch_mass", "quick"), data_dir=tmp_path)
    # the quick preset runs the main ablation: image + maps (the cnn) against either alone, one schedule
    assert [m.name for m in quick.methods()] == ["power_law", "lightgbm", "lightgbm_no_mag", "cnn", "cnn_image",
                                                 "cnn_maps"]
    assert [m.config["inputs"] for m in quick.methods()[3:]] == [["image", "vmap", "sigmamap"], ["image"],
                                                                 ["vmap", "sigmamap"]]
    assert quick.trainer_config(ablation=True) == quick.trainer_config()
    assert quick.config.data["generator"] == "tng" and quick.config.image_resolution == 60
    assert quick.available_resolutions() == [150, 60]
    t = quick.trainer_config()
    assert (t.optimiser, t.schedule, t.batch_size, t.epochs) == ("adam", "cosine", 40, 16)
    assert t.augment.rotate and t.augment.flip and t.augment.zoom == [1.0, 1.0]  # no zoom: maps span 6 R_half
    assert t.precise_bn_batches == 2  # ~10 batches an epoch: batch-norm statistics re-estimated (ablation too)
    paper = build_task("multibranch_mass", load_task_config("multibranch_mass", "paper"), data_dir=tmp_path)
    t = paper.trainer_config()
    assert (t.epochs, t.lr, t.batch_size, t.augment) == (200, 1e-4, 40, None) and paper.config.image_resolution == 300
    assert t.precise_bn_batches == 0  # 400 batches an epoch: the moving averages suffice
    ablation = build_task("multibranch_mass", load_task_config("multibranch_mass", "ablation"), data_dir=tmp_path)
    assert [m.name for m in ablation.methods()][4:] == [
        "cnn_image", "cnn_image_colour", "cnn_maps", "cnn_image_maps", "cnn_image_colour_maps", "cnn_image_150px"]
    assert ablation.trainer_config().epochs == 30
    paper_ab = build_task("multibranch_mass", {**load_task_config("multibranch_mass", "paper"),
                                               "ablation": {"enabled": True}}, data_dir=tmp_path)
    assert [m.name for m in paper_ab.methods()][-2:] == ["cnn_image_150px", "cnn_image_60px"]
    assert not list(tmp_path.iterdir())

    base = load_task_config("multibranch_mass", "quick")
    bad = [
        ({"inptus": ["image"]}, "inptus"),
        ({"inputs": ["imag", "vmap"]}, "did you mean 'image'"),
        ({"inputs": []}, "inputs"),
        ({"image_resolution": 128}, "image_resolution"),
        ({"ablation": {"variants": ["image_colours"]}}, "did you mean 'image_colour'"),
        ({"ablation": {"enabled": True, "variants": ["image", "mapz"]}}, "did you mean 'maps'"),
        ({"ablation": {"resolutions": [300]}}, "ablation.resolutions"),
        ({"ablation": {"enabeld": True}}, "enabeld"),
        ({"scaling": {"image": "sqrt"}}, "scaling.image"),
        ({"lightgbm": {"features": ["mag_r", "log_mstar_rhalf"]}}, "lightgbm.features"),
        ({"lightgbm": {"study_targets": ["log_mbh"]}}, "study_targets"),
        ({"trainer": {"epoch": 3}}, "trainer"),
        ({"eval_split": "val"}, "eval_split"),
        ({"methods": ["cnn", "lightgbm_nomag"]}, "methods"),
    ]
    for change, match in bad:
        cfg = {**base, **change}
        with pytest.raises(ConfigError, match=match):
            build_task("multibranch_mass", cfg, data_dir=tmp_path)


def test_paper_numbers_are_keyed_by_method_and_variant():
    from sim2obs.tasks.multibranch_mass import MultibranchMassTask

    meta = MultibranchMassTask.metadata
    assert meta.main_score == "log_mstar_rhalf/scatter_dex" and not meta.higher_is_better
    assert {k: v.value for k, v in meta.paper.items()} == {"cnn": 0.04, "power_law": 0.16, "lightgbm": 0.05,
                                                           "lightgbm_no_mag": 0.08}
    assert paper_ablation_value(["image"], 60, "log_mstar_rhalf")[0] == 0.07
    assert paper_ablation_value(["image"], 150, "log_mstar_rhalf")[0] == 0.06
    assert paper_ablation_value(["vmap", "sigmamap"], 60, "log_mtot_rhalf")[0] == 0.09
    assert paper_ablation_value(["sigmamap", "colour", "image", "vmap"], 300, "log_ml_r")[0] == 0.04
    assert paper_ablation_value(["image", "colour", "vmap", "sigmamap"], 300, "log_mstar_rhalf")[0] is None
    assert paper_ablation_value(["image", "vmap", "sigmamap"], 60, "log_mtot_rhalf", joint=True) == (
        0.06, "§4.3, M* and M_tot by one network, 300 px images")
    assert PAPER_GBDT[("log_mdm_rhalf", False)] == 0.15


# --------------------------------------------------------------------------------------------
# Preprocessing, metrics, power law
# --------------------------------------------------------------------------------------------
def test_unit_scaling_linear_log_and_masks():
    x = np.array([[0.0, 1.0], [3.0, 5.0]])
    s = fit_unit_scaling(x, mode="linear")
    assert (s.lo, s.hi) == (0.0, 5.0)
    assert np.allclose(s.apply(x), x / 5.0)
    valid = np.array([[False, True], [True, True]])
    s = fit_unit_scaling(x - 2.0, valid, mode="linear")              # min over the valid pixels only
    assert (s.lo, s.hi) == (-1.0, 3.0)
    out = s.apply(x - 2.0, valid)
    assert out[0, 0] == 0.0 and np.allclose(out[valid], [0.0, 0.5, 1.0])
    lum = np.array([0.0, 1e-3, 1.0, 1e2, 1e4])
    s = fit_unit_scaling(lum, mode="log", log_range_dex=4.0)          # floor 1 L_sun: log10 from 0 to 4
    assert s.floor == pytest.approx(1.0) and (s.lo, s.hi) == (pytest.approx(0.0), pytest.approx(4.0))
    assert np.allclose(s.apply(lum), [0.0, 0.0, 0.0, 0.5, 1.0])
    assert s.apply(np.array([1e6]))[0] == pytest.approx(1.5)          # brighter than training: above 1
    assert UnitScaling("linear", 2.0, 2.0).apply(np.array([2.0, 3.0])).tolist() == [0.0, 1.0]
    with pytest.raises(Sim2obsValueError):
        fit_unit_scaling(np.zeros(4), mode="log")
    with pytest.raises(Sim2obsValueError):
        fit_unit_scaling(x, np.zeros_like(x, bool))


def test_metrics_bias_and_scatter_on_known_arrays(tiny_task):
    truth = np.array([[10.0, 11.0, 0.2], [10.5, 11.2, 0.3], [11.0, 11.9, 0.1], [9.5, 10.8, 0.5]])
    shift = np.array([0.15, 0.05, 0.15, 0.05])                        # mean 0.1, std 0.05
    pred = truth + np.stack([shift, -shift, np.zeros(4)], axis=1)
    ids = np.arange(4)
    m = tiny_task.compute_metrics(Predictions(ids, pred, TARGETS), Truth(ids, truth))
    assert m["log_mstar_rhalf/bias_mean"] == pytest.approx(0.1)
    assert m["log_mstar_rhalf/scatter_dex"] == pytest.approx(0.05)
    assert m["log_mtot_rhalf/bias_mean"] == pytest.approx(-0.1)
    assert m["log_ml_r/scatter_dex"] == 0.0 and m["log_ml_r/rmse"] == 0.0
    assert m["log_mstar_rhalf/rmse"] == pytest.approx(math.sqrt(0.1**2 + 0.05**2))
    assert set(m) == set(tiny_task.metadata.metrics)
    from sim2obs.tasks.metrics import is_better

    assert is_better("log_mstar_rhalf/scatter_dex", 0.04, 0.05)
    assert is_better("log_mstar_rhalf/bias_mean", -0.01, 0.02)        # |bias| ranks


def test_fit_power_law_recovers_coefficients():
    rng = np.random.default_rng(1)
    x = rng.uniform(9, 11, 500)
    a, b = fit_power_law(x, 0.3 + 1.2 * x)
    assert (a, b) == (pytest.approx(0.3), pytest.approx(1.2))
    a, b = fit_power_law(x, 0.3 + 1.2 * x + rng.normal(0, 0.05, 500))
    assert abs(b - 1.2) < 0.02 and abs(a - 0.3) < 0.2
    with pytest.raises(Sim2obsValueError):
        fit_power_law(np.ones(5), np.arange(5.0))


# --------------------------------------------------------------------------------------------
# Data binding on the tiny set
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_task(tiny_set, tmp_path_factory):
    task = build_task("multibranch_mass", _tiny_config(tiny_set), data_dir=tmp_path_factory.mktemp("d"))
    task.prepare()
    return task


def test_set_checks_name_what_is_missing(tiny_task, tiny_set, tmp_path):
    assert tiny_task.available_resolutions() == [32, 16]
    gs = tiny_task.galaxy_set
    schema = gs.schema
    lacking = GalaxySetSchema(stacks=tuple(s for s in schema.stacks if s.name != "gr_16"),
                              columns=tuple(c for c in schema.columns if c.name not in ("sigma_e", "log_mdm_rhalf")))
    fake = SimpleNamespace(schema=lacking, path=gs.path, split_names=gs.split_names)
    with pytest.raises(DataFormatError, match=r"gr_16.*sigma_e.*log_mdm_rhalf"):
        tiny_task.check_set(fake)
    with pytest.raises(ConfigError, match="image_resolution"):  # sizes read from the set's manifest
        build_task("multibranch_mass", _tiny_config(tiny_set, image_resolution=8), data_dir=tmp_path)


def test_features_are_observables_and_test_labels_are_held_out(tiny_task):
    assert tiny_task.features("test", list(SUMMARY_FEATURES)).shape[1] == len(SUMMARY_FEATURES)
    for col in ("log_mstar_rhalf", "log_mdm_rhalf", "f_dm_rhalf", "log_msub", "log_mstar_30kpc", "rhalf_kpc",
                "fov_kpc", "subhalo_id", "log_mgas_rhalf"):
        with pytest.raises(Sim2obsValueError, match="not observables"):
            tiny_task.features("train", ["sigma_e", col])
    assert set(tiny_task.label_columns()).isdisjoint(OBSERVABLE_COLUMNS)
    with pytest.raises(Sim2obsValueError, match="held out"):
        tiny_task.labels("test")
    with pytest.raises(Sim2obsValueError, match="held out"):
        tiny_task.training_columns("test", ["log_mdm_rhalf"])
    f_star = tiny_task.training_columns("train", ["f_star_rhalf"])[:, 0]
    ms, mt = (tiny_task.galaxy_set.column(c, "train") for c in ("log_mstar_rhalf", "log_mtot_rhalf"))
    assert np.allclose(f_star, 10 ** (ms - mt))


def test_unmeasured_statistics_are_missing_values(tiny_task):
    gs = tiny_task.galaxy_set
    for split in ("train", "val", "test"):
        flags = gs.column("summary_flags", split)
        x = tiny_task.features(split, ["sersic_n", "sigma_e", "lambda_r"])
        assert np.array_equal(np.isnan(x[:, 0]), flags & 1 != 0) and np.array_equal(np.isnan(x[:, 2]), flags & 2 != 0)
        assert np.isfinite(x[:, 1]).all()
    assert (gs.column("summary_flags") != 0).sum() == 2
    names, r = tiny_task.correlation_matrix()
    assert np.isfinite(r[names.index("sersic_n"), names.index("sigma_e")])  # pairwise over measured objects


def test_scaling_is_fitted_on_the_training_split_only(tiny_task):
    gs = tiny_task.galaxy_set
    for branch, px in (("image", 16), ("colour", 32), ("vmap", None), ("sigmamap", None)):
        x = {s: tiny_task.network_inputs(branch, px, s) for s in ("train", "val", "test")}
        assert x["train"].dtype == np.float32 and x["train"].shape[1] == 1
        assert x["train"].min() == pytest.approx(0.0, abs=1e-6) and x["train"].max() == pytest.approx(1.0, abs=1e-5)
        s = tiny_task.scaling(branch, px)
        raw, valid = tiny_task._raw(branch, px, "train")
        assert s == fit_unit_scaling(raw, valid, s.mode, tiny_task.config.scaling.log_range_dex)
        raw_t, valid_t = tiny_task._raw(branch, px, "test")
        assert s != fit_unit_scaling(raw_t, valid_t, s.mode, tiny_task.config.scaling.log_range_dex)
        assert np.allclose(x["test"][:, 0], s.apply(raw_t, valid_t))  # test pixels use the training scaling
        if valid_t is not None:
            assert np.all(x["test"][:, 0][~valid_t] == 0.0)          # invalid pixels stay 0
    assert tiny_task.scaling("image", 16).mode == "log" and tiny_task.scaling("vmap", None).mode == "linear"
    dark = gs.images("r_16", "train")[:, 0] == 0
    assert np.all(tiny_task.network_inputs("image", 16, "train")[:, 0][dark] == 0.0)


# --------------------------------------------------------------------------------------------
# Every method end to end
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tiny_set, tmp_path_factory):
    """Run every method (with the ablation) once, recording the catalogue columns methods read."""
    root = tmp_path_factory.mktemp("run")
    task = build_task("multibranch_mass", _tiny_config(tiny_set), data_dir=root / "data")
    rows, reads, logs = run_recording_reads(task, root / "results")
    return {"task": task, "rows": rows, "out": root / "results", "reads": reads, "root": root}


EXPECTED = ["power_law", "lightgbm", "lightgbm_no_mag", "cnn", "cnn_image", "cnn_image_colour", "cnn_maps",
            "cnn_image_maps", "cnn_image_colour_maps", "cnn_image_32px"]


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_method_end_to_end(tiny_run):
    task, rows, out = tiny_run["task"], tiny_run["rows"], tiny_run["out"]
    assert [r["method"] for r in rows] == EXPECTED
    test_ids = np.sort(task.split_ids("test"))
    for r in rows:
        preds = Predictions.load(out / r["method"] / r["predictions"])
        assert np.array_equal(np.sort(preds.ids), test_ids)
        assert preds.targets == TARGETS and np.isfinite(preds.values).all()
        assert set(r["metrics"]) == set(task.metadata.metrics)
        assert r["value"] == r["metrics"]["log_mstar_rhalf/scatter_dex"] > 0
        for t in TARGETS:
            assert (out / r["method"] / f"pred_vs_true_{t}.png").stat().st_size > 0
        # predictions in dex near the targets' range
        assert 9.0 < float(np.median(preds.values[:, 0])) < 12.5
    by = {r["method"]: r for r in rows}
    assert by["cnn"]["paper"]["value"] == 0.04 and by["power_law"]["paper"]["value"] == 0.16
    assert by["cnn"]["kind"] == "model" and by["cnn_maps"]["kind"] == "baseline"
    assert by["cnn"]["info"]["input_px"] == {"image": 16, "vmap": 16, "sigmamap": 16}
    assert "precision_note" in by["cnn"]["info"]                        # fp32 at <= 16 px
    assert by["cnn_image_32px"]["info"]["input_px"] == {"image": 32}
    assert by["cnn_image_colour"]["info"]["inputs"] == ["image", "colour"]
    # the same network settings are trained once: cnn and cnn_image_maps share their fit
    assert by["cnn"]["info"]["fits"][0]["fit_dir"] == by["cnn_image_maps"]["info"]["fits"][0]["fit_dir"]
    assert by["cnn"]["metrics"] == by["cnn_image_maps"]["metrics"]
    assert by["lightgbm"]["info"]["n_train_excluded"] == int(task.features("train", ["kin_bt"])[:, 0].max() > 1)
    assert "mag_r" not in by["lightgbm_no_mag"]["info"]["features"]
    # a power law recovers the set's log M* ~ log L slope; its predictions are a + b log L
    pl = by["power_law"]["info"]["log_mstar_rhalf"]
    assert abs(pl["b"] - POWER_LAW_SLOPE) < 0.1
    gs = task.galaxy_set
    a, b = np.polyfit(gs.column("log_lr_rhalf", "train"), gs.column("log_mstar_rhalf", "train"), 1)[::-1]
    assert (pl["a"], pl["b"]) == (pytest.approx(a), pytest.approx(b))
    preds = Predictions.load(out / "power_law" / by["power_law"]["predictions"])
    assert np.allclose(preds.values[:, 0], a + b * gs.column("log_lr_rhalf", "test"))
    assert by["power_law"]["value"] < 0.1                               # M/L varies little in the tiny set


def test_lightgbm_importances_study_and_correlation_files(tiny_run):
    out, task = tiny_run["out"], tiny_run["task"]
    study = task.config.lightgbm.study_targets
    assert set(study) == {"log_mstar_rhalf", "log_mdm_rhalf", "log_mtot_rhalf", "f_star_rhalf", "f_dm_rhalf",
                          "log_ml_r"}
    for method, n_feat in (("lightgbm", 10), ("lightgbm_no_mag", 9)):
        imp = _read_csv(out / method / "importances.csv")
        assert len(imp) == len(study) * n_feat
        assert {r["target"] for r in imp} == set(study)
        for t in study:
            rows = [r for r in imp if r["target"] == t]
            gains = [float(r["gain"]) for r in rows]
            assert gains == sorted(gains, reverse=True) and [int(r["rank"]) for r in rows] == list(range(1, n_feat + 1))
            assert sum(float(r["gain_fraction"]) for r in rows) == pytest.approx(1.0, abs=1e-4)
            assert (out / method / f"importance_{t}.png").stat().st_size > 0
        assert ("mag_r" in {r["feature"] for r in imp}) == (method == "lightgbm")
    # the importances find what the tiny set's targets depend on: M/L on the colour, M* on L or sigma
    for method in ("lightgbm", "lightgbm_no_mag"):
        top = {r["target"]: r["feature"] for r in _read_csv(out / method / "importances.csv") if r["rank"] == "1"}
        assert top["log_ml_r"] == "g_r" and top["log_mstar_rhalf"] in ("mag_r", "sigma_e")

    table = _read_csv(out / "lightgbm_study.csv")
    assert len(table) == 2 * len(study)
    assert {(r["target"], r["inputs"]) for r in table} == {(t, i) for t in study
                                                           for i in ("default", "default w/o mag")}
    row = next(r for r in table if r["target"] == "log_mstar_rhalf" and r["inputs"] == "default")
    assert float(row["paper_scatter"]) == 0.05 and len(row["top_features"].split(" > ")) == 3
    by = {r["method"]: r for r in tiny_run["rows"]}
    assert float(row["scatter"]) == pytest.approx(by["lightgbm"]["metrics"]["log_mstar_rhalf/scatter_dex"], rel=1e-5)
    fdm = next(r for r in table if r["target"] == "f_dm_rhalf" and r["inputs"] == "default")
    assert fdm["unit"] == "fraction" and 0 < float(fdm["scatter"]) < 0.5
    assert "| log_mdm_rhalf [dex] | default w/o mag |" in (out / "lightgbm_study.md").read_text()

    corr = _read_csv(out / "correlation_matrix.csv")
    names = list(corr[0])[1:]
    assert names[:11] == [*SUMMARY_FEATURES, "log_lr_rhalf"] and names[11:] == list(dict.fromkeys([*TARGETS, *study]))
    r = np.array([[float(c[n]) for n in names] for c in corr])
    assert np.allclose(np.diag(r), 1.0) and np.allclose(r, r.T)
    gs = task.galaxy_set
    expected = np.corrcoef(gs.column("log_lr_rhalf", "train"), gs.column("log_mstar_rhalf", "train"))[0, 1]
    assert r[names.index("log_lr_rhalf"), names.index("log_mstar_rhalf")] == pytest.approx(expected, abs=1e-4)
    assert (out / "correlation_matrix.png").stat().st_size > 0


def test_ablation_table(tiny_run):
    out = tiny_run["out"]
    table = _read_csv(out / "ablation_table.csv")
    nets = [m for m in EXPECTED if m.startswith("cnn")]
    assert [r["method"] for r in table] == [m for m in nets for _ in TARGETS]
    assert [r["target"] for r in table[:3]] == list(TARGETS)
    by = {(r["method"], r["target"]): r for r in table}
    assert by[("cnn_maps", "log_mtot_rhalf")]["inputs"] == "vmap+sigmamap"
    assert by[("cnn_maps", "log_mtot_rhalf")]["resolution_px"] == ""
    assert by[("cnn_image_32px", "log_mstar_rhalf")]["resolution_px"] == "32"
    assert by[("cnn_image", "log_mstar_rhalf")]["resolution_px"] == "16"
    assert float(by[("cnn_maps", "log_mtot_rhalf")]["paper_scatter"]) == 0.09
    assert by[("cnn", "log_mstar_rhalf")]["paper_note"].startswith("§4.3")          # joint network
    assert float(by[("cnn_image_colour_maps", "log_ml_r")]["paper_scatter"]) == 0.04
    rows = {r["method"]: r for r in tiny_run["rows"]}
    assert float(by[("cnn_image", "log_ml_r")]["scatter"]) == pytest.approx(
        rows["cnn_image"]["metrics"]["log_ml_r/scatter_dex"], rel=1e-5)
    assert "| cnn_image_colour | image+colour | 16 |" in (out / "ablation_table.md").read_text()
    assert (out / "scatter_by_method.png").stat().st_size > 0
    # bootstrap errors, and paired differences to the cnn (the same resamples for every method)
    for (method, target), r in by.items():
        key = f"{target}/scatter_dex"
        assert float(r["scatter_error"]) == pytest.approx(rows[method]["errors"][key], rel=1e-5)  # csv: 7 digits
        assert float(r["minus_cnn"]) == pytest.approx(rows[method]["metrics"][key] - rows["cnn"]["metrics"][key],
                                                      rel=1e-5, abs=1e-9)
        if method == "cnn":
            assert float(r["minus_cnn_error"]) == 0.0
    # the paired error recomputed by hand: both methods on the same resamples of the test objects
    task = tiny_run["task"]
    truth = task._columns("test", ["log_mstar_rhalf"])[:, 0]
    pred = {m: Predictions.load(out / m / rows[m]["predictions"]) for m in ("cnn", "cnn_maps")}
    ids = task.split_ids("test")
    pred = {m: p.values[np.argsort(p.ids)][np.searchsorted(np.sort(p.ids), ids), 0] for m, p in pred.items()}
    idx = bootstrap_indices(len(ids), task.config.n_bootstrap, seed=task.config.bootstrap_seed)
    d = [np.std(pred["cnn_maps"][i] - truth[i]) - np.std(pred["cnn"][i] - truth[i]) for i in idx]
    assert float(by[("cnn_maps", "log_mstar_rhalf")]["minus_cnn_error"]) == pytest.approx(np.std(d), rel=1e-5)
    assert "minus cnn [dex]" in (out / "ablation_table.md").read_text()


def test_methods_never_read_evaluation_labels(tiny_run):
    reads = tiny_run["reads"]
    assert {m for m, _, _ in reads} >= {"power_law", "lightgbm", "lightgbm_no_mag", "cnn"}
    labels = set(tiny_run["task"].label_columns())
    assert {c for _, c, s in reads if s == "train"} & labels         # the recorder saw label reads on train
    assert [(m, c, s) for m, c, s in reads if c in labels and s not in ("train", "val")] == []


def test_rerun_reuses_results(tiny_run, tiny_set):
    out = tiny_run["out"]
    before = {r["method"]: (out / r["method"] / "result.json").stat().st_mtime_ns for r in tiny_run["rows"]}
    task = build_task("multibranch_mass", _tiny_config(tiny_set), data_dir=tiny_run["root"] / "data")

    def never(t, workdir):
        raise AssertionError("a finished method ran again")

    task.methods = lambda: [replace(m, run=never) for m in type(task).methods(task)]
    logs = []
    rows = task.run(out, log=logs.append)
    assert len(logs) == len(EXPECTED) and all("reusing" in line for line in logs)
    assert [r["value"] for r in rows] == [r["value"] for r in tiny_run["rows"]]
    assert {r["method"]: (out / r["method"] / "result.json").stat().st_mtime_ns for r in rows} == before
    assert json.loads((out / "results.json").read_text())[0]["method"] == "power_law"


class _TinyBackbone(nn.Module):
    """conv 3x3 -> ReLU -> global mean: ``(B, C, H, W)`` -> ``(B, 4)``."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.in_channels, self.num_features = in_channels, 4
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x)).mean(dim=(-2, -1))


def tiny_multibranch(input_channels, num_outputs=1, enabled=None, small_input=False, head_hidden=(8,), dropout=0.0):
    """A swapped-in network (any ``_target_`` taking input_channels, num_outputs and enabled)."""
    from sim2obs.models.multibranch import MultiBranchNet

    branches = {name: _TinyBackbone(int(c)) for name, c in input_channels.items()}
    return MultiBranchNet(branches, head_hidden=head_hidden, num_outputs=num_outputs, enabled=enabled, dropout=dropout)


def test_one_network_per_target_with_kinmask_channel(tiny_set, tmp_path):
    cfg = _tiny_config(tiny_set, joint=False, kinmask_channel=True, inputs=["image", "vmap"], methods=["cnn"],
                       plots=False)
    cfg["ablation"]["enabled"] = False
    cfg["model"]["_target_"] = f"{__name__}.tiny_multibranch"
    task = build_task("multibranch_mass", cfg, data_dir=tmp_path / "data")
    assert task.network_inputs("vmap", None, "train").shape[1:] == (2, KIN_PX, KIN_PX)
    (row,) = task.run(tmp_path / "out", log=lambda s: None)
    fits = row["info"]["fits"]
    assert [f["targets"] for f in fits] == [[t] for t in TARGETS] and len({f["fit_dir"] for f in fits}) == 3
    ident = json.loads((tmp_path / "out" / "_shared" / fits[0]["fit_dir"] / "identity.json").read_text())
    assert ident["model"]["input_channels"]["vmap"] == 2 and ident["model"]["num_outputs"] == 1
    assert ident["model"]["enabled"] == ["image", "vmap"] and ident["model"]["_target_"].endswith("tiny_multibranch")
    assert row["info"]["n_parameters"] < 1000 and np.isfinite(row["value"])


def test_runs_on_a_set_of_the_tng_generator(tmp_path):
    """The task binds to the ``tng`` generator's output (a tiny mini-simulation set): the stacks
    and columns it needs exist, every non-observable column is a label, the methods run."""
    cfg = _tiny_config("unused", methods=["power_law", "lightgbm", "cnn"], plots=False)
    cfg["ablation"]["enabled"] = False
    cfg["model"]["_target_"] = f"{__name__}.tiny_multibranch"
    cfg["data"] = {"generator": "tng", "source": {"kind": "minisim", "minisim": {"n_galaxies": 16}},
                   "image_px": 32, "rebin_px": [16], "kin_px": 16, "selection": {"log_mstar_30kpc_min": 9.0},
                   "shard_size": 8}
    task = build_task("multibranch_mass", cfg, data_dir=tmp_path / "data", cluster={"kind": "synchronous"})
    assert task.available_resolutions() == [32, 16]
    gs = task.prepare()
    assert gs.name == "tng_mocks" and min(len(gs.indices(s)) for s in gs.split_names) > 0
    others = [c for c in gs.schema.column_names if c not in OBSERVABLE_COLUMNS and c != "id"]
    assert set(others) <= set(task.label_columns()) and "rhalf_kpc" in others
    rows = task.run(tmp_path / "out", log=lambda s: None)
    assert [r["method"] for r in rows] == ["power_law", "lightgbm", "cnn"]
    assert all(np.isfinite(r["value"]) for r in rows)
