"""Every refusal that README ("Leaderboard") and ``sim2obs.leaderboard.submission`` document, one
case each: the submission is refused with an error naming the file and the column, field, row or
id at fault, and nothing is written to the board (no run, no stored copy). Cases already covered
in ``test_board.py`` (no id column, missing target, extra column, a word in a number column,
NaN in a prediction, missing and duplicate ids, wrong file type, wrong shape) are not repeated."""
import h5py
import numpy as np
import pytest

from sim2obs.errors import DataFormatError, Sim2obsValueError
from sim2obs.leaderboard import Leaderboard, RunInfo
from sim2obs.tasks import Predictions
from sim2obs.tasks import metrics as M
from tests.toy_task import ToyPosteriorTask, ToyTask


class TwoTargets(ToyTask):
    """Two targets (metallicity and r magnitude), so that per-target columns can disagree."""

    from sim2obs.tasks import TaskMetadata

    metadata = TaskMetadata(
        name="toy_two", version="1.0", description="two targets", citation="none", inputs=("image",),
        targets=("oh12", "mag_r"), target_units=("dex", "mag"), main_score="rmse", metrics=("rmse",))

    def compute_metrics(self, p, truth):
        return {"rmse": M.rmse(p.values.ravel(), truth.values.ravel())}


@pytest.fixture
def tasks(tiny_galsim_set, tmp_path):
    data = {"data": {"path": str(tiny_galsim_set)}}
    return {"one": ToyTask(data, data_dir=tmp_path), "two": TwoTargets(data, data_dir=tmp_path),
            "posterior": ToyPosteriorTask(data, data_dir=tmp_path)}


def _rows(task, sigma=False, samples=0):
    """Header and rows of a valid CSV for ``task``'s test split (truth + 0.1)."""
    t = task.truth("test")
    header = ["id", *task.targets]
    if sigma:
        header += [f"{x}_sigma" for x in task.targets]
    header += [f"{x}_sample_{k}" for x in task.targets for k in range(samples)]
    rows = []
    for i, v in zip(t.ids, t.values):
        row = [str(int(i)), *(f"{x + 0.1:.6f}" for x in v)]
        row += ["0.1"] * (len(task.targets) if sigma else 0)
        row += [f"{x + 0.05 * (k - 1):.6f}" for x in v for k in range(samples)]
        rows.append(row)
    return header, rows


def _write(tmp_path, header, rows, name="sub.csv"):
    path = tmp_path / name
    path.write_text(",".join(header) + "\n" + "\n".join(",".join(r) for r in rows) + "\n")
    return path


def _set(rows, column, header, value, row=0):
    rows = [list(r) for r in rows]
    rows[row][header.index(column)] = value
    return rows


def _refused(board, task, path, *needles):
    with pytest.raises((DataFormatError, Sim2obsValueError)) as info:
        board.record(task, path, RunInfo(model_name="refused"))
    text = str(info.value)
    for needle in needles:
        assert needle in text, (needle, text)
    assert board.runs() == []
    store = board.store_dir / "predictions"
    assert not store.exists() or list(store.iterdir()) == []
    return text


@pytest.fixture
def board(tmp_path):
    return Leaderboard(results_dir=tmp_path / "results")


def test_valid_files_of_every_form_are_accepted(tasks, board, tmp_path):
    """The baseline of the refusals below: the same files without their fault are recorded."""
    for key, kw in (("one", {}), ("two", {"sigma": True}), ("posterior", {"samples": 3})):
        header, rows = _rows(tasks[key], **kw)
        run = board.record(tasks[key], _write(tmp_path, header, rows, f"{key}.csv"), RunInfo(model_name=key))
        assert run.id >= 1


# ---------------------------------------------------------------------------------- unreadable files
@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00\x81\x92 binary \x00\x00", b'id,oh12\n1,"8.9\n'],
                         ids=["empty", "binary", "unterminated-quote"])
def test_an_unreadable_csv_is_refused(tasks, board, tmp_path, content):
    path = tmp_path / "broken.csv"
    path.write_bytes(content)
    _refused(board, tasks["one"], path, str(path))


def test_a_csv_with_ragged_rows_is_refused(tasks, board, tmp_path):
    header, rows = _rows(tasks["one"])
    rows[1] = rows[1] + ["9.1", "9.2"]
    _refused(board, tasks["one"], _write(tmp_path, header, rows), "sub.csv")


def test_an_unreadable_hdf5_is_refused(tasks, board, tmp_path):
    path = tmp_path / "broken.h5"
    path.write_bytes(b"this is not HDF5" * 10)
    _refused(board, tasks["one"], path, str(path))


def test_a_missing_file_is_refused(tasks, board, tmp_path):
    _refused(board, tasks["one"], tmp_path / "absent.csv", "absent.csv")


# ---------------------------------------------------------------------------------- ids
@pytest.mark.parametrize("value", ["1.5", "", "seven", "1e40"], ids=["fraction", "empty", "word", "huge"])
def test_non_integer_ids_are_refused(tasks, board, tmp_path, value):
    header, rows = _rows(tasks["one"])
    _refused(board, tasks["one"], _write(tmp_path, header, _set(rows, "id", header, value, row=1)), "[id]")


def test_float_ids_in_hdf5_are_refused(tasks, board, tmp_path):
    t = tasks["one"].truth("test")
    with h5py.File(tmp_path / "p.h5", "w") as h5:
        h5["ids"] = t.ids.astype(np.float64) + 0.5
        h5["predictions"] = t.values
        h5.attrs["targets"] = '["oh12"]'
    _refused(board, tasks["one"], tmp_path / "p.h5", "ids")


def test_ids_of_another_split_are_refused(tasks, board, tmp_path):
    t = tasks["one"].truth("train")
    path = Predictions(t.ids, t.values, ("oh12",)).save(tmp_path / "train.h5")
    _refused(board, tasks["one"], path, "not in the split")


def test_hdf5_for_other_targets_is_refused(tasks, board, tmp_path):
    t = tasks["one"].truth("test")
    path = Predictions(t.ids, t.values, ("log_mstar",)).save(tmp_path / "other.h5")
    _refused(board, tasks["one"], path, "oh12")


# ---------------------------------------------------------------------------------- sigma
def test_sigma_for_only_some_targets_is_refused(tasks, board, tmp_path):
    header, rows = _rows(tasks["two"], sigma=True)
    drop = header.index("mag_r_sigma")
    header = header[:drop] + header[drop + 1:]
    rows = [r[:drop] + r[drop + 1:] for r in rows]
    _refused(board, tasks["two"], _write(tmp_path, header, rows), "mag_r_sigma")


@pytest.mark.parametrize("value", ["nan", "inf", "-0.2"])
def test_bad_sigma_is_refused(tasks, board, tmp_path, value):
    header, rows = _rows(tasks["two"], sigma=True)
    _refused(board, tasks["two"], _write(tmp_path, header, _set(rows, "oh12_sigma", header, value, row=1)), "sigma")


# ---------------------------------------------------------------------------------- samples
def test_samples_numbered_with_a_gap_are_refused(tasks, board, tmp_path):
    header, rows = _rows(tasks["posterior"], samples=3)
    header = [h.replace("oh12_sample_2", "oh12_sample_5") for h in header]
    _refused(board, tasks["posterior"], _write(tmp_path, header, rows), "oh12_sample_")


def test_a_different_number_of_samples_per_target_is_refused(tasks, board, tmp_path):
    header, rows = _rows(tasks["two"], samples=3)
    drop = header.index("mag_r_sample_2")
    header = header[:drop] + header[drop + 1:]
    rows = [r[:drop] + r[drop + 1:] for r in rows]
    _refused(board, tasks["two"], _write(tmp_path, header, rows), "samples")


def test_a_single_sample_is_refused(tasks, board, tmp_path):
    header, rows = _rows(tasks["posterior"], samples=1)
    _refused(board, tasks["posterior"], _write(tmp_path, header, rows), "samples")


def test_samples_of_an_unknown_target_are_refused(tasks, board, tmp_path):
    header, rows = _rows(tasks["posterior"], samples=2)
    header = [h.replace("oh12_sample_1", "bt_r_sample_1") for h in header]
    _refused(board, tasks["posterior"], _write(tmp_path, header, rows), "bt_r_sample_1")


def test_a_task_that_ranks_calibration_refuses_point_predictions(tasks, board, tmp_path):
    header, rows = _rows(tasks["posterior"])
    _refused(board, tasks["posterior"], _write(tmp_path, header, rows), "posterior samples are required")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_samples_are_refused(tasks, board, tmp_path, value):
    header, rows = _rows(tasks["posterior"], samples=3)
    _refused(board, tasks["posterior"], _write(tmp_path, header, _set(rows, "oh12_sample_1", header, value)),
             "samples")


# ---------------------------------------------------------------------------------- predictions
@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity"])
def test_infinite_predictions_are_refused(tasks, board, tmp_path, value):
    header, rows = _rows(tasks["one"])
    _refused(board, tasks["one"], _write(tmp_path, header, _set(rows, "oh12", header, value, row=1)), "NaN/inf")
