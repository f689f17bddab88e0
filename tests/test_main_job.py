"""The main job end to end through the CLI (tiny data, cheap methods), then the leaderboard
commands a user runs after it: show, submit (accepted and refused), page, verify."""
import json
import subprocess

import numpy as np
import pytest

from sim2obs import open_galaxy_set
from sim2obs.tasks import build_task, load_task_config
from tests.conftest import CLI

TINY = [
    "cluster=synchronous", "progress=false",
    "task.ml_ratio.data.n=60", "task.ml_ratio.data.stamp=32", "task.ml_ratio.data.seed=5", "task.ml_ratio.methods=[best_constant,gi_power_law]",
    "task.metallicity.data.n=60", "task.metallicity.data.stamp=32", "task.metallicity.data.seed=5", "task.metallicity.methods=[mean,random_forest]",
    "task.metallicity.random_forest.n_estimators=10",
    "task.bt_posterior.data.n=40", "++task.bt_posterior.data.shard_size=20", "task.bt_posterior.methods=[prior]",
    "task.bt_posterior.n_samples=50",
    "task.multibranch_mass.data.source.minisim.n_galaxies=12", "task.multibranch_mass.data.image_px=40",
    "task.multibranch_mass.data.rebin_px=[20]", "+task.multibranch_mass.data.kin_px=16",
    "+task.multibranch_mass.data.selection.log_mstar_30kpc_min=9.3", "task.multibranch_mass.image_resolution=20",
    "task.multibranch_mass.methods=[power_law,lightgbm]", "task.multibranch_mass.lightgbm.num_boost_round=20",
]


def run(args, env, check=True):
    res = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=600)
    if check and res.returncode != 0:
        raise AssertionError(f"sim2obs {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")
    return res


@pytest.fixture(scope="module")
def main_job(tmp_path_factory):
    import os

    root = tmp_path_factory.mktemp("main")
    env = dict(os.environ, SIM2OBS_DATA=str(root / "data"), SIM2OBS_RESULTS=str(root / "results"),
               PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    res = run(["run", *TINY], env)
    return {"env": env, "root": root, "stdout": res.stdout}


def test_main_job_prints_one_table_for_every_task(main_job):
    out = main_job["stdout"]
    table = out[out.index("task "):]
    for task, method in (("ml_ratio", "best_constant"), ("ml_ratio", "gi_power_law"), ("metallicity", "mean"),
                         ("metallicity", "random_forest"), ("bt_posterior", "prior"),
                         ("multibranch_mass", "power_law"), ("multibranch_mass", "lightgbm")):
        assert any(line.split()[:2] == [task, method] for line in table.splitlines()), (task, method)
    rows = json.loads((main_job["root"] / "results" / "results.json").read_text())
    assert {r["task"] for r in rows} == {"ml_ratio", "metallicity", "bt_posterior", "multibranch_mass"}
    for r in rows:
        folder = main_job["root"] / "results" / r["task"] / "quick" / "seed-0" / r["method"]
        assert (folder / "predictions_test.h5").exists() and (folder / "result.json").exists()
        assert np.isfinite(r["value"])
    assert (main_job["root"] / "results" / "leaderboard" / "index.html").exists()


def test_the_page_shows_the_plots_the_tasks_drew(main_job):
    """The page does not draw the main job's plots again: it gets the task's own files."""
    rows = json.loads((main_job["root"] / "results" / "results.json").read_text())
    site = main_job["root"] / "results" / "leaderboard"
    for r in rows:
        folder = main_job["root"] / "results" / r["task"] / "quick" / "seed-0" / r["method"]
        page = site / "plots" / f"run-{r['leaderboard_run']}"
        assert r["plots"] and sorted(p.name for p in page.glob("*.png")) == sorted(r["plots"]), r["method"]
        for name in r["plots"]:
            assert (page / name).read_bytes() == (folder / name).read_bytes()


def test_leaderboard_show_lists_every_tasks_runs(main_job):
    out = run(["leaderboard", "show"], main_job["env"]).stdout
    for task in ("ml_ratio", "metallicity", "bt_posterior", "multibranch_mass"):
        assert f"{task} (" in out
    for method in ("best_constant", "gi_power_law", "mean", "random_forest", "prior"):
        assert method in out
    md = run(["leaderboard", "show", "--task", "metallicity", "--format", "markdown"], main_job["env"]).stdout
    assert "| rank | model | seeds | rmse (sim) |" in md


def test_a_users_own_predictions_are_accepted_or_refused(main_job, tmp_path):
    env = main_job["env"]
    rows = json.loads((main_job["root"] / "results" / "results.json").read_text())
    data = next(r for r in rows if r["task"] == "metallicity")["data"]["path"]
    # what a user's script sees: the task's test ids (its star-forming sample), never test labels
    task = build_task("metallicity", load_task_config("metallicity", "quick", ["data.n=60", "data.stamp=32",
                                                                               "data.seed=5"]),
                      data_dir=env["SIM2OBS_DATA"])
    assert str(task.galaxy_set.path) == str(data)
    ids = task.get_split("test").ids
    assert 0 < len(ids) <= len(open_galaxy_set(data).column("id", "test"))
    good = tmp_path / "mine.csv"
    good.write_text("id,oh12\n" + "\n".join(f"{i},{8.9 + 0.01 * k}" for k, i in enumerate(ids)))
    args = ["leaderboard", "submit", "--task", "metallicity", "--model-name", "my_script", "--seed", "0",
            "--set", "data.n=60", "--set", "data.stamp=32", "--set", "data.seed=5", "--predictions"]
    res = run([*args, str(good)], env)
    assert "recorded as run #" in res.stdout and "rmse = " in res.stdout
    assert "already recorded" in run([*args, str(good)], env).stdout  # idempotent
    short = tmp_path / "short.csv"
    short.write_text("\n".join(good.read_text().splitlines()[:-1]))
    bad = run([*args, str(short)], env, check=False)
    assert bad.returncode == 2 and "1 missing" in bad.stderr and "sim2obs: error:" in bad.stderr
    shown = run(["leaderboard", "show", "--task", "metallicity"], env).stdout
    assert shown.count("my_script") == 1
    verified = run(["leaderboard", "verify"], env).stdout
    assert "runs verified" in verified and "DIFFER" not in verified
    page = run(["leaderboard", "page"], env).stdout
    assert "index.html" in page
    html = (main_job["root"] / "results" / "leaderboard" / "index.html").read_text()
    assert "my_script" in html and "task-bt_posterior" in html
