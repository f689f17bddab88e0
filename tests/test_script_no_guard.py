"""A plain script (no ``if __name__ == "__main__":`` guard) that touches ``task.galaxy_set``
generates the task's data in-process: no Dask process cluster is spawned as a side effect of an
attribute (issue 11), so there are no spawn errors; the process cluster is used when asked."""
import os
import subprocess
import sys
import textwrap

from sim2obs.tasks import build_task, load_task_config

SCRIPT = """
from sim2obs.tasks import build_task, load_task_config

task = build_task("metallicity", load_task_config("metallicity", "quick", ["data.n=40", "data.stamp=32",
                                                                          "data.seed=3"]))
print("objects", task.galaxy_set.n)
print("train", task.get_split("train").inputs["image"].shape)
"""


def test_a_script_without_main_guard_generates_in_process(tmp_path):
    script = tmp_path / "plain.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = dict(os.environ, SIM2OBS_DATA=str(tmp_path / "data"), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "objects 40" in res.stdout and "train (" in res.stdout
    for sign in ("freeze_support", "bootstrapping phase", "spawn", "Traceback", "distributed"):
        assert sign not in res.stderr, res.stderr[-3000:]
    assert len(res.stderr.splitlines()) < 20


def test_the_default_cluster_is_in_process_and_the_cli_one_is_kept(tmp_path):
    cfg = load_task_config("metallicity", "quick")
    assert build_task("metallicity", cfg, data_dir=tmp_path).cluster == {"kind": "synchronous"}
    local = {"kind": "local", "n_workers": 2}
    assert build_task("metallicity", cfg, data_dir=tmp_path, cluster=local).cluster == local


def test_a_script_shows_a_progress_bar_when_asked(tmp_path):
    script = tmp_path / "bar.py"
    script.write_text(textwrap.dedent(SCRIPT).replace('"data.seed=3"]))', '"data.seed=4"]), progress=True)'))
    env = dict(os.environ, SIM2OBS_DATA=str(tmp_path / "data"), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "100%" in res.stderr and "shard" in res.stderr  # tqdm's bar over the generated shards
    assert "freeze_support" not in res.stderr and "Traceback" not in res.stderr
