"""Seeds on the board: distinct seeds counted, deterministic methods ranked without three
seeds, every seed of a multirun in its own results folder."""
import subprocess

import numpy as np

from sim2obs.leaderboard import Leaderboard, RunInfo, aggregate, rank, to_text
from sim2obs.tasks import Method, MethodOutput, Predictions
from tests.conftest import CLI
from tests.toy_task import ToyTask, noisy_predictions


def _board_entries(board):
    return {e.model_name: e for e in rank(aggregate(board.runs()))}


def test_three_runs_with_one_seed_stay_unranked(tiny_galsim_set, tmp_path):
    task = ToyTask({"data": {"path": str(tiny_galsim_set)}}, data_dir=tmp_path)
    board = Leaderboard(results_dir=tmp_path / "results")
    for k in range(3):  # three different files, all claiming seed 0
        board.record(task, noisy_predictions(task, 0.01, seed=k).save(tmp_path / f"same{k}.h5"),
                     RunInfo(model_name="one_seed", seed=0))
        board.record(task, noisy_predictions(task, 0.2, seed=10 + k).save(tmp_path / f"distinct{k}.h5"),
                     RunInfo(model_name="three_seeds", seed=k))
    entries = _board_entries(board)
    assert len(board.runs()) == 6
    assert entries["one_seed"].n_seeds == 1 and entries["one_seed"].rank is None
    assert entries["three_seeds"].n_seeds == 3 and entries["three_seeds"].rank == 1
    text = to_text(rank(aggregate(board.runs())), ["rmse"])
    row = next(line for line in text.splitlines() if "one_seed" in line)
    assert row.split()[:4] == ["-", "one_seed", "1", "(3"]  # "1 (3 runs)": seeds are not runs


class SeededToy(ToyTask):
    """The toy's deterministic mean plus a noisy model whose output depends on the seed."""

    def methods(self):
        def mean(task, workdir):
            ids = task.split_ids(task.config.eval_split)
            value = task.labels("train").mean(axis=0)
            return MethodOutput(Predictions(ids, np.tile(value, (len(ids), 1)), task.targets))

        def noisy(task, workdir):
            return MethodOutput(noisy_predictions(task, 0.05, seed=task.config.seed))

        return [Method("mean", "baseline", "training mean", mean, {"kind": "mean"}, deterministic=True),
                Method("noisy", "model", "truth plus seeded noise", noisy, {"kind": "noise"})]


def test_a_deterministic_method_is_ranked_without_three_seeds(tiny_galsim_set, tmp_path):
    board = Leaderboard(results_dir=tmp_path / "results")
    task = SeededToy({"data": {"path": str(tiny_galsim_set)}, "seed": 0}, data_dir=tmp_path)
    out = tmp_path / "results" / "toy" / "seed-0"
    board.record_task_rows(task, task.run(out, log=lambda s: None), out)
    for seed in (1, 2):  # the mean's file is identical for every seed: recorded once
        task = SeededToy({"data": {"path": str(tiny_galsim_set)}, "seed": seed}, data_dir=tmp_path)
        out = tmp_path / "results" / "toy" / f"seed-{seed}"
        board.record_task_rows(task, task.run(out, log=lambda s: None), out)
    entries = _board_entries(board)
    assert len(entries["mean"].run_ids) == 1 and entries["mean"].deterministic
    assert entries["mean"].rank is not None
    assert entries["noisy"].n_seeds == 3 and entries["noisy"].rank is not None
    one = Leaderboard(results_dir=tmp_path / "other")
    task = SeededToy({"data": {"path": str(tiny_galsim_set)}, "seed": 0}, data_dir=tmp_path)
    out = tmp_path / "other" / "toy"
    one.record_task_rows(task, task.run(out, log=lambda s: None), out)
    entries = _board_entries(one)
    assert entries["mean"].rank == 1 and entries["noisy"].rank is None  # one seed of a seeded model


def test_a_multirun_over_seeds_writes_one_folder_per_seed_and_ranks(cli_env, tmp_path):
    args = ["run", "--multirun", "tasks=[metallicity]", "cluster=synchronous", "progress=false",
            "task.metallicity.data.n=120", "task.metallicity.data.stamp=32", "task.metallicity.data.seed=5",
            "task.metallicity.methods=[mean,random_forest]", "task.metallicity.random_forest.n_estimators=5",
            "leaderboard.page=false", "task.metallicity.seed=0,1,2"]
    res = subprocess.run([*CLI, *args], env=cli_env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    base = tmp_path / "results" / "metallicity" / "quick"
    for seed in (0, 1, 2):
        assert (base / f"seed-{seed}" / "random_forest" / "predictions_test.h5").exists()
    board = Leaderboard(results_dir=tmp_path / "results")
    entries = _board_entries(board)
    assert entries["random_forest"].n_seeds == 3 and entries["random_forest"].rank is not None
    assert entries["mean"].deterministic and entries["mean"].rank is not None
    shown = subprocess.run([*CLI, "leaderboard", "show", "--task", "metallicity"], env=cli_env, capture_output=True,
                           text=True, check=True).stdout
    assert "deterministic" in shown
