"""Two-process DistributedDataParallel training on CPU (Gloo) through torchrun matches one process.

Both runs go through the module entry point (``python -m sim2obs.models.engine run.yaml``): once
in this process, once as ``torch.distributed.run --nproc_per_node=2``. The effective batch is the
same (each of the two processes takes half of it, drawn from the same epoch permutation), the
network has no batch statistics, so the loss curves agree to rounding.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sim2obs.models.engine import main
from tests.conftest import load_engine_predictions as _load_predictions

HERE = Path(__file__).resolve().parent

RUN = {
    "model": {"_target_": "_tiny.TinyNet", "in_channels": 1, "n_targets": 2, "width": 8},
    "train": {"_target_": "_tiny.tiny_dataset", "n": 64, "seed": 1},
    "val": {"_target_": "_tiny.tiny_dataset", "n": 24, "seed": 2},
    "trainer": {"device": "cpu", "precision": "fp32", "channels_last": False, "epochs": 3, "batch_size": 16,
                "optimiser": "adam", "lr": 0.01, "schedule": "cosine", "augment": None, "progress": False},
}



def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_process_ddp_matches_single_process(tmp_path, monkeypatch):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({**RUN, "out_dir": str(tmp_path / "single")}))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "sim2obs.models.engine", str(cfg), f"out_dir={tmp_path / 'ddp'}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # the single-process run goes on meanwhile, in this process
    monkeypatch.syspath_prepend(str(HERE))
    single = main([str(cfg)])
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out[-3000:]

    ddp_rows, single_rows = read_metrics(tmp_path / "ddp"), read_metrics(tmp_path / "single")
    assert [r["epoch"] for r in ddp_rows] == [1, 2, 3]  # rank 0 alone writes
    for a, b in zip(ddp_rows, single_rows):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-9)
    assert single_rows[-1]["train_loss"] < single_rows[0]["train_loss"]
    record = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert record["world_size"] == 2 and single.record["world_size"] == 1
    assert record["config_hash"] == single.record["config_hash"]
    for name in ("last.pt", "best.pt"):
        a = torch.load(tmp_path / "ddp" / name, weights_only=True)["model"]
        b = torch.load(tmp_path / "single" / name, weights_only=True)["model"]
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
    preds = [_load_predictions(tmp_path / d / "predictions_val.h5") for d in ("ddp", "single")]
    np.testing.assert_array_equal(preds[0]["ids"], preds[1]["ids"])  # gathered from both ranks, in order
    np.testing.assert_allclose(preds[0]["predictions"], preds[1]["predictions"], rtol=1e-4, atol=1e-6)
