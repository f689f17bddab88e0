"""The HTML page: stable plot order, a CSV download of every table, a submission's run page
showing what was submitted and nothing else, and a layout that fits a 1400-px window
(measured in headless Chromium)."""
import csv
import io
import json
import os
import re
import shutil
import subprocess

import pytest

from sim2obs.leaderboard import Leaderboard, RunInfo, adopt_plots, build_page
from tests.conftest import CLI
from tests.toy_task import ToyTask, noisy_predictions


@pytest.fixture
def board_with_runs(tiny_galsim_set, tmp_path):
    toy = ToyTask({"data": {"path": str(tiny_galsim_set)}}, data_dir=tmp_path)
    board = Leaderboard(results_dir=tmp_path / "results")
    for model, scale in (("sharp", 0.05), ("blurry", 0.3)):
        for seed in range(3):
            path = noisy_predictions(toy, scale, seed=seed, samples=20).save(tmp_path / f"{model}{seed}.h5")
            board.record(toy, path, RunInfo(model_name=model, seed=seed))
    return board, toy


def _img_srcs(html):
    return re.findall(r'<img src="([^"]+)"', html)


def test_plot_order_is_the_same_on_every_build(board_with_runs, tmp_path):
    board, toy = board_with_runs
    first = _img_srcs(build_page(board, tmp_path / "site", task_factory=lambda run: toy).read_text())
    second = _img_srcs(build_page(board, tmp_path / "site", task_factory=lambda run: toy).read_text())
    assert first and first == second
    per_run = [s for s in first if s.startswith("plots/run-1/")]
    assert per_run == sorted(per_run) and any("coverage" in s for s in per_run)


def test_adopted_plots_are_shown_without_drawing_again(board_with_runs, tmp_path):
    """The main job hands the page the plots its tasks drew (adopt_plots): the page lists them and
    builds no task for those runs; a run's plots, once there, are never replaced."""
    board, toy = board_with_runs
    drawn = tmp_path / "drawn"
    drawn.mkdir()
    (drawn / "b.png").write_bytes(b"png b")
    (drawn / "a.png").write_bytes(b"png a")
    (drawn / "notes.txt").write_text("not a plot")
    run_ids = [r.id for r in board.runs()]
    for run_id in run_ids:
        copied = adopt_plots(run_id, [drawn / "b.png", drawn / "a.png", drawn / "notes.txt", drawn / "gone.png"],
                             tmp_path / "site")
        assert [p.name for p in copied] == ["b.png", "a.png"]
    (drawn / "a.png").write_bytes(b"changed")
    assert adopt_plots(run_ids[0], [drawn / "a.png"], tmp_path / "site") == []  # never replaced
    built = []
    index = build_page(board, tmp_path / "site", task_factory=lambda run: built.append(run.id) or toy)
    assert built == []  # every run had its plots
    srcs = _img_srcs(index.read_text())
    assert f"plots/run-{run_ids[0]}/a.png" in srcs and f"plots/run-{run_ids[0]}/b.png" in srcs
    assert (tmp_path / "site" / "plots" / f"run-{run_ids[0]}" / "a.png").read_bytes() == b"png a"


def test_the_table_can_be_downloaded_as_csv(board_with_runs, tmp_path):
    board, toy = board_with_runs
    index = build_page(board, tmp_path / "site", task_factory=lambda run: toy)
    html = index.read_text()
    assert 'href="toy.csv" download' in html and 'href="leaderboard.csv" download' in html
    rows = list(csv.DictReader(io.StringIO((tmp_path / "site" / "toy.csv").read_text())))
    assert {r["model"] for r in rows} == {"sharp", "blurry"}
    sharp = next(r for r in rows if r["model"] == "sharp")
    assert sharp["rank"] == "1" and sharp["n_seeds"] == "3" and sharp["n_objects"] == str(len(toy.split_ids("test")))
    assert float(sharp["rmse_mean"]) > 0 and sharp["data_hash"] == toy.galaxy_set.content_hash
    assert "sim: " in html and f"#{toy.galaxy_set.content_hash[:8]}" in html  # which data each column is


def test_a_csv_submissions_run_page_shows_what_was_submitted_and_nothing_invented(cli_env, tmp_path):
    env = cli_env
    common = ["--set", "data.n=40", "--set", "data.stamp=32", "--set", "data.seed=5"]
    ids_file = tmp_path / "ids.txt"
    script = tmp_path / "ids.py"  # what a user's script sees: the test ids, never the labels
    script.write_text(
        "from sim2obs.tasks import build_task, load_task_config\n"
        "cfg = load_task_config('metallicity', 'quick', ['data.n=40', 'data.stamp=32', 'data.seed=5'])\n"
        f"t = build_task('metallicity', cfg, data_dir={str(tmp_path / 'data')!r})\n"
        f"open({str(ids_file)!r}, 'w').write(' '.join(map(str, t.split_ids('test'))))\n")
    subprocess.run([CLI[0], str(script)], env=env, check=True, capture_output=True, text=True, timeout=600)
    ids = ids_file.read_text().split()
    mine = tmp_path / "mine.csv"
    mine.write_text("id,oh12,oh12_sigma\n" + "\n".join(f"{i},{8.9 + 0.001 * k},0.1" for k, i in enumerate(ids)))
    res = subprocess.run([*CLI, "leaderboard", "submit", "--task", "metallicity", *common, "--predictions", str(mine),
                          "--model-name", "my_gbm", "--model-target", "mypkg.models.GBM", "--seed", "0",
                          "--param", "learning_rate=0.05", "--param", "features=[\"g\",\"r\"]",
                          "--code-url", "https://example.org/my/code", "--notes", "trained on my laptop"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    subprocess.run([*CLI, "leaderboard", "page"], env=env, check=True, capture_output=True, timeout=600)
    page = (tmp_path / "results" / "leaderboard" / "runs" / "1.html").read_text()
    for shown in ("my_gbm", "mypkg.models.GBM", "learning_rate", "0.05", "https://example.org/my/code",
                  "trained on my laptop", "mine.csv", "coverage_68"):
        assert shown in page, shown
    for invented in ("resnet", "ResNet", "finetune", "trainer", "pretrained", "dihedral"):
        assert invented not in page, invented  # the task's own default network is not the submission's


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


_MEASURE = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="f" src="{src}" style="width:1400px;height:1000px;border:0"></iframe>
<script>
document.getElementById('f').addEventListener('load', function(){{
  var d = this.contentDocument, imgs = Array.from(d.querySelectorAll('section .plots img'));
  var out = {{scrollWidth: d.documentElement.scrollWidth,
             imgWidths: imgs.map(function(i){{return i.getBoundingClientRect().width;}})}};
  var p = document.createElement('pre'); p.id = 'measure'; p.textContent = JSON.stringify(out);
  document.body.appendChild(p);
}});
</script></body></html>"""


@pytest.mark.skipif(_chromium() is None and not os.environ.get("SIM2OBS_REQUIRE_CHROMIUM"),
                    reason="needs Debian's chromium (CI installs it: apt-get install chromium)")
def test_the_page_fits_a_1400px_window_with_readable_plots(board_with_runs, tmp_path):
    assert _chromium(), "SIM2OBS_REQUIRE_CHROMIUM is set but no chromium is installed"
    board, toy = board_with_runs
    index = build_page(board, tmp_path / "site", task_factory=lambda run: toy)
    measure = tmp_path / "site" / "measure.html"
    measure.write_text(_MEASURE.format(src="index.html"))
    flags = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
             "--virtual-time-budget=5000", "--window-size=1400,1000"]
    dom = subprocess.run(flags + ["--dump-dom", measure.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    found = re.search(r'<pre id="measure">(.*?)</pre>', dom)
    assert found, dom[-2000:]
    m = json.loads(found.group(1).replace("&quot;", '"'))
    assert m["scrollWidth"] <= 1400  # no horizontal scrolling at 1400 px
    assert m["imgWidths"] and min(m["imgWidths"]) >= 380  # plots at a readable size, not thumbnails
    shot = tmp_path / "shot.png"
    subprocess.run(flags + [f"--screenshot={shot}", index.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.exists() and shot.stat().st_size > 10_000
