"""Submissions and data the board must refuse with a clear error, writing nothing: tampered test
labels, malformed HDF5/CSV predictions, a racing resubmission of one file, a manifest that points
outside its set, unknown shard files."""
import json
import multiprocessing as mp
import shutil

import h5py
import numpy as np
import pytest

from sim2obs import open_galaxy_set
from sim2obs.errors import DataFormatError
from sim2obs.galaxyset import MANIFEST_NAME
from sim2obs.leaderboard import Leaderboard, RunInfo, write_csv
from sim2obs.predictions import Predictions
from tests.toy_task import ToyTask, noisy_predictions


@pytest.fixture
def set_copy(tiny_galsim_set, tmp_path):
    return shutil.copytree(tiny_galsim_set, tmp_path / "set")


@pytest.fixture
def board(tmp_path):
    return Leaderboard(results_dir=tmp_path / "results")


def _nothing_written(board):
    assert board.runs() == []
    folder = board.store_dir / "predictions"
    assert not folder.exists() or list(folder.iterdir()) == []


def _edit_test_labels(set_dir, delta=0.5):
    """Change the oh12 labels of the test split in place (same file size, manifest untouched)."""
    gs = open_galaxy_set(set_dir, check="schema")
    test = gs.split_names.index("test")
    for shard in gs.manifest["shards"]:
        with h5py.File(set_dir / shard["file"], "r+") as f:
            codes = f["split"][()]
            values = f["catalog/oh12"][()]
            values[codes == test] += delta
            f["catalog/oh12"][...] = values
    return gs.content_hash


@pytest.mark.parametrize("manifest_kind", ["with field digests", "older manifest without them"])
def test_test_labels_edited_in_place_are_refused(set_copy, board, tmp_path, manifest_kind):
    clean = ToyTask({"data": {"path": str(set_copy)}}, data_dir=tmp_path)
    preds = noisy_predictions(clean, 0.1).save(tmp_path / "p.h5")  # made before the edit
    if manifest_kind != "with field digests":
        mpath = set_copy / MANIFEST_NAME
        manifest = json.loads(mpath.read_text())
        manifest.pop("field_sha256", None)
        mpath.write_text(json.dumps(manifest))
    size = sum(p.stat().st_size for p in set_copy.glob("*.h5"))
    recorded_hash = _edit_test_labels(set_copy)
    assert sum(p.stat().st_size for p in set_copy.glob("*.h5")) == size
    task = ToyTask({"data": {"path": str(set_copy)}}, data_dir=tmp_path)
    assert task.galaxy_set.content_hash == recorded_hash  # the manifest still names the clean data
    with pytest.raises(DataFormatError, match="catalog/oh12|content hash"):
        task.evaluate(Predictions.load(preds))
    with pytest.raises(DataFormatError, match="catalog/oh12|content hash"):
        board.record(task, preds, RunInfo(model_name="net", seed=0))
    _nothing_written(board)


def test_whole_set_is_verified_before_scoring_when_asked(set_copy, board, tmp_path):
    task = ToyTask({"data": {"path": str(set_copy)}}, data_dir=tmp_path)
    preds = noisy_predictions(task, 0.1).save(tmp_path / "p.h5")
    with h5py.File(next(iter(sorted(set_copy.glob("part-*.h5")))), "r+") as f:
        f["images/image"][0, 0, 0, 0] += 1.0  # an image, not a label: only the full check sees it
    assert board.record(task, preds, RunInfo(model_name="net")).id == 1
    with pytest.raises(DataFormatError, match="sha256 differs|content hash"):
        board.record(task, noisy_predictions(task, 0.2).save(tmp_path / "q.h5"), RunInfo(model_name="net"),
                     verify_data=True)
    assert len(board.runs()) == 1


def test_malformed_hdf5_predictions_get_clear_errors(tiny_galsim_set, board, tmp_path):
    task = ToyTask({"data": {"path": str(tiny_galsim_set)}}, data_dir=tmp_path)
    t = task.truth("test")
    cases = {
        "targets not JSON": ({"targets": "oh12"}, t.ids, t.values, r"\[targets\]: attribute is not JSON"),
        "targets not a list": ({"targets": '{"a": 1}'}, t.ids, t.values, r"\[targets\]: .*JSON list"),
        "string predictions": ({"targets": '["oh12"]'}, t.ids, np.array([[b"high"]] * len(t.ids)),
                               r"\[predictions\]: values must be numbers"),
        "float ids": ({"targets": '["oh12"]'}, t.ids.astype(float) + 0.5, t.values, r"\[ids\]: ids must be integers"),
        "id beyond int64": ({"targets": '["oh12"]'}, np.array([2**64 - 1] + list(t.ids[1:]), dtype=np.uint64),
                            t.values, r"\[ids\]: id 18446744073709551615 does not fit in int64"),
    }
    for name, (attrs, ids, values, message) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.h5"
        with h5py.File(path, "w") as h5:
            h5["ids"] = ids
            h5["predictions"] = values
            h5.attrs.update(attrs)
        with pytest.raises(DataFormatError, match=message):
            board.record(task, path, RunInfo(model_name=name))
        _nothing_written(board)


def test_an_id_of_2_to_the_70_in_a_csv_is_refused(tiny_galsim_set, board, tmp_path):
    task = ToyTask({"data": {"path": str(tiny_galsim_set)}}, data_dir=tmp_path)
    t = task.truth("test")
    rows = [f"{i},{v}" for i, v in zip(t.ids, t.values[:, 0])]
    rows[0] = f"{2**70},{t.values[0, 0]}"
    path = tmp_path / "big.csv"
    path.write_text("id,oh12\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataFormatError, match=rf"\[id\]: row 2 .*{2**70}.* not an integer id within int64"):
        board.record(task, path, RunInfo(model_name="big"))
    _nothing_written(board)


def _submit_same_file(url, set_path, data_dir, path, barrier, results):
    task = ToyTask({"data": {"path": set_path}}, data_dir=data_dir)
    board = Leaderboard(url=url, store_dir=data_dir + "/store")
    task.galaxy_set  # everything slow done before the start line
    barrier.wait()  # then all submit the same file at once
    try:
        results.put(board.record(task, path, RunInfo(model_name="net", seed=0)).id)
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        results.put(f"{type(exc).__name__}: {exc}")


def test_concurrent_submissions_of_one_csv_file_record_it_once(tiny_galsim_set, tmp_path, monkeypatch):
    import time

    import sim2obs.leaderboard.board as board_module

    real_sha256 = board_module.file_sha256

    def slow_sha256(path):  # widen the window between writing the canonical copy and reading it
        time.sleep(0.3)
        return real_sha256(path)

    monkeypatch.setattr(board_module, "file_sha256", slow_sha256)  # inherited by the forked submitters
    task = ToyTask({"data": {"path": str(tiny_galsim_set)}}, data_dir=tmp_path)
    csv = str(write_csv(noisy_predictions(task, 0.1), tmp_path / "same.csv"))
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    Leaderboard(url=url, store_dir=tmp_path / "store")  # schema in place: the race is on the file
    ctx = mp.get_context("fork")
    n = 8
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_submit_same_file, args=(url, str(tiny_galsim_set), str(tmp_path), csv, barrier,
                                                          results)) for _ in range(n)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert outcomes == [1] * n, outcomes
    board = Leaderboard(url=url, store_dir=tmp_path / "store")
    assert len(board.runs()) == 1
    assert list((tmp_path / "store" / "incoming").glob("*")) == []  # no leftovers
    assert len(list((tmp_path / "store" / "predictions").glob("*.h5"))) == 1


def test_a_manifest_shard_path_outside_the_set_is_refused(set_copy, tmp_path):
    outside = tmp_path / "outside.h5"
    mpath = set_copy / MANIFEST_NAME
    manifest = json.loads(mpath.read_text())
    first = manifest["shards"][0]["file"]
    shutil.copy(set_copy / first, outside)
    manifest["shards"][0]["file"] = "../outside.h5"
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(DataFormatError, match=r"shards\[0\]\.file\]: '\.\./outside\.h5' is not a shard file name"):
        open_galaxy_set(set_copy)
    manifest["shards"][0]["file"] = "../../outside.h5"
    mpath.write_text(json.dumps(manifest))
    with pytest.raises(DataFormatError, match="not a shard file name inside"):
        open_galaxy_set(set_copy, check="schema")


def test_validate_reports_unknown_shard_files(set_copy, cli_env):
    import subprocess

    from tests.conftest import CLI

    ok = subprocess.run([*CLI, "data", "validate", str(set_copy)], env=cli_env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    shutil.copy(set_copy / "part-00000.h5", set_copy / "part-00009.h5")
    res = subprocess.run([*CLI, "data", "validate", str(set_copy)], env=cli_env, capture_output=True, text=True)
    assert res.returncode != 0
    assert "part-00009.h5" in res.stderr and "not listed in the manifest" in res.stderr
