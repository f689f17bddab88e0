"""Ranking and aggregation on golden fixtures; the HTML page, rendered in headless Chromium."""
import os
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest

from sim2obs.leaderboard import Leaderboard, RunInfo, aggregate, build_page, rank, to_csv, to_markdown, to_text
from tests.toy_task import ToyTask, noisy_predictions


def _run(id, model, seed, rmse, kind="sim", chash=None, source="benchmark"):
    metrics = {"rmse": rmse, "nmad": rmse / 2}
    return SimpleNamespace(id=id, task="toy", model_name=model, config_hash=chash or model, main_score="rmse",
                           main_value=rmse, data_kind=kind, seed=seed, source=source,
                           metric_dict=lambda m=metrics: dict(m))


GOLDEN = [
    _run(1, "a", 0, 0.10), _run(2, "a", 1, 0.12), _run(3, "a", 2, 0.14),            # mean 0.12, std 0.02
    _run(4, "b", 0, 0.09), _run(5, "b", 1, 0.11), _run(6, "b", 2, 0.10),            # mean 0.10 -> rank 1
    _run(7, "c", 0, 0.01),                                                           # best, 1 seed: unranked
    _run(8, "a", 0, 0.30, kind="real"), _run(9, "a", 1, 0.34, kind="real"),          # a on real data
]


def test_aggregation_of_seeds_is_mean_and_sample_std():
    entries = {e.model_name: e for e in aggregate(GOLDEN)}
    a = entries["a"]
    assert a.n_seeds == 3 and a.run_ids == [1, 2, 3, 8, 9]
    assert a.main("sim").mean == pytest.approx(0.12) and a.main("sim").std == pytest.approx(0.02)
    assert a.main("real").mean == pytest.approx(0.32) and a.main("real").std == pytest.approx(np.std([0.3, 0.34], ddof=1))
    assert a.gap == pytest.approx(0.20)
    assert entries["b"].gap is None
    assert a.metrics["sim"]["nmad"].mean == pytest.approx(0.06)


def test_ranking_needs_three_seeds_and_orders_by_the_main_score():
    ranked = rank(aggregate(GOLDEN))
    assert [(e.model_name, e.rank) for e in ranked] == [("b", 1), ("a", 2), ("c", None)]


def test_different_configurations_of_one_model_are_separate_entries():
    runs = GOLDEN[:3] + [_run(10, "a", 0, 0.5, chash="a-wide")]
    assert len(aggregate(runs)) == 2


def test_exports_show_sim_real_and_gap_columns():
    ranked = rank(aggregate(GOLDEN))
    text = to_text(ranked, ["rmse", "nmad"])
    header = text.splitlines()[0]
    assert "rmse (sim)" in header and "real" in header and "gap (real-sim)" in header
    first = text.splitlines()[2].split()
    assert first[:2] == ["1", "b"]
    md = to_markdown(ranked, ["rmse"])
    assert md.splitlines()[1].startswith("|---|") and "| 2 | a | 3 | 0.12 ± 0.02 | 2 | 0.32 ± 0.028 | +0.2 |" in md
    csv_rows = to_csv(ranked, ["rmse"]).strip().splitlines()
    assert csv_rows[0].startswith("task,rank,model,model_key,kind,data_name,data_hash,split,n_objects,n_seeds,")
    assert csv_rows[0].endswith("rmse_mean,rmse_std")
    assert len(csv_rows) == 1 + 4  # b sim, a sim, a real, c sim


@pytest.fixture
def board_with_runs(tiny_galsim_set, tmp_path):
    toy = ToyTask({"data": {"path": str(tiny_galsim_set)}}, data_dir=tmp_path)
    board = Leaderboard(results_dir=tmp_path / "results")
    for model, scale in (("sharp", 0.05), ("blurry", 0.3)):
        for seed in range(3):
            path = noisy_predictions(toy, scale, seed=seed).save(tmp_path / f"{model}{seed}.h5")
            board.record(toy, path, RunInfo(model_name=model, seed=seed))
    return board, toy


def test_page_lists_every_run_with_plots(board_with_runs, tmp_path):
    board, toy = board_with_runs
    index = build_page(board, tmp_path / "site", task_factory=lambda run: toy)
    text = index.read_text()
    body = text.split("<tbody>")[1].split("</tbody>")[0]
    assert body.count("<tr") == 2 and "sharp" in body and "blurry" in body
    for run in board.runs():
        page = (tmp_path / "site" / "runs" / f"{run.id}.html").read_text()
        assert run.predictions_sha256 in page and run.data_content_hash in page
        assert (tmp_path / "site" / "plots" / f"run-{run.id}" / "pred_vs_true_oh12.png").exists()
    assert "plots/run-1/pred_vs_true_oh12.png" in text  # the best run of an entry is shown
    assert "src=\"http" not in text and "href=\"http" not in text  # works from disk, offline


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None and not os.environ.get("SIM2OBS_REQUIRE_CHROMIUM"),
                    reason="needs Debian's chromium (CI installs it: apt-get install chromium)")
def test_page_renders_in_headless_chromium(board_with_runs, tmp_path):
    assert _chromium(), "SIM2OBS_REQUIRE_CHROMIUM is set but no chromium is installed"
    board, toy = board_with_runs
    index = build_page(board, tmp_path / "site", task_factory=lambda run: toy)
    flags = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
             "--virtual-time-budget=3000"]
    dom = subprocess.run(flags + ["--dump-dom", index.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    body = dom.split("<tbody>")[1].split("</tbody>")[0]
    assert body.count("<tr") == 2 and "sharp" in body and "blurry" in body
    assert dom.count("<img") >= 4 and "sortable" in dom
    shot = tmp_path / "shot.png"
    subprocess.run(flags + ["--window-size=1400,1600", f"--screenshot={shot}", index.as_uri()],
                   capture_output=True, timeout=120, check=True)
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] >= 1000 and pixels.shape[1] >= 1000
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05  # not a blank page: text, table and plots drawn
    assert (np.abs(rgb - 1.0).sum(axis=-1) > 0.3).mean() > 0.02  # a few % non-white pixels
