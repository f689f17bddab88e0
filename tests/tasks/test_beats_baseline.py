"""Each task's network learns: on a small fixed set where it clearly should, it beats the task's
trivial baseline (an image-blind prediction) on the task's main score by more than twice the
bootstrap error of the difference (test objects resampled, both methods scored on the same
resample) and by at least 5 %. A network that learns nothing scores like the baseline and fails.
bt_posterior's test is tests/tasks/test_bt_posterior_learns.py (it needs a larger budget: 1000 galaxies,
28 epochs, and checks B/T NMAD and CRPS beside the main score)."""
from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from sim2obs.tasks import Predictions, Truth, build_task, load_task_config
from sim2obs.tasks.metrics import is_better
from tests.conftest import SYNC

pytestmark = pytest.mark.slow

N_BOOT = 300


class SmallCNN(nn.Module):
    """A small convolutional regressor (two conv layers, global average pooling, a linear head
    named ``fc``): trains in seconds on a CPU, and still has to learn from pixels."""

    min_input_size = 8

    def __init__(self, in_channels: int = 3, num_outputs: int = 1, width: int = 16):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, padding=1, stride=2), nn.ReLU())
        self.fc = nn.Linear(width, num_outputs)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(-2, -1)))


def _subset_truth(truth: Truth, idx: np.ndarray) -> Truth:
    return Truth(ids=truth.ids[idx], values=truth.values[idx],
                 errors=None if truth.errors is None else truth.errors[idx],
                 extra={k: np.asarray(v)[idx] for k, v in truth.extra.items()})


def paired_bootstrap(task, a: Predictions, b: Predictions, n_boot: int = N_BOOT, seed: int = 0):
    """(score of a, score of b, bootstrap standard deviation of score(b) - score(a)) under the
    task's main score, resampling the evaluation split's objects."""
    key = task.metadata.main_score
    split = task.config.eval_split
    (pa, truth), (pb, _) = task.align(a, split), task.align(b, split)
    full_a, full_b = task._score(pa, truth)[key], task._score(pb, truth)[key]
    rng = np.random.default_rng(seed)
    n = len(truth.ids)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        t = _subset_truth(truth, idx)
        diffs.append(task._score(pb.subset(idx), t)[key] - task._score(pa.subset(idx), t)[key])
    return full_a, full_b, float(np.std(diffs))


def _run(name, preset, overrides, data, tmp_path, methods):
    cfg = load_task_config(name, preset, [f"methods=[{','.join(methods)}]", "plots=false", *overrides])
    cfg["data"] = dict(data) if "path" in data else {**cfg["data"], **data}
    task = build_task(name, cfg, data_dir=tmp_path / "data", cluster=SYNC)
    rows = task.run(tmp_path / "results", log=lambda s: None)
    for r in rows:
        print(name, r["method"], {k: round(v, 4) for k, v in r["metrics"].items() if "median_point" not in k})
    preds = {r["method"]: Predictions.load(tmp_path / "results" / r["method"] / r["predictions"]) for r in rows}
    return task, preds


def _assert_beats(task, net: Predictions, baseline: Predictions, label: str):
    key = task.metadata.main_score
    s_net, s_base, err = paired_bootstrap(task, net, baseline)
    print(f"{task.name}: {label} {key} = {s_net:.4g}, baseline {s_base:.4g}, bootstrap error {err:.3g}")
    assert is_better(key, s_net, s_base), (s_net, s_base)
    assert abs(s_base - s_net) > 2 * err, (s_net, s_base, err)
    assert abs(s_base - s_net) > 0.05 * abs(s_base), (s_net, s_base)  # and by a useful amount (5 %)


def test_metallicity_cnn_beats_the_mean(tmp_path):
    task, preds = _run("metallicity", "quick", [
        f"model._target_={__name__}.SmallCNN", "trainer.epochs=15", "trainer.stages=[]", "trainer.lr=0.01",
        "trainer.schedule=cosine", "trainer.batch_size=32", "tta=false", "augment=dihedral"],
        {"n": 300, "stamp": 32, "shard_size": 300, "seed": 17, "split": {"train": 0.6, "val": 0.1, "test": 0.3},
         # only what an image shows: no random metallicity scatter, and one distance, so that
         # apparent brightness traces stellar mass and, through the mass-metallicity relation, O/H
         "population": {"metallicity_random_scatter_dex": 0.0, "z_min": 0.05, "z_max": 0.06}},
        tmp_path, ["mean", "cnn"])
    _assert_beats(task, preds["cnn"], preds["mean"], "cnn")


def _constant(task, value) -> Predictions:
    """The image-blind prediction: ``value`` (one per target) for every evaluation object."""
    ids = task.split_ids(task.config.eval_split)
    return Predictions(ids, np.tile(np.asarray(value, float), (len(ids), 1)), task.targets)


def test_multibranch_mass_network_beats_the_training_mean(tmp_path):
    """On a TNG-format set whose images' total light sets the masses (the task tests' synthetic set,
    100 subhalos x 3 projections), the multi-branch network beats the image-blind training mean."""
    from tests.tasks.test_multibranch_mass import make_tng_like_set

    path = make_tng_like_set(tmp_path / "tng", n_subhalos=100, seed=3)
    task, preds = _run("multibranch_mass", "quick", [
        "image_resolution=16", "model.head_hidden=[16]", "trainer.epochs=8", "trainer.batch_size=32",
        "trainer.lr=1e-3", "trainer.augment=null"], {"path": str(path)}, tmp_path, ["cnn"])
    _assert_beats(task, preds["cnn"], _constant(task, task.labels("train").mean(axis=0)), "cnn")


def test_ml_ratio_model_beats_the_best_constant(tmp_path):
    """The paper's pipeline (morphology CNN features, CNN 4 retrained on M/L, luminosities and
    redshift, into LightGBM) against the ℒ1-optimal constant."""
    task, preds = _run("ml_ratio", "quick", [
        "trainer.epochs=2", "ml_cnn_epochs=2", "image_size=42", "lightgbm.min_data_in_leaf=5", "ablation=false",
        "importance_repeats=1", "lightgbm_rounds=300",
        "d25_min_arcmin=null", "label_noise=false"],  # every galaxy of the small set, noiseless labels
        {"n": 300, "stamp": 48, "shard_size": 300, "seed": 29, "split": {"train": 0.6, "val": 0.1, "test": 0.3},
         "population": {"z_min": 0.05, "z_max": 0.06}},  # one distance: the image's light traces the mass
        tmp_path, ["best_constant", "cnn_gbm"])
    _assert_beats(task, preds["cnn_gbm"], preds["best_constant"], "cnn_gbm")
