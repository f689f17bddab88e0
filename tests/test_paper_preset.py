"""``sim2obs run preset=paper`` runs: every task's model, built and trained exactly as the paper
preset says (architecture, input size, optimiser, schedule, stages), takes one optimisation step
on a tiny set at the paper's resolution. Only the data size, the epoch count and what makes a step
cheap (MC samples, DataLoader workers, one dropout rate of GaMPEN's grid, the TNG source: the
embedded mini-simulation instead of the web API) are overridden."""
import json
import math
import os
import subprocess

import pytest

from sim2obs import open_galaxy_set
from sim2obs.tasks import load_task_config
from tests.conftest import CLI

pytestmark = pytest.mark.slow

MODEL = {"ml_ratio": "cnn_gbm", "metallicity": "cnn", "bt_posterior": "gampen", "multibranch_mass": "cnn"}
TINY = [
    "preset=paper", "cluster=synchronous", "progress=false", "leaderboard.record=false", "leaderboard.page=false",
    "task.ml_ratio.data.n=30", "++task.ml_ratio.data.shard_size=30", "task.ml_ratio.methods=[cnn_gbm]",
    "task.ml_ratio.trainer.epochs=1", "task.ml_ratio.ml_cnn_epochs=1",
    "task.metallicity.data.n=24", "task.metallicity.data.shard_size=24", "task.metallicity.methods=[cnn]",
    "task.metallicity.trainer.epochs=1",
    "task.bt_posterior.data.n=24", "task.bt_posterior.data.shard_size=24", "task.bt_posterior.methods=[gampen]",
    "task.bt_posterior.trainer.epochs=1", "task.bt_posterior.trainer.num_workers=0",
    "task.bt_posterior.dropout_rates=[0.1]", "task.bt_posterior.n_samples=4", "task.bt_posterior.val_samples=4",
    "task.multibranch_mass.data.source.kind=minisim", "++task.multibranch_mass.data.source.minisim.n_galaxies=12",
    "++task.multibranch_mass.data.selection.log_mstar_30kpc_min=9.3", "task.multibranch_mass.methods=[cnn]",
    "task.multibranch_mass.trainer.epochs=1",
]


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    env = dict(os.environ, SIM2OBS_DATA=str(root / "data"), SIM2OBS_RESULTS=str(root / "results"),
               PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    res = subprocess.run([*CLI, "run", *TINY], env=env, capture_output=True, text=True, timeout=1500)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    rows = json.loads((root / "results" / "results.json").read_text())
    return {"root": root, "rows": {r["task"]: r for r in rows}, "stdout": res.stdout}


@pytest.mark.parametrize("task", list(MODEL))
def test_the_paper_preset_takes_one_step_of_every_tasks_model(paper_run, task):
    row = paper_run["rows"][task]
    paper = load_task_config(task, "paper")
    assert row["method"] == MODEL[task] and row["kind"] == "model"
    assert math.isfinite(row["value"]) and all(math.isfinite(v) for v in row["metrics"].values())
    # the paper's training settings were in force (not the quick preset's)
    cfg = row["task_config"]
    assert cfg["trainer"]["optimiser"] == paper["trainer"]["optimiser"]
    assert cfg["trainer"]["batch_size"] == paper["trainer"]["batch_size"]
    assert cfg["model"]["_target_"] == paper["model"]["_target_"]
    if "stages" in paper["trainer"]:
        assert cfg["trainer"]["stages"] == paper["trainer"]["stages"]
    # ... at the paper's resolution
    gs = open_galaxy_set(row["data"]["path"])
    for key in ("stamp", "pixel_scale", "image_px"):
        if key in paper["data"]:
            assert gs.provenance["config"][key] == paper["data"][key], key
    # one optimisation step: one epoch of every network, whose training split fits in one batch
    folder = paper_run["root"] / "results" / task / "paper" / "seed-0"  # the method's and the shared folders
    curves = sorted(p.parent / "metrics.jsonl" for p in folder.rglob("last.pt"))  # networks (not LightGBM)
    assert curves, f"no network trained under {folder}"
    for curve in curves:
        epochs = [json.loads(s) for s in curve.read_text().splitlines()]
        assert len(epochs) == 1 and math.isfinite(epochs[0]["train_loss"]), curve
    assert len(gs.column("id", "train")) <= paper["trainer"]["batch_size"]
