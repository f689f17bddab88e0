"""Coverage is measured on the *central* credible interval, pinned by known answers.

A calibrated posterior covers its truth at the nominal rate whichever interval of that mass is
used (central, one-sided, ...), so calibrated-posterior tests cannot tell a central interval from
a one-sided ``[0, level]`` one. These tests place the truth at chosen quantiles of skewed and flat
posteriors, where the central interval gives answers a one-sided interval does not.
"""
import numpy as np
import pytest

from sim2obs.tasks import Predictions, Truth
from sim2obs.tasks import metrics as m
from sim2obs.tasks.bt_posterior import BTPosteriorTask

S = 20001
U = (np.arange(S) + 0.5) / S  # quantile grid: the samples of a posterior with known quantiles


def _exponential(n=1):
    """(S, n) samples whose quantile function is -ln(1 - u): a skewed posterior on [0, inf)."""
    return np.repeat(-np.log1p(-U)[:, None], n, axis=1)


def test_interval_is_the_central_one_of_a_flat_posterior():
    samples = U[:, None]
    lo, hi = m.interval(samples, 0.5)
    assert lo[0] == pytest.approx(0.25, abs=1e-4) and hi[0] == pytest.approx(0.75, abs=1e-4)
    lo, hi = m.interval(samples, 0.6827)
    assert lo[0] == pytest.approx(0.15865, abs=1e-4) and hi[0] == pytest.approx(0.84135, abs=1e-4)


def test_interval_of_a_skewed_posterior_matches_its_quantile_function():
    lo, hi = m.interval(_exponential(), 0.6827)
    assert lo[0] == pytest.approx(-np.log(1 - 0.15865), rel=1e-3)   # 0.1727
    assert hi[0] == pytest.approx(-np.log(1 - 0.84135), rel=1e-3)   # 1.8411
    assert m.posterior_width(_exponential(), 0.6827) == pytest.approx(1.8411 - 0.1727, rel=1e-3)


def test_truth_at_chosen_quantiles_gives_the_central_coverages():
    pit = np.array([0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 0.999])
    truth = -np.log1p(-pit)                    # the exponential posterior's quantiles
    samples = _exponential(len(pit))
    # central 68.27 % = quantiles [0.159, 0.841]: covers 0.3, 0.5, 0.7
    assert m.coverage(samples, truth, 0.6827) == pytest.approx(3 / 8)
    # central 95.45 % = [0.0228, 0.9772]: covers 0.1 ... 0.9
    assert m.coverage(samples, truth, 0.9545) == pytest.approx(5 / 8)
    # central 99.73 % = [0.00135, 0.99865]: all but 0.999
    assert m.coverage(samples, truth, 0.9973) == pytest.approx(7 / 8)


def test_truth_at_the_mode_of_a_skewed_posterior_is_never_covered():
    """The truth at 0, the lower edge of an exponential posterior: every central interval misses it."""
    samples = _exponential(50)
    truth = np.zeros(50)
    for level in m.COVERAGE_LEVELS.values():
        assert m.coverage(samples, truth, level) == 0.0
    assert m.calibration_error(samples, truth) == pytest.approx(np.mean(m.CALIBRATION_GRID))  # 0.5


def test_truth_at_the_median_is_covered_at_every_level():
    samples = _exponential(50)
    truth = np.full(50, np.log(2.0))           # the median of the exponential
    levels, cov = m.coverage_curve(samples, truth)
    assert np.all(cov == 1.0)
    assert m.calibration_error(samples, truth) == pytest.approx(np.mean(1 - m.CALIBRATION_GRID))  # 0.5


def test_a_posterior_shifted_to_one_side_misses_on_that_side_only():
    """Truths in the lower 10 % tail: covered by the 95 % central interval (lower edge 2.3 %),
    not by the 68 % one (lower edge 15.9 %)."""
    rng = np.random.default_rng(0)
    pit = rng.uniform(0.03, 0.10, 200)
    samples = _exponential(200)
    truth = -np.log1p(-pit)
    assert m.coverage(samples, truth, 0.6827) == 0.0
    assert m.coverage(samples, truth, 0.9545) == 1.0
    # the same truths on the mirrored (upper) tail: the same answers
    mirrored = -np.log1p(-(1 - pit))
    assert m.coverage(samples, mirrored, 0.6827) == 0.0
    assert m.coverage(samples, mirrored, 0.9545) == 1.0


def _bt_predictions(samples3, truth3):
    ids = np.arange(truth3.shape[0])
    return (Predictions(ids, np.median(samples3, axis=0), BTPosteriorTask.metadata.targets, samples=samples3),
            Truth(ids=ids, values=truth3))


def test_bt_posterior_metrics_use_the_central_interval():
    """The task's own metric code (no data needed): truths at the lower edge of skewed posteriors
    score coverage 0 and calibration error 0.5; at the median, coverage 1."""
    task = BTPosteriorTask()
    n = 60
    base = _exponential(n)[::5] + np.linspace(0.0, 3.0, n)   # 4001 samples of skewed posteriors, spread centres
    samples = np.stack([0.02 * base, 1.0 + base, 100.0 * (1.0 + base)], axis=-1)  # (S, n, 3)
    edge = samples.min(axis=0) - 1e-9
    out = task.compute_metrics(*_bt_predictions(samples, edge))
    for key in ("coverage_68", "coverage_95", "coverage_99"):
        assert out[key] == 0.0, key
    assert out["calibration_error"] == pytest.approx(0.5)
    assert out["bt_r/coverage_68"] == 0.0
    out = task.compute_metrics(*_bt_predictions(samples, np.median(samples, axis=0)))
    assert out["coverage_68"] == 1.0 and out["calibration_error"] == pytest.approx(0.5)


def test_the_board_stores_central_coverage(tiny_galsim_set, tmp_path):
    """A recorded run's calibration error is the central-interval one: truths placed at the
    lowest sample of each posterior are missed at every level, so the error is the mean level, 0.5
    (a one-sided interval from the 0th quantile would contain them)."""
    from sim2obs.leaderboard import Leaderboard, RunInfo
    from tests.toy_task import ToyPosteriorTask

    task = ToyPosteriorTask({"data": {"path": str(tiny_galsim_set)}}, data_dir=tmp_path)
    t = task.truth("test")
    spread = -np.log1p(-np.linspace(0.0, 0.999, 200))[:, None, None]      # (200, 1, 1), starts at 0
    samples = t.values[None] + spread * np.ones((1, len(t.ids), 1))        # truth = lowest sample
    path = Predictions(t.ids, t.values + 1.0, task.targets, samples=samples).save(tmp_path / "edge.h5")
    board = Leaderboard(results_dir=tmp_path / "results")
    run = board.record(task, path, RunInfo(model_name="edge"))
    # the truth equals the lowest sample: inside only an interval whose lower quantile is 0
    assert run.metric_dict()["calibration_error"] == pytest.approx(np.mean(m.CALIBRATION_GRID), abs=1e-9)
