"""What this installation offers, for ``sim2obs list`` and ``sim2obs run --help``: tasks with
their methods and presets, models, generators, and the galaxy sets found in the data folder."""
from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["catalogue", "format_catalogue", "generate_help", "presets", "preset_text", "run_help"]


def _configs() -> Any:
    return resources.files("sim2obs.configs")


def _group(name: str) -> list[str]:
    folder = _configs() / name
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def presets(task: str) -> list[str]:
    """Preset names of ``task`` (``configs/task/<task>/<preset>.yaml``), sorted."""
    folder = _configs() / "task" / task
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")) if folder.is_dir() else []


def preset_text(task: str, preset: str = "quick") -> str:
    """The preset's YAML with its comments: each key's documentation."""
    return (_configs() / "task" / task / f"{preset}.yaml").read_text()


def catalogue(data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """``{"tasks": [{name, description, citation, presets, observables, methods: [{name, kind, description}]}],
    "models": [{name, config}], "generators": [...], "data_sets": [{path, name, n, content_hash}]}``.
    Methods are those of each task's ``quick`` preset (built from config only: no data is touched)."""
    from sim2obs.models import MODELS
    from sim2obs.simgen import GENERATORS
    from sim2obs.tasks import TASKS, load_task_config

    tasks = []
    for name in TASKS.names():
        cls = TASKS.get(name)
        task = cls(load_task_config(name, "quick"), data_dir=data_dir)
        tasks.append({"name": name, "description": cls.metadata.description, "citation": cls.metadata.citation,
                      "main_score": cls.metadata.main_score, "presets": presets(name),
                      "observables": cls.metadata.observables.names(),
                      "methods": [{"name": m.name, "kind": m.kind, "description": m.description}
                                  for m in task.methods()]})
    models = [{"name": n, "config": f"configs/model/{n}.yaml"} for n in MODELS.names()]
    folder = Path(data_dir if data_dir is not None else os.environ.get("SIM2OBS_DATA", "sim2obs_data"))
    sets = []
    for manifest in sorted(folder.glob("*/manifest.json")) if folder.is_dir() else []:
        try:
            m = json.loads(manifest.read_text())
        except (OSError, ValueError):
            sets.append({"path": str(manifest.parent), "name": "?", "n": None, "content_hash": "unreadable manifest"})
            continue
        sets.append({"path": str(manifest.parent), "name": m.get("name", "?"), "n": m.get("n_objects", m.get("n")),
                     "content_hash": str(m.get("content_hash", ""))[:12]})
    return {"tasks": tasks, "models": models, "generators": list(GENERATORS.names()), "data_sets": sets,
            "data_dir": str(folder)}


def format_catalogue(cat: dict[str, Any]) -> str:
    """Plain text of :func:`catalogue`."""
    lines = ["tasks (sim2obs run tasks=[NAME] task/NAME=PRESET):"]
    for t in cat["tasks"]:
        lines.append(f"  {t['name']}: {t['description']}")
        lines.append(f"      presets: {', '.join(t['presets'])}; main score: {t['main_score']}; {t['citation']}")
        lines.append(f"      observables (task.features): {', '.join(t['observables']) or 'none'}")
        for m in t["methods"]:
            lines.append(f"      {m['name']:<22} {m['kind']:<8} {m['description']}")
    lines.append("models (build_model(NAME), or task.<task>.model._target_=your.Class):")
    lines += [f"  {m['name']:<22} {m['config']}" for m in cat["models"]]
    lines.append("generators (sim2obs generate simgen=NAME): " + ", ".join(cat["generators"]))
    lines.append(f"data sets in {cat['data_dir']}:" + ("" if cat["data_sets"] else " none yet"))
    lines += [f"  {s['path']}  {s['name']}  n={s['n']}  {s['content_hash']}" for s in cat["data_sets"]]
    return "\n".join(lines)


def run_help() -> str:
    """``sim2obs run --help``: how overrides work, then ``configs/run.yaml`` and every task's quick
    preset with their comments (each key documented where it is set)."""
    from sim2obs.config import TASK_SPEC_KEYS
    from sim2obs.tasks import TASKS

    parts = [
        "sim2obs run [OVERRIDES]   the main job (Hydra overrides; --multirun sweeps; `sim2obs list` lists names)",
        "",
        "  tasks=[metallicity]                                    one task",
        "  task/metallicity=paper | preset=paper                  another preset (one task | every task)",
        "  task.metallicity.trainer.epochs=2                      any key below",
        "  task.metallicity.model._target_=mypkg.nets.MyNet       your network: the node is REPLACED, the class",
        "      gets only the arguments you give: ++task.metallicity.model.width=32,",
        "      ++task.metallicity.model.in_channels='${task_spec:in_channels}'",
        f"      (task shapes: ${{task_spec:KEY}}, KEY in {', '.join(TASK_SPEC_KEYS)})",
        "  +task.bt_posterior.data.path=DIR +task.bt_posterior.data.content_hash=HASH   a real set (replaces the",
        "      generator settings of the data node; so does ++task.<t>.data.generator=NAME)",
        "",
        "config groups:", *[f"  {g}: {', '.join(_group(g))}" for g in ("preset", "cluster", "paths")],
        *[f"  task/{n}: {', '.join(presets(n))}" for n in TASKS.names()], "",
        "# ---- configs/run.yaml ----",
        (_configs() / "run.yaml").read_text().rstrip(),
    ]
    for name in TASKS.names():
        parts += ["", f"# ---- configs/task/{name}/quick.yaml (keys of task.{name}; presets: "
                      f"{', '.join(presets(name))}) ----", preset_text(name).rstrip()]
    return "\n".join(parts) + "\n"


def generate_help() -> str:
    """``sim2obs generate --help``: ``configs/generate.yaml``, every generator's and cluster's
    config with their comments (each key documented where it is set)."""
    root = _configs()
    parts = ["sim2obs generate [OVERRIDES]   write a simulated galaxy set (Hydra overrides; --multirun sweeps)",
             "  simgen.<key>=VALUE  out=DIR  (config groups below; each key is documented in its file)", "",
             "config groups:", *[f"  {g}: {', '.join(_group(g))}" for g in ("simgen", "cluster", "paths")], "",
             "# ---- configs/generate.yaml ----", (root / "generate.yaml").read_text().rstrip()]
    for group in ("simgen", "cluster"):
        for f in sorted((root / group).iterdir(), key=lambda f: f.name):
            if f.name.endswith(".yaml"):
                parts += ["", f"# ---- configs/{group}/{f.name} ({group}={f.name[:-5]}) ----", f.read_text().rstrip()]
    return "\n".join(parts) + "\n"
