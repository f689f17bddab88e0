"""The task abstraction on a toy task: data binding, held-out labels, evaluation checks, resume."""
import json

import h5py
import numpy as np
import pytest

from sim2obs.errors import ConfigError, DataFormatError, Sim2obsValueError
from sim2obs.tasks import Predictions, results_table
from tests.conftest import SYNC, tiny_config
from tests.toy_task import CALLS, ToyTask

@pytest.fixture
def toy(tiny_galsim_set, tmp_path):
    return ToyTask({"data": {"path": str(tiny_galsim_set)}}, data_dir=tmp_path)


def _truth_predictions(task, split="test"):
    t = task.truth(split)
    return Predictions(t.ids, t.values + 0.1, task.targets)


def test_evaluate_is_independent_of_prediction_order(toy):
    p = _truth_predictions(toy)
    shuffled = p.subset(np.random.default_rng(0).permutation(len(p.ids)))
    assert toy.evaluate(p) == toy.evaluate(shuffled)
    assert toy.evaluate(p)["bias_median"] == pytest.approx(0.1)
    assert set(toy.evaluate(p)) == {"rmse", "nmad", "bias_median"}


def test_evaluation_refuses_ids_that_do_not_match_the_split(toy):
    p = _truth_predictions(toy)
    with pytest.raises(Sim2obsValueError, match="1 missing"):
        toy.evaluate(p.subset(np.arange(1, len(p.ids))))
    train_id = toy.split_ids("train")[:1]
    extra = Predictions(np.concatenate([p.ids[:-1], train_id]), p.values, p.targets)
    with pytest.raises(Sim2obsValueError, match="1 not in the split"):
        toy.evaluate(extra)
    dup = Predictions(np.concatenate([p.ids[:-1], p.ids[:1]]), p.values, p.targets)
    with pytest.raises(Sim2obsValueError, match="more than once"):
        toy.evaluate(dup)


def test_evaluation_refuses_nan_wrong_shape_and_wrong_targets(toy):
    p = _truth_predictions(toy)
    bad = p.values.copy()
    bad[1, 0] = np.nan
    with pytest.raises(Sim2obsValueError, match=r"NaN/inf value\(s\), first at index \(1, 0\)"):
        toy.evaluate(Predictions(p.ids, bad, p.targets))
    with pytest.raises(Sim2obsValueError, match="shape"):
        toy.evaluate(Predictions(p.ids, np.zeros((len(p.ids), 2)), p.targets))
    with pytest.raises(Sim2obsValueError, match="targets"):
        toy.evaluate(Predictions(p.ids, p.values, ("log_mstar",)))
    with pytest.raises(Sim2obsValueError, match="sigma must be >= 0"):
        toy.evaluate(Predictions(p.ids, p.values, p.targets, sigma=-np.ones_like(p.values)))


def test_an_empty_split_is_refused(toy, monkeypatch):
    empty = type(toy.truth("test"))(ids=np.zeros(0, np.int64), values=np.zeros((0, 1)))
    monkeypatch.setattr(toy, "truth", lambda split: empty)
    with pytest.raises(Sim2obsValueError, match="empty"):
        toy.evaluate(Predictions(np.zeros(0, np.int64), np.zeros((0, 1)), toy.targets))


def test_test_labels_are_held_out_and_labels_are_not_features(toy):
    with pytest.raises(Sim2obsValueError, match="held out"):
        toy.labels("test")
    assert toy.labels("train").shape == (len(toy.split_ids("train")), 1)
    with pytest.raises(Sim2obsValueError, match="labels"):
        toy.features("train", ["redshift", "oh12"])
    assert toy.features("test", ["redshift", "mag_r"]).shape == (len(toy.split_ids("test")), 2)


def test_run_saves_predictions_metrics_plots_and_resumes(toy, tmp_path):
    CALLS.clear()
    out = tmp_path / "results"
    rows = toy.run(out, log=lambda s: None)
    assert CALLS == ["mean"]
    row = rows[0]
    assert row["method"] == "mean" and row["main_score"] == "rmse"
    assert row["data"]["content_hash"] == toy.galaxy_set.content_hash
    saved = Predictions.load(out / "mean" / row["predictions"])
    assert toy.evaluate(saved) == row["metrics"]  # the record equals a fresh recomputation
    for name in ("pred_vs_true_oh12.png", "residuals_oh12.png", "result.json"):
        assert (out / "mean" / name).stat().st_size > 0
    assert json.loads((out / "results.json").read_text())[0]["value"] == row["value"]
    again = toy.run(out, log=lambda s: None)
    assert CALLS == ["mean"] and again[0]["value"] == row["value"]  # reused, not rerun
    changed = ToyTask({"data": {"path": str(toy.galaxy_set.path)}, "seed": 1}, data_dir=tmp_path)
    changed.run(out, log=lambda s: None)
    assert CALLS == ["mean", "mean"]  # a different config is a different result
    assert "mean" in results_table(rows) and "rmse" in results_table(rows)


def test_predictions_round_trip_and_malformed_files(tmp_path):
    p = Predictions(np.arange(4), np.ones((4, 2)), ("a", "b"), samples=np.zeros((3, 4, 2)), sigma=np.ones((4, 2)))
    q = Predictions.load(p.save(tmp_path / "p.h5", task="x"))
    assert q.targets == ("a", "b") and q.samples.shape == (3, 4, 2)
    np.testing.assert_array_equal(q.ids, p.ids)
    with h5py.File(tmp_path / "bad.h5", "w") as h5:
        h5["ids"] = np.arange(3)
    with pytest.raises(DataFormatError, match=r"bad.h5 \[predictions\]"):
        Predictions.load(tmp_path / "bad.h5")
    (tmp_path / "junk.h5").write_text("not hdf5")
    with pytest.raises(DataFormatError, match="junk.h5"):
        Predictions.load(tmp_path / "junk.h5")


def test_a_real_set_is_checked_against_its_content_hash(tiny_galsim_set, tmp_path):
    task = ToyTask({"data": {"path": str(tiny_galsim_set), "content_hash": "0" * 64}}, data_dir=tmp_path)
    with pytest.raises(DataFormatError, match="content_hash"):
        task.prepare()


def test_config_typos_and_unknown_methods_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="task.toy"):
        ToyTask({"sead": 1}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown method"):
        ToyTask({"methods": ["meen"]}, data_dir=tmp_path)


def test_simulated_data_is_generated_once_and_shared(tmp_path):
    cfg = {"data": tiny_config(n=20)}
    a = ToyTask(cfg, data_dir=tmp_path, cluster=SYNC)
    b = ToyTask(cfg, data_dir=tmp_path, cluster=SYNC)
    assert a.galaxy_set.path == b.galaxy_set.path
    assert len(list(tmp_path.iterdir())) == 1
