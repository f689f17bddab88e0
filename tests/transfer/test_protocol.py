"""The transfer protocol on tiny bt_posterior sets (60 galaxies, 64 px, 1 epoch): nested k subsets,
zero-shot on a target identical to the source, the parameters each strategy trains, no read of
the target's test labels while fine-tuning, the record format, and a study run end to end from the
CLI that a second run resumes without recomputing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sim2obs.errors import ConfigError, DataFormatError
from sim2obs.galaxyset import GalaxySet
from sim2obs.tasks.transfer import coerce_study, load_study_config, run_transfer
from sim2obs.tasks.transfer.protocol import Protocol
from sim2obs.tasks.transfer.subsets import SubsetStore, effective_ks, nested_subsets

TARGETS = ("bt_r", "r_e_r", "flux_r")
TINY = ["source.n=60", "task.trainer.epochs=1", "task.n_samples=20", "task.draws_per_pass=10", "n_boot=5",
        "finetune.min_steps=0", "target_only.min_steps=0", "finetune.trainer.epochs=1",
        "target_only.trainer.epochs=1", "align.trainer.epochs=1", "align.max_source=20", "seeds=[0]"]
ALL = "strategies=[zero_shot,finetune_full,finetune_head,finetune_staged,target_only,align_mmd,recalibrate]"
ROW_KEYS = {"task", "task_version", "study", "model", "source", "target_name", "target", "strategy", "k", "seed",
            "domain", "split", "main_score", "value", "metrics", "errors", "predictions", "predictions_sha256",
            "folder", "task_config", "wall_seconds"}


# ---------------------------------------------------------------------------------- subsets
def test_nested_subsets_are_nested_reproducible_capped_and_stored(tmp_path):
    ids = np.arange(1000, 1080)[::-1]  # order in the set must not matter
    a = nested_subsets(ids, [5, 20, 50, 500], seed=3, target="t")
    assert sorted(a) == [5, 20, 50, 80] == effective_ks([5, 20, 50, 500, 0], 80)  # 500 capped at 80; 0 dropped
    for small, large in ((5, 20), (20, 50), (50, 80)):
        assert set(a[small]) <= set(a[large])
    assert len(set(a[80])) == 80 and set(a[80]) == set(ids.tolist())
    b = nested_subsets(ids[::-1], [5, 20, 50, 500], seed=3, target="t")
    assert all(np.array_equal(a[k], b[k]) for k in a)  # same seed: same subsets
    c = nested_subsets(ids, [20], seed=4, target="t")
    assert not np.array_equal(a[20], c[20])  # another seed: other objects

    store = SubsetStore(tmp_path)
    first = store.subsets(3, "t", ids, [5, 20], "hashA")
    assert np.array_equal(first[20], a[20]) and (tmp_path / "subsets.json").exists()
    data = json.loads((tmp_path / "subsets.json").read_text())
    data["seeds"]["3"]["t"]["order"] = data["seeds"]["3"]["t"]["order"][::-1]  # what the file says is used
    (tmp_path / "subsets.json").write_text(json.dumps(data))
    again = SubsetStore(tmp_path).subsets(3, "t", ids, [5, 20], "hashA")
    assert np.array_equal(again[20], first[20][::-1])
    with pytest.raises(DataFormatError, match="subsets.json"):  # stored ids not in this set's training split
        SubsetStore(tmp_path).subsets(3, "t", np.arange(2000, 2080), [5], "hashA")
    other = SubsetStore(tmp_path).subsets(3, "t", np.arange(2000, 2080), [5], "hashB")  # another set: drawn again
    assert set(other[5]) <= set(range(2000, 2080))


def test_study_config_refuses_bad_keys_and_spec_mismatch(tmp_path):
    with pytest.raises(ConfigError, match="transfer.strategies"):
        coerce_study(load_study_config("bt_quick", ["strategies=[zero_shot,dann]"]))
    with pytest.raises(ConfigError, match="transfer.finetune.lr_factr"):
        coerce_study(load_study_config("bt_quick", ["+finetune.lr_factr=0.1"]))
    with pytest.raises(ConfigError, match="transfer.targets.b.extends"):
        coerce_study(load_study_config("bt_quick", ["+targets.b.extends=nowhere"]))
    cfg = coerce_study(load_study_config("bt_quick", [*TINY, "+targets.observed.stamp=72"]))
    proto = Protocol(cfg, results_dir=tmp_path / "r", data_dir=tmp_path / "d")
    with pytest.raises(ConfigError, match=r"transfer.targets.observed.*input_shapes"):
        proto.check_specs()  # from the configs alone: no set is generated


# ---------------------------------------------------------------------------------- one tiny study
@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A tiny study with every strategy on two targets (``same``: the source's own data node;
    ``observed``: other galaxies with neighbours, stars and seeing spread), run while recording
    every catalogue read made while a point's network is being made (training, recalibration)."""
    root = tmp_path_factory.mktemp("transfer")
    reads, state = [], {"in": None}
    column, make = GalaxySet.column, Protocol.make_model

    def spy_column(self, name, split=None):
        if state["in"]:
            reads.append((state["in"], self.path.name, name, split))
        return column(self, name, split)

    def spy_make(self, source, target, strategy, ids, folder):
        state["in"] = f"{target}/{strategy}"
        try:
            return make(self, source, target, strategy, ids, folder)
        finally:
            state["in"] = None

    GalaxySet.column, Protocol.make_model = spy_column, spy_make
    logs, common = [], [*TINY, "k=[0,5,12]", "targets.observed.n=60", "diagnostics.max_objects=20",
                        "diagnostics.n_permutations=10"]
    kw = {"results_dir": root / "results", "data_dir": root / "data", "log": logs.append}
    try:
        rows = run_transfer("bt_quick", [*common, ALL], **kw)
        # the same study with a target identical to the source: reuses the source network and every point
        same = run_transfer("bt_quick", [*common, "strategies=[zero_shot]", "+targets.same={}"], **kw)
    finally:
        GalaxySet.column, Protocol.make_model = column, make
    folder = root / "results" / "transfer" / "bt_posterior" / "bt_quick"
    return {"rows": rows, "same": same, "reads": reads, "folder": folder, "logs": logs}


def _row(rows, target, strategy, k=0):
    [row] = [r for r in rows if r["target_name"] == target and r["strategy"] == strategy and r["k"] == k]
    return row


def test_rows_follow_the_record_contract(study):
    rows, folder = study["rows"], study["folder"]
    strategies = {"zero_shot", "finetune_full", "finetune_head", "finetune_staged", "target_only", "align_mmd",
                  "recalibrate"}
    assert {(r["target_name"], r["strategy"]) for r in rows} == {("source", "source")} | \
        {("observed", s) for s in strategies}
    assert [(r["target_name"], r["strategy"]) for r in study["same"]] == \
        [("source", "source"), ("observed", "zero_shot"), ("same", "zero_shot")]
    assert sum("training the source" in line for line in study["logs"]) == 1  # once per seed, then reused
    assert {r["k"] for r in rows if r["strategy"] == "finetune_full"} == {5, 12}
    for r in rows:
        assert ROW_KEYS <= set(r), ROW_KEYS - set(r)
        assert r["domain"] == ("source" if r["target_name"] == "source" else "target")
        assert r["model"] == "gampen" and r["split"] == "test" and "data" not in r["task_config"]
        assert set(r["errors"]) >= {"posterior_score", "coverage_68"} and r["errors"]["posterior_score"] > 0
        assert json.loads((folder / r["folder"] / "point.json").read_text())["point_key"] == r["point_key"]
        assert (folder / r["folder"] / r["predictions"]).exists()
    assert json.loads((folder / "transfer_results.json").read_text()) == json.loads(json.dumps(study["same"],
                                                                                           default=str))
    for name in ("study.json", "subsets.json", "table.txt", "learning_curve.png", "coverage_vs_k.png",
                 "diagnostics.json"):
        assert (folder / name).exists(), name
    subsets = json.loads((folder / "subsets.json").read_text())["seeds"]["0"]["observed"]
    assert subsets["ks"] == [5, 12] and len(subsets["order"]) == 12
    diag = json.loads((folder / "diagnostics.json").read_text())["0"]
    assert set(diag) == {"observed", "same"} and diag["same"]["feature_mean_distance"] == 0.0


def test_zero_shot_on_a_target_identical_to_the_source_equals_the_in_domain_score(study):
    rows = study["same"]
    source, same, observed = _row(rows, "source", "source"), _row(rows, "same", "zero_shot"), \
        _row(rows, "observed", "zero_shot")
    assert same["target"]["content_hash"] == source["source"]["content_hash"]
    assert same["metrics"] == source["metrics"]
    assert same["predictions_sha256"] != observed["predictions_sha256"]
    assert observed["target"]["content_hash"] != source["source"]["content_hash"]


def _changed(folder: Path, point: str, source: dict) -> set[str]:
    state = torch.load(folder / point / "train" / "last.pt", map_location="cpu", weights_only=True)["model"]
    return {k for k, v in state.items() if v.is_floating_point() and not torch.equal(v, source[k])}


def test_each_strategy_trains_only_the_parameters_it_should(study):
    folder = study["folder"]
    source = torch.load(folder / "seed-0" / "source" / "weights.pt", map_location="cpu", weights_only=True)
    params = {k for k, v in source.items() if v.is_floating_point()}
    head = {k for k in params if k.startswith("backbone.output.")}
    assert head and head < params
    assert _changed(folder, "seed-0/observed/finetune_head/k-5", source) == head
    full = _changed(folder, "seed-0/observed/finetune_full/k-5", source)
    staged = _changed(folder, "seed-0/observed/finetune_staged/k-5", source)
    align = _changed(folder, "seed-0/observed/align_mmd/k-0", source)
    for changed in (full, staged, align):
        assert head <= changed and any(k.startswith("backbone.features.") for k in changed)
        assert any(k.startswith("stn.") for k in changed)
    assert _changed(folder, "seed-0/observed/target_only/k-5", source) == params  # a fresh network
    for point in ("observed/zero_shot/k-0", "observed/recalibrate/k-5"):
        assert not (folder / "seed-0" / point / "train").exists()  # no weight changes
    rec = _row(study["rows"], "observed", "recalibrate", 5)["info"]["recalibration"]
    assert rec["fitted_on"] == "train" and rec["n"] == 5 and set(rec["width_scale"]) == set(TARGETS)


def test_fine_tuning_never_reads_the_target_test_labels(study):
    """Every label read made while a point's network is made (fine-tuning, target-only training,
    alignment, recalibration) is of a training split, or of the *source* validation split (the
    engine's validation loss while aligning); never of a target's test split."""
    reads = study["reads"]
    source_set = Path(_row(study["rows"], "source", "source")["source"]["path"]).name
    labels = [r for r in reads if r[2] in TARGETS]
    assert any(r[0] == "observed/finetune_full" and r[1] != source_set and r[3] == "train" for r in labels)
    bad = [r for r in labels if not (r[3] == "train" or (r[3] == "val" and r[1] == source_set))]
    assert not bad, bad[:5]
    assert {r[0] for r in labels if r[1] != source_set} >= {"observed/finetune_full", "observed/finetune_head",
                                                             "observed/target_only", "observed/recalibrate"}


# ---------------------------------------------------------------------------------- CLI, resume
def test_study_from_the_cli_runs_end_to_end_and_resumes(study, tmp_path, monkeypatch, capsys):
    """``sim2obs transfer`` in a fresh process (sets reused from the module's data folder, everything
    else from scratch), then again in this process: every point is reused, nothing is trained."""
    from sim2obs.cli import main

    data, results = study["folder"].parents[3] / "data", tmp_path / "results"
    env = dict(os.environ, SIM2OBS_DATA=str(data), SIM2OBS_RESULTS=str(results), PYTHONWARNINGS="ignore")
    args = ["transfer", "cluster=synchronous", "progress=false", *[f"transfer.{o}" for o in TINY],
            "transfer.targets.observed.n=60", "transfer.k=[6]", "transfer.strategies=[zero_shot,finetune_head]",
            "transfer.diagnostics.enabled=false"]
    first = subprocess.run([sys.executable, "-m", "sim2obs.cli", *args], env=env, capture_output=True, text=True,
                           timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "finetune_head" in first.stdout and "transfer study finished" in first.stdout
    assert "training the source" in first.stderr
    folder = results / "transfer" / "bt_posterior" / "bt_quick"
    rows = json.loads((folder / "transfer_results.json").read_text())
    assert [(r["strategy"], r["k"]) for r in rows] == [("source", 0), ("zero_shot", 0), ("finetune_head", 6)]
    monkeypatch.setenv("SIM2OBS_DATA", str(data))
    monkeypatch.setenv("SIM2OBS_RESULTS", str(results))
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # the CLI hands its arguments to Hydra through sys.argv
    main(args)
    out = capsys.readouterr()
    assert out.err.count("done before, reusing") == 3 and "training the source" not in out.err
    assert "finetune_head" in out.out
    again = json.loads((folder / "transfer_results.json").read_text())
    assert [r["predictions_sha256"] for r in again] == [r["predictions_sha256"] for r in rows]


# ---------------------------------------------------------------------------------- engine hook
def test_engine_regulariser_adds_its_term_and_none_leaves_the_run_unchanged(tmp_path):
    from sim2obs.models.engine import Trainer, TrainerConfig
    from tests.models._tiny import TinyNet, tiny_dataset

    cfg = TrainerConfig(device="cpu", precision="fp32", epochs=2, batch_size=8, optimiser="adam", schedule="none",
                        augment=None, progress=False)
    data = tiny_dataset(24)

    def fit(name, **kw):
        torch.manual_seed(0)
        model = TinyNet()
        result = Trainer(cfg, **kw).fit(model, data, data, tmp_path / name)
        return model, result

    plain, a = fit("plain")
    none, b = fit("none", regulariser=None)
    const, c = fit("const", regulariser=lambda net, inputs, output: torch.tensor(5.0))
    assert a.record["config_hash"] == b.record["config_hash"] != c.record["config_hash"]
    assert all(torch.equal(v, none.state_dict()[k]) for k, v in plain.state_dict().items())
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    # a constant term moves no weight and adds itself to every training loss (not to validation)
    assert all(torch.equal(v, const.state_dict()[k]) for k, v in plain.state_dict().items())
    assert [r["train_loss"] - 5.0 for r in c.history] == pytest.approx([r["train_loss"] for r in a.history])
    assert [r["val_loss"] for r in c.history] == [r["val_loss"] for r in a.history]
    calls = []
    fit("seen", regulariser=lambda net, inputs, output: calls.append((type(net), set(inputs), output.shape))
        or torch.zeros(()))
    assert len(calls) == 2 * 3 and calls[0] == (TinyNet, {"image"}, (8, 2))
