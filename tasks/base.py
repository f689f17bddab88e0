"""The task abstraction: metadata, data binding, methods, and evaluation owned by the task.

A task is declared once, as a :class:`Task` subclass with a :class:`TaskMetadata` and a config
dataclass (subclass of :class:`TaskConfig`). It

- binds data: :meth:`Task.prepare` generates the simulated set its config names (or opens a
  real set and checks its content hash);
- gives methods (baselines and models) the training and validation data with labels, and the
  evaluation split's inputs only (:meth:`Task.labels` refuses the evaluation split);
- owns :meth:`Task.evaluate`: every metric from predictions and the held-out truth, after
  checking that the predictions cover exactly the split's objects;
- runs every method (:meth:`Task.run`), saving predictions with object ids, metrics and plots
  per method under ``<out>/<method>/``, resuming after a kill (a method whose result is
  already recorded under the same config and data is not rerun).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

from sim2obs.atomic import atomic_write
from sim2obs.config import check_importable_target, coerce_dataclass, fill_task_spec, has_task_spec, to_plain
from sim2obs.errors import ConfigError, DataFormatError, Sim2obsValueError
from sim2obs.predictions import Predictions
from sim2obs.provenance import file_sha256, package_versions, stable_hash
from sim2obs.tasks import metrics as M
from sim2obs.tasks.bootstrap import Replicates, bootstrap_indices, paired_differences, replicate_metrics
from sim2obs.tasks.declaration import (Method, MethodOutput, Observables, PaperResult, TaskConfig, TaskMetadata,
                                       TaskSplit, Truth)
from sim2obs.tasks.tables import _stderr_is_terminal, log_stderr, results_table, text_table, write_csv_rows

__all__ = ["Task", "TaskMetadata", "Observables", "TaskConfig", "Truth", "TaskSplit", "Method", "MethodOutput",
           "PaperResult", "Predictions", "log_stderr", "results_table", "text_table", "write_csv_rows",
           "PREDICTIONS_FILE", "RESULT_FILE", "RESULTS_FILE", "DIFFERENCES_FILE", "SHARED_DIR"]

PREDICTIONS_FILE = "predictions_{split}.h5"
RESULT_FILE = "result.json"
RESULTS_FILE = "results.json"
DIFFERENCES_FILE = "differences.csv"
SHARED_DIR = "_shared"


# --------------------------------------------------------------------------------------------
# Task
# --------------------------------------------------------------------------------------------
class Task:
    """Base class of benchmark tasks. Subclasses set ``metadata`` and ``config_class`` and
    implement :meth:`methods` and :meth:`compute_metrics`; they may extend :meth:`truth`
    (extra columns), :meth:`plot` and :meth:`summarise`."""

    metadata: ClassVar[TaskMetadata]
    config_class: ClassVar[type] = TaskConfig

    def __init__(self, config: Any = None, data_dir: str | os.PathLike | None = None,
                 cluster: Mapping[str, Any] | None = None, progress: bool | None = None):
        """``cluster``: where the task generates its set (a ``configs/cluster`` mapping); None:
        in this process (``{"kind": "synchronous"}``), so scripts without a ``__main__`` guard and
        notebooks work; ``sim2obs run`` passes its ``cluster`` (a process cluster by default).
        ``progress``: progress bars (generation, training); None: when stderr is a terminal."""
        name = f"task.{self.metadata.name}"
        self.config = coerce_dataclass(self.config_class, config, name)
        self.data_dir = Path(data_dir) if data_dir is not None else Path(
            os.environ.get("SIM2OBS_DATA", "sim2obs_data"))
        self.cluster = dict(cluster) if cluster is not None else {"kind": "synchronous"}
        self.progress = _stderr_is_terminal() if progress is None else bool(progress)
        self._galaxy_set = None
        self._models_checked = False
        plain = to_plain(self.config)
        if has_task_spec(plain):  # ${task_spec:KEY} values: the task's shapes
            self.config = coerce_dataclass(self.config_class, fill_task_spec(plain, self.spec().values(), name), name)
        self.validate_config()

    # -- metadata shortcuts ---------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def targets(self) -> tuple[str, ...]:
        return self.metadata.targets

    def validate_config(self) -> None:
        """Refuse unusable settings before any work (subclasses extend; call super)."""
        data = self.config.data
        if "path" in data and ("generator" in data or "n" in data):
            raise ConfigError(f"task.{self.name}.data", "give either a real set (path, content_hash) or "
                              "generator settings, not both", value=sorted(data))
        names = [m.name for m in self.methods()]
        for m in self.config.methods or []:
            if m not in names:
                raise ConfigError(f"task.{self.name}.methods", "unknown method", value=m, allowed=names)

    # -- what a model receives ---------------------------------------------------------------
    def spec(self):
        """The :class:`~sim2obs.models.conformance.TaskSpec` of the task's network (``model``): input
        shapes ``{stack: (C, H, W)}``, number of targets and outputs, whether posteriors are scored.
        Derived from the config (and a real set's manifest), without generating data. Check a
        model with ``check_model(model, task.spec())``; config values ``${task_spec:KEY}`` name
        its fields (:meth:`~sim2obs.models.conformance.TaskSpec.values`)."""
        raise NotImplementedError(f"task {self.name} does not describe its network inputs")

    def model_checks(self) -> list[tuple[str, Any, Any]]:
        """``(config key, model config as the task builds it, TaskSpec)`` for every network the
        selected methods build. Default: ``model`` when a selected method is of kind ``model``."""
        if not hasattr(self.config, "model") or not any(m.kind == "model" for m in self.selected_methods()):
            return []
        return [("model", to_plain(self.config.model), self.spec())]

    def check_models(self) -> list:
        """Before any work: every ``_target_`` of :meth:`model_checks` is importable (else
        :class:`ConfigError` naming the key), then :func:`~sim2obs.models.conformance.check_model`
        on a CPU copy (a wrong output shape, a non-finite output, ... raise
        :class:`Sim2obsValueError` naming the task and key). Returns the reports."""
        from sim2obs.models.conformance import check_model

        checks = self.model_checks()
        for key, cfg, _ in checks:
            check_importable_target(cfg, f"task.{self.name}.{key}")
        reports = []
        for key, cfg, spec in checks:
            try:
                reports.append(check_model(cfg, spec))
            except Sim2obsValueError as exc:
                raise Sim2obsValueError(f"task.{self.name}.{key} does not fit task {self.name} (inputs "
                                        f"{dict(spec.input_shapes)}, {spec.output_width} outputs): {exc}") from None
        self._models_checked = True
        return reports

    def split_inputs(self, split: str) -> dict[str, np.ndarray]:
        """``{name: array}`` model inputs of ``split`` (see :class:`TaskSplit`); tasks implement."""
        raise NotImplementedError(f"task {self.name} does not expose its inputs")

    def get_split(self, split: str) -> TaskSplit:
        """A split's ids, model inputs and (not for the evaluation split) labels, as arrays and
        (:meth:`TaskSplit.torch_dataset`) as a torch ``Dataset``. Generates the task's set if needed."""
        gs = self.galaxy_set
        if split not in gs.split_names:
            raise Sim2obsValueError(f"task {self.name} has no split {split!r}", value=split,
                                    allowed=list(gs.split_names))
        labels = None if split == self.config.eval_split else self.labels(split)
        return TaskSplit(task=self.name, split=split, ids=np.asarray(self.split_ids(split), dtype=np.int64),
                         inputs=self.split_inputs(split), labels=labels, targets=tuple(self.targets))

    # -- data binding ---------------------------------------------------------------------
    def simgen_config(self) -> dict[str, Any]:
        """The generator config of the task's simulated data (defaults filled in)."""
        from sim2obs.simgen import canonical_config

        return canonical_config({"generator": "galsim", **self.config.data})

    def prepare(self, generate: bool = True):
        """Generate (or reuse) the task's simulated set, or open its real set; return the
        :class:`~sim2obs.galaxyset.GalaxySet`. With ``generate=False`` a simulated set that is
        not on disk yet raises :class:`DataFormatError` instead of being generated."""
        if self._galaxy_set is not None:
            return self._galaxy_set
        from sim2obs.galaxyset import open_galaxy_set

        data = dict(self.config.data)
        if "path" in data:
            gs = open_galaxy_set(data["path"], check="schema")
            want = data.get("content_hash")
            if want and gs.content_hash != want:
                raise DataFormatError(gs.path, "content_hash", f"the set's content hash {gs.content_hash} is "
                                      f"not the one task.{self.name}.data.content_hash names ({want})")
        else:
            from sim2obs.simgen import default_set_path, prepare_set

            target = default_set_path(self.simgen_config(), self.data_dir)
            if not (target / "manifest.json").exists():
                if not generate:
                    raise DataFormatError(target, None, f"the simulated set of task {self.name} is not generated yet")
                log_stderr(f"[{self.name}] generating its simulated set {target} "
                           f"(cluster: {(self.cluster or {}).get('kind', 'local')}) ...")
            path = prepare_set(self.simgen_config(), data_dir=self.data_dir, cluster=self.cluster,
                               progress=self.progress)
            gs = open_galaxy_set(path, check="schema")
        self.check_set(gs)
        self._galaxy_set = gs
        return gs

    def check_set(self, gs) -> None:
        """Refuse a set that lacks the task's inputs, targets or splits (naming what is missing)."""
        for name in self.metadata.inputs:
            if name not in gs.schema.stack_names and name not in gs.schema.column_names:
                raise DataFormatError(gs.path, name, f"task {self.name} needs this input")
        for name in self.targets:
            if name not in gs.schema.column_names:
                raise DataFormatError(gs.path, name, f"task {self.name} needs this target column")
        for split in ("train", "val", self.config.eval_split):
            if split not in gs.split_names:
                raise DataFormatError(gs.path, "split", f"task {self.name} needs split {split!r}; the set has "
                                      f"{list(gs.split_names)}")

    @property
    def galaxy_set(self):
        return self.prepare()

    @property
    def data_identity(self) -> dict[str, Any]:
        """What the results were computed on: set name, content hash, path."""
        gs = self.galaxy_set
        return {"name": gs.name, "content_hash": gs.content_hash, "path": str(gs.path),
                "generator": gs.provenance.get("generator")}

    def split_ids(self, split: str) -> np.ndarray:
        return self.galaxy_set.column("id", split)

    def labels(self, split: str) -> np.ndarray:
        """(N, T) targets of a training or validation split. The evaluation split is refused:
        methods never see its labels."""
        if split == self.config.eval_split:
            raise Sim2obsValueError(f"labels of the evaluation split {split!r} are held out; "
                                    "methods train and select on other splits", value=split)
        gs = self.galaxy_set
        return np.stack([gs.column(t, split) for t in self.targets], axis=1).astype(np.float64)

    @property
    def observables(self) -> Observables:
        """The catalogue columns methods may read (:attr:`TaskMetadata.observables`)."""
        return self.metadata.observables

    def features(self, split: str, columns: Sequence[str]) -> np.ndarray:
        """(N, F) float64 catalogue columns of any split: the methods' only read of the catalogue.
        Each must be a declared observable (:attr:`observables`), and never a target or label."""
        labels = {*self.targets, *self.label_columns()}
        bad = [c for c in columns if c in labels or not self.observables.allows(c)]
        if bad:
            raise Sim2obsValueError(f"columns {bad} are not observables of task {self.name} (targets, labels and "
                                    "generator truths never are)", value=bad, allowed=self.observables.names())
        gs = self.galaxy_set
        return np.stack([gs.column(c, split) for c in columns], axis=1).astype(np.float64)

    def label_columns(self) -> tuple[str, ...]:
        """Catalogue columns that are labels (targets and their errors); subclasses add more."""
        gs = self.galaxy_set
        errs = [gs.schema.column(t).error for t in self.targets]
        return tuple(self.targets) + tuple(e for e in errs if e)

    def check_labels(self) -> None:
        """Refuse to score against labels that are not the data the set's content hash names
        (ids, split codes and every label column hashed each time; see
        :meth:`~sim2obs.galaxyset.GalaxySet.check_columns`)."""
        gs = self.galaxy_set
        gs.check_columns([c for c in ("id", *self.label_columns()) if c in gs.schema.column_names])

    def truth(self, split: str) -> Truth:
        """Held-out truth (used only by :meth:`evaluate` and the diagnostics)."""
        gs = self.galaxy_set
        values = np.stack([gs.column(t, split) for t in self.targets], axis=1).astype(np.float64)
        errs = [gs.schema.column(t).error for t in self.targets]
        errors = (np.stack([gs.column(e, split) for e in errs], axis=1).astype(np.float64)
                  if all(errs) else None)
        return Truth(ids=gs.column("id", split), values=values, errors=errors)

    # -- evaluation -----------------------------------------------------------------------
    def align(self, predictions: Predictions, split: str) -> tuple[Predictions, Truth]:
        """Check predictions against the split and put them in the truth's order.

        Refused (with what and where): wrong target names, ids that are not exactly the
        split's ids (missing, extra, duplicated), wrong shapes, NaN/inf, negative sigma,
        missing posterior samples when the task ranks calibration.
        """
        p = predictions
        if tuple(p.targets) != tuple(self.targets):
            raise Sim2obsValueError(f"predictions are for targets {list(p.targets)}; task {self.name} "
                                    f"predicts {list(self.targets)}", value=list(p.targets),
                                    allowed=list(self.targets))
        self.check_labels()
        truth = self.truth(split)
        n, t = len(truth.ids), len(self.targets)
        if n == 0:
            raise Sim2obsValueError(f"split {split!r} is empty: nothing to evaluate", value=split)
        ids = np.asarray(p.ids)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise Sim2obsValueError("ids must be a 1-D integer array", value=f"{ids.dtype} {ids.shape}")
        uniq, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            dup = uniq[counts > 1]
            raise Sim2obsValueError(f"{len(dup)} id(s) appear more than once, e.g. {dup[:5].tolist()}",
                                    value=int(dup[0]))
        missing = np.setdiff1d(truth.ids, ids)
        extra = np.setdiff1d(ids, truth.ids)
        if len(missing) or len(extra):
            raise Sim2obsValueError(
                f"ids do not match split {split!r} ({n} objects): {len(missing)} missing "
                f"(e.g. {missing[:5].tolist()}), {len(extra)} not in the split (e.g. {extra[:5].tolist()})",
                value=len(ids))
        if p.values.shape != (n, t):
            raise Sim2obsValueError(f"predictions must have shape ({n}, {t})", value=p.values.shape)
        arrays = {"predictions": p.values}
        if p.samples is not None:
            if p.samples.ndim != 3 or p.samples.shape[1:] != (n, t) or p.samples.shape[0] < 2:
                raise Sim2obsValueError(f"posterior samples must have shape (S >= 2, {n}, {t})",
                                        value=p.samples.shape)
            arrays["samples"] = p.samples
        if p.sigma is not None:
            if p.sigma.shape != (n, t):
                raise Sim2obsValueError(f"sigma must have shape ({n}, {t})", value=p.sigma.shape)
            if (p.sigma < 0).any():
                raise Sim2obsValueError("sigma must be >= 0", value=float(np.nanmin(p.sigma)))
            arrays["sigma"] = p.sigma
        for name, a in arrays.items():
            bad = ~np.isfinite(a)
            if bad.any():
                where = tuple(int(i) for i in np.argwhere(bad)[0])
                raise Sim2obsValueError(f"{name} contain {int(bad.sum())} NaN/inf value(s), first at index "
                                        f"{where}", value=float(a[where]))
        if self.metadata.requires_posterior and p.samples is None:
            raise Sim2obsValueError(f"task {self.name} ranks calibration: posterior samples are required",
                                    value=None)
        position = {int(i): k for k, i in enumerate(ids)}
        order = np.fromiter((position[int(i)] for i in truth.ids), dtype=np.int64, count=n)
        return p.subset(order), truth

    def evaluate(self, predictions: Predictions, split: str | None = None) -> dict[str, float]:
        """Every metric of the task, from ``predictions`` and the held-out truth of ``split``
        (default: the evaluation split). Keys are :attr:`TaskMetadata.metrics`."""
        return self._score(*self.align(predictions, split or self.config.eval_split))

    def _score(self, predictions: Predictions, truth: Truth) -> dict[str, float]:
        """The task's metrics, plus the shared keys it declares but leaves to
        :func:`~sim2obs.tasks.metrics.shared_metrics` (``l1``, ``rmsle``) and the coverages of
        any predictions with posterior samples or σ."""
        if predictions.samples is not None:  # every posterior metric is per-target marginal: sort once
            predictions = dataclasses.replace(predictions, samples=M.sorted_samples(predictions.samples))
        out = dict(self.compute_metrics(predictions, truth))
        shared = M.shared_metrics(self.metadata.metrics, self.targets, predictions.values, truth.values,
                                  truth.errors, predictions.samples, predictions.sigma)
        out.update({k: v for k, v in shared.items() if k not in out})
        missing = [k for k in self.metadata.metrics if k not in out]
        if missing:
            raise RuntimeError(f"task {self.name} did not compute metrics {missing}")
        keys = list(self.metadata.metrics) + [k for k in M.COVERAGE_LEVELS if k in shared and k not in self.metadata.metrics]
        return {k: float(out[k]) for k in keys}

    # -- to implement -----------------------------------------------------------------------
    def methods(self) -> list[Method]:
        """Every baseline and model of the task, in the order they run and are reported.
        Built from the config alone (cheap; must not touch the data)."""
        raise NotImplementedError

    def compute_metrics(self, predictions: Predictions, truth: Truth) -> dict[str, float]:
        """Metrics from aligned predictions and truth (both in the truth's order)."""
        raise NotImplementedError

    def plot(self, predictions: Predictions, truth: Truth, out_dir: Path) -> list[Path]:
        """Per-method plots: predicted versus true (density-coloured) and residual histograms
        per target; posterior coverage curves when samples exist. Subclasses add diagnostics."""
        from sim2obs.tasks import plots

        paths = []
        for k, (target, unit) in enumerate(zip(self.targets, self.metadata.target_units)):
            label = f"{target} [{unit}]" if unit else target
            paths.append(plots.predicted_vs_true(truth.values[:, k], predictions.values[:, k],
                                                 out_dir / f"pred_vs_true_{target}.png", label=label))
            paths.append(plots.residual_histogram(predictions.values[:, k] - truth.values[:, k],
                                                  out_dir / f"residuals_{target}.png", label=f"Δ{label}"))
        if predictions.samples is not None:
            paths.append(plots.coverage_curves(predictions.samples, truth.values, list(self.targets),
                                               out_dir / "coverage.png"))
        return paths

    def summarise(self, rows: list[dict], out_dir: Path) -> None:
        """Cross-method artefacts after all methods ran (ablation tables, resolution plots)."""

    # -- running --------------------------------------------------------------------------
    def selected_methods(self) -> list[Method]:
        methods = self.methods()
        if self.config.methods is None:
            return methods
        return [m for m in methods if m.name in self.config.methods]

    def merged_trainer_config(self, overrides: Any = None, model_target: str | None = None):
        """The task's ``trainer`` settings (with ``overrides``, e.g. a study's own schedule, merged
        on top) as a validated :class:`~sim2obs.models.engine.TrainerConfig`, its seed offset by
        the task seed. ``trainer.stages_for`` (a list of ``_target_`` names, e.g. the ResNets of
        ``configs/trainer/finetune.yaml``) limits the staged schedule, whose stages name layers, to
        the networks it was written for: for a ``model_target`` not in it the stages are dropped
        and every layer trains at ``trainer.lr`` for ``trainer.epochs``."""
        from dataclasses import replace

        from omegaconf import OmegaConf

        from sim2obs.models.engine import load_trainer_config, validate_config

        data = to_plain(getattr(self.config, "trainer", None)) or {}
        if overrides:
            data = OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(data), OmegaConf.create(to_plain(overrides))))
        data = dict(data)
        stages_for = data.pop("stages_for", None)
        if stages_for is not None and not isinstance(stages_for, (list, tuple)):
            raise ConfigError(f"task.{self.name}.trainer.stages_for", "a list of _target_ names, or null",
                              value=stages_for)
        if stages_for is not None and model_target is not None and str(model_target) not in stages_for:
            data["stages"] = []
        cfg = load_trainer_config(data)
        validate_config(cfg)
        return replace(cfg, seed=int(cfg.seed) + int(self.config.seed))

    def epoch_logger(self, label: str, epochs: int, log: Callable[[str], None] | None = None):
        """A :class:`~sim2obs.models.engine.Trainer` callback logging one line per epoch
        (:func:`log_stderr` by default): for logs, where progress bars are off."""
        log = log or log_stderr

        def callback(record: Mapping[str, Any], model: Any) -> None:
            log(f"  {self.name}/{label}: epoch {record['epoch']}/{epochs}  train {record['train_loss']:.4g}  "
                f"val {record['val_loss']:.4g}  ({record['seconds']:.1f} s)")
        return callback

    @staticmethod
    def shared_dir(workdir: str | os.PathLike) -> Path:
        """A folder the methods of one run share (trained networks, extracted features), beside
        the methods' own folders: ``<out>/_shared``."""
        return Path(workdir).parent / SHARED_DIR

    def run_key(self, method: Method) -> str:
        """Identity of one method's result: task version, data, method config, task config."""
        cfg = to_plain(self.config)
        cfg.pop("methods", None)
        cfg.pop("plots", None)
        return stable_hash({"task": self.name, "version": self.metadata.version, "data": self.galaxy_set.content_hash,
                            "method": method.name, "method_config": method.config, "task_config": cfg})

    def run(self, out_dir: str | os.PathLike, log: Callable[[str], None] | None = None) -> list[dict]:
        """Run every selected method; save predictions, metrics and plots per method; return
        one result row per method (also written to ``<out_dir>/results.json``). The networks are
        checked first (:meth:`check_models`); ``log`` (default: :func:`log_stderr`) hears of every
        method's start and end."""
        log = log or log_stderr
        if not self._models_checked:
            self.check_models()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        split = self.config.eval_split
        rows: list[dict] = []
        replicates: dict[str, Replicates] = {}
        for method in self.selected_methods():
            mdir = out_dir / method.name
            key = self.run_key(method)
            done = mdir / RESULT_FILE
            if done.exists():
                row = json.loads(done.read_text())
                if row.get("run_key") == key:
                    log(f"  {self.name}/{method.name}: done before, reusing ({row['main_score']} = {row['value']:.4g})")
                    aligned, truth = self.align(Predictions.load(mdir / row["predictions"]), split)
                    replicates[method.name] = self._replicates(aligned, truth)
                    rows.append(row)
                    continue
            mdir.mkdir(parents=True, exist_ok=True)
            log(f"  {self.name}/{method.name}: running ({method.kind}) ...")
            t0 = time.perf_counter()
            output = method.run(self, mdir)
            wall = time.perf_counter() - t0
            preds = output.predictions
            aligned, truth = self.align(preds, split)
            metrics = self._score(aligned, truth)
            replicates[method.name] = self._replicates(aligned, truth)
            pred_path = preds.save(mdir / PREDICTIONS_FILE.format(split=split), task=self.name, split=split,
                                   method=method.name)
            drawn = [Path(p).name for p in (self.plot(aligned, truth, mdir) or [])] if self.config.plots else []
            row = {
                "task": self.name, "task_version": self.metadata.version, "method": method.name,
                "kind": method.kind, "description": method.description, "split": split,
                "deterministic": method.deterministic,
                "main_score": self.metadata.main_score, "value": metrics[self.metadata.main_score],
                "metrics": metrics, "errors": replicates[method.name].errors(),
                "n_bootstrap": self.config.n_bootstrap, "paper": self.metadata.paper_row(method.name),
                "data": self.data_identity, "method_config": method.config, "task_config": to_plain(self.config),
                "info": output.info, "wall_seconds": wall, "predictions": pred_path.name,
                "predictions_sha256": file_sha256(pred_path), "run_key": key, "package_versions": package_versions(),
                "plots": drawn,
            }
            atomic_write(done, lambda f: f.write(json.dumps(row, indent=2, default=str) + "\n"), mode="w")
            log(f"  {self.name}/{method.name}: {row['main_score']} = {row['value']:.4g} ({wall:.1f} s)")
            rows.append(row)
        self.write_differences(rows, replicates, out_dir)
        self.summarise(rows, out_dir)
        text = json.dumps(rows, indent=2, default=str) + "\n"
        atomic_write(out_dir / RESULTS_FILE, lambda f: f.write(text), mode="w")
        return rows

    def _replicates(self, aligned: Predictions, truth: Truth, n_bootstrap: int | None = None,
                    seed: int | None = None) -> Replicates:
        """Every metric on the task's bootstrap resamples of the evaluated objects (the same
        resamples for every method, so differences are paired); ``n_bootstrap`` / ``seed``
        (default: the config's ``n_bootstrap`` / ``bootstrap_seed``) choose other resamples."""
        n_bootstrap = self.config.n_bootstrap if n_bootstrap is None else n_bootstrap
        seed = self.config.bootstrap_seed if seed is None else seed
        idx = bootstrap_indices(len(truth.ids), n_bootstrap, seed=seed)
        if aligned.samples is not None:  # sorted once here; every resample's subset stays sorted
            aligned = dataclasses.replace(aligned, samples=M.sorted_samples(aligned.samples))
        return replicate_metrics(self._score, aligned, truth, idx)

    def write_differences(self, rows: Sequence[Mapping[str, Any]], replicates: Mapping[str, Replicates],
                          out_dir: Path) -> list[dict]:
        """``differences.csv``: each method's main score minus every baseline's, with the paired
        bootstrap 1σ error; returned as rows."""
        values = {r["method"]: float(r["value"]) for r in rows}
        baselines = [r["method"] for r in rows if r["kind"] == "baseline"]
        diffs = paired_differences(replicates, values, self.metadata.main_score, reference=baselines or None)
        if diffs:
            write_csv_rows(out_dir / DIFFERENCES_FILE, diffs)
        return diffs
