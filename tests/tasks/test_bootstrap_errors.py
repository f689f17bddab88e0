"""Every recorded metric carries a bootstrap error; differences between methods a paired one."""
import csv
import json

import numpy as np
import pytest

from sim2obs.errors import Sim2obsValueError
from sim2obs.tasks import Method, MethodOutput, Predictions, Truth
from sim2obs.tasks import metrics as M
from sim2obs.tasks.bootstrap import bootstrap_indices, paired_differences, replicate_metrics
from tests.toy_task import ToyTask


def _rmse(p, t):
    return {"rmse": M.rmse(p.values[:, 0], t.values[:, 0]), "bias_mean": float(np.mean(p.values[:, 0] - t.values[:, 0]))}


def test_bootstrap_error_of_a_mean_matches_its_standard_error():
    rng = np.random.default_rng(1)
    n = 400
    truth = Truth(np.arange(n), np.zeros((n, 1)))
    pred = Predictions(np.arange(n), rng.normal(0.0, 1.0, (n, 1)), ("x",))
    reps = replicate_metrics(_rmse, pred, truth, bootstrap_indices(n, 400, seed=0))
    assert reps.errors()["bias_mean"] == pytest.approx(1.0 / np.sqrt(n), rel=0.15)


def test_paired_error_removes_the_noise_two_methods_share():
    rng = np.random.default_rng(2)
    n = 300
    truth = Truth(np.arange(n), np.zeros((n, 1)))
    shared = rng.normal(0.0, 1.0, (n, 1))
    a = Predictions(np.arange(n), shared, ("x",))
    b = Predictions(np.arange(n), shared + 0.05, ("x",))  # b = a shifted: the difference is exact
    idx = bootstrap_indices(n, 200, seed=0)
    reps = {"a": replicate_metrics(_rmse, a, truth, idx), "b": replicate_metrics(_rmse, b, truth, idx)}
    values = {"a": _rmse(a, truth)["bias_mean"], "b": _rmse(b, truth)["bias_mean"]}
    (row,) = paired_differences(reps, values, "bias_mean", reference=["b"])
    assert row["difference"] == pytest.approx(-0.05)
    assert row["error"] < 1e-12 < reps["a"].errors()["bias_mean"]
    assert row["fraction_lower"] == 1.0


def test_indices_depend_only_on_size_and_seed_and_bad_sizes_are_refused():
    assert np.array_equal(bootstrap_indices(50, 10, seed=3), bootstrap_indices(50, 10, seed=3))
    assert not np.array_equal(bootstrap_indices(50, 10, seed=3), bootstrap_indices(50, 10, seed=4))
    with pytest.raises(Sim2obsValueError):
        bootstrap_indices(0, 10)


class TwoMethodToy(ToyTask):
    def methods(self):
        def mean(task, workdir):
            ids = task.split_ids(task.config.eval_split)
            return MethodOutput(Predictions(ids, np.tile(task.labels("train").mean(axis=0), (len(ids), 1)),
                                            task.targets))

        def near_truth(task, workdir):  # reads the truth on purpose: a stand-in for a good model
            t = task.truth(task.config.eval_split)
            noise = np.random.default_rng(0).normal(0, 0.01, t.values.shape)
            return MethodOutput(Predictions(t.ids, t.values + noise, task.targets))

        return [Method("mean", "baseline", "training-set mean", mean, {"kind": "mean"}),
                Method("near_truth", "model", "truth + noise", near_truth, {"kind": "near"})]


def test_task_run_records_errors_and_paired_differences(tiny_galsim_set, tmp_path):
    task = TwoMethodToy({"data": {"path": str(tiny_galsim_set)}, "n_bootstrap": 50}, data_dir=tmp_path)
    rows = task.run(tmp_path / "out", log=lambda line: None)
    for row in rows:
        assert set(row["errors"]) >= {"rmse", "nmad", "bias_median"}
        assert row["errors"]["rmse"] > 0 and row["n_bootstrap"] == 50
    with open(tmp_path / "out" / "differences.csv") as f:
        (diff,) = list(csv.DictReader(f))
    assert (diff["method"], diff["versus"], diff["metric"]) == ("near_truth", "mean", "rmse")
    assert float(diff["difference"]) == pytest.approx(rows[1]["value"] - rows[0]["value"])
    assert 0 < float(diff["error"]) < abs(float(diff["difference"]))
    # a resumed run reuses the methods and gives the same errors and differences
    before = (tmp_path / "out" / "differences.csv").read_text()
    again = task.run(tmp_path / "out", log=lambda line: None)
    assert [r["errors"] for r in again] == [r["errors"] for r in rows]
    assert (tmp_path / "out" / "differences.csv").read_text() == before
    stored = json.loads((tmp_path / "out" / "results.json").read_text())
    assert stored[0]["errors"] == rows[0]["errors"]


@pytest.mark.parametrize("n_samples", [2, 3, 50, 1000, 1001])
def test_intervals_from_sorted_samples_equal_numpy_quantiles(n_samples):
    x = np.random.default_rng(n_samples).normal(size=(n_samples, 30, 2))
    qs = [0.0, 0.00135, 0.025, 0.1587, 0.5, 0.8413, 0.975, 0.99865, 1.0]
    assert np.array_equal(M.sorted_quantiles(np.sort(x, axis=0), qs), np.quantile(x, qs, axis=0))
    lo, hi = M.interval(x, 0.6827)
    assert np.array_equal(lo, np.quantile(x, 0.15865, axis=0)) and np.array_equal(hi, np.quantile(x, 0.84135, axis=0))


def test_sorted_samples_keep_their_type_on_object_subsets_and_still_refuse_nan():
    x = M.sorted_samples(np.random.default_rng(0).normal(size=(100, 20)))
    assert isinstance(x[:, [3, 3, 5]], M.SortedSamples) and not isinstance(x.mean(axis=0), M.SortedSamples)
    y = np.zeros(20)
    assert M.coverage(x[:, :10], y[:10], 0.5) == M.coverage(np.asarray(x)[:, :10], y[:10], 0.5)
    bad = np.random.default_rng(1).normal(size=(100, 20))
    bad[37, 4] = np.nan
    with pytest.raises(Sim2obsValueError, match="NaN"):
        M.coverage(M.sorted_samples(bad), y, 0.5)


def test_resamples_where_a_metric_is_undefined_are_left_out():
    def needs_spread(p, t):
        if np.ptp(t.values) == 0:
            raise Sim2obsValueError("no spread", value=0)
        return {"rmse": M.rmse(p.values[:, 0], t.values[:, 0])}

    truth = Truth(np.arange(3), np.array([[0.0], [1.0], [2.0]]))
    pred = Predictions(np.arange(3), np.array([[0.1], [0.8], [2.5]]), ("x",))
    reps = replicate_metrics(needs_spread, pred, truth, bootstrap_indices(3, 270, seed=0))
    assert 220 < len(reps.values["rmse"]) < 265 and reps.errors()["rmse"] > 0  # 1/9 drawn as one object
    one = Truth(np.arange(1), np.array([[0.0]]))
    assert replicate_metrics(needs_spread, pred.subset(np.array([0])), one, bootstrap_indices(1, 20)).errors() == {}
