"""The transfer protocol: one study = source training once per seed, then every target, k and strategy.

::

    from sim2obs.tasks.transfer import run_transfer
    rows = run_transfer("bt_quick", ["seeds=[0]"])          # configs/transfer/bt_quick.yaml + overrides
    sim2obs transfer transfer=bt_hsc_observed transfer.seeds=[0,1,2]    # the same from the shell

Folder ``<results>/transfer/<task>/<study>/`` (the contract with the leaderboard)::

    study.json                       resolved study config, data identities, adapter state
    subsets.json                     nested k subsets of each target's training ids, per seed
    seed-<s>/source/                 the source network (engine run in train/, weights.pt, done.json)
    seed-<s>/<target>/<strategy>/k-<k>/point.json, predictions_test.h5 (+ train/ for trained strategies)
    seed-<s>/source/source/k-0/      the in-domain row (source test split)
    transfer_results.json            every row; diagnostics.json; table.txt; learning_curve.png

Every point is resumable: ``point.json`` is its done-marker and holds a key (hash of the study
settings that shape it, the data content hashes, strategy, k, seed); a point whose key matches
is reused, never recomputed. Source training is resumable through the engine's checkpoints and
``done.json``. The fine-tuning runs of one seed run in this one process, one after the other.
Seeds are independent folders: run them in parallel through Hydra's multirun
(``sim2obs transfer --multirun transfer.seeds=[0],[1],[2]``, any launcher, e.g. submitit on
SLURM); every process rewrites ``transfer_results.json`` from all the points present.

The target's evaluation-split labels are never read by training code: fine-tuning, target-only
training and recalibration get only the k stored training ids (through ``adapter.dataset`` and
``Task.labels``, which refuses the evaluation split); the test split is scored by the target task's
own ``Task.evaluate`` path (``align`` + metrics) after the predictions are made.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from sim2obs.atomic import atomic_write
from sim2obs.config import to_plain
from sim2obs.errors import ConfigError
from sim2obs.provenance import file_sha256, stable_hash
from sim2obs.tasks import TASKS
from sim2obs.predictions import Predictions
from sim2obs.tasks.base import Task, log_stderr
from sim2obs.tasks.transfer import strategies as S
from sim2obs.tasks.transfer.adapter import ADAPTERS, TransferAdapter
from sim2obs.tasks.transfer.config import K0_STRATEGIES, StudyConfig, coerce_study, load_study_config, resolve_targets
from sim2obs.tasks.transfer.subsets import SubsetStore, effective_ks

STUDY_FILE, RESULTS_FILE, POINT_FILE = "study.json", "transfer_results.json", "point.json"
PREDICTIONS_FILE, DONE_FILE, WEIGHTS_FILE, DIAGNOSTICS_FILE = "predictions_test.h5", "done.json", "weights.pt", \
    "diagnostics.json"
SPEC_FIELDS = ("input_shapes", "n_targets", "n_outputs", "posterior")


def run_transfer(study: str | Mapping[str, Any] | StudyConfig = "bt_quick", overrides: Sequence[str] = (), *,
                 results_dir: str | os.PathLike | None = None, data_dir: str | os.PathLike | None = None,
                 cluster: Mapping[str, Any] | None = None, progress: bool | None = False,
                 log: Callable[[str], None] | None = None) -> list[dict]:
    """Run a transfer study and return its rows (also in ``transfer_results.json``).

    ``study``: a preset name of ``configs/transfer/`` (composed with ``overrides``), or a study
    config (mapping / :class:`StudyConfig`). ``results_dir`` / ``data_dir``: default
    ``$SIM2OBS_RESULTS`` / ``$SIM2OBS_DATA`` (else ``sim2obs_results`` / ``sim2obs_data``).
    ``cluster``: where sets are generated (None: in this process)."""
    cfg = coerce_study(load_study_config(study, overrides) if isinstance(study, str) else study)
    return Protocol(cfg, results_dir=results_dir, data_dir=data_dir, cluster=cluster, progress=progress,
                    log=log).run()


def study_dir(results_dir: str | os.PathLike, cfg: StudyConfig) -> Path:
    return Path(results_dir) / "transfer" / cfg.task_name / cfg.name


class Protocol:
    """One study's run (see the module docstring)."""

    def __init__(self, cfg: StudyConfig, results_dir=None, data_dir=None, cluster=None, progress=False, log=None):
        self.cfg = cfg
        self.results_dir = Path(results_dir or os.environ.get("SIM2OBS_RESULTS", "sim2obs_results"))
        self.data_dir = Path(data_dir or os.environ.get("SIM2OBS_DATA", "sim2obs_data"))
        self.cluster = dict(cluster) if cluster is not None else {"kind": "synchronous"}
        self.progress = progress
        self.log = log or log_stderr
        self.dir = study_dir(self.results_dir, cfg)
        self.nodes = {"source": to_plain(cfg.source), **resolve_targets(cfg)}
        self.store = SubsetStore(self.dir)
        self._tasks: dict[tuple[str, int], Task] = {}
        adapter = ADAPTERS.get(cfg.task_name)
        if "recalibrate" in cfg.strategies and adapter.recalibrate is TransferAdapter.recalibrate:
            raise ConfigError("transfer.strategies", f"task {cfg.task_name} has nothing to recalibrate (its adapter "
                              "has no recalibrate step); drop the strategy", value="recalibrate")

    # -- tasks and identities -------------------------------------------------------------
    def task_config(self, seed: int) -> dict[str, Any]:
        """The study's task config for ``seed`` (no data node)."""
        cfg = {k: v for k, v in to_plain(self.cfg.task).items() if k != "data"}
        cfg["seed"] = int(seed)
        return cfg

    def task(self, name: str, seed: int) -> Task:
        """The task bound to data node ``name`` (``source`` or a target) with seed ``seed``."""
        key = (name, int(seed))
        if key not in self._tasks:
            config = {**self.task_config(seed), "data": self.nodes[name]}
            self._tasks[key] = TASKS.get(self.cfg.task_name)(config, data_dir=self.data_dir, cluster=self.cluster,
                                                             progress=self.progress)
        return self._tasks[key]

    def identity(self, name: str) -> dict[str, Any]:
        d = self.task(name, self.cfg.seeds[0]).data_identity
        return {"name": d["name"], "content_hash": d["content_hash"], "path": d["path"]}

    def check_specs(self) -> None:
        """Every target gives the network what the source does (``task.spec()``), or the target is
        refused naming the field."""
        src = self.task("source", self.cfg.seeds[0]).spec()
        for name in self.cfg.targets:
            spec = self.task(name, self.cfg.seeds[0]).spec()
            for field in SPEC_FIELDS:
                a, b = getattr(src, field), getattr(spec, field)
                if to_plain(a) != to_plain(b):
                    raise ConfigError(f"transfer.targets.{name}", f"task.spec().{field} of the target differs from "
                                      f"the source's ({to_plain(a)}): a network cannot move between them",
                                      value=to_plain(b))

    def settings_key(self) -> dict[str, Any]:
        """The study settings that shape every point (not the grid: adding a k, a seed or a target
        keeps the points already done)."""
        c = to_plain(self.cfg)
        for key in ("name", "k", "strategies", "seeds", "targets", "source", "diagnostics", "plots"):
            c.pop(key, None)
        c["task"] = {k: v for k, v in c["task"].items() if k not in ("data", "seed", "plots", "methods")}
        task = TASKS.get(self.cfg.task_name)
        return {"settings": c, "task_version": task.metadata.version}

    def source_key(self, seed: int) -> str:
        s = self.settings_key()
        return stable_hash({"task": s["settings"]["task"], "version": s["task_version"],
                            "source": self.identity("source")["content_hash"], "seed": int(seed)})

    def point_key(self, seed: int, target: str, strategy: str, k: int) -> str:
        tgt = self.identity("source" if target == "source" else target)["content_hash"]
        return stable_hash({**self.settings_key(), "source": self.identity("source")["content_hash"], "target": tgt,
                            "strategy": strategy, "k": int(k), "seed": int(seed)})

    # -- the run --------------------------------------------------------------------------
    def run(self) -> list[dict]:
        t0 = time.perf_counter()
        self.log(f"[transfer] study {self.cfg.name} ({self.cfg.task_name}): {len(self.cfg.targets)} target(s), "
                 f"k {list(self.cfg.k)}, strategies {list(self.cfg.strategies)}, seeds {list(self.cfg.seeds)}")
        for name in self.nodes:  # generate (or open) every set before any training
            self.task(name, self.cfg.seeds[0]).prepare()
        self.check_specs()
        self.write_study()
        for seed in self.cfg.seeds:
            self.run_seed(int(seed))
        rows = self.collect()
        self.write_outputs(rows)
        self.log(f"[transfer] {len(rows)} rows in {self.dir} ({time.perf_counter() - t0:.1f} s)")
        return rows

    def write_study(self) -> None:
        data = {"format": "sim2obs.transfer.study", "config": to_plain(self.cfg), "data_nodes": self.nodes,
                "data": {name: self.identity(name) for name in self.nodes}, "settings_key": stable_hash(self.settings_key())}
        text = json.dumps(data, indent=1, default=str) + "\n"
        atomic_write(self.dir / STUDY_FILE, lambda f: f.write(text), mode="w")

    def run_seed(self, seed: int) -> dict[str, Any]:
        source = _SourceModel(self, seed)
        self.point(source, "source", "source", 0, lambda folder: source.with_calibration())
        diagnostics = {}
        for target in self.cfg.targets:
            task = self.task(target, seed)
            ks = effective_ks(self.cfg.k, len(task.split_ids("train")))
            subsets = self.store.subsets(seed, target, task.split_ids("train"), self.cfg.k,
                                         self.identity(target)["content_hash"])
            if self.cfg.diagnostics.enabled:
                diagnostics[target] = self.diagnostics(seed, target, source)
            for strategy in self.cfg.strategies:
                for k in ([0] if strategy in K0_STRATEGIES else ks):
                    self.point(source, target, strategy, k,
                               lambda folder, s=strategy, k=k, t=target: self.make_model(source, t, s, subsets.get(k),
                                                                                         folder))
        return diagnostics

    def make_model(self, source: "_SourceModel", target: str, strategy: str, ids, folder: Path):
        """The network of one point, and what to record about how it was made."""
        seed, adapter = source.seed, source.adapter()
        task = self.task(target, seed)
        if strategy == "zero_shot":
            return source.with_calibration()
        if strategy == "recalibrate":
            model = source.copy()
            return model, {"recalibration": adapter.recalibrate(task, model, ids, seed)}
        if strategy == "target_only":
            model = adapter.build_model(seed)
        else:
            model = source.copy()
        if strategy == "align_mmd":
            src = self.source_task(seed)
            train_ids = src.split_ids("train")
            if self.cfg.align.max_source:
                train_ids = np.sort(np.random.default_rng(seed).permutation(train_ids)[:self.cfg.align.max_source])
            train_ds, val_ds = adapter.dataset(src, "train", train_ids), adapter.dataset(src, "val")
            cfg = S.trainer_config(adapter, self.cfg, strategy, len(train_ds))
            unlabelled = adapter.dataset(task, "train", labelled=False)
            with S.FeatureCapture(model, adapter.feature_module) as cap:
                reg = S.FeatureAlignment(cap, unlabelled.inputs, self.cfg.align.loss,
                                         self.cfg.align.blur, self.cfg.align.weight)
                info = S.train(adapter, model, train_ds, val_ds, cfg, folder / "train", regulariser=reg,
                               label=f"{target}/{strategy}", log=self.log)
            return model, {**info, "n_target_unlabelled": int(len(unlabelled))}
        train_ds = adapter.dataset(task, "train", ids)
        cfg = S.trainer_config(adapter, self.cfg, strategy, len(train_ds))
        info = S.train(adapter, model, train_ds, train_ds, cfg, folder / "train", label=f"{target}/{strategy}/k={len(ids)}",
                       log=self.log)
        return model, {**info, "trainable": sorted(S.trainable_names(model, cfg))[:50]}

    def source_task(self, seed: int) -> Task:
        return self.task("source", seed)

    # -- one point ------------------------------------------------------------------------
    def point(self, source: "_SourceModel", target: str, strategy: str, k: int,
              make: Callable[[Path], tuple]) -> dict:
        """Run (or reuse) one point: ``make(folder) -> (model, info)``, predict the target's
        evaluation split, score it with bootstrap errors, write predictions and ``point.json``."""
        seed = source.seed
        folder = self.dir / f"seed-{seed}" / target / strategy / f"k-{k}"
        key = self.point_key(seed, target, strategy, k)
        done = folder / POINT_FILE
        if done.exists():
            row = json.loads(done.read_text())
            if row.get("point_key") == key:
                self.log(f"  seed {seed} {target}/{strategy} k={k}: done before, reusing "
                         f"({row['main_score']} = {row['value']:.4g})")
                return row
        t0 = time.perf_counter()
        model, info = make(folder)
        task = self.task(target, seed)
        adapter = source.adapter()
        preds = adapter.predict(task, model, task.config.eval_split, seed)
        path = preds.save(folder / PREDICTIONS_FILE, task=task.name, split=task.config.eval_split, strategy=strategy,
                          k=int(k), seed=int(seed), study=self.cfg.name)
        metrics, errors = self.score(task, Predictions.load(path))  # the file's numbers: what the board recomputes
        wall = time.perf_counter() - t0
        meta = task.metadata
        row = {"task": task.name, "task_version": meta.version, "study": self.cfg.name,
               "model": getattr(adapter, "model_name", str(self.cfg.task.get("model", {}).get("_target_", "model"))),
               "source": self.identity("source"), "target_name": target, "target": self.identity(target),
               "strategy": strategy, "k": int(k), "seed": int(seed),
               "domain": "source" if target == "source" else "target", "split": task.config.eval_split,
               "main_score": meta.main_score, "value": metrics[meta.main_score], "metrics": metrics, "errors": errors,
               "n_boot": int(self.cfg.n_boot), "n_boot_seed": int(self.cfg.n_boot_seed),
               "predictions": path.name, "predictions_sha256": file_sha256(path),
               "folder": str(folder.relative_to(self.dir)), "task_config": self.task_config(seed),
               "wall_seconds": wall, "higher_is_better": bool(meta.higher_is_better), "point_key": key,
               "info": info or {}}
        atomic_write(done, lambda f: f.write(json.dumps(row, indent=1, default=str) + "\n"), mode="w")
        self.log(f"  seed {seed} {target}/{strategy} k={k}: {meta.main_score} = {row['value']:.4g} "
                 f"± {errors.get(meta.main_score, float('nan')):.2g} ({wall:.1f} s)")
        return row

    @property
    def _adapters(self) -> dict[int, TransferAdapter]:
        if not hasattr(self, "_adapter_cache"):
            self._adapter_cache: dict[int, TransferAdapter] = {}
        return self._adapter_cache

    def score(self, task: Task, preds) -> tuple[dict[str, float], dict[str, float]]:
        """Every metric of the task on its evaluation split (``Task.evaluate``'s path), and each
        one's 1σ bootstrap error (:mod:`sim2obs.tasks.bootstrap`: ``n_boot`` resamples of the test
        objects drawn with ``n_boot_seed``, the same resamples for every point of one target, so
        differences between strategies can be paired)."""
        aligned, truth = task.align(preds, task.config.eval_split)
        metrics = task._score(aligned, truth)
        return metrics, task._replicates(aligned, truth, self.cfg.n_boot, self.cfg.n_boot_seed).errors()

    # -- diagnostics, results -------------------------------------------------------------
    def diagnostics(self, seed: int, target: str, source: "_SourceModel") -> dict[str, Any]:
        """The shift diagnostics of (source, ``target``) on seed ``seed``'s source network, computed
        once (``seed-<s>/<target>/diagnostics.json`` holds them with their key)."""
        from sim2obs.tasks.transfer.report import shift_diagnostics

        path, key = self.dir / f"seed-{seed}" / target / DIAGNOSTICS_FILE, self.diagnostics_key(seed, target)
        if path.exists():
            rec = json.loads(path.read_text())
            if rec.get("key") == key:
                return rec["diagnostics"]
        t0 = time.perf_counter()
        diag = shift_diagnostics(self, seed, target, source)
        diag["seconds"] = time.perf_counter() - t0
        text = json.dumps({"key": key, "diagnostics": diag}, indent=1, default=str) + "\n"
        atomic_write(path, lambda f: f.write(text), mode="w")
        self.log(f"  seed {seed} {target}: shift diagnostics ({diag['seconds']:.1f} s)")
        return diag

    def diagnostics_key(self, seed: int, target: str) -> str:
        return stable_hash({"source": self.source_key(seed), "target": self.identity(target)["content_hash"],
                            "diagnostics": to_plain(self.cfg.diagnostics)})

    def collect_diagnostics(self) -> dict[str, dict[str, Any]]:
        """``{seed: {target: record}}`` from every seed folder present (any process's)."""
        out: dict[str, dict[str, Any]] = {}
        for folder in sorted(self.dir.glob("seed-*")):
            seed = folder.name[len("seed-"):]
            for target in self.cfg.targets:
                path = folder / target / DIAGNOSTICS_FILE
                if seed.isdigit() and path.exists():
                    rec = json.loads(path.read_text())
                    if rec.get("key") == self.diagnostics_key(int(seed), target):
                        out.setdefault(seed, {})[target] = rec["diagnostics"]
        return out

    def collect(self) -> list[dict]:
        """Every finished point of this study's grid, of every seed present (this process's or
        another's: a multirun over seeds ends with all of them); points of strategies, k or targets
        no longer in the config stay on disk but are not rows."""
        rows = []
        grid = {"source": {("source", 0)}}
        for target in self.cfg.targets:
            ks = effective_ks(self.cfg.k, len(self.task(target, self.cfg.seeds[0]).split_ids("train")))
            grid[target] = {(s, k) for s in self.cfg.strategies for k in ([0] if s in K0_STRATEGIES else ks)}
        for path in sorted(self.dir.glob(f"seed-*/*/*/k-*/{POINT_FILE}")):
            row = json.loads(path.read_text())
            if row.get("study") == self.cfg.name \
                    and (row["strategy"], row["k"]) in grid.get(row["target_name"], ()) \
                    and row["point_key"] == self.point_key(row["seed"], row["target_name"], row["strategy"], row["k"]):
                rows.append(row)
        order = {n: i for i, n in enumerate(["source", *self.cfg.targets])}
        strat = {n: i for i, n in enumerate(["source", *self.cfg.strategies])}
        rows.sort(key=lambda r: (order[r["target_name"]], strat.get(r["strategy"], 99), r["k"], r["seed"]))
        return rows

    def write_outputs(self, rows: list[dict]) -> None:
        from sim2obs.tasks.transfer import report

        text = json.dumps(rows, indent=1, default=str) + "\n"
        atomic_write(self.dir / RESULTS_FILE, lambda f: f.write(text), mode="w")
        text = json.dumps(self.collect_diagnostics(), indent=1, default=str) + "\n"
        atomic_write(self.dir / DIAGNOSTICS_FILE, lambda f: f.write(text), mode="w")
        report.write_report(rows, self.dir, plots=self.cfg.plots)


class _SourceModel:
    """The source network of one seed: trained once (engine checkpoints + ``done.json``), loaded
    lazily, copied for every fine-tuning."""

    def __init__(self, protocol: Protocol, seed: int):
        self.p, self.seed = protocol, int(seed)
        self.folder = protocol.dir / f"seed-{seed}" / "source"
        self._state = None
        self._calibrated = None

    def adapter(self) -> TransferAdapter:
        cache = self.p._adapters
        if self.seed not in cache:
            adapter = ADAPTERS.get(self.p.cfg.task_name)(self.p.source_task(self.seed))
            done = self.folder / DONE_FILE
            record = json.loads(done.read_text()) if done.exists() else None
            if record is not None and record.get("key") == self.p.source_key(self.seed):
                adapter.load_state(record["adapter_state"])
            else:
                adapter.fit()
            cache[self.seed] = adapter
        return cache[self.seed]

    def state(self) -> dict:
        import torch

        if self._state is not None:
            return self._state
        adapter = self.adapter()
        done, weights = self.folder / DONE_FILE, self.folder / WEIGHTS_FILE
        key = self.p.source_key(self.seed)
        record = json.loads(done.read_text()) if done.exists() else None
        if record is None or record.get("key") != key or not weights.exists():
            task = self.p.source_task(self.seed)
            model = adapter.build_model(self.seed)
            cfg = adapter.trainer_config("source")
            self.p.log(f"  seed {self.seed}: training the source network on {task.data_identity['name']} "
                       f"({cfg.epochs} epochs)")
            info = S.train(adapter, model, adapter.dataset(task, "train"), adapter.dataset(task, "val"), cfg,
                           self.folder / "train", label="source", log=self.p.log)
            atomic_write(weights, lambda f: torch.save(model.state_dict(), f))
            record = {"key": key, "adapter_state": adapter.state(), "train": info, "seed": self.seed}
            atomic_write(done, lambda f: f.write(json.dumps(record, indent=1, default=str) + "\n"), mode="w")
        self._state = torch.load(weights, map_location="cpu", weights_only=True)
        return self._state

    def copy(self):
        """A fresh network holding the source weights."""
        return S.copy_weights(self.adapter().build_model(self.seed), self.state()).eval()

    def with_calibration(self):
        """The source network with its source-side calibration (when the adapter has one)."""
        if self._calibrated is None:
            model = self.copy()
            calibrate = getattr(self.adapter(), "calibrate_on_source", None)
            info = calibrate(model, self.seed) if calibrate is not None else None
            self._calibrated = (model, {"source_calibration": info})
        return self._calibrated
