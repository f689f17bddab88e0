"""Benchmark tasks: ``TASKS.get(name)(config)`` builds a task; ``task.run(out_dir)`` runs its
baselines and models; ``task.evaluate(predictions)`` scores any predictions;
``task.get_split(split)`` gives a split's ids, model inputs and (train/val) labels
(:class:`TaskSplit`); ``task.spec()`` what its network receives and returns
(``check_model(model, task.spec())``).

================  ======================================================================
name              task
================  ======================================================================
ml_ratio          stellar M/L from a g-band image (Dobbels et al. 2019)
metallicity       gas-phase metallicity from gri images (Wu & Boada 2019)
bt_posterior      B/T, R_e and flux posteriors with MC dropout (GaMPEN, Ghosh et al. 2022)
multibranch_mass  central stellar and total mass, M*/L_r from images and kinematic maps of
                  TNG-style mocks (Chu et al. 2024)
================  ======================================================================

Presets live in ``configs/task/<name>/{quick,paper}.yaml``; :func:`load_task_config`
composes one (with overrides) the way the CLI does.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from sim2obs.registry import Registry
from sim2obs.tasks.base import (Method, MethodOutput, Observables, PaperResult, Predictions, Task, TaskConfig,
                                TaskMetadata, TaskSplit, Truth, results_table)

TASKS: Registry[type[Task]] = Registry("task")

__all__ = ["TASKS", "Task", "TaskConfig", "TaskMetadata", "Observables", "Method", "MethodOutput", "PaperResult",
           "Predictions",
           "TaskSplit", "Truth", "results_table", "load_task_config", "build_task"]


def load_task_config(name: str, preset: str = "quick", overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The resolved config of task ``name`` under ``preset`` with Hydra-style ``overrides``
    relative to the task (``["trainer.epochs=1", "data.n=64"]``). As on the command line, an
    override of a node's ``_target_`` (or of ``data.path`` / ``data.generator``) starts a new node
    with only the keys the overrides give (:func:`sim2obs.config.replace_user_nodes`), and
    ``${task_spec:KEY}`` values are left for the task to fill in.

    The environment variable ``SIM2OBS_OVERRIDES`` (whitespace-separated overrides) is appended
    to ``overrides``: relative ones (``data.n=120``) apply to every task, ``task.<name>.…`` ones to
    that task only. Smoke tests and CI use it to shrink examples written for the quick presets
    (the tests run README's examples with it)."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from sim2obs.config import register_resolvers, replace_user_nodes

    TASKS.get(name)
    register_resolvers()
    prefix = f"task.{name}."
    extra = [o for o in os.environ.get("SIM2OBS_OVERRIDES", "").split()
             if not o.lstrip("+~").startswith("task.") or o.lstrip("+~").startswith(prefix)]
    full = [o if o.lstrip("+~").startswith("task") else o[:len(o) - len(o.lstrip("+~"))] + prefix + o.lstrip("+~")
            for o in [*overrides, *extra]]
    with initialize_config_module(version_base="1.3", config_module="sim2obs.configs"):
        cfg = compose(config_name=f"task/{name}/{preset}", overrides=full)
    return replace_user_nodes(OmegaConf.to_container(cfg.task[name], resolve=True), full, f"task.{name}")


def build_task(name: str, config: Any = None, **kwargs: Any) -> Task:
    """``TASKS.get(name)(config, **kwargs)``."""
    return TASKS.get(name)(config, **kwargs)


# the task modules register themselves on import (they need TASKS, defined above)
from sim2obs.tasks import bt_posterior, metallicity, ml_ratio  # noqa: E402,F401
from sim2obs.tasks import multibranch_mass  # noqa: E402,F401
