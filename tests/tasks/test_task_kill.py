"""A task run killed for real (SIGKILL to the process) while a network trains: some methods are
done, one is mid-training. Started again on the same folder, the run reuses the finished methods
(their files untouched, not recomputed), resumes the network from its checkpoint, and ends with
the same metrics as an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sim2obs.tasks import build_task, load_task_config
from tests.conftest import SYNC

pytestmark = pytest.mark.slow

DATA = {"n": 80, "stamp": 32, "shard_size": 80, "seed": 13}
OVERRIDES = ["methods=[mean,random_forest,cnn]", "random_forest.n_estimators=10",
             "model._target_=sim2obs.models.resnet.resnet18",
             "trainer.epochs=5", "trainer.stages=[{epochs: 1, trainable: [fc], lr: {fc: 0.01}}, {epochs: 4}]",
             "trainer.batch_size=32", "plots=false", "tta=false"]

RUN = """
import json, sys
import torch
torch.set_num_threads(1)
from sim2obs.tasks import build_task
cfg, data_dir, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
task = build_task("metallicity", cfg, data_dir=data_dir, cluster={"kind": "synchronous"})
task.run(out, log=lambda s: print(s, flush=True))
"""


def _config():
    cfg = load_task_config("metallicity", "quick", OVERRIDES)
    cfg["data"] = dict(DATA)
    return cfg


def _start(cfg, data_dir, out):
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, "-c", RUN, json.dumps(cfg), str(data_dir), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _epochs(out):
    files = list((out / "cnn").glob("fit-*/metrics.jsonl"))
    return len(files[0].read_text().splitlines()) if files else 0


def _stamp(folder):
    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_killed_task_run_reuses_finished_methods_and_resumes_the_network(tmp_path):
    cfg, data_dir = _config(), tmp_path / "data"
    build_task("metallicity", cfg, data_dir=data_dir, cluster=SYNC).prepare()  # data first, not under the kill

    killed = tmp_path / "killed"
    proc = _start(cfg, data_dir, killed)
    deadline = time.monotonic() + 300
    while _epochs(killed) < 1:  # the first epoch's checkpoint of the network is on disk
        assert proc.poll() is None, f"the run ended before it could be killed:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, "the network never wrote a checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    epochs_at_kill = _epochs(killed)
    assert 1 <= epochs_at_kill < 5, epochs_at_kill
    assert not (killed / "cnn" / "result.json").exists()       # the network was mid-training
    done = {m: _stamp(killed / m) for m in ("mean", "random_forest")}
    assert all((killed / m / "result.json").exists() for m in done)

    rerun = _start(cfg, data_dir, killed)
    log, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, log
    assert sum("done before, reusing" in line for line in log.splitlines()) == 2, log
    for m, files in done.items():
        assert _stamp(killed / m) == files, f"{m} was recomputed"  # same bytes, same modification times
    history = [json.loads(s) for s in next((killed / "cnn").glob("fit-*/metrics.jsonl")).read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, 6))  # resumed: no epoch run twice

    whole = tmp_path / "whole"  # the uninterrupted run, in this process
    build_task("metallicity", cfg, data_dir=data_dir, cluster=SYNC).run(whole, log=lambda s: None)
    a = json.loads((killed / "results.json").read_text())
    b = json.loads((whole / "results.json").read_text())
    assert [r["method"] for r in a] == [r["method"] for r in b] == ["mean", "random_forest", "cnn"]
    for ra, rb in zip(a, b):
        assert ra["metrics"] == rb["metrics"], ra["method"]
        assert ra["predictions_sha256"] == rb["predictions_sha256"], ra["method"]
