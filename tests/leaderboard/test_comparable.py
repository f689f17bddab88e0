"""A board that can be compared: entries ranked only on one test set, a model's sim and real
runs on one row with their gap, seeds per column, the papers' numbers as reference rows."""
import json
import shutil
from types import SimpleNamespace

import h5py
import pytest

from sim2obs.galaxyset import MANIFEST_NAME, compute_content_hash
from sim2obs.leaderboard import Leaderboard, RunInfo, aggregate, rank, to_csv, to_markdown, to_text
from sim2obs.provenance import file_sha256
from sim2obs.tasks import TASKS
from tests.toy_task import ToyTask, noisy_predictions


def _run(id, model, seed, rmse, n, data="small", chash="aaaa1111bbbb2222", kind="sim"):
    metrics = {"rmse": rmse, "nmad": rmse / 2}
    return SimpleNamespace(id=id, task="toy", model_name=model, config_hash=model, config=None, main_score="rmse",
                           main_value=rmse, data_kind=kind, data_name=data, data_content_hash=chash, split="test",
                           n_objects=n, seed=seed, source="benchmark", metric_dict=lambda m=metrics: dict(m))


def test_entries_scored_on_different_test_sets_are_not_ranked_against_each_other():
    runs = [_run(i + 1, "preset_model", i, 0.20 + 0.01 * i, n=200, data="preset", chash="1111aaaa") for i in range(3)]
    runs += [_run(i + 4, "other_model", i, 0.20 + 0.01 * i, n=200, data="preset", chash="1111aaaa") for i in range(3)]
    runs += [_run(i + 7, "tiny_split_model", i, 0.05, n=20, data="tiny", chash="2222bbbb") for i in range(3)]
    entries = {e.model_name: e for e in rank(aggregate(runs))}
    assert entries["tiny_split_model"].rank is None  # better number, but on a 20-object split
    assert entries["preset_model"].rank == 1 and entries["other_model"].rank == 2
    text = to_text(rank(aggregate(runs)), ["rmse"])
    assert "sim = sim: preset #1111aaaa test n=200" in text and "sim2 = sim: tiny #2222bbbb test n=20" in text
    header = text.splitlines()[0]
    assert "rmse (sim)" in header and "rmse (sim2)" in header and "seeds (sim2)" in header


def test_paper_numbers_are_reference_rows_never_ranked():
    from sim2obs.leaderboard.ranking import reference_entries

    meta = TASKS.get("metallicity").metadata
    runs = [_run(i + 1, "cnn", i, 0.1, n=200) for i in range(3)]
    ranked = rank(aggregate(runs) + reference_entries(meta))
    assert [e.rank for e in ranked][:1] == [1]
    refs = [e for e in ranked if e.reference]
    assert {e.model_name for e in refs} == {f"{m} (paper)" for m in meta.paper}
    assert all(e.rank is None for e in refs)
    text = to_text(ranked, ["rmse"])
    assert "ref   cnn (paper)" in text and "rmse = 0.085" in text
    assert "paper" in to_csv(ranked, ["rmse"])


def _as_real_set(src, dst, shift):
    """A copy of a generated set that reads as survey data: other name, no generator, test
    labels shifted by ``shift``; its manifest rewritten to the new content."""
    shutil.copytree(src, dst)
    mpath = dst / MANIFEST_NAME
    manifest = json.loads(mpath.read_text())
    test = manifest["schema"]["split_names"].index("test")
    for shard in manifest["shards"]:
        with h5py.File(dst / shard["file"], "r+") as f:
            values = f["catalog/oh12"][()]
            values[f["split"][()] == test] += shift
            f["catalog/oh12"][...] = values
        shard["bytes"] = (dst / shard["file"]).stat().st_size
        shard["sha256"] = file_sha256(dst / shard["file"])
    manifest["name"] = "survey_dr7"
    manifest["provenance"] = {"source": "survey", "source_version": "dr7"}
    manifest.pop("field_sha256", None)  # an older-style manifest: readers check it from the shards
    manifest["content_hash"] = compute_content_hash(dst, manifest)
    mpath.write_text(json.dumps(manifest))
    return dst


def _benchmark_config(task, seed):
    return {"method": "net", "method_config": {"width": 8},
            "task_config": {"data": dict(task.config.data), "seed": seed}}


def test_a_models_sim_and_real_runs_meet_on_one_row_with_their_gap(tiny_galsim_set, tmp_path):
    sim = ToyTask({"data": {"path": str(tiny_galsim_set)}}, data_dir=tmp_path)
    real_path = _as_real_set(tiny_galsim_set, tmp_path / "real", shift=0.3)
    real = ToyTask({"data": {"path": str(real_path), "content_hash": json.loads(
        (real_path / MANIFEST_NAME).read_text())["content_hash"]}}, data_dir=tmp_path)
    board = Leaderboard(results_dir=tmp_path / "results")
    for seed in range(3):
        board.record(sim, noisy_predictions(sim, 0.05, seed=seed).save(tmp_path / f"sim{seed}.h5"),
                     RunInfo(model_name="net", seed=seed, config=_benchmark_config(sim, seed)))
    for seed in range(2):  # the same model, evaluated on the real set's test split (its truth is shifted)
        preds = noisy_predictions(sim, 0.05, seed=seed)
        board.record(real, preds.save(tmp_path / f"real{seed}.h5"),
                     RunInfo(model_name="net", seed=seed, config=_benchmark_config(real, seed)))
    runs = board.runs()
    assert {r.data_kind for r in runs} == {"sim", "real"} and len({r.config_hash for r in runs}) == 2
    entries = rank(aggregate(runs))
    assert len(entries) == 1  # one row: the data binding is not part of the entry's key
    e = entries[0]
    assert e.rank == 1 and e.main("sim").n == 3 and e.main("real").n == 2
    assert [c.n_seeds for c in e.columns.values()] == [3, 2]
    assert e.gap == pytest.approx(e.main("real").mean - e.main("sim").mean) and e.gap > 0.2
    md = to_markdown(entries, ["rmse", "nmad"])
    header, _, row = md.splitlines()[:3]
    assert "| seeds | rmse (sim) | seeds (real) | rmse (real) | gap (real-sim) |" in header
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["1", "net", "3"] and cells[4] == "2" and cells[6].startswith(f"{e.gap:+.4g} ± ")
    assert cells[6].endswith("(quadrature)")  # two test sets: no shared resamples
    assert f"real = real: survey_dr7 #{real.galaxy_set.content_hash[:8]} test n={len(sim.split_ids('test'))}" in md
