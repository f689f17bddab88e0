"""The ``sim2obs`` command line.

    sim2obs run [overrides]          the main job on the embedded default set
    sim2obs generate [overrides]     write a simulated galaxy set (Hydra config: configs/generate.yaml)
    sim2obs data info PATH           describe a galaxy set
    sim2obs data validate PATH       full integrity check (images, checksums, content hash)

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


def _default_set_path(cfg) -> Path:
    """``<data_dir>/<name>-<hash>``: one folder per distinct generator config (the generator
    validates the config itself before it writes anything)."""
    from omegaconf import OmegaConf

    from sim2obs.provenance import stable_hash

    sim = OmegaConf.to_container(cfg.simgen, resolve=True)
    return Path(cfg.paths.data_dir) / f"{sim.get('name', sim['generator'])}-{stable_hash(sim, 8)}"


def generate_set(cfg) -> Path:
    """Validate everything, then generate (or complete) the set the config describes."""
    from omegaconf import OmegaConf

    from sim2obs.parallel import validate_cluster_config
    from sim2obs.simgen import GENERATORS

    generate = GENERATORS.get(cfg.simgen.generator)
    out = Path(cfg.out) if cfg.get("out") else _default_set_path(cfg)
    cluster = OmegaConf.to_container(cfg.cluster, resolve=True)
    validate_cluster_config(cluster)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return generate(cfg.simgen, out, cluster=cluster, overwrite=bool(cfg.get("overwrite", False)),
                    progress=bool(cfg.get("progress", True)), resolved_config=resolved)


def _cmd_generate(cfg) -> None:
    from sim2obs.galaxyset import open_galaxy_set

    try:
        path = generate_set(cfg)
        # the writer refused NaN/inf and finalize just read every byte for the content hash:
        # a schema check suffices here (`sim2obs data validate` is the full check)
        print(open_galaxy_set(path, check="schema").summary())
    except Sim2obsError as exc:
        _fail(exc)


def _cmd_run(cfg) -> None:
    """The main job. Until the benchmark tasks exist: generate the default set, summarise it."""
    import time

    from sim2obs.galaxyset import open_galaxy_set

    try:
        t0 = time.perf_counter()
        path = generate_set(cfg)
        gs = open_galaxy_set(path, check="schema")  # see _cmd_generate
        print(gs.summary())
        print(f"\nmain job finished in {time.perf_counter() - t0:.1f} s; data in {path}")
    except Sim2obsError as exc:
        _fail(exc)


_HYDRA_COMMANDS: dict[str, Callable] = {"generate": _cmd_generate, "run": _cmd_run}


def _run_hydra(command: str, args: list[str]) -> None:
    import hydra

    sys.argv = [f"sim2obs-{command}", *args]  # Hydra parses sys.argv
    app = hydra.main(version_base="1.3", config_path="pkg://sim2obs.configs", config_name=command)(
        _HYDRA_COMMANDS[command])
    app()


def _cmd_data(args: list[str]) -> None:
    from sim2obs.galaxyset import open_galaxy_set

    parser = argparse.ArgumentParser(prog="sim2obs data", description="inspect and check galaxy sets")
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("info", help="describe a galaxy set").add_argument("path")
    sub.add_parser("validate", help="full integrity check").add_argument("path")
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


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print("usage: sim2obs COMMAND [options]\n\n" + _USAGE)
        return
    command, rest = args[0], args[1:]
    if command in _HYDRA_COMMANDS:
        _run_hydra(command, rest)
    elif command == "data":
        _cmd_data(rest)
    else:
        from sim2obs.errors import UnknownNameError
        import difflib

        known = [*_HYDRA_COMMANDS, "data"]
        print(f"sim2obs: error: {UnknownNameError('command', command, known, difflib.get_close_matches(command, known))}",
              file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
