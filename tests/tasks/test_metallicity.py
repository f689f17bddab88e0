"""Task metallicity (Wu & Boada 2019): Lupton RGB preprocessing, re-binning, the quick path end to
end on a tiny set, the constant-mean baseline against a hand computation, and label hygiene."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import SYNC
from sim2obs.errors import ConfigError, Sim2obsValueError
from sim2obs.tasks import build_task, load_task_config
from sim2obs.tasks.base import Predictions
from sim2obs.tasks.metallicity import (RandomDihedral, RGBConfig, lupton_rgb, mzr_bins, mzr_scatter, rebin,
                                       resolution_table)
from tests.tasks.conftest import run_recording_reads

TINY_DATA = {"n": 200, "stamp": 32, "shard_size": 100, "seed": 7}  # ~40 % star-forming: ~12 test galaxies
RESOLUTIONS = [8, 1]


class TinyNet(nn.Module):
    """A small network for the resolution study of the end-to-end test: shows that any
    ``_target_`` can replace the ResNet (it needs a head named ``fc`` for the staged schedule)."""

    min_input_size = 4

    def __init__(self, in_channels: int = 3, num_outputs: int = 1, width: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.fc = nn.Linear(width, num_outputs)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(-2, -1)))


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------
def test_lupton_rgb_shape_channels_range_and_zero():
    cfg = RGBConfig()
    zero = np.zeros((3, 6, 6), np.float32)
    out = lupton_rgb(zero, ("g", "r", "i"), cfg)
    assert out.shape == (3, 6, 6) and out.dtype == np.float32
    assert np.all(out == 0.0)

    # channel order: i -> R, r -> G, g -> B
    for band, channel in (("i", 0), ("r", 1), ("g", 2)):
        img = np.zeros((3, 6, 6), np.float32)
        img[("g", "r", "i").index(band), 3, 3] = 1.0
        rgb = lupton_rgb(img, ("g", "r", "i"), cfg)
        assert rgb[channel, 3, 3] > 0
        assert np.count_nonzero(rgb) == 1, band
    # the bands may come in any order in the stack
    img = np.random.default_rng(0).gamma(1.0, 1.0, (3, 5, 5)).astype(np.float32)
    assert np.allclose(lupton_rgb(img, ("g", "r", "i"), cfg), lupton_rgb(img[::-1], ("i", "r", "g"), cfg))

    # values in [0, 1], bright pixels saturate at 1 with their colour kept, negatives (noise) at 0
    rng = np.random.default_rng(1)
    img = (rng.normal(0, 0.05, (3, 16, 16)) + rng.pareto(1.5, (3, 16, 16))).astype(np.float32)
    img[:, 0, 0] = [1e4, 2e4, 4e4]
    rgb = lupton_rgb(img, ("g", "r", "i"), cfg)
    assert rgb.min() >= 0.0 and rgb.max() <= 1.0
    assert rgb[:, 0, 0].max() == pytest.approx(1.0)
    # saturation scales the pixel as a whole: R/G stays (i / r weighted) = 4e4 / (1.5 * 2e4)
    assert rgb[0, 0, 0] / rgb[1, 0, 0] == pytest.approx(4e4 / (1.5 * 2e4), rel=1e-4)


def test_lupton_rgb_is_monotonic_pixelwise_and_matches_astropy():
    from astropy.visualization import LuptonAsinhStretch, make_lupton_rgb

    cfg = RGBConfig(stretch=0.5, Q=5.0)
    colour = np.array([1.0, 1.6, 2.0], np.float32)  # g, r, i
    scales = np.geomspace(1e-3, 1e3, 60).astype(np.float32)
    img = (colour[:, None, None] * scales[None, None, :]).repeat(2, axis=1)  # (3, 2, 60)
    rgb = lupton_rgb(img, ("g", "r", "i"), cfg)[:, 0, :]
    assert np.all(np.diff(rgb, axis=1) >= -1e-6)          # brighter input never gives a darker pixel
    below = np.flatnonzero(rgb.max(axis=0) < 0.999)        # and strictly brighter below saturation
    assert len(below) > 30
    assert np.all(np.diff(rgb[:, below], axis=1) > 0)

    batch = np.random.default_rng(2).gamma(0.5, 1.0, (4, 3, 8, 8)).astype(np.float32)
    out = lupton_rgb(batch, ("g", "r", "i"), cfg)
    assert out.shape == (4, 3, 8, 8)
    for k in range(4):  # a batch maps like its images one by one
        assert np.allclose(out[k], lupton_rgb(batch[k], ("g", "r", "i"), cfg), atol=1e-6)
    g, r, i = batch[1]
    ref = make_lupton_rgb(i * 1.0, r * 1.5, g * 2.5, stretch_object=LuptonAsinhStretch(stretch=0.5, Q=5.0),
                          output_dtype=np.float64)
    assert np.allclose(out[1], ref.transpose(2, 0, 1), atol=1e-5)


@pytest.mark.parametrize("n", [32, 16, 8, 5, 3, 1])
def test_rebin_conserves_flux_and_mean(n):
    x = np.random.default_rng(3).gamma(1.0, 1.0, (2, 3, 32, 32)).astype(np.float32)
    y = rebin(x, n)
    assert y.shape == (2, 3, n, n)
    assert np.allclose(y.mean(axis=(-2, -1)), x.mean(axis=(-2, -1)), rtol=1e-5)
    assert np.allclose(y.sum(axis=(-2, -1)) * (32 / n) ** 2, x.sum(axis=(-2, -1)), rtol=1e-5)
    if 32 % n == 0:  # exact block means
        k = 32 // n
        blocks = x.reshape(2, 3, n, k, n, k).mean(axis=(3, 5))
        assert np.allclose(y, blocks, rtol=1e-5)
    if n == 1:
        assert np.allclose(y[..., 0, 0], x.mean(axis=(-2, -1)), rtol=1e-5)


def test_rebin_refuses_impossible_sizes():
    x = np.ones((3, 8, 8))
    for n in (0, 9):
        with pytest.raises(Sim2obsValueError):
            rebin(x, n)


def test_random_dihedral_applies_one_exact_transform_per_object():
    from sim2obs.models.augment import dihedral

    x = torch.arange(6 * 2 * 4 * 4, dtype=torch.float32).reshape(6, 2, 4, 4)
    out = RandomDihedral()({"image": x, "other": x + 1}, generator=torch.Generator().manual_seed(0))
    for b in range(6):
        ks = [k for k in range(8) if torch.equal(out["image"][b], dihedral(x[b], k))]
        assert len(ks) == 1
        assert torch.equal(out["other"][b], dihedral(x[b] + 1, ks[0]))  # same transform for every stack


def test_mzr_bins_and_scatter():
    rng = np.random.default_rng(4)
    m = rng.uniform(9.0, 11.0, 4000)
    z = 8.0 + 0.1 * m + rng.normal(0, 0.1, 4000)
    bins = mzr_bins(m, z, 0.2, 5)
    assert len(bins) == 10 and sum(b["n"] for b in bins) == 4000
    assert all(abs(b["median"] - (8.0 + 0.1 * b["log_mstar_centre"])) < 0.02 for b in bins)
    assert all(0.08 < b["rms"] < 0.12 for b in bins)
    g = mzr_scatter(m, z, bins)
    assert g["rms"] == pytest.approx(0.1, abs=0.01) and g["n"] > 3500


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------
def test_presets_compose_and_typos_are_refused(tmp_path):
    quick = build_task("metallicity", load_task_config("metallicity", "quick"), data_dir=tmp_path)
    names = [m.name for m in quick.methods()]
    assert names[:3] == ["mean", "random_forest", "cnn"]
    assert all(n.startswith("resolution_") and n.endswith("px") for n in names[3:-1]) and len(names) > 4
    assert names[-1] == "mzr_of_cnn_mstar"
    # one architecture at every resolution (ResNet-18 in the quick preset, the paper's ResNet-34 in paper)
    assert quick.config.model["_target_"].endswith("resnet18") and quick.config.resolution.model is None
    paper = build_task("metallicity", load_task_config("metallicity", "paper"), data_dir=tmp_path)
    assert paper.config.resolution.sizes == [64, 32, 16, 8, 4, 2, 1]
    assert paper.config.model["_target_"].endswith("resnet34") and paper.config.resolution.model is None
    assert paper.trainer_config().batch_size == 256 and paper.trainer_config().epochs == 10
    with pytest.raises(ConfigError, match="rgb"):
        build_task("metallicity", {"rgb": {"strech": 1.0}}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="trainer"):
        build_task("metallicity", {"trainer": {"epoch": 3}}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="resolution.sizes"):
        build_task("metallicity", {"resolution": {"sizes": [128]}}, data_dir=tmp_path)  # default stamp 64
    with pytest.raises(ConfigError, match="features"):
        build_task("metallicity", {"random_forest": {"features": ["mag_r", "oh12"]}}, data_dir=tmp_path)
    swapped = load_task_config("metallicity", "quick", [f"model._target_={__name__}.TinyNet"])
    assert swapped["model"]["_target_"] == f"{__name__}.TinyNet"


# --------------------------------------------------------------------------------------------
# End to end on a tiny set
# --------------------------------------------------------------------------------------------
def _tiny_config():
    overrides = [
        "trainer.epochs=1", "trainer.batch_size=32",
        "model._target_=sim2obs.models.resnet.resnet18",
        f"resolution.sizes=[{','.join(map(str, RESOLUTIONS))}]",
        "random_forest.n_estimators=20", "mzr.min_count=2",
        "mzr_of_predicted_mstar=false",  # the Fig. 5 network: tests/tasks/test_metallicity_physics.py
    ]
    cfg = load_task_config("metallicity", "quick", overrides)
    cfg["data"] = dict(TINY_DATA)
    cfg["resolution"]["model"] = {"_target_": f"{__name__}.TinyNet", "in_channels": 3, "num_outputs": 1, "width": 8}
    return cfg


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Run every method once on a tiny set, recording which catalogue columns the methods read."""
    root = tmp_path_factory.mktemp("metallicity")
    task = build_task("metallicity", _tiny_config(), data_dir=root / "data", cluster=SYNC)
    rows, reads, logs = run_recording_reads(task, root / "results")
    return {"task": task, "rows": rows, "out": root / "results", "data_dir": root / "data", "reads": reads,
            "logs": logs}


def test_quick_path_end_to_end(tiny_run):
    task, rows, out = tiny_run["task"], tiny_run["rows"], tiny_run["out"]
    expected = ["mean", "random_forest", "cnn"] + [f"resolution_{n}px" for n in RESOLUTIONS]
    assert [r["method"] for r in rows] == expected
    test_ids = np.sort(task.split_ids("test"))
    assert len(test_ids) > 5
    for r in rows:
        mdir = out / r["method"]
        preds = Predictions.load(mdir / r["predictions"])
        assert np.array_equal(np.sort(preds.ids), test_ids) and len(preds.ids) == len(test_ids)
        assert preds.targets == ("oh12",) and np.isfinite(preds.values).all()
        assert set(r["metrics"]) == {"rmse", "l1", "nmad", "bias_mean", "bias_median", "outlier_frac"}
        assert all(math.isfinite(v) for v in r["metrics"].values())
        assert r["value"] == r["metrics"]["rmse"] > 0
        assert json.loads((mdir / "result.json").read_text())["run_key"] == r["run_key"]
        for png in ("pred_vs_true_oh12.png", "residuals_oh12.png", "mzr.png"):
            assert (mdir / png).stat().st_size > 0, (r["method"], png)
        # predictions are in dex, near the target's range
        assert 7.5 < float(np.median(preds.values)) < 10.0
    by = {r["method"]: r for r in rows}
    assert by["cnn"]["paper"]["value"] == 0.085 and by["random_forest"]["paper"]["value"] == 0.130
    assert by["cnn"]["info"]["resolution_px"] == 32 and by["cnn"]["info"]["input_px"] == 32
    assert by["resolution_8px"]["info"]["input_px"] == 8
    assert by["resolution_1px"]["info"]["input_px"] == 4  # block-replicated up to TinyNet.min_input_size
    assert "precision_note" in by["resolution_8px"]["info"]  # fp32 below 17 px (see small_input_precision)
    assert "precision_note" not in by["cnn"]["info"]

    for name in ("mzr.png", "mzr_bins.csv", "mzr_summary.csv", "resolution_study.csv", "resolution_study.json",
                 "resolution_study.png", "results.json"):
        assert (out / name).stat().st_size > 0, name
    table = json.loads((out / "resolution_study.json").read_text())
    assert [t["resolution_px"] for t in table] == [1, 8, 32]
    assert {t["method"] for t in table} == {"cnn", "resolution_1px", "resolution_8px"}
    for t in table:
        assert t["rmse"] == pytest.approx(by[t["method"]]["metrics"]["rmse"])
        assert 0 < t["rmse_err"] < t["rmse"]  # bootstrap error over the test objects
    steps = ("rmse_err", "minus_lower", "minus_lower_err", "fraction_below_lower")
    assert [{k: v for k, v in t.items() if k not in steps} for t in table] == [
        {k: v for k, v in t.items() if k not in steps} for t in resolution_table(rows)]
    # each resolution against the next lower one, paired on the same bootstrap resamples
    assert math.isnan(table[0]["minus_lower"])
    for lower, t in zip(table[:-1], table[1:]):
        assert t["minus_lower"] == pytest.approx(t["rmse"] - lower["rmse"])
        assert 0 <= t["minus_lower_err"] < t["rmse"] and 0 <= t["fraction_below_lower"] <= 1
    summary = (out / "mzr_summary.csv").read_text().splitlines()
    assert summary[0].startswith("method,mzr_rms")
    assert {line.split(",")[0] for line in summary[1:]} >= {"truth", *expected}


def test_rerun_reuses_results(tiny_run):
    out = tiny_run["out"]
    before = {r["method"]: (out / r["method"] / "result.json").stat().st_mtime_ns for r in tiny_run["rows"]}
    task = build_task("metallicity", _tiny_config(), data_dir=tiny_run["data_dir"], cluster=SYNC)
    task.methods = lambda: [replace(m, run=_never) for m in type(task).methods(task)]
    logs = []
    rows = task.run(out, log=logs.append)
    assert len(logs) == len(rows) == 5 and all("reusing" in line for line in logs)
    assert [r["value"] for r in rows] == [r["value"] for r in tiny_run["rows"]]
    assert {r["method"]: (out / r["method"] / "result.json").stat().st_mtime_ns for r in rows} == before


def _never(task, workdir):
    raise AssertionError("a finished method ran again")


def test_constant_mean_rmse_matches_hand_computation(tiny_run):
    task = tiny_run["task"]
    # the task's sample: star-forming galaxies only (star_forming_only)
    train, test = task.labels("train")[:, 0], task.truth("test").values[:, 0]
    expected = math.sqrt(np.mean((train.mean() - test) ** 2))
    # = sqrt(var_test + (mean_train - mean_test)^2): std-like, with the train/test offset
    assert expected == pytest.approx(math.sqrt(test.var() + (train.mean() - test.mean()) ** 2))
    row = next(r for r in tiny_run["rows"] if r["method"] == "mean")
    assert row["value"] == pytest.approx(expected, rel=1e-12)
    assert row["info"]["value"] == pytest.approx(train.mean())


def test_methods_never_read_test_labels(tiny_run):
    task = tiny_run["task"]
    with pytest.raises(Sim2obsValueError, match="held out"):
        task.labels("test")
    with pytest.raises(Sim2obsValueError, match="not observables"):
        task.features("test", ["mag_r", "oh12"])
    with pytest.raises(Sim2obsValueError, match="not observables"):
        task.features("train", ["log_mstar"])
    reads = tiny_run["reads"]
    assert {m for m, _, _ in reads} >= {"mean", "random_forest", "cnn"}  # the recorder saw the methods
    label_reads = [(m, c, s) for m, c, s in reads if c in ("oh12", "log_mstar") and s not in ("train", "val")]
    assert label_reads == []
