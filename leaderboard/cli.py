"""``sim2obs leaderboard``: show, submit, record-transfer, page, verify."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _board(ns):
    from sim2obs.leaderboard import Leaderboard

    return Leaderboard(url=ns.url, results_dir=ns.results_dir, store_dir=ns.store_dir)


def _metric_keys(task_name: str, runs) -> list[str]:
    from sim2obs.tasks import TASKS

    if task_name in TASKS:
        return list(TASKS.get(task_name).metadata.metrics)
    return sorted({k for r in runs for k in r.metric_dict()})


def _metadata(task_name: str):
    from sim2obs.tasks import TASKS

    return TASKS.get(task_name).metadata if task_name in TASKS else None


def cmd_show(ns) -> None:
    from sim2obs.leaderboard import aggregate, rank, to_csv, to_markdown, to_text
    from sim2obs.leaderboard.ranking import reference_entries

    from sim2obs.leaderboard import transfer_board as transfer

    board = _board(ns)
    with_transfer = sorted(set(board.tasks()) | set(board.transfer_tasks()))
    names = [ns.task] if ns.task else with_transfer
    if ns.task and ns.task not in with_transfer:
        from sim2obs.tasks import TASKS

        TASKS.get(ns.task)  # a typo gets "did you mean"
    if not names:
        print("the leaderboard is empty: run `sim2obs run`, `sim2obs leaderboard submit` or "
              "`sim2obs leaderboard record-transfer`")
        return
    if ns.transfer:  # the transfer board only
        for name in names:
            groups = transfer.board_groups(board, name)
            if ns.format == "csv":
                print(transfer.to_csv(groups), end="")
            else:
                print(transfer.to_text(groups, ns.format == "markdown"))
        return
    render = {"text": to_text, "markdown": to_markdown, "csv": to_csv}[ns.format]
    for name in names:
        runs = board.runs(name)
        groups = transfer.board_groups(board, name) if ns.format != "csv" else []
        if not runs:
            print(transfer.to_text(groups, ns.format == "markdown"))
            continue
        entries = rank(aggregate(runs) + reference_entries(_metadata(name)))
        text = render(entries, _metric_keys(name, runs))
        if ns.format == "csv":
            print(text, end="")
        else:
            print(f"\n{'## ' if ns.format == 'markdown' else ''}{name} ({len(runs)} runs)\n")
            print(text)
            if groups:
                print("\n" + transfer.to_text(groups, ns.format == "markdown"))


def cmd_submit(ns) -> None:
    from sim2obs.leaderboard import RunInfo
    from sim2obs.tasks import build_task, load_task_config

    overrides = list(ns.set or [])
    config = load_task_config(ns.task, ns.preset, overrides)
    task = build_task(ns.task, config, data_dir=ns.data_dir, progress=False)
    board = _board(ns)
    submitted = {"file": Path(ns.predictions).name, "parameters": _parameters(ns.param),
                 "code_url": ns.code_url, "notes": ns.notes}
    info = RunInfo(model_name=ns.model_name, model_target=ns.model_target, model_version=ns.model_version,
                   n_parameters=ns.n_parameters, seed=ns.seed, train_seconds=ns.train_seconds,
                   submitter=ns.submitter or "", deterministic=ns.deterministic,
                   config={"preset": ns.preset, "overrides": overrides, "task_config": config,
                           "model": {"name": ns.model_name, "_target_": ns.model_target, "version": ns.model_version},
                           "submitted": submitted, "seed": ns.seed})
    before = {r.id for r in board.runs(ns.task)}
    run = board.record(task, ns.predictions, info, split=ns.split, source="submission", verify_data=ns.verify_data)
    state = "already recorded as" if run.id in before else "recorded as"
    print(f"{ns.predictions}: {state} run #{run.id} ({run.task}/{run.split}, {run.main_score} = {run.main_value:.5g})")


def _parameters(items) -> dict:
    """``--param KEY=VALUE`` pairs (values parsed as JSON when they are, else kept as text)."""
    import json

    from sim2obs.errors import ConfigError

    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--param", "expected KEY=VALUE", value=item)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def cmd_record_transfer(ns) -> None:
    """Check every row of a transfer study folder (predictions hashes, every metric recomputed)
    and record them; a row whose numbers differ refuses the whole study, naming the row."""
    from sim2obs.leaderboard import transfer_board as transfer

    board = _board(ns)
    records, added = board.record_transfer(ns.study, data_dir=ns.data_dir, submitter=ns.submitter or "")
    print(f"{ns.study}: {len(records)} rows checked (every metric recomputed), {added} newly recorded, "
          f"{len(records) - added} recorded before")
    for name in sorted({r.task for r in records}):
        print("\n" + transfer.to_text(transfer.board_groups(board, name)))


def cmd_page(ns) -> None:
    from sim2obs.leaderboard import build_page

    board = _board(ns)
    out = Path(ns.out or Path(ns.results_dir) / "leaderboard")
    index = build_page(board, out, data_dir=ns.data_dir, log=lambda s: print(s, file=sys.stderr))
    print(f"wrote {index} (open it in a browser)")


def cmd_verify(ns) -> None:
    """Check every run; exit 1 unless every run's stored numbers were recomputed and agreed
    (a run that could not be recomputed is a failure, not a pass)."""
    from sim2obs.leaderboard.verify import verify_board

    board = _board(ns)
    checks = verify_board(board, data_dir=ns.data_dir, task=ns.task, hashes_only=ns.hashes_only)
    failed = [c for c in checks if c.status == "TAMPERED"] if ns.hashes_only else [c for c in checks if not c.ok]
    if failed:
        names = [f"{'transfer ' if c.kind != 'run' else ''}#{c.run_id} ({c.status})" for c in failed]
        print(f"verify failed for {len(failed)} run(s): " + ", ".join(names), file=sys.stderr)
        sys.exit(1)


def main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="sim2obs leaderboard", description=(
        "verified results: every number recomputed from stored predictions and held-out truth"))
    parser.add_argument("--url", default=None, help="SQLAlchemy URL (default: SQLite in the results folder)")
    parser.add_argument("--results-dir", default=os.environ.get("SIM2OBS_RESULTS", "sim2obs_results"))
    parser.add_argument("--store-dir", default=None, help="stored predictions (default: $SIM2OBS_LEADERBOARD_STORE, "
                        "else beside an SQLite board; a PostgreSQL board needs a folder every submitter reads)")
    parser.add_argument("--data-dir", default=os.environ.get("SIM2OBS_DATA", "sim2obs_data"))
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("show", help="ranked table per task")
    p.add_argument("--task", default=None)
    p.add_argument("--format", choices=["text", "markdown", "csv"], default="text")
    p.add_argument("--transfer", action="store_true", help="only the transfer board (source, zero-shot, few-shot, "
                   "gap per model; text/markdown show it below each task's table anyway)")
    p = sub.add_parser("submit", help="record a predictions file (HDF5 or CSV) made anywhere")
    p.add_argument("--task", required=True)
    p.add_argument("--predictions", required=True, help="HDF5 (.h5) or CSV (.csv) predictions file")
    p.add_argument("--split", default=None, help="default: the task's evaluation split")
    p.add_argument("--preset", default="quick", help="the task preset whose data the predictions are for")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="task config override (repeatable)")
    p.add_argument("--model-name", required=True)
    p.add_argument("--model-target", default=None, help="the model's _target_ (import path)")
    p.add_argument("--model-version", default=None)
    p.add_argument("--n-parameters", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--train-seconds", type=float, default=None)
    p.add_argument("--submitter", default=None)
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="a setting of your model or training, shown on the run page (repeatable)")
    p.add_argument("--code-url", default=None, help="where the code that made the predictions lives")
    p.add_argument("--notes", default=None, help="free text shown on the run page")
    p.add_argument("--deterministic", action="store_true",
                   help="the method does not depend on its seed: ranked without 3 seeds")
    p.add_argument("--verify-data", action="store_true",
                   help="check the whole data set (every shard, the content hash) before scoring")
    p = sub.add_parser("record-transfer", help="record a transfer study folder (sim2obs transfer's output): "
                       "every row's predictions hash checked and every metric recomputed")
    p.add_argument("study", help="the study folder: <results>/transfer/<task>/<study>/ (holds transfer_results.json)")
    p.add_argument("--submitter", default=None)
    p = sub.add_parser("page", help="write the static HTML leaderboard")
    p.add_argument("--out", default=None, help="default: <results-dir>/leaderboard")
    p = sub.add_parser("verify", help="check stored predictions' hashes and recompute every stored number; "
                       "exits 1 if any run differs, was tampered with, or could not be recomputed")
    p.add_argument("--task", default=None)
    p.add_argument("--hashes-only", action="store_true",
                   help="only check that the stored prediction files are unchanged (no data needed)")
    ns = parser.parse_args(args)
    {"show": cmd_show, "submit": cmd_submit, "record-transfer": cmd_record_transfer, "page": cmd_page,
     "verify": cmd_verify}[ns.action](ns)
