"""ℒ1, RMSLE and coverage on the board: every task records l1, positive linear targets rmsle,
and every submission with posterior samples or σ its coverages, whatever the task."""
import numpy as np
import pytest

from sim2obs.leaderboard import Leaderboard, RunInfo, write_csv
from sim2obs.tasks import TASKS, Predictions
from sim2obs.tasks import metrics as M
from tests.toy_task import ToyTask, noisy_predictions


def _keys(meta, key):
    return [k for k in meta.metrics if k == key or k.endswith(f"/{key}")]


def test_every_task_declares_l1_and_positive_linear_targets_rmsle():
    bt = TASKS.get("bt_posterior").metadata.targets  # bt_<band>, r_e_<band>, flux_<band>
    positive_linear = {"ml_ratio": ["rmsle"], "bt_posterior": [f"{bt[1]}/rmsle", f"{bt[2]}/rmsle"]}
    for name in ("metallicity", "ml_ratio", "bt_posterior", "multibranch_mass"):
        meta = TASKS.get(name).metadata
        l1 = _keys(meta, "l1")
        expected = ["l1"] if len(meta.targets) == 1 else [f"{t}/l1" for t in meta.targets]
        assert [k for k in l1 if not k.startswith("median_point/")] == expected, name
        assert sorted(_keys(meta, "rmsle")) == sorted(positive_linear.get(name, [])), name
        for key in meta.metrics:
            M.ranking_loss(key, 0.5)  # every key has a definition (direction) in the metrics module


def test_l1_is_dobbels_with_errors_and_the_mean_absolute_error_without():
    pred, true, err = np.array([[1.0], [2.0]]), np.array([[1.5], [1.0]]), np.array([[0.5], [0.01]])
    out = M.shared_metrics(["l1"], ["y"], pred, true)
    assert out == {"l1": pytest.approx(0.75)}
    weighted = M.shared_metrics(["l1"], ["y"], pred, true, errors=err)["l1"]
    assert weighted == pytest.approx(np.mean([0.5 / 0.5, 1.0 / 0.05]))  # Δy floored at 5 % of |y|


def test_gaussian_coverage_counts_truths_within_z_sigma():
    true = np.zeros(1000)
    pred = np.linspace(-3.5, 3.5, 1000)
    cov = M.gaussian_coverage(pred, true, np.ones(1000), M.COVERAGE_LEVELS["coverage_95"])
    assert cov == pytest.approx(np.mean(np.abs(pred) <= 2.0), abs=1e-3)


@pytest.fixture
def toy(tiny_galsim_set, tmp_path):
    return ToyTask({"data": {"path": str(tiny_galsim_set)}}, data_dir=tmp_path)


def test_a_point_task_records_l1_and_the_coverage_of_submissions_with_sigma_or_samples(toy, tmp_path):
    board = Leaderboard(results_dir=tmp_path / "results")
    point = noisy_predictions(toy, 0.1)
    plain = board.record(toy, point.save(tmp_path / "point.h5"), RunInfo(model_name="point")).metric_dict()
    assert "coverage_68" not in plain  # nothing to cover without an uncertainty
    t = toy.truth("test")
    sigma = Predictions(point.ids, point.values, point.targets, sigma=np.full_like(point.values, 0.1))
    with_sigma = board.record(toy, write_csv(sigma, tmp_path / "sigma.csv"), RunInfo(model_name="sigma")).metric_dict()
    inside = np.abs(point.values - t.values) <= 0.1
    assert with_sigma["coverage_68"] == pytest.approx(inside.mean())
    assert {"coverage_68", "coverage_95", "coverage_99"} <= set(with_sigma)
    sampled = noisy_predictions(toy, 0.1, samples=40)
    with_samples = board.record(toy, sampled.save(tmp_path / "s.h5"), RunInfo(model_name="mc")).metric_dict()
    assert with_samples["coverage_95"] == pytest.approx(M.coverage(sampled.samples, t.values, 0.9545))
    assert set(with_samples) == set(toy.evaluate(sampled))  # the same keys when recomputed
