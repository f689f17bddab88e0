"""The leaderboard: records, idempotence, refusals, tamper detection, concurrency, migrations."""
import multiprocessing as mp
import sqlite3

import h5py
import numpy as np
import pytest

from sim2obs.errors import DataFormatError, Sim2obsValueError
from sim2obs.leaderboard import Leaderboard, RunInfo, read_predictions, write_csv
from sim2obs.leaderboard.db import connect, head_revision, schema_revision, tables_match_models
from sim2obs.tasks import Predictions
from tests.toy_task import ToyPosteriorTask, ToyTask, noisy_predictions


@pytest.fixture
def toy(tiny_galsim_set, tmp_path):
    return ToyTask({"data": {"path": str(tiny_galsim_set)}}, data_dir=tmp_path)


@pytest.fixture
def board(tmp_path):
    return Leaderboard(results_dir=tmp_path / "results")


def _nothing_written(board):
    assert board.runs() == []
    stored = list((board.store_dir / "predictions").glob("*")) if (board.store_dir / "predictions").exists() else []
    assert stored == []


def test_a_record_holds_recomputed_metrics_and_provenance(toy, board, tmp_path):
    path = noisy_predictions(toy, 0.1).save(tmp_path / "p.h5")
    run = board.record(toy, path, RunInfo(model_name="net", seed=3, n_parameters=10, config={"width": 8}))
    assert run.metric_dict() == toy.evaluate(Predictions.load(path))
    assert run.main_score == "rmse" and run.main_value == run.metric_dict()["rmse"]
    assert run.data_content_hash == toy.galaxy_set.content_hash and run.data_kind == "sim"  # generated, though opened by path
    assert run.hardware["cpu_count"] >= 1 and "torch" in run.package_versions
    assert run.seed == 3 and run.split == "test" and run.config == {"width": 8}
    check = board.verify(run, toy)
    assert check["hash_ok"] and check["metrics_ok"]


def test_resubmitting_the_same_predictions_does_not_duplicate(toy, board, tmp_path):
    path = noisy_predictions(toy, 0.1).save(tmp_path / "p.h5")
    a = board.record(toy, path, RunInfo(model_name="net", seed=0))
    b = board.record(toy, path, RunInfo(model_name="renamed", seed=1))
    assert a.id == b.id and len(board.runs()) == 1
    other = noisy_predictions(toy, 0.1, seed=1).save(tmp_path / "q.h5")
    assert board.record(toy, other, RunInfo(model_name="net", seed=1)).id != a.id


def test_csv_from_a_users_script_is_accepted(toy, board, tmp_path):
    p = noisy_predictions(toy, 0.2, seed=4)
    shuffled = p.subset(np.random.default_rng(1).permutation(len(p.ids)))
    path = write_csv(shuffled, tmp_path / "mine.csv")
    run = board.record(toy, path, RunInfo(model_name="script"))
    assert run.metric_dict() == pytest.approx(toy.evaluate(p))
    assert board.verify(run, toy)["metrics_ok"]


def _csv(tmp_path, text):
    path = tmp_path / f"bad{len(list(tmp_path.glob('bad*.csv')))}.csv"
    path.write_text(text)
    return path


def test_refused_submissions_say_what_is_wrong_and_write_nothing(toy, board, tmp_path):
    t = toy.truth("test")
    good = "\n".join(f"{i},{v}" for i, v in zip(t.ids, t.values[:, 0]))
    cases = {
        "no id column": (_csv(tmp_path, "oid,oh12\n1,8.9\n"), "missing the id column"),
        "missing target": (_csv(tmp_path, "id,z\n1,8.9\n"), r"\[oh12\]: missing prediction column"),
        "extra column": (_csv(tmp_path, "id,oh12,notes\n" + "\n".join(f"{r},x" for r in good.split("\n"))),
                         r"\[notes\]: unexpected column"),
        "not a number": (_csv(tmp_path, "id,oh12\n" + good.replace(f",{t.values[1, 0]}", ",high", 1)),
                         r"\[oh12\]: row 3"),
        "nan": (_csv(tmp_path, "id,oh12\n" + good.replace(f",{t.values[0, 0]}", ",nan", 1)), "NaN/inf"),
        "missing ids": (_csv(tmp_path, "id,oh12\n" + "\n".join(good.split("\n")[1:])), "1 missing"),
        "duplicate ids": (_csv(tmp_path, "id,oh12\n" + good + "\n" + good.split("\n")[0]), "more than once"),
        "wrong file type": (tmp_path / "p.npz", "no such predictions file"),
    }
    (tmp_path / "preds.txt").write_text("1 2 3")
    for name, (path, message) in cases.items():
        with pytest.raises((Sim2obsValueError, DataFormatError), match=message):
            board.record(toy, path, RunInfo(model_name=name))
        _nothing_written(board)
    with pytest.raises(DataFormatError, match="HDF5 .* or CSV"):
        board.record(toy, tmp_path / "preds.txt", RunInfo(model_name="txt"))
    with h5py.File(tmp_path / "shape.h5", "w") as h5:
        h5["ids"] = t.ids
        h5["predictions"] = np.zeros((len(t.ids), 2))
        h5.attrs["targets"] = '["oh12"]'
    with pytest.raises(Sim2obsValueError, match="shape"):
        board.record(toy, tmp_path / "shape.h5", RunInfo(model_name="shape"))
    _nothing_written(board)


def test_a_calibration_task_refuses_predictions_without_samples(tiny_galsim_set, board, tmp_path):
    task = ToyPosteriorTask({"data": {"path": str(tiny_galsim_set)}}, data_dir=tmp_path)
    with pytest.raises(Sim2obsValueError, match="posterior samples are required"):
        board.record(task, noisy_predictions(task).save(tmp_path / "p.h5"), RunInfo(model_name="point"))
    _nothing_written(board)
    run = board.record(task, noisy_predictions(task, samples=50).save(tmp_path / "s.h5"), RunInfo(model_name="mc"))
    assert 0 <= run.metric_dict()["calibration_error"] <= 1


def test_tampered_predictions_are_detected(toy, board, tmp_path):
    run = board.record(toy, noisy_predictions(toy).save(tmp_path / "p.h5"), RunInfo(model_name="net"))
    with h5py.File(run.predictions_path, "r+") as h5:
        h5["predictions"][0, 0] += 1.0
    with pytest.raises(DataFormatError, match="changed after recording"):
        board.verify(run, toy)


def _submit(args):
    url, set_path, data_dir, path, seed = args
    task = ToyTask({"data": {"path": set_path}}, data_dir=data_dir)
    board = Leaderboard(url=url, store_dir=data_dir + "/store")
    return board.record(task, path, RunInfo(model_name="net", seed=seed)).id


def test_eight_concurrent_submitters_are_all_recorded(toy, tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    paths = [str(noisy_predictions(toy, seed=s).save(tmp_path / f"p{s}.h5")) for s in range(8)]
    args = [(url, str(toy.galaxy_set.path), str(tmp_path), p, s) for s, p in enumerate(paths)]
    with mp.get_context("fork").Pool(8) as pool:  # 8 processes racing to migrate and write
        ids = pool.map(_submit, args)
    assert sorted(ids) == list(range(1, 9))
    board = Leaderboard(url=url, store_dir=tmp_path / "store")
    assert sorted(r.seed for r in board.runs()) == list(range(8))
    with sqlite3.connect(tmp_path / "shared.sqlite") as con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert con.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 8 * 3


def test_schema_is_migrated_to_head_and_matches_the_models(tmp_path):
    engine, _ = connect(f"sqlite:///{tmp_path / 'b.sqlite'}")
    assert schema_revision(engine) == head_revision() == "0005"
    assert tables_match_models(engine) == []
    engine2, _ = connect(f"sqlite:///{tmp_path / 'b.sqlite'}")  # idempotent
    assert schema_revision(engine2) == "0005"


def test_a_missing_board_is_refused_when_not_creating(tmp_path):
    with pytest.raises(Sim2obsValueError, match="no leaderboard database"):
        connect(f"sqlite:///{tmp_path / 'absent.sqlite'}", create=False)


def test_read_predictions_round_trips_samples_through_csv(tmp_path, toy):
    p = noisy_predictions(toy, samples=4)
    q = read_predictions(write_csv(p, tmp_path / "s.csv"), toy)
    np.testing.assert_allclose(q.samples, p.samples)
    np.testing.assert_array_equal(q.ids, p.ids)
