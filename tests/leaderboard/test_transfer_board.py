"""Transfer studies on the board: a study folder in the transfer contract's format (real tiny
GalSim sets, real predictions of a seeded mean baseline, scored by the task) is recorded with
every metric recomputed; a tampered number or predictions file is refused naming the row; the
board shows source / zero-shot / few-shot / gap with seed counts and ranks only comparable rows
together; `verify` re-checks transfer runs; the page has a transfer section with learning curves."""
import json
import multiprocessing as mp
import os
import re
import shutil
import sqlite3
import subprocess

import numpy as np
import pytest

from sim2obs.errors import DataFormatError
from sim2obs.leaderboard import Leaderboard, build_page
from sim2obs.leaderboard import transfer as T
from sim2obs.leaderboard import transfer_board as TB
from sim2obs.leaderboard.cli import main as leaderboard_main
from sim2obs.leaderboard.db import connect, head_revision, schema_revision, tables_match_models, upgrade
from sim2obs.predictions import Predictions
from sim2obs.provenance import file_sha256
from sim2obs.tasks import build_task, load_task_config
from tests.conftest import SYNC
from tests.leaderboard.test_postgres import pg_url  # noqa: F401 - the PostgreSQL fixture (skips without a server)

DATA = {"n": 120, "stamp": 32, "shard_size": 120}  # ~40 % star-forming (the metallicity sample)
TASK = "metallicity"


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Source (seed 11) and two target sets (seeds 12, 13: other content hashes), generated."""
    root = tmp_path_factory.mktemp("transfer_sets")
    cfg = load_task_config(TASK, "quick")
    out = {"cfg": {k: v for k, v in cfg.items() if k != "data"}, "data_dir": root / "data"}
    for name, seed in (("source", 11), ("target", 12), ("other", 13)):
        task = build_task(TASK, {**cfg, "data": {**DATA, "seed": seed}}, data_dir=root / "data", cluster=SYNC)
        task.prepare()
        ident = task.data_identity
        out[name] = {"name": ident["name"], "content_hash": ident["content_hash"], "path": ident["path"]}
    return out


def _task(sets, identity):
    data = {"path": identity["path"], "content_hash": identity["content_hash"]}
    return build_task(TASK, {**sets["cfg"], "data": data}, data_dir=sets["data_dir"])


def make_study(root, sets, study="quick", model="mean", target="target", target_name="hsc_like", seeds=(0, 1, 2),
               ks=(2, 5)):
    """A study folder as `sim2obs transfer` writes it. The "network" is a seeded mean baseline: the
    source fit is the mean of a bootstrap draw (seeded) of the source training labels; fine-tuning
    averages it with the k first target training labels of a seeded permutation (nested
    subsets); target_only is the mean of those k labels alone."""
    src_task, tgt_task = _task(sets, sets["source"]), _task(sets, sets[target])
    src_labels, tgt_labels = src_task.labels("train")[:, 0], tgt_task.labels("train")[:, 0]
    folder, rows = root / study, []

    def point(seed, strategy, k, domain, value):
        task = src_task if domain == "source" else tgt_task
        ids = task.split_ids("test")
        p = Predictions(ids, np.full((len(ids), 1), value), task.targets)
        rel = f"seed-{seed}/{'source' if domain == 'source' else target_name}/{strategy}/k-{k}"
        path = p.save(folder / rel / "predictions_test.npz", task=TASK, split="test")
        metrics = task.evaluate(p, "test")
        row = {"task": TASK, "task_version": task.metadata.version, "study": study, "model": model,
               "source": sets["source"], "target_name": "source" if domain == "source" else target_name,
               "target": sets["source"] if domain == "source" else sets[target], "strategy": strategy, "k": k,
               "seed": seed, "domain": domain, "split": "test", "main_score": task.metadata.main_score,
               "value": metrics[task.metadata.main_score], "metrics": metrics, "errors": {"rmse": 0.01},
               "predictions": path.name, "predictions_sha256": file_sha256(path), "folder": rel,
               "task_config": sets["cfg"], "wall_seconds": 0.1}
        (folder / rel / "point.json").write_text(json.dumps(row))
        rows.append(row)

    for seed in seeds:
        rng = np.random.default_rng(seed)
        fit = float(rng.choice(src_labels, len(src_labels)).mean())
        order = rng.permutation(len(tgt_labels))
        point(seed, "source", 0, "source", fit)
        point(seed, "zero_shot", 0, "target", fit)
        for k in ks:
            few = tgt_labels[order[:k]]
            point(seed, "finetune_full", k, "target", float((fit + few.sum()) / (1 + k)))
            point(seed, "target_only", k, "target", float(few.mean()))
    (folder / T.RESULTS_FILE).write_text(json.dumps(rows, indent=1))
    return folder, rows


@pytest.fixture
def study(sets, tmp_path):
    folder, rows = make_study(tmp_path / "studies", sets)
    board = Leaderboard(results_dir=tmp_path / "results")
    return {"folder": folder, "rows": rows, "board": board, "args": ["--results-dir", str(tmp_path / "results"),
                                                                     "--data-dir", str(sets["data_dir"])]}


def _cli(args, capsys):
    try:
        leaderboard_main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out + out.err


def test_recording_a_study_recomputes_and_stores_every_row(study, sets, capsys):
    code, out = _cli([*study["args"], "record-transfer", str(study["folder"])], capsys)
    assert code == 0, out
    n = len(study["rows"])
    assert f"{n} rows checked (every metric recomputed), {n} newly recorded" in out
    board = study["board"]
    runs = board.transfer_runs(TASK)
    assert len(runs) == n == 3 * (2 + 2 * 2)
    for run, row in zip(runs, study["rows"]):
        assert (run.strategy, run.k, run.seed, run.domain) == (row["strategy"], row["k"], row["seed"], row["domain"])
        task = _task(sets, row["source"] if row["domain"] == "source" else row["target"])
        assert run.metric_dict() == pytest.approx(task.evaluate(Predictions.load(run.predictions_path)))
        scored = sets["source"] if row["domain"] == "source" else sets["target"]
        assert run.data_content_hash == scored["content_hash"]
    records, added = board.record_transfer(study["folder"], data_dir=sets["data_dir"])  # again: nothing new
    assert added == 0 and len(records) == n and len(board.transfer_runs()) == n
    code, out = _cli([*study["args"], "verify"], capsys)
    assert code == 0, out
    assert out.count("transfer run #") == n and f"{n}/{n} runs ({n} of them transfer runs) verified" in out


def _edit_rows(folder, edit):
    path = folder / T.RESULTS_FILE
    rows = json.loads(path.read_text())
    edit(rows)
    path.write_text(json.dumps(rows))


def test_a_tampered_metric_refuses_the_study_naming_the_row(study, sets):
    def edit(rows):
        rows[4]["metrics"]["nmad"] *= 0.5

    _edit_rows(study["folder"], edit)
    label = T.row_label(4, study["rows"][4])
    with pytest.raises(DataFormatError, match=re.escape(label) + r".*metric 'nmad': stored"):
        study["board"].record_transfer(study["folder"], data_dir=sets["data_dir"])
    assert study["board"].transfer_runs() == []  # nothing written

    def edit_value(rows):
        rows[4]["metrics"]["nmad"] *= 2  # restore
        rows[2]["value"] = rows[2]["metrics"]["rmse"] = rows[2]["value"] - 0.05  # consistent, but not the truth

    _edit_rows(study["folder"], edit_value)
    with pytest.raises(DataFormatError, match=re.escape(T.row_label(2, study["rows"][2])) + ".*'rmse'"):
        study["board"].record_transfer(study["folder"], data_dir=sets["data_dir"])


def test_a_tampered_predictions_file_is_refused_naming_the_row(study, sets):
    row = study["rows"][3]
    path = study["folder"] / row["folder"] / row["predictions"]
    p = Predictions.load(path)
    Predictions(p.ids, p.values + 0.1, p.targets).save(path)  # better numbers, same row
    with pytest.raises(DataFormatError, match=re.escape(T.row_label(3, row)) + ".*changed after the study wrote it"):
        study["board"].record_transfer(study["folder"], data_dir=sets["data_dir"])

    def edit(rows):  # the hash updated too: the recomputed metrics still give it away
        rows[3]["predictions_sha256"] = file_sha256(path)

    _edit_rows(study["folder"], edit)
    with pytest.raises(DataFormatError, match=re.escape(T.row_label(3, row)) + ".*not what its predictions give"):
        study["board"].record_transfer(study["folder"], data_dir=sets["data_dir"])
    assert study["board"].transfer_runs() == []


def test_the_board_shows_source_zero_shot_few_shot_and_gap_with_seed_counts(study, sets, tmp_path, capsys):
    board = study["board"]
    board.record_transfer(study["folder"], data_dir=sets["data_dir"])
    few, _ = make_study(tmp_path / "s2", sets, study="two_seeds", model="mean_b", seeds=(0, 1))
    board.record_transfer(few, data_dir=sets["data_dir"])
    (group,) = TB.board_groups(board, TASK)  # same source and target hashes: one comparison group
    entry, short = group
    assert (entry.model_name, entry.rank, short.model_name, short.rank) == ("mean", 1, "mean_b", None)
    rows = study["rows"]

    def values(strategy, k):
        return {r["seed"]: r["value"] for r in rows if r["strategy"] == strategy and r["k"] == k}

    src, zero = values("source", 0), values("zero_shot", 0)
    assert entry.source_cell.n_seeds == entry.zero_shot.n_seeds == 3
    assert entry.source_cell.stat.mean == pytest.approx(np.mean(list(src.values())))
    assert entry.zero_shot.stat.std == pytest.approx(np.std(list(zero.values()), ddof=1))
    gap = [zero[s] - src[s] for s in range(3)]
    assert entry.gap.stat.mean == pytest.approx(np.mean(gap)) and entry.gap.n_seeds == 3
    for k in (2, 5):
        means = {s: np.mean(list(values(s, k).values())) for s in ("finetune_full", "target_only")}
        strategy, cell = entry.best(k)
        assert strategy == min(means, key=means.get) and cell.stat.mean == pytest.approx(means[strategy])
        assert cell.n_seeds == 3
    code, out = _cli([*study["args"], "show", "--task", TASK], capsys)
    assert code == 0, out
    assert "zero-shot rmse" in out and "k=5 best" in out and "gap (zero-shot - source)" in out
    assert re.search(r"n=3, (finetune_full|target_only)\)", out) and "n=2" in out
    assert "unranked: zero-shot needs 3 seeds (has 2)" in out
    code, out = _cli([*study["args"], "show", "--transfer", "--format", "csv"], capsys)
    lines = out.strip().splitlines()
    assert lines[0].startswith("task,task_version,source_name") and any(",gap,zero_shot-source,0," in s for s in lines)


def test_incomparable_rows_are_not_ranked_together(study, sets, tmp_path):
    board = study["board"]
    board.record_transfer(study["folder"], data_dir=sets["data_dir"])
    other, _ = make_study(tmp_path / "s3", sets, study="other", model="mean_other", target="other",
                          target_name="other_survey")
    board.record_transfer(other, data_dir=sets["data_dir"])
    groups = TB.board_groups(board, TASK)
    assert len(groups) == 2
    by_target = {g[0].target[1]: g for g in groups}
    assert set(by_target) == {sets["target"]["content_hash"], sets["other"]["content_hash"]}
    for g in groups:  # each pair ranked on its own: both models are rank 1 of their own table
        assert [e.rank for e in g] == [1] and len({e.group for e in g}) == 1
    text = TB.to_text(groups)
    assert text.count("transfer: metallicity") == 2 and sets["other"]["content_hash"][:8] in text


def test_verify_recomputes_transfer_runs_and_catches_tampering(study, sets, capsys):
    study["board"].record_transfer(study["folder"], data_dir=sets["data_dir"])
    db = study["board"].url.split("///", 1)[1]
    with sqlite3.connect(db) as con:
        con.execute("UPDATE transfer_metrics SET value = value * 0.9 WHERE transfer_run_id = 3 AND key = 'nmad'")
    code, out = _cli([*study["args"], "verify"], capsys)
    assert code == 1
    assert re.search(r"transfer run #3 .*DIFFER: metric 'nmad': stored", out) and "transfer #3 (DIFFER)" in out
    run = study["board"].transfer_runs()[5]
    path = run.predictions_path
    os.chmod(path, 0o644)
    with open(path, "ab") as f:
        f.write(b"x")
    code, out = _cli([*study["args"], "verify", "--hashes-only"], capsys)
    assert code == 1 and f"transfer run #{run.id} " in out and "TAMPERED" in out


def test_an_old_board_is_migrated_to_hold_transfer_runs(tmp_path):
    from sqlalchemy import create_engine, inspect

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    upgrade(create_engine(url), "0002")
    assert "transfer_runs" not in inspect(create_engine(url)).get_table_names()
    engine, _ = connect(url)
    assert schema_revision(engine) == head_revision() == "0005" and tables_match_models(engine) == []
    assert {"transfer_runs", "transfer_metrics"} <= set(inspect(engine).get_table_names())


def test_the_page_has_a_transfer_section_with_learning_curves(study, sets, tmp_path):
    board = study["board"]
    board.record_transfer(study["folder"], data_dir=sets["data_dir"])
    index = build_page(board, tmp_path / "site", data_dir=sets["data_dir"])
    html = index.read_text()
    assert 'id="transfer-metallicity"' in html and 'href="#transfer-metallicity"' in html
    assert "zero-shot rmse" in html and "k=2 best" in html and "(n=3, " in html
    imgs = re.findall(r'<img src="(plots/transfer-metallicity-[0-9a-f]+\.png)"', html)
    assert len(imgs) == 1
    png = (tmp_path / "site" / imgs[0]).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    lines = (tmp_path / "site" / "metallicity-transfer.csv").read_text().splitlines()
    # header, source, gap, zero-shot, 2 strategies x 2 k, and each of those minus zero-shot (paired)
    assert len(lines) == 1 + 3 + 2 * 2 + 2 * 2


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None and not os.environ.get("SIM2OBS_REQUIRE_CHROMIUM"),
                    reason="needs Debian's chromium (CI installs it: apt-get install chromium)")
def test_the_transfer_section_fits_a_1400px_window(study, sets, tmp_path):
    from tests.leaderboard.test_page import _MEASURE

    assert _chromium(), "SIM2OBS_REQUIRE_CHROMIUM is set but no chromium is installed"
    board = study["board"]
    board.record_transfer(study["folder"], data_dir=sets["data_dir"])
    build_page(board, tmp_path / "site", data_dir=sets["data_dir"])
    measure = tmp_path / "site" / "measure.html"
    measure.write_text(_MEASURE.format(src="index.html").replace("section .plots img", "section.transfer .plots img"))
    flags = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
             "--virtual-time-budget=5000", "--window-size=1400,1000"]
    dom = subprocess.run(flags + ["--dump-dom", measure.as_uri()], capture_output=True, text=True, timeout=120,
                         check=True).stdout
    found = re.search(r'<pre id="measure">(.*?)</pre>', dom)
    assert found, dom[-2000:]
    m = json.loads(found.group(1).replace("&quot;", '"'))
    assert m["scrollWidth"] <= 1400
    assert len(m["imgWidths"]) == 1 and m["imgWidths"][0] >= 380


def _record(args):
    url, store, folder, data_dir = args
    board = Leaderboard(url=url, store_dir=store)  # each process migrates on open
    return sorted(r.id for r in board.record_transfer(folder, data_dir=data_dir)[0])


def test_a_study_recorded_at_once_by_many_is_recorded_once_on_postgres(pg_url, sets, tmp_path):
    folder, rows = make_study(tmp_path / "studies", sets)
    args = [(pg_url, str(tmp_path / "store"), str(folder), str(sets["data_dir"]))] * 4
    with mp.get_context("fork").Pool(4) as pool:  # 4 processes racing to migrate an empty database and record
        ids = pool.map(_record, args)
    assert all(i == ids[0] for i in ids) and len(ids[0]) == len(rows)
    engine, _ = connect(pg_url)
    assert schema_revision(engine) == head_revision() and tables_match_models(engine) == []
    engine.dispose()
    board = Leaderboard(url=pg_url, store_dir=tmp_path / "store")
    (group,) = TB.board_groups(board, TASK)
    assert group[0].rank == 1 and group[0].zero_shot.n_seeds == 3 and len(board.transfer_runs()) == len(rows)


def test_posterior_rows_are_compared_exactly_with_the_file_they_were_scored_from(tmp_path):
    """The protocol scores the predictions file it saved (float32 posterior samples), so a row's
    numbers are the file's exactly: such a row is accepted and the board stores the same numbers,
    bit for bit. The float32 allowance the board once had (numbers of the float64 samples before
    saving agreed only to ~1e-5) is gone: a row scored before saving is now refused, and so is a
    change of 1e-7 in the main score."""
    cfg = load_task_config("bt_posterior", "quick")
    data = {**cfg["data"], "n": 60, "stamp": 32, "shard_size": 60, "seed": 3}
    task = build_task("bt_posterior", {**cfg, "data": data}, data_dir=tmp_path / "data", cluster=SYNC)
    task.prepare()
    ident = {k: task.data_identity[k] for k in ("name", "content_hash", "path")}
    ids, labels = task.split_ids("test"), task.labels("train")
    rng = np.random.default_rng(0)
    samples = labels.mean(0) + labels.std(0) * rng.standard_normal((50, len(ids), labels.shape[1]))
    p = Predictions(ids, np.median(samples, axis=0), task.targets, samples=samples)
    before_saving = task.evaluate(p, "test")  # from the float64 samples
    folder = tmp_path / "study"
    path = p.save(folder / "seed-0/source/source/k-0/predictions_test.h5")
    from_file = task.evaluate(Predictions.load(path), "test")  # what the protocol now writes in the row
    assert any(from_file[k] != before_saving[k] for k in from_file)  # float32 storage: not bit-equal
    main = task.metadata.main_score

    def write(metrics):
        row = {"task": "bt_posterior", "task_version": task.metadata.version, "study": "s", "model": "prior",
               "source": ident, "target_name": "source", "target": ident, "strategy": "source", "k": 0, "seed": 0,
               "domain": "source", "split": "test", "main_score": main, "value": metrics[main], "metrics": metrics,
               "predictions": path.name, "predictions_sha256": file_sha256(path), "folder": "seed-0/source/source/k-0",
               "task_config": {k: v for k, v in cfg.items() if k != "data"}}
        (folder / T.RESULTS_FILE).write_text(json.dumps([row]))

    write(from_file)
    board = Leaderboard(results_dir=tmp_path / "results")
    (run,), added = board.record_transfer(folder, data_dir=tmp_path / "data")
    assert added == 1 and run.metric_dict() == from_file
    for i, metrics in enumerate([before_saving, {**from_file, main: from_file[main] * (1 + 1e-7)}]):
        write(metrics)
        fresh = Leaderboard(results_dir=tmp_path / f"results{i + 2}")
        with pytest.raises(DataFormatError, match=r"row 0 \(seed-0/source/source/k-0\).*refused"):
            fresh.record_transfer(folder, data_dir=tmp_path / "data")


def test_best_minus_zero_shot_has_a_paired_error_over_the_same_test_resamples(study, sets, capsys):
    """Every transfer run keeps its main score on each bootstrap resample; the board's
    ``best − zero-shot`` at each k is paired per seed and over those resamples: each seed's error is
    the spread of the per-resample difference (recomputed here from the stored files), smaller than
    the two errors in quadrature because both strategies err on the same galaxies."""
    from sim2obs.tasks.bootstrap import N_BOOTSTRAP, bootstrap_indices

    board = study["board"]
    board.record_transfer(study["folder"], data_dir=sets["data_dir"])
    runs = board.transfer_runs(TASK)
    assert all(r.n_bootstrap == N_BOOTSTRAP and len(r.main_replicates) == N_BOOTSTRAP for r in runs)
    task = _task(sets, sets["target"])
    idx = bootstrap_indices(len(task.split_ids("test")), N_BOOTSTRAP, seed=0)
    main = task.metadata.main_score

    def reps(run):  # the main score on every resample, computed here from the stored file
        aligned, truth = task.align(Predictions.load(run.predictions_path), "test")
        return np.array([task._score(aligned.subset(i), truth.subset(i))[main] for i in idx])

    ((entry,),) = TB.board_groups(board, TASK)
    for k in (2, 5):
        strategy, diff = entry.versus_zero_shot(k)
        assert strategy == entry.best(k)[0] and diff.paired and diff.n_seeds == 3
        for seed in range(3):
            a = next(r for r in runs if (r.strategy, r.k, r.seed) == (strategy, k, seed))
            z = next(r for r in runs if (r.strategy, r.seed) == ("zero_shot", seed))
            assert diff.per_seed[seed] == pytest.approx(a.main_value - z.main_value)
            assert diff.boot[seed] == pytest.approx(np.std(reps(a) - reps(z)), rel=1e-9)
            assert diff.boot[seed] < np.hypot(a.errors[main], z.errors[main])
        assert diff.boot_error == pytest.approx(np.mean(list(diff.boot.values())))
    other = entry.versus_zero_shot(5, "target_only")[1]  # any strategy, not only the best
    assert other.per_seed[0] == pytest.approx(entry.curves["target_only"][5].per_seed[0] - entry.zero_shot.per_seed[0])
    header, rows = TB.table_rows([entry])
    assert "k=5 best - zero-shot" in header
    cell = rows[0][header.index("k=5 best - zero-shot")]
    assert "paired]" in cell and "(n=3)" in cell and "σ)" in cell
    csv_rows = [line.split(",") for line in TB.to_csv([[entry]]).splitlines()]
    versus = [r for r in csv_rows if r[11] == "versus_zero_shot"]
    assert len(versus) == 2 * 2 and all(r[-1] == "True" and float(r[-2]) > 0 for r in versus)


def test_a_run_without_replicates_pairs_with_nothing_and_tampered_replicates_fail_verify(study, sets, capsys):
    board = study["board"]
    board.record_transfer(study["folder"], data_dir=sets["data_dir"])
    db = board.url.split("///", 1)[1]
    with sqlite3.connect(db) as con:  # the zero-shot run of seed 0: as recorded before revision 0005
        (zid,) = con.execute("SELECT id FROM transfer_runs WHERE strategy = 'zero_shot' AND seed = 0").fetchone()
        con.execute("UPDATE transfer_runs SET main_replicates = NULL WHERE id = ?", (zid,))
    ((entry,),) = TB.board_groups(board, TASK)
    diff = entry.versus_zero_shot(2)[1]
    assert diff.n_seeds == 3 and diff.boot == {} and diff.boot_error is None  # no seed's error is half-paired
    code, out = _cli([*study["args"], "verify"], capsys)
    assert code == 0, out  # a run without replicates has none to check
    with sqlite3.connect(db) as con:
        (fid, reps) = con.execute("SELECT id, main_replicates FROM transfer_runs WHERE strategy = 'finetune_full' "
                                  "AND seed = 1 AND k = 5").fetchone()
        reps = json.loads(reps)
        reps[7] += 0.01
        con.execute("UPDATE transfer_runs SET main_replicates = ? WHERE id = ?", (json.dumps(reps), fid))
    code, out = _cli([*study["args"], "verify"], capsys)
    assert code == 1 and re.search(rf"transfer run #{fid} .*DIFFER: main_replicates", out)


def test_a_malformed_results_file_is_refused_naming_the_field(tmp_path):
    board = Leaderboard(results_dir=tmp_path / "results")
    with pytest.raises(DataFormatError, match="no transfer_results.json"):
        board.record_transfer(tmp_path)
    row = {"task": TASK, "task_version": "1.0", "study": "s", "model": "m", "source": {}, "target_name": "t"}
    (tmp_path / T.RESULTS_FILE).write_text(json.dumps([row]))
    with pytest.raises(DataFormatError, match=r"\[0\]\.target\].*row 0 \(seed-None/t/None/k-None\): missing"):
        board.record_transfer(tmp_path)
    (tmp_path / T.RESULTS_FILE).write_text("[{")
    with pytest.raises(DataFormatError, match="not JSON"):
        board.record_transfer(tmp_path)
    assert board.transfer_runs() == []
