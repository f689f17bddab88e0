"""The ``sim2obs`` command line.

    sim2obs run [overrides]          the main job: every task's quick preset on generated data
                                     (tasks=[metallicity] task/metallicity=paper ...; --help: every key)
    sim2obs list                     tasks with their methods and presets, models, generators, data sets
    sim2obs generate [overrides]     write a simulated galaxy set (Hydra config: configs/generate.yaml)
    sim2obs transfer [overrides]     a sim-to-real transfer study (transfer=bt_hsc_observed; configs/transfer.yaml)
    sim2obs data info PATH           describe a galaxy set
    sim2obs data validate PATH       full integrity check (images, checksums, content hash)
    sim2obs data list|fetch|build|import   real survey sets and your own data (--help for each)
    sim2obs leaderboard show|submit|page|verify   verified results (--help for each)

Hydra commands take overrides (``simgen.n=500``), ``--multirun`` sweeps and ``--help``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from sim2obs.errors import Sim2obsError

_USAGE = __doc__.split("\n\n", 1)[1]


def _fail(exc: Exception) -> None:
    print(f"sim2obs: error: {exc}", file=sys.stderr)
    sys.exit(2)


def generate_set(cfg) -> Path:
    """Validate everything, then generate (or complete) the set the config describes."""
    from omegaconf import OmegaConf

    from sim2obs.simgen import prepare_set

    return prepare_set(cfg.simgen, data_dir=cfg.paths.data_dir, out=cfg.get("out"),
                       cluster=OmegaConf.to_container(cfg.cluster, resolve=True),
                       overwrite=bool(cfg.get("overwrite", False)), progress=bool(cfg.get("progress", True)),
                       resolved_config=OmegaConf.to_container(cfg, resolve=True))


def _cmd_generate(cfg) -> None:
    from sim2obs.galaxyset import open_galaxy_set

    try:
        path = generate_set(cfg)
        # the writer refused NaN/inf and finalize just read every byte for the content hash:
        # a schema check suffices here (`sim2obs data validate` is the full check)
        print(open_galaxy_set(path, check="schema").summary())
    except Sim2obsError as exc:
        _fail(exc)


def _task_preset(name: str) -> str:
    """The preset chosen for task ``name`` (``task/<name>=paper`` on the command line)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return str(HydraConfig.get().runtime.choices.get(f"task/{name}", "custom"))
    except ValueError:  # not under Hydra
        return "custom"


def _user_overrides() -> list[str]:
    """The command line's overrides (under Hydra), for the replace rule of model and data nodes."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not under Hydra
        return []


def run_tasks(cfg, log: Callable[[str], None] | None = None) -> list[dict]:
    """Run ``cfg.tasks`` with their configs ``cfg.task.<name>``; results go to
    ``<paths.results_dir>/<task>/<preset>/seed-<seed>/``. Before any work every task config is
    validated and every network is checked against its task
    (:meth:`~sim2obs.tasks.base.Task.check_models`: an unimportable ``_target_``, a wrong output
    shape, ... are refused). ``log``: progress lines (default: stderr, time-stamped, flushed)."""
    import json

    from omegaconf import OmegaConf

    from sim2obs.atomic import atomic_write
    from sim2obs.config import replace_user_nodes
    from sim2obs.errors import ConfigError
    from sim2obs.parallel import validate_cluster_config
    from sim2obs.tasks import TASKS, results_table
    from sim2obs.tasks.base import log_stderr

    log = log or log_stderr

    names = list(cfg.tasks)
    cluster = OmegaConf.to_container(cfg.cluster, resolve=True)
    validate_cluster_config(cluster)
    tasks = []
    for name in names:
        TASKS.get(name)
        if name not in cfg.get("task", {}):
            raise ConfigError(f"task.{name}", f"no config: add task/{name}=quick (or paper)")
        config = replace_user_nodes(OmegaConf.to_container(cfg.task[name], resolve=True), _user_overrides(),
                                    f"task.{name}")
        progress = cfg.get("progress", None)  # null: bars when stderr is a terminal
        tasks.append(TASKS.get(name)(config, data_dir=cfg.paths.data_dir, cluster=cluster,
                                     progress=None if progress is None else bool(progress)))
    for task in tasks:  # every network against its task, before any data or baseline
        for report in task.check_models():
            log(f"[{task.name}] model check passed: {report.model} ({report.target})")
    results_dir = Path(cfg.paths.results_dir)
    board_cfg = cfg.get("leaderboard") or {}
    board = None
    if board_cfg.get("record", True):
        from sim2obs.leaderboard import Leaderboard, adopt_plots

        board = Leaderboard(url=board_cfg.get("url"), results_dir=results_dir)
    rows = []
    for task in tasks:
        preset = _task_preset(task.name)
        log(f"[{task.name}] preset {preset}: {task.metadata.description}")
        out = results_dir / task.name / preset / f"seed-{task.config.seed}"  # seeds never share a folder
        task_rows = task.run(out, log=log)
        if board is not None:
            for row, run in zip(task_rows, board.record_task_rows(task, task_rows, out)):
                row["leaderboard_run"] = run.id
                if board_cfg.get("page", True):  # the page shows the plots the task just drew
                    adopt_plots(run.id, [out / row["method"] / name for name in row.get("plots", [])],
                                results_dir / "leaderboard")
        rows.extend(task_rows)
    if board is not None and board_cfg.get("page", True):
        from sim2obs.leaderboard import build_page

        index = build_page(board, results_dir / "leaderboard", data_dir=cfg.paths.data_dir)
        log(f"leaderboard page: {index}")
    text = json.dumps(rows, indent=2, default=str) + "\n"
    atomic_write(results_dir / "results.json", lambda f: f.write(text), mode="w")
    table = results_table(rows)
    atomic_write(results_dir / "results.txt", lambda f: f.write(table + "\n"), mode="w")
    return rows


def _cmd_run(cfg) -> None:
    """The main job: generate the embedded default sets if absent, run every task's preset,
    print one results table."""
    import time

    from sim2obs.tasks import results_table

    try:
        t0 = time.perf_counter()
        rows = run_tasks(cfg)
        print()
        print(results_table(rows))
        print(f"\nmain job finished in {time.perf_counter() - t0:.1f} s; results, predictions and plots in "
              f"{Path(cfg.paths.results_dir).resolve()}")
    except Sim2obsError as exc:
        _fail(exc)


def _cmd_transfer(cfg) -> None:
    """A transfer study (:func:`sim2obs.tasks.transfer.run_transfer`): source training once per seed,
    then every target, k and strategy; prints the study's table."""
    import time

    from omegaconf import OmegaConf

    from sim2obs.tasks.transfer import run_transfer

    try:
        t0 = time.perf_counter()
        study = OmegaConf.to_container(cfg.transfer, resolve=True)
        progress = cfg.get("progress", None)
        rows = run_transfer(study, results_dir=cfg.paths.results_dir, data_dir=cfg.paths.data_dir,
                            cluster=OmegaConf.to_container(cfg.cluster, resolve=True),
                            progress=None if progress is None else bool(progress))
        from sim2obs.tasks.transfer.protocol import study_dir
        from sim2obs.tasks.transfer.config import coerce_study

        folder = study_dir(cfg.paths.results_dir, coerce_study(study))
        print((folder / "table.txt").read_text())
        print(f"transfer study finished in {time.perf_counter() - t0:.1f} s ({len(rows)} rows); results in "
              f"{folder.resolve()}")
    except Sim2obsError as exc:
        _fail(exc)


_HYDRA_COMMANDS: dict[str, Callable] = {"generate": _cmd_generate, "run": _cmd_run, "transfer": _cmd_transfer}


def _run_hydra(command: str, args: list[str]) -> None:
    import hydra

    from sim2obs.config import register_resolvers

    register_resolvers()
    sys.argv = [f"sim2obs-{command}", *args]  # Hydra parses sys.argv
    app = hydra.main(version_base="1.3", config_path="pkg://sim2obs.configs", config_name=command)(
        _HYDRA_COMMANDS[command])
    app()


def _cmd_data(args: list[str]) -> None:
    from sim2obs.galaxyset import open_galaxy_set

    if args and args[0] in ("list", "fetch", "build", "import"):  # real survey data and your own
        from sim2obs.simgen.surveys.cli import main as surveys_main

        try:
            return surveys_main(args[0], args[1:])
        except Sim2obsError as exc:
            _fail(exc)
    parser = argparse.ArgumentParser(prog="sim2obs data", description="galaxy sets: inspect, check, list, "
                                     "fetch and build real survey sets, import your own")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("info", help="describe a galaxy set").add_argument("path")
    sub.add_parser("validate", help="full integrity check").add_argument("path")
    sub.add_parser("list", help="every set under the data folder: name, kind, n, splits, config")
    sub.add_parser("fetch", help="download a recipe's catalogues (--dry-run: what and how much)")
    sub.add_parser("build", help="build a real set: ml_ratio_gswlc, metallicity_mpajhu, bt_simard, gz2, cosmos_bt")
    sub.add_parser("import", help="your own FITS cutouts / cube / HDF5 / .npy + catalogue into a set")
    ns = parser.parse_args(args)
    try:
        if ns.action == "info":
            print(open_galaxy_set(ns.path, check="schema").summary())
        else:
            gs = open_galaxy_set(ns.path, check="schema")
            gs.verify()
            print(f"{gs.path}: valid ({gs.n} objects, content hash {gs.content_hash})")
    except Sim2obsError as exc:
        _fail(exc)


def _cmd_list(args: list[str]) -> None:
    import json

    from sim2obs.tasks.registry import catalogue, format_catalogue

    parser = argparse.ArgumentParser(prog="sim2obs list", description="tasks (methods, presets), models, "
                                     "generators, and the galaxy sets in the data folder")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $SIM2OBS_DATA or sim2obs_data)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    ns = parser.parse_args(args)
    try:
        cat = catalogue(ns.data_dir)
    except Sim2obsError as exc:
        _fail(exc)
    print(json.dumps(cat, indent=2) if ns.json else format_catalogue(cat))


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print("usage: sim2obs COMMAND [options]\n\n" + _USAGE)
        return
    command, rest = args[0], args[1:]
    if command in _HYDRA_COMMANDS and rest and rest[0] in ("-h", "--help"):  # each key's documentation
        from sim2obs.tasks.registry import generate_help, run_help

        if command == "transfer":
            from sim2obs.tasks.transfer.config import transfer_help

            print(transfer_help())
        else:
            print(run_help() if command == "run" else generate_help())
    elif command in _HYDRA_COMMANDS:
        _run_hydra(command, rest)
    elif command == "list":
        _cmd_list(rest)
    elif command == "data":
        _cmd_data(rest)
    elif command == "leaderboard":
        from sim2obs.leaderboard.cli import main as leaderboard_main

        try:
            leaderboard_main(rest)
        except Sim2obsError as exc:
            _fail(exc)
    else:
        from sim2obs.errors import UnknownNameError
        import difflib

        known = [*_HYDRA_COMMANDS, "list", "data", "leaderboard"]
        print(f"sim2obs: error: {UnknownNameError('command', command, known, difflib.get_close_matches(command, known))}",
              file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
