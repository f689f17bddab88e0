"""A real set as a transfer target: HST galaxies of a RealGalaxyCatalog "seen from the ground"
(``cosmos_bt``: GalSim's COSMOS format, drawn into HSC-like pixels, PSF and noise) taken as the
``targets.<name>={path, content_hash}`` node of a bt_posterior study. The catalogue is a tiny one
made here in GalSim's format (``tests/surveys/formats.py``), so the path runs without the shared
COSMOS sample: the study trains on clean GalSim galaxies, scores zero-shot, head fine-tuning and
recalibration on the real set's test split, fine-tunes only on the real set's training ids, computes
the shift diagnostics, and the board records every row by recomputing it exactly."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sim2obs import open_galaxy_set
from sim2obs.errors import Sim2obsError
from sim2obs.leaderboard import Leaderboard
from sim2obs.predictions import Predictions
from sim2obs.simgen.surveys.cosmos import build_cosmos_bt_set
from sim2obs.tasks.transfer import run_transfer
from tests.surveys import formats as F

STAMP = 64  # GaMPEN needs >= 57 px: the bt_quick source stamp
SPLIT = {"train": 0.5, "val": 0.15, "test": 0.35}
STUDY = ["source.n=60", f"source.stamp={STAMP}", "task.trainer.epochs=1", "task.n_samples=20",
         "task.draws_per_pass=10", "n_boot=5", "finetune.min_steps=0", "finetune.trainer.epochs=1", "seeds=[0]",
         "k=[0,4]", "strategies=[zero_shot,finetune_head,recalibrate]", "diagnostics.max_objects=20",
         "diagnostics.n_permutations=10", "~targets.observed"]


@pytest.fixture(scope="module")
def real_set(tmp_path_factory):
    """14 galaxies of a tiny COSMOS-format catalogue drawn with HSC-like pixels, PSF and noise."""
    rgc = F.write_real_galaxy_catalog(tmp_path_factory.mktemp("rgc"), n=14, seed=5, stamp=48)
    path = build_cosmos_bt_set(rgc["dir"], tmp_path_factory.mktemp("sets") / "cosmos_bt", preset="hsc",
                               stamp=STAMP, seed=1, split=SPLIT)
    gs = open_galaxy_set(path)
    return {"path": str(path), "content_hash": gs.content_hash, "set": gs}


@pytest.fixture(scope="module")
def study(real_set, tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer_real")
    node = f"+targets.cosmos={{path: '{real_set['path']}', content_hash: {real_set['content_hash']}}}"
    kw = {"results_dir": root / "results", "data_dir": root / "data", "log": lambda s: None}
    rows = run_transfer("bt_quick", [*STUDY, node], **kw)
    return {"rows": rows, "root": root, "folder": root / "results" / "transfer" / "bt_posterior" / "bt_quick",
            "kw": kw}


def test_a_real_set_is_a_target_like_any_other(study, real_set):
    rows, gs = study["rows"], real_set["set"]
    got = {(r["target_name"], r["strategy"], r["k"]) for r in rows}
    assert got == {("source", "source", 0), ("cosmos", "zero_shot", 0), ("cosmos", "finetune_head", 4),
                   ("cosmos", "recalibrate", 4)}
    test_ids = sorted(gs.catalog()["id"][gs.indices("test")].tolist())
    for r in rows:
        if r["target_name"] != "cosmos":
            assert r["domain"] == "source" and r["target"]["content_hash"] != real_set["content_hash"]
            continue
        assert r["domain"] == "target" and r["target"]["content_hash"] == real_set["content_hash"]
        assert r["target"]["path"] == real_set["path"]
        assert np.isfinite(r["value"]) and 0 <= r["metrics"]["coverage_68"] <= 1
        ids = Predictions.load(study["folder"] / r["folder"] / r["predictions"]).ids
        assert sorted(np.asarray(ids).tolist()) == test_ids  # scored on the real set's test split
    subsets = json.loads((study["folder"] / "subsets.json").read_text())["seeds"]["0"]["cosmos"]
    train_ids = set(gs.catalog()["id"][gs.indices("train")].tolist())
    assert subsets["content_hash"] == real_set["content_hash"] and set(subsets["order"][:4]) <= train_ids
    recal = next(r for r in rows if r["strategy"] == "recalibrate")["info"]["recalibration"]
    assert recal["n"] == 4 and recal["fitted_on"] == "train"
    diag = json.loads((study["folder"] / "diagnostics.json").read_text())["0"]["cosmos"]
    assert diag["status"] == "ok" and diag["n_target"] == len(test_ids)


def test_the_board_records_real_target_rows_exactly(study):
    board = Leaderboard(results_dir=study["root"] / "board")
    runs, added = board.record_transfer(study["folder"], data_dir=study["root"] / "data")
    assert added == len(study["rows"]) == 4
    by = {(r.target_name, r.strategy, r.k): r for r in runs}
    for row in study["rows"]:
        run = by[(row["target_name"], row["strategy"], row["k"])]
        assert run.metric_dict() == row["metrics"]  # the protocol scored the file the board reads: exactly


def test_a_real_target_with_another_content_hash_is_refused(study, real_set):
    node = f"+targets.cosmos={{path: '{real_set['path']}', content_hash: {'0' * 64}}}"
    with pytest.raises(Sim2obsError, match="content"):
        run_transfer("bt_quick", [*STUDY, node, "seeds=[1]"], **study["kw"])
