"""Evaluation refuses NaN/inf in every array of a submission: point predictions, posterior samples
and sigma, even where the task's metrics never read that array (behaviour, not the message's
wording); the board records nothing for such a file, whether it comes as HDF5 or CSV."""
import numpy as np
import pytest

from sim2obs.errors import DataFormatError, Sim2obsValueError
from sim2obs.leaderboard import Leaderboard, RunInfo, write_csv
from sim2obs.tasks import Predictions
from tests.toy_task import ToyPosteriorTask, ToyTask

CASES = [(field, bad) for field in ("predictions", "samples", "sigma") for bad in (np.nan, np.inf, -np.inf)]
BOARD_CASES = [("predictions", np.nan), ("samples", np.nan), ("samples", -np.inf), ("sigma", np.nan),
               ("sigma", np.inf)]


def _finite(task):
    t = task.truth("test")
    rng = np.random.default_rng(0)
    values = t.values + 0.1 * rng.standard_normal(t.values.shape)
    samples = values + 0.1 * rng.standard_normal((8, *values.shape))
    return Predictions(t.ids, values, task.targets, samples=samples, sigma=np.full(values.shape, 0.1))


def _poison(p, field, bad, where=-1):
    arrays = {"values": p.values.copy(), "samples": p.samples.copy(), "sigma": p.sigma.copy()}
    key = "values" if field == "predictions" else field
    if key == "samples":
        arrays[key][3, where, 0] = bad
    else:
        arrays[key][where, 0] = bad
    return Predictions(p.ids, arrays["values"], p.targets, samples=arrays["samples"], sigma=arrays["sigma"])


@pytest.fixture(params=[ToyTask, ToyPosteriorTask], ids=["point_task", "posterior_task"])
def task(request, tiny_galsim_set, tmp_path):
    return request.param({"data": {"path": str(tiny_galsim_set)}}, data_dir=tmp_path)


@pytest.mark.parametrize("field,bad", CASES, ids=[f"{f}-{b}" for f, b in CASES])
def test_evaluate_refuses_non_finite_values_in_any_array(task, field, bad):
    good = _finite(task)
    assert all(np.isfinite(v) for v in task.evaluate(good).values())
    with pytest.raises(Sim2obsValueError):
        task.evaluate(_poison(good, field, bad))
    # the order of the file does not matter: the poisoned row is found wherever it sits
    order = np.random.default_rng(1).permutation(len(good.ids))
    with pytest.raises(Sim2obsValueError):
        task.evaluate(_poison(good.subset(order), field, bad, where=0))


@pytest.mark.parametrize("fmt", ["h5", "csv"])
@pytest.mark.parametrize("field,bad", BOARD_CASES, ids=[f"{f}-{b}" for f, b in BOARD_CASES])
def test_the_board_records_nothing_with_non_finite_values(task, tmp_path, field, bad, fmt):
    board = Leaderboard(results_dir=tmp_path / "results")
    poisoned = _poison(_finite(task), field, bad)
    path = (poisoned.save(tmp_path / "p.h5") if fmt == "h5" else write_csv(poisoned, tmp_path / "p.csv"))
    with pytest.raises((Sim2obsValueError, DataFormatError)):
        board.record(task, path, RunInfo(model_name="poisoned"))
    assert board.runs() == []
    store = board.store_dir / "predictions"
    assert not store.exists() or list(store.iterdir()) == []
    # the same file without the bad value is recorded (the refusal was about that value)
    clean = _finite(task)
    good_path = clean.save(tmp_path / "q.h5") if fmt == "h5" else write_csv(clean, tmp_path / "q.csv")
    assert board.record(task, good_path, RunInfo(model_name="clean")).id == 1
