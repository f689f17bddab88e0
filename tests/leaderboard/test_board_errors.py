"""Bootstrap errors on the board (issue 15): the board recomputes every metric's error on the
task's own resamples and stores it, refuses a stated or stored error that is not the
recomputation, shows value ± error, gives differences between runs on the same resamples a
paired error (quadrature otherwise, saying which) and marks ranks within 1σ of the next."""
import json
import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest

from sim2obs.errors import DataFormatError
from sim2obs.leaderboard import Leaderboard, RunInfo, aggregate, rank, to_csv, to_text
from sim2obs.leaderboard.ranking import TIE, difference
from sim2obs.leaderboard.verify import check_run
from sim2obs.tasks import Predictions
from sim2obs.tasks.bootstrap import bootstrap_indices
from sim2obs.leaderboard import transfer as T
from sim2obs.leaderboard import transfer_board as TB
from sim2obs.leaderboard.verify import verify_board
from sim2obs.tasks.bootstrap import replicate_metrics
from tests.leaderboard.test_postgres import pg_url  # noqa: F401 - the fresh-database fixture
from tests.leaderboard.test_transfer_board import TASK, _task, make_study, sets  # noqa: F401 - fixture
from tests.toy_task import ToyTask, noisy_predictions


def _toy(data_path, tmp_path, seed=0, n_bootstrap=200, bootstrap_seed=0):
    return ToyTask({"data": {"path": str(data_path)}, "seed": seed, "n_bootstrap": n_bootstrap,
                    "bootstrap_seed": bootstrap_seed, "plots": False}, data_dir=tmp_path)


@pytest.fixture
def toy(tiny_galsim_set, tmp_path):
    return _toy(tiny_galsim_set, tmp_path)


@pytest.fixture
def board(tmp_path):
    return Leaderboard(results_dir=tmp_path / "results")


def _rmse_replicates(values, truth, n_boot, seed):
    """RMSE on each resample, computed here from the indices alone (independent of the task)."""
    idx = bootstrap_indices(len(truth), n_boot, seed=seed)
    return np.sqrt(np.mean((values[idx] - truth[idx]) ** 2, axis=1))


def _with_error(toy, err, tmp_path, name):
    """Truth + ``err`` (one value per test object): methods that err on chosen objects."""
    t = toy.truth("test")
    return Predictions(t.ids, t.values + np.asarray(err)[:, None], toy.targets).save(tmp_path / f"{name}.h5")


def test_errors_are_recomputed_stored_and_shown(toy, board, tmp_path):
    p = noisy_predictions(toy, 0.1, seed=2)
    run = board.record(toy, p.save(tmp_path / "p.h5"), RunInfo(model_name="net", seed=0, deterministic=True))
    t = toy.truth("test")
    reps = _rmse_replicates(p.values[:, 0], t.values[:, 0], 200, 0)  # ids are in the truth's order here
    assert run.n_bootstrap == 200 and run.bootstrap_seed == 0
    np.testing.assert_allclose(run.main_replicates, reps, rtol=1e-12)
    errors = run.error_dict()
    assert set(errors) == set(run.metric_dict()) and errors["rmse"] == pytest.approx(np.std(reps), rel=1e-12)
    assert errors["rmse"] > 0 and errors["nmad"] > 0
    assert board.verify(run, toy)["metrics_ok"] is True  # and they are recomputed equal
    entries = rank(aggregate(board.runs()))
    text = to_text(entries, ["rmse", "nmad"])
    row = next(line for line in text.splitlines() if " net " in f" {line} ")
    assert f"{run.main_value:.4g} ± {errors['rmse']:.2g}" in row and f"± {errors['nmad']:.2g}" in row
    assert "1σ bootstrap error" in text  # the legend says what ± means
    header, line = to_csv(entries, ["rmse"]).splitlines()[:2]
    cols = dict(zip(header.split(","), line.split(",")))
    assert float(cols["rmse_error"]) == pytest.approx(errors["rmse"]) and float(cols["rmse_mean"]) == run.main_value


def test_the_resamples_follow_the_task_config(tiny_galsim_set, board, tmp_path):
    toy = _toy(tiny_galsim_set, tmp_path, seed=5, n_bootstrap=30, bootstrap_seed=3)
    p = noisy_predictions(toy, 0.1)
    run = board.record(toy, p.save(tmp_path / "p.h5"), RunInfo(model_name="net"))
    t = toy.truth("test")
    assert (run.n_bootstrap, run.bootstrap_seed, len(run.main_replicates)) == (30, 3, 30)
    np.testing.assert_allclose(run.main_replicates, _rmse_replicates(p.values[:, 0], t.values[:, 0], 30, 3))


def test_a_stated_error_that_is_not_the_recomputation_is_refused(toy, board, tmp_path):
    rows = toy.run(tmp_path / "out", log=lambda s: None)  # the mean baseline, with its errors
    assert rows[0]["errors"]["rmse"] > 0
    bad = [dict(rows[0], errors={**rows[0]["errors"], "rmse": rows[0]["errors"]["rmse"] * 1.5})]
    with pytest.raises(DataFormatError, match=r"\[errors\].*error of 'rmse': stated"):
        board.record_task_rows(toy, bad, tmp_path / "out")
    assert board.runs() == []  # nothing written
    with pytest.raises(DataFormatError, match="not one the board computes"):
        board.record_task_rows(toy, [dict(rows[0], errors={**rows[0]["errors"], "made_up": 0.1})], tmp_path / "out")
    with pytest.raises(DataFormatError, match=r"\[n_bootstrap\].*200"):
        board.record_task_rows(toy, [dict(rows[0], n_bootstrap=50)], tmp_path / "out")
    (run,) = board.record_task_rows(toy, rows, tmp_path / "out")  # the task's own errors are the board's
    assert run.error_dict() == pytest.approx(rows[0]["errors"], rel=1e-9)
    path = noisy_predictions(toy, 0.1).save(tmp_path / "sub.h5")
    with pytest.raises(DataFormatError, match="stated bootstrap errors"):
        board.record(toy, path, RunInfo(model_name="sub", errors={"rmse": 1e-6}))
    assert len(board.runs()) == 1


@pytest.mark.parametrize("statement", [
    "UPDATE metrics SET error = error * 0.5 WHERE key = 'rmse'",
    "UPDATE metrics SET error = NULL WHERE key = 'nmad'",
    "UPDATE runs SET n_bootstrap = 100",
    "UPDATE runs SET bootstrap_seed = 5",
    "UPDATE runs SET main_replicates = '[0.1, 0.2]'",
])
def test_a_tampered_stored_error_fails_verification(toy, board, tmp_path, statement):
    path = noisy_predictions(toy, 0.1).save(tmp_path / "p.h5")
    run = board.record(toy, path, RunInfo(model_name="net", seed=0))
    assert check_run(board, run, lambda r: toy).ok
    with sqlite3.connect(tmp_path / "results" / "leaderboard.sqlite") as con:
        con.execute(statement)
    (run,) = board.runs()
    check = check_run(board, run, lambda r: toy)
    assert check.status == "DIFFER", check.line()
    assert any(w in check.line() for w in ("error of", "n_bootstrap", "bootstrap_seed", "main_replicates"))


def test_paired_error_is_smaller_than_quadrature_for_methods_that_err_on_the_same_objects(toy, board, tmp_path):
    rows = toy.run(tmp_path / "out", log=lambda s: None)  # the "mean" baseline (kind baseline, deterministic)
    board.record_task_rows(toy, rows, tmp_path / "out")
    t = toy.truth("test")
    n = len(t.ids)
    err = np.zeros(n)
    err[: max(1, n // 3)] = 0.5  # both models miss the same third of the objects, by 0.5 and 0.55 dex
    small = 0.01 * np.random.default_rng(0).standard_normal(n)
    a = board.record(toy, _with_error(toy, err + small, tmp_path, "a"), RunInfo(model_name="a", deterministic=True))
    b = board.record(toy, _with_error(toy, 1.1 * err, tmp_path, "b"), RunInfo(model_name="b", deterministic=True))
    entries = {e.model_name: e for e in rank(aggregate(board.runs()))}
    on = entries["a"].primary
    d = difference(entries["a"].columns[on], entries["b"].columns[on], "rmse")
    quad = np.hypot(a.error_dict()["rmse"], b.error_dict()["rmse"])
    want = np.std(np.asarray(a.main_replicates) - np.asarray(b.main_replicates))
    assert d.paired and d.error == pytest.approx(want, rel=1e-12) and d.error < 0.3 * quad
    assert d.value == pytest.approx(a.main_value - b.main_value)
    # Δ vs the task's best baseline ("mean"), paired: the same test set and resamples
    assert entries["a"].vs_baseline.paired and entries["mean"].vs_baseline is None
    text = to_text(list(entries.values()), ["rmse"])
    assert "Δ vs best baseline (mean)" in text and "(paired)" in text and "best baseline" in text
    # a run on other resamples (bootstrap seed 1): the difference falls back to quadrature, and says so
    other = _toy(toy.config.data["path"], tmp_path, bootstrap_seed=1)
    c = board.record(other, _with_error(other, 1.2 * err, tmp_path, "c"), RunInfo(model_name="c", deterministic=True))
    entries = {e.model_name: e for e in rank(aggregate(board.runs()))}
    d = difference(entries["a"].columns[on], entries["c"].columns[on], "rmse")
    assert not d.paired and d.error == pytest.approx(np.hypot(a.error_dict()["rmse"], c.error_dict()["rmse"]))
    assert "(quadrature)" in str(entries["c"].vs_baseline)


def test_ranks_within_one_sigma_of_the_next_are_marked(toy, board, tmp_path):
    t = toy.truth("test")
    e = 0.2 * np.random.default_rng(1).standard_normal(len(t.ids))
    for name, err in (("same", e), ("mirror", e[::-1]), ("far", 3 * e)):  # mirror: the same RMSE exactly
        board.record(toy, _with_error(toy, err, tmp_path, name), RunInfo(model_name=name, deterministic=True))
    ranked = rank(aggregate(board.runs()))
    assert [x.model_name for x in ranked][2] == "far"
    first, second, far = ranked
    assert first.tie_next is not None and first.tie_next.within and first.tie_next.error > 0
    assert second.tie_next is None and far.tie_next is None  # 3x the error: a real difference
    lines = to_text(ranked, ["rmse"]).splitlines()
    assert lines[2].split()[0] == f"1{TIE}" and lines[3].split()[0] == "2" and lines[4].split()[0] == "3"
    assert f"{TIE} next:" in lines[2]
    assert TIE in to_csv(ranked, ["rmse"]).splitlines()[1]


def _fake(id, model, value, reps, seed=0, kind="sim", chash="h-sim", errors=None):
    reps = np.asarray(reps, dtype=float)
    errs = errors or {"rmse": float(np.std(reps))}
    return SimpleNamespace(id=id, task="toy", model_name=model, config_hash=model, main_score="rmse",
                           main_value=value, data_kind=kind, data_name=kind, data_content_hash=chash, split="test",
                           n_objects=10, seed=seed, source="benchmark", config={"deterministic": True},
                           n_bootstrap=len(reps), bootstrap_seed=0, main_replicates=list(reps),
                           metric_dict=lambda v=value: {"rmse": v}, error_dict=lambda e=errs: dict(e))


def test_pairing_tells_apart_what_quadrature_calls_a_tie():
    rng = np.random.default_rng(0)
    common = 0.02 * rng.standard_normal(300)  # the test set's own noise, shared by every method
    a = _fake(1, "a", 0.100, 0.100 + common)
    b = _fake(2, "b", 0.103, 0.103 + common + 0.0005 * rng.standard_normal(300))
    ranked = rank(aggregate([a, b]))
    d = ranked[0].tie_next or difference(ranked[0].columns[ranked[0].primary], ranked[1].columns[ranked[1].primary],
                                         "rmse")
    assert d.paired and d.error < 0.001 < 0.02 < np.hypot(np.std(a.main_replicates), np.std(b.main_replicates))
    assert ranked[0].tie_next is None  # 0.003 apart with a paired 1σ of ~0.0005: a real difference
    # the same two runs on different resample sets (another seed) are only comparable in quadrature: a tie
    b2 = _fake(2, "b", 0.103, b.main_replicates)
    b2.bootstrap_seed = 1
    ranked = rank(aggregate([a, b2]))
    assert ranked[0].tie_next is not None and not ranked[0].tie_next.paired


def test_the_sim_to_real_gap_is_in_quadrature_and_says_so():
    rng = np.random.default_rng(0)
    sim = _fake(1, "a", 0.10, 0.10 + 0.01 * rng.standard_normal(100))
    real = _fake(2, "a", 0.30, 0.30 + 0.02 * rng.standard_normal(100), kind="real", chash="h-real")
    (entry,) = rank(aggregate([sim, real]))
    text = to_text([entry], ["rmse"])
    quad = np.hypot(np.std(sim.main_replicates), np.std(real.main_replicates))
    assert f"+0.2 ± {quad:.2g} (quadrature)" in text
    row = [r for r in to_csv([entry], ["rmse"]).splitlines() if ",real," in r][0]
    assert "ranking set (gap)" in row and "quadrature" in row


def test_errors_round_trip_and_verify_on_postgres(pg_url, tiny_galsim_set, tmp_path):
    """The same on a team's PostgreSQL board (skipped without ``SIM2OBS_TEST_PG_URL``)."""
    from sqlalchemy import create_engine, text

    toy = _toy(tiny_galsim_set, tmp_path)
    board = Leaderboard(url=pg_url, store_dir=tmp_path / "store")
    run = board.record(toy, noisy_predictions(toy, 0.1).save(tmp_path / "p.h5"), RunInfo(model_name="net"))
    (back,) = board.runs()
    assert back.error_dict() == run.error_dict() and back.main_replicates == run.main_replicates
    assert check_run(board, back, lambda r: toy).ok
    with create_engine(pg_url).begin() as conn:
        conn.execute(text("UPDATE metrics SET error = error * 2 WHERE key = 'rmse'"))
    assert check_run(board, board.runs()[0], lambda r: toy).status == "DIFFER"


def test_transfer_rows_get_recomputed_errors_and_a_stated_wrong_one_is_refused(tmp_path, sets):
    s = sets
    folder, rows = make_study(tmp_path / "studies", s, seeds=(0,), ks=(2,))
    board = Leaderboard(results_dir=tmp_path / "results")
    # rows that do not state their resamples: their own errors (a placeholder 0.01) are not used
    board.record_transfer(folder, data_dir=s["data_dir"])
    for run, row in zip(board.transfer_runs(), rows):
        task = _task(s, row["source"] if row["domain"] == "source" else row["target"])
        aligned, truth = task.align(Predictions.load(run.predictions_path), "test")
        want = replicate_metrics(task._score, aligned, truth, bootstrap_indices(len(truth.ids), 200, seed=0)).errors()
        assert run.errors == pytest.approx(want, rel=1e-12) and run.errors["rmse"] != 0.01
        assert (run.n_bootstrap, run.bootstrap_seed) == (200, 0)
    assert "[test ± " in TB.to_text(TB.board_groups(board, TASK))
    # rows that state them are checked: the right errors pass, a wrong one refuses the study
    for row, run in zip(rows, board.transfer_runs()):
        row.update(n_boot=200, n_boot_seed=0, errors=dict(run.errors))
    rows[1]["errors"]["rmse"] *= 1.5
    (folder / T.RESULTS_FILE).write_text(json.dumps(rows))
    fresh = Leaderboard(results_dir=tmp_path / "results2")
    with pytest.raises(DataFormatError, match=r"row 1 \(.*error of 'rmse': stated"):
        fresh.record_transfer(folder, data_dir=s["data_dir"])
    assert fresh.transfer_runs() == []
    rows[1]["errors"]["rmse"] /= 1.5
    (folder / T.RESULTS_FILE).write_text(json.dumps(rows))
    assert fresh.record_transfer(folder, data_dir=s["data_dir"])[1] == len(rows)
    # verify recomputes the stored transfer errors
    assert all(c.ok for c in verify_board(fresh, s["data_dir"], log=lambda line: None))
    with sqlite3.connect(tmp_path / "results2" / "leaderboard.sqlite") as con:
        con.execute("UPDATE transfer_runs SET errors = ? WHERE id = 2", (json.dumps({"rmse": 0.5}),))
    bad = [c for c in verify_board(fresh, s["data_dir"], log=lambda line: None) if not c.ok]
    assert [c.run_id for c in bad] == [2] and "error of" in bad[0].line()


def test_the_page_shows_errors_differences_and_ties(toy, board, tmp_path):
    from sim2obs.leaderboard import build_page

    rows = toy.run(tmp_path / "out", log=lambda s: None)
    board.record_task_rows(toy, rows, tmp_path / "out")
    t = toy.truth("test")
    e = 0.2 * np.random.default_rng(1).standard_normal(len(t.ids))
    for name, err in (("same", e), ("mirror", e[::-1])):
        board.record(toy, _with_error(toy, err, tmp_path, name), RunInfo(model_name=name, deterministic=True))
    index = build_page(board, tmp_path / "site", task_factory=lambda run: None)
    body = index.read_text().split("<tbody>")[1].split("</tbody>")[0]
    assert f"<td>1{TIE}</td>" in body and "(paired)" in body and "best baseline" in body
    run = board.runs()[1]
    assert f"{run.main_value:.4g} ± {run.error_dict()['rmse']:.2g}" in body
    page = (tmp_path / "site" / "runs" / f"{run.id}.html").read_text()
    assert "1σ bootstrap error" in page and f"{run.error_dict()['rmse']:.3g}" in page and "200 bootstrap" in page
    csv_text = (tmp_path / "site" / "toy.csv").read_text()
    assert "rmse_error" in csv_text.splitlines()[0] and "paired" in csv_text


class _NeedsFirstObject(ToyTask):
    """A metric undefined on resamples that miss the first test object (about (1 - 1/n)^n of
    them, as NMAD is on a tiny set resampled into one object)."""

    def compute_metrics(self, p, truth):
        from sim2obs.errors import Sim2obsValueError

        if self.truth("test").ids[0] not in truth.ids:
            raise Sim2obsValueError("undefined on this resample", value=0.0)
        return super().compute_metrics(p, truth)


def test_resamples_where_a_metric_is_undefined_are_recorded_and_verified(tiny_galsim_set, board, tmp_path):
    toy = _NeedsFirstObject({"data": {"path": str(tiny_galsim_set)}, "plots": False, "n_bootstrap": 40},
                            data_dir=tmp_path)
    p = noisy_predictions(toy, 0.1)
    run = board.record(toy, p.save(tmp_path / "p.h5"), RunInfo(model_name="net", deterministic=True))
    reps = run.main_replicates
    assert reps is None or len(reps) < 40  # resamples left out, or (too few left) no error at all
    assert (reps is None) == (run.error_dict() == {})
    assert check_run(board, run, lambda r: toy).ok  # the recomputation agrees
    (entry,) = rank(aggregate(board.runs()))
    assert entry.columns[entry.primary].boot is None  # nothing to pair with: the resamples are not all there
    assert to_text([entry], ["rmse"])  # and the table renders
