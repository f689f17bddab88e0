"""``sim2obs leaderboard verify`` recomputes every run and fails loudly on anything it could not
check: a tampered metric, main_value or metric row, a changed or missing stored file, data that is
absent or is not the data the run recorded. Each run is checked on its own (one run's problem never
switches checking off for another run of the same config)."""
import shutil
import sqlite3

import numpy as np
import pytest

from sim2obs.leaderboard import Leaderboard, RunInfo
from sim2obs.leaderboard.cli import main as leaderboard_main
from sim2obs.tasks import Predictions, build_task, load_task_config
from tests.conftest import SYNC

DATA = {"n": 120, "stamp": 32, "shard_size": 120, "seed": 11}  # ~40 % star-forming (the metallicity sample)


@pytest.fixture(scope="module")
def metallicity_data(tmp_path_factory):
    """A tiny generated metallicity set (the task's real data path), shared by the tests."""
    root = tmp_path_factory.mktemp("verify_data")
    cfg = load_task_config("metallicity", "quick")
    cfg["data"] = dict(DATA)
    task = build_task("metallicity", cfg, data_dir=root / "data", cluster=SYNC)
    task.prepare()
    return {"cfg": cfg, "data_dir": root / "data"}


@pytest.fixture
def recorded(metallicity_data, tmp_path):
    """A board with three runs of one config (seeds 0, 1, 2) recorded as `leaderboard submit` does."""
    cfg, data_dir = metallicity_data["cfg"], metallicity_data["data_dir"]
    task = build_task("metallicity", cfg, data_dir=data_dir)
    t = task.truth("test")
    results = tmp_path / "results"
    board = Leaderboard(results_dir=results)
    for seed in range(3):
        values = t.values + 0.05 * (seed + 1) * np.random.default_rng(seed).standard_normal(t.values.shape)
        path = Predictions(t.ids, values, task.targets).save(tmp_path / f"p{seed}.h5")
        board.record(task, path, RunInfo(model_name="net", seed=seed, config={"task_config": cfg, "seed": seed}))
    return {"board": board, "args": ["--results-dir", str(results), "--data-dir", str(data_dir)],
            "db": results / "leaderboard.sqlite", "task": task}


def _verify(args, capsys, *extra):
    """Run `sim2obs leaderboard ... verify`; return (exit code, stdout + stderr)."""
    try:
        leaderboard_main([*args, "verify", *extra])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out + out.err


def _sql(db, statement, *params):
    with sqlite3.connect(db) as con:
        con.execute(statement, params)


def test_an_untouched_board_is_recomputed_and_passes(recorded, capsys):
    code, out = _verify(recorded["args"], capsys)
    assert code == 0, out
    assert out.count("every stored number recomputed equal") == 3
    assert "3/3 runs verified" in out and "NOT CHECKED" not in out


def test_a_tampered_metric_fails_with_the_key_and_both_values(recorded, capsys):
    stored = recorded["board"].runs()[1].metric_dict()["nmad"]
    _sql(recorded["db"], "UPDATE metrics SET value = value * 0.5 WHERE run_id = 2 AND key = 'nmad'")
    code, out = _verify(recorded["args"], capsys)
    assert code == 1
    line = next(s for s in out.splitlines() if s.startswith("run #2 "))
    assert "DIFFER" in line and "'nmad'" in line and repr(stored) in line
    assert "2/3 runs verified" in out
    # the other runs of the same config are still recomputed and pass
    assert sum("every stored number recomputed equal" in s for s in out.splitlines()) == 2


def test_a_tampered_main_value_fails(recorded, capsys):
    _sql(recorded["db"], "UPDATE runs SET main_value = main_value / 10 WHERE id = 1")
    code, out = _verify(recorded["args"], capsys)
    assert code == 1 and "main_value" in out and "run #1 " in out


@pytest.mark.parametrize("statement", [
    "DELETE FROM metrics WHERE run_id = 3 AND key = 'rmse'",
    "INSERT INTO metrics (run_id, key, value) VALUES (3, 'not_a_metric', 0.1)",
    "UPDATE runs SET main_score = 'nmad' WHERE id = 3",
    "UPDATE runs SET n_objects = n_objects + 1 WHERE id = 3",
])
def test_every_other_stored_number_is_checked(recorded, capsys, statement):
    _sql(recorded["db"], statement)
    code, out = _verify(recorded["args"], capsys)
    assert code == 1 and "run #3 " in out and "DIFFER" in out, out


def test_absent_data_is_not_checked_and_fails(recorded, capsys, tmp_path):
    args = ["--results-dir", recorded["args"][1], "--data-dir", str(tmp_path / "elsewhere")]
    code, out = _verify(args, capsys)
    assert code == 1
    assert sum(s.startswith("run #") and "NOT CHECKED" in s for s in out.splitlines()) == 3
    assert "0/3 runs verified" in out and "not usable here" in out
    # with a metric tampered, it is still a failure (never "verified")
    _sql(recorded["db"], "UPDATE metrics SET value = 0 WHERE run_id = 1 AND key = 'rmse'")
    assert _verify(args, capsys)[0] == 1


def test_an_edited_data_hash_fails_that_run_only(recorded, capsys):
    _sql(recorded["db"], "UPDATE runs SET data_content_hash = ? WHERE id = 1", "0" * 64)
    _sql(recorded["db"], "UPDATE metrics SET value = value + 1 WHERE run_id = 1 AND key = 'rmse'")
    code, out = _verify(recorded["args"], capsys)
    assert code == 1
    lines = {int(s.split()[1][1:]): s for s in out.splitlines() if s.startswith("run #")}
    assert "NOT CHECKED" in lines[1] and "data hash" in lines[1]
    for i in (2, 3):  # the same config, recomputed independently
        assert "every stored number recomputed equal" in lines[i]


def test_a_changed_or_missing_stored_file_fails(recorded, capsys):
    import h5py

    runs = recorded["board"].runs()
    with h5py.File(runs[0].predictions_path, "r+") as h5:
        h5["predictions"][0, 0] += 1.0
    code, out = _verify(recorded["args"], capsys)
    assert code == 1 and "TAMPERED" in out and "changed after recording" in out
    shutil.move(runs[1].predictions_path, runs[1].predictions_path + ".gone")
    code, out = _verify(recorded["args"], capsys)
    assert code == 1 and "are missing" in out and "1/3 runs verified" in out


def test_a_run_recorded_without_its_task_config_is_not_checked(metallicity_data, tmp_path, capsys):
    cfg, data_dir = metallicity_data["cfg"], metallicity_data["data_dir"]
    task = build_task("metallicity", cfg, data_dir=data_dir)
    t = task.truth("test")
    board = Leaderboard(results_dir=tmp_path / "results")
    board.record(task, Predictions(t.ids, t.values, task.targets).save(tmp_path / "p.h5"),
                 RunInfo(model_name="bare", config={"width": 8}))
    code, out = _verify(["--results-dir", str(tmp_path / "results"), "--data-dir", str(data_dir)], capsys)
    assert code == 1 and "NOT CHECKED" in out and "task config" in out


def test_hashes_only_says_nothing_was_recomputed(recorded, capsys, tmp_path):
    args = ["--results-dir", recorded["args"][1], "--data-dir", str(tmp_path / "elsewhere")]
    code, out = _verify(args, capsys, "--hashes-only")
    assert code == 0 and "3/3 stored files unchanged; metrics NOT recomputed" in out
    with __import__("h5py").File(recorded["board"].runs()[0].predictions_path, "r+") as h5:
        h5["predictions"][0, 0] += 1.0
    assert _verify(args, capsys, "--hashes-only")[0] == 1


def test_the_python_api_reports_mismatches(recorded):
    board, task = recorded["board"], recorded["task"]
    _sql(recorded["db"], "UPDATE runs SET main_value = -1 WHERE id = 2")
    good, bad = (board.verify(r, task) for r in board.runs()[:2])
    assert good["metrics_ok"] is True and good["mismatches"] == []
    assert bad["metrics_ok"] is False and any("main_value" in m for m in bad["mismatches"])
    assert board.verify(board.runs()[0])["metrics_ok"] is None  # no task given: nothing recomputed
