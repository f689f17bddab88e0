"""The ``multibranch_mass`` task's declaration: metadata, configuration checks, data binding
(labels, observables, the scaled input branches), its methods and its evaluation."""
from __future__ import annotations

import difflib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from sim2obs.config import to_plain
from sim2obs.errors import ConfigError, DataFormatError, Sim2obsValueError
from sim2obs.models.conformance import TaskSpec
from sim2obs.tasks import TASKS
from sim2obs.tasks import metrics as M
from sim2obs.tasks.base import Method, MethodOutput, PaperResult, Predictions, Task, TaskMetadata, Truth
from sim2obs.tasks.multibranch_mass import report
from sim2obs.tasks.multibranch_mass.baselines import run_lightgbm, run_power_law
from sim2obs.tasks.multibranch_mass.config import (BRANCHES, DEFAULT_IMAGE_PX, DEFAULT_REBIN_PX, DERIVED,
                                                      KIN_BRANCHES, KINMASK, LUMINOSITY, MAGNITUDE,
                                                      OBSERVABLE_COLUMNS, SCALINGS, STUDY_TARGETS, SUMMARY_FEATURES,
                                                      TARGETS, VARIANTS, MultibranchMassConfig)
from sim2obs.tasks.multibranch_mass.network import model_config, run_network
from sim2obs.tasks.multibranch_mass.observables import OBSERVABLES
from sim2obs.tasks.multibranch_mass.preprocessing import CHUNK, UnitScaling, fit_unit_scaling

__all__ = ["MultibranchMassTask", "PAPER_NOTE"]

PAPER_NOTE = "Chu et al. 2024, TNG100-1 z=0, 28,110 projections (test 8,110), 300 px r images"


def _metric_names() -> tuple[str, ...]:
    keys = [f"{TARGETS[0]}/scatter_dex"]
    for t in TARGETS:
        keys += [f"{t}/{k}" for k in ("scatter_dex", "bias_mean", "rmse", "nmad", "l1")]
    return tuple(dict.fromkeys(keys))


@TASKS.register("multibranch_mass")
class MultibranchMassTask(Task):
    """Central M*, M_tot and M*/L_r from images and kinematic maps (Chu et al. 2024); see the
    module docstring."""

    metadata = TaskMetadata(
        name="multibranch_mass",
        version="1.0",
        description="central stellar mass, total mass (within R_half) and M*/L_r of TNG galaxies from r image, "
                    "g-r map and stellar kinematic maps (multi-branch ResNet-18), with LightGBM and power-law "
                    "baselines",
        citation="Chu J., Tang H., Xu D., Lu S., Long R., 2024, MNRAS: Galaxy stellar and total mass estimation "
                 "using machine learning (arXiv:2311.10351)",
        inputs=("r_<N>", "gr_<N>", "vmap", "sigmamap", KINMASK, LUMINOSITY, *SUMMARY_FEATURES),
        targets=TARGETS,
        target_units=("dex", "dex", "dex"),
        main_score=f"{TARGETS[0]}/scatter_dex",
        metrics=_metric_names(),
        higher_is_better=False,
        paper={
            "cnn": PaperResult(0.04, f"{PAPER_NOTE}; r image + 2 V maps, §4.1, Table 4 (M_tot 0.06, M*/L 0.07)"),
            "power_law": PaperResult(0.16, f"{PAPER_NOTE}; power law in luminosity, §4.1, Fig. 6"),
            "lightgbm": PaperResult(0.05, f"{PAPER_NOTE}; LightGBM on Table 1 statistics, §5.2, Table 6"),
            "lightgbm_no_mag": PaperResult(0.08, f"{PAPER_NOTE}; LightGBM without the magnitude, §5.2, Table 6"),
        },
        observables=OBSERVABLES,
    )
    config_class = MultibranchMassConfig

    def __init__(self, *args: Any, **kwargs: Any):
        self._cache: dict[tuple, Any] = {}
        super().__init__(*args, **kwargs)

    # -- config ---------------------------------------------------------------------------
    def validate_config(self) -> None:
        super().validate_config()
        cfg = self.config
        name = f"task.{self.name}"
        self.trainer_config()  # typos and bad values of trainer.* raise here
        if cfg.ablation.trainer is not None:
            self.trainer_config(ablation=True)
        if not isinstance(cfg.model, dict) or "_target_" not in cfg.model:
            raise ConfigError(f"{name}.model", "a network config needs a _target_", value=cfg.model)
        if cfg.eval_split in ("train", "val"):
            raise ConfigError(f"{name}.eval_split", "the methods train on 'train' and select on 'val'; evaluate "
                              "another split", value=cfg.eval_split)
        self._check_branches(f"{name}.inputs", cfg.inputs)
        if int(cfg.image_resolution) != cfg.image_resolution or cfg.image_resolution < 1:
            raise ConfigError(f"{name}.image_resolution", "a positive number of pixels", value=cfg.image_resolution)
        available = self.available_resolutions()
        if available and cfg.image_resolution not in available and any(b in cfg.inputs for b in ("image", "colour")):
            raise ConfigError(f"{name}.image_resolution", "the set has no r image of this size",
                              value=cfg.image_resolution, allowed=available)
        if cfg.scaling.image not in SCALINGS:
            raise ConfigError(f"{name}.scaling.image", "unknown scaling", value=cfg.scaling.image,
                              allowed=list(SCALINGS))
        if not cfg.scaling.log_range_dex > 0:
            raise ConfigError(f"{name}.scaling.log_range_dex", "must be positive", value=cfg.scaling.log_range_dex)
        lg = cfg.lightgbm
        bad = [f for f in lg.features if f not in OBSERVABLE_COLUMNS]
        if bad or not lg.features or len(set(lg.features)) != len(lg.features):
            raise ConfigError(f"{name}.lightgbm.features", "distinct observables (labels are not features)",
                              value=bad or list(lg.features), allowed=list(OBSERVABLE_COLUMNS))
        if lg.features == [MAGNITUDE]:
            raise ConfigError(f"{name}.lightgbm.features", "lightgbm_no_mag needs a feature besides mag_r",
                              value=list(lg.features))
        if int(lg.num_boost_round) < 1:
            raise ConfigError(f"{name}.lightgbm.num_boost_round", "must be at least 1", value=lg.num_boost_round)
        if int(lg.num_threads) < 0:
            raise ConfigError(f"{name}.lightgbm.num_threads", "must be >= 0 (0: LightGBM's default)",
                              value=lg.num_threads)
        bad = [t for t in lg.study_targets if t not in STUDY_TARGETS]
        if bad:
            raise ConfigError(f"{name}.lightgbm.study_targets", "unknown study target", value=bad,
                              allowed=list(STUDY_TARGETS))
        ab = cfg.ablation
        for v in ab.variants:
            if v not in VARIANTS:
                close = difflib.get_close_matches(str(v), list(VARIANTS), n=1)
                raise ConfigError(f"{name}.ablation.variants", "unknown variant" +
                                  (f"; did you mean {close[0]!r}?" if close else ""), value=v, allowed=list(VARIANTS))
        if len(set(ab.variants)) != len(ab.variants):
            raise ConfigError(f"{name}.ablation.variants", "listed twice", value=list(ab.variants))
        if ab.resolutions is not None:
            res = list(ab.resolutions)
            if any(int(r) != r or r < 1 for r in res) or len(set(res)) != len(res):
                raise ConfigError(f"{name}.ablation.resolutions", "distinct positive pixel counts", value=res)
            missing = [r for r in res if available and r not in available]
            if missing:
                raise ConfigError(f"{name}.ablation.resolutions", "the set has no r image of this size",
                                  value=missing, allowed=available)

    @staticmethod
    def _check_branches(key: str, names: Sequence[str]) -> None:
        for b in names:
            if b not in BRANCHES:
                close = difflib.get_close_matches(str(b), BRANCHES, n=1)
                raise ConfigError(key, "unknown input branch" + (f"; did you mean {close[0]!r}?" if close else ""),
                                  value=b, allowed=list(BRANCHES))
        if not names or len(set(names)) != len(names):
            raise ConfigError(key, "one or more distinct branches", value=list(names), allowed=list(BRANCHES))

    def trainer_config(self, ablation: bool = False):
        """The validated trainer config of the networks (with ``ablation.trainer`` merged on top for
        the ablation variants); seed offset by the task seed."""
        return self.merged_trainer_config(self.config.ablation.trainer if ablation else None)

    def simgen_config(self) -> dict[str, Any]:
        """The ``tng`` generator's config of the task's simulated set (defaults filled in)."""
        from sim2obs.simgen import canonical_config  # deferred: sim2obs.simgen takes ~2 s to import

        return canonical_config({"generator": "tng", **self.config.data})

    def available_resolutions(self) -> list[int]:
        """Sizes (px) of the r images of the set, largest first, from the config alone: the data
        config's ``image_px`` and ``rebin_px`` (the generator's defaults 300 and [150, 60] when
        absent), or the schema in ``manifest.json`` of a real set (empty if it cannot be read)."""
        data = self.config.data
        if "path" in data:
            try:
                schema = json.loads((Path(data["path"]) / "manifest.json").read_text())["schema"]
                names = [s["name"] for s in schema["stacks"]]
            except (OSError, ValueError, KeyError, TypeError):
                return []
            sizes = [int(n[2:]) for n in names if n.startswith("r_") and n[2:].isdigit()]
        else:
            sizes = [int(data.get("image_px", DEFAULT_IMAGE_PX)), *map(int, data.get("rebin_px", DEFAULT_REBIN_PX))]
        return sorted(set(sizes), reverse=True)

    # -- data -----------------------------------------------------------------------------
    @staticmethod
    def stack_name(branch: str, px: int) -> str:
        """Galaxy-set stack of an input branch: ``r_<px>``, ``gr_<px>``, ``vmap`` or ``sigmamap``."""
        return {"image": f"r_{px}", "colour": f"gr_{px}"}.get(branch, branch)

    def _networks(self) -> list[tuple[str, tuple[str, ...], int, bool]]:
        """(method name, inputs, image resolution, ablation?) of every network method."""
        cfg = self.config
        out = [("cnn", tuple(b for b in BRANCHES if b in cfg.inputs), int(cfg.image_resolution), False)]
        if cfg.ablation.enabled:
            for v in cfg.ablation.variants:
                if v in VARIANTS:  # unknown names are refused by validate_config
                    out.append((f"cnn_{v}", VARIANTS[v], int(cfg.image_resolution), True))
            sizes = cfg.ablation.resolutions if cfg.ablation.resolutions is not None else self.available_resolutions()
            for px in sizes:
                if "image" in cfg.ablation.variants and int(px) == int(cfg.image_resolution):
                    continue  # that network is cnn_image
                out.append((f"cnn_image_{int(px)}px", ("image",), int(px), True))
        return out

    def required(self) -> tuple[list[str], list[str]]:
        """(stacks, columns) the configured methods need."""
        stacks: list[str] = []
        for _, inputs, px, _ in self._networks():
            for b in inputs:
                stacks.append(self.stack_name(b, px))
                if b == "colour":
                    stacks.append(self.stack_name("image", px))  # its lit-pixel mask
                if b in KIN_BRANCHES:
                    stacks.append(KINMASK)
        lg = self.config.lightgbm
        study = [c for t in lg.study_targets for c in (DERIVED[t][0] if t in DERIVED else (t,))]
        columns = [*TARGETS, LUMINOSITY, *lg.features, *study]
        if lg.sersic_n_max is not None:
            columns.append("sersic_n")
        if lg.kin_bt_max is not None:
            columns.append("kin_bt")
        return list(dict.fromkeys(stacks)), list(dict.fromkeys(columns))

    def check_set(self, gs) -> None:
        """Refuse a set that lacks a stack, column or split the configured methods need, naming
        every missing one; kinematic maps must share one square shape and images be square."""
        stacks, columns = self.required()
        miss_s = [s for s in stacks if s not in gs.schema.stack_names]
        miss_c = [c for c in columns if c not in gs.schema.column_names]
        if miss_s or miss_c:
            what = "; ".join(x for x in (f"stacks {miss_s}" if miss_s else "", f"columns {miss_c}" if miss_c else "")
                             if x)
            raise DataFormatError(gs.path, (miss_s + miss_c)[0], f"task {self.name} needs {what} (the set has stacks "
                                  f"{list(gs.schema.stack_names)})")
        for s in stacks:
            spec = gs.schema.stack(s)
            if spec.height != spec.width:
                raise DataFormatError(gs.path, s, f"task {self.name} needs square maps, got {spec.shape}")
            if s.startswith(("r_", "gr_")) and spec.height != int(s.split("_")[1]):
                raise DataFormatError(gs.path, s, f"stack {s} holds {spec.height} px images, not {s.split('_')[1]}")
        kin = {gs.schema.stack(s).shape[1:] for s in stacks if s in (*KIN_BRANCHES, KINMASK)}
        if len(kin) > 1:
            raise DataFormatError(gs.path, KINMASK, f"vmap, sigmamap and kinmask must share one shape, got {kin}")
        for split in ("train", "val", self.config.eval_split):
            if split not in gs.split_names:
                raise DataFormatError(gs.path, "split", f"task {self.name} needs split {split!r}; the set has "
                                      f"{list(gs.split_names)}")

    def label_columns(self) -> tuple[str, ...]:
        """Every catalogue column but the observables of :data:`OBSERVABLE_COLUMNS` (and ``id``):
        the masses, fractions, M/L, radii and field of view (both set by the 3D half-mass radius),
        subhalo ids, projections, ..."""
        gs = self.galaxy_set
        labels = [c for c in gs.schema.column_names if c not in OBSERVABLE_COLUMNS and c != "id"]
        return tuple(dict.fromkeys([*super().label_columns(), *labels]))

    def features(self, split: str, columns: Sequence[str]) -> np.ndarray:
        """Observables as :meth:`Task.features`, with summary statistics the generator could not
        measure (its ``summary_flags`` bits, e.g. a failed Sersic fit) as NaN (LightGBM's missing
        value) instead of their stored 0."""
        from sim2obs.simgen.tng_mocks import SUMMARY_FLAG_BITS  # deferred: sim2obs.simgen takes ~2 s to import

        x = super().features(split, columns)
        if "summary_flags" in self.galaxy_set.schema.column_names:
            flags = self.galaxy_set.column("summary_flags", split).astype(np.int64)
            for j, name in enumerate(columns):
                if name in SUMMARY_FLAG_BITS:
                    x[(flags & SUMMARY_FLAG_BITS[name]) != 0, j] = np.nan
        return x

    def _columns(self, split: str, names: Sequence[str]) -> np.ndarray:
        """(N, K) catalogue or derived (:data:`DERIVED`) columns of any split (for the task's own
        evaluation and diagnostics, never for the methods)."""
        gs = self.galaxy_set
        cols = []
        for n in names:
            if n in DERIVED:
                deps, fn, _ = DERIVED[n]
                cols.append(fn(*(gs.column(d, split).astype(np.float64) for d in deps)))
            else:
                cols.append(gs.column(n, split).astype(np.float64))
        return np.stack(cols, axis=1)

    def training_columns(self, split: str, names: Sequence[str]) -> np.ndarray:
        """Label (or derived) columns of a training or validation split; the evaluation split is refused."""
        if split == self.config.eval_split:
            raise Sim2obsValueError(f"labels of the evaluation split {split!r} are held out; methods train and "
                                    "select on other splits", value=split)
        return self._columns(split, names)

    def scaling(self, branch: str, px: int) -> UnitScaling:
        """The :class:`UnitScaling` of ``branch`` at ``px``, fitted on the training split (cached)."""
        key = ("scaling", branch, px)
        if key not in self._cache:
            raw, valid = self._raw(branch, px, "train")
            mode = self.config.scaling.image if branch == "image" else "linear"
            self._cache[key] = fit_unit_scaling(raw, valid, mode, self.config.scaling.log_range_dex)
        return self._cache[key]

    def _raw(self, branch: str, px: int, split: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(N, H, W) raw pixels of ``branch`` and the valid-pixel mask (None: every pixel)."""
        gs = self.galaxy_set
        raw = gs.images(self.stack_name(branch, px), split)[:, 0]
        if branch == "colour":
            return raw, gs.images(self.stack_name("image", px), split)[:, 0] > 0
        if branch in KIN_BRANCHES:
            return raw, gs.images(KINMASK, split)[:, 0] > 0.5
        return raw, None

    def network_inputs(self, branch: str, px: int, split: str) -> np.ndarray:
        """(N, C, H, W) float32 inputs of ``branch`` for ``split``: scaled with the training
        scaling, invalid pixels 0; the kinematic branches get the mask as a second channel with
        ``kinmask_channel`` (cached)."""
        key = ("inputs", branch, px, split, self.config.kinmask_channel)
        if key not in self._cache:
            scaling = self.scaling(branch, px)
            raw, valid = self._raw(branch, px, split)
            parts = [scaling.apply(raw[a:a + CHUNK], None if valid is None else valid[a:a + CHUNK])
                     for a in range(0, len(raw), CHUNK)]
            x = (np.concatenate(parts) if parts else np.empty(raw.shape, np.float32))[:, None]
            if branch in KIN_BRANCHES and self.config.kinmask_channel:
                x = np.concatenate([x, valid[:, None].astype(np.float32)], axis=1)
            self._cache[key] = np.ascontiguousarray(x, dtype=np.float32)
        return self._cache[key]

    # -- methods --------------------------------------------------------------------------
    def methods(self) -> list[Method]:
        cfg = self.config
        lg = asdict(cfg.lightgbm)
        no_mag = [f for f in cfg.lightgbm.features if f != MAGNITUDE]
        out = [
            Method("power_law", "baseline", "log y = a + b log L_r per target, least squares on the training split "
                   "(§4.1)", lambda task, workdir: task._run_power_law(workdir), {"luminosity": LUMINOSITY},
                   deterministic=True),
            Method("lightgbm", "baseline", f"LightGBM ({cfg.lightgbm.num_boost_round} trees) per target on "
                   f"{', '.join(cfg.lightgbm.features)} (§5, Table 6)",
                   lambda task, workdir: task._run_lightgbm(workdir, True),
                   {"lightgbm": lg, "features": lg["features"]}),
            Method("lightgbm_no_mag", "baseline", f"LightGBM per target on {', '.join(no_mag)} (no magnitude; Table 6)",
                   lambda task, workdir: task._run_lightgbm(workdir, False), {"lightgbm": lg, "features": no_mag}),
        ]
        for name, inputs, px, ablation in self._networks():
            net = {"model": to_plain(cfg.model), "trainer": to_plain(cfg.trainer), "inputs": list(inputs),
                   "image_resolution": px, "kinmask_channel": cfg.kinmask_channel, "joint": cfg.joint,
                   "scaling": asdict(cfg.scaling)}
            if ablation:
                net["ablation_trainer"] = to_plain(cfg.ablation.trainer)
            res = f" at {px} px" if ("image" in inputs or "colour" in inputs) else ""
            what = f"multi-branch ResNet-18 on {' + '.join(inputs)}{res}"
            out.append(Method(name, "baseline" if ablation else "model",
                              ("ablation (Table 4): " if ablation else "") + what,
                              lambda task, workdir, i=inputs, p=px, a=ablation: task._run_network(workdir, i, p, a),
                              net))
        return out

    def predictions_of(self, values: np.ndarray) -> Predictions:
        """``values`` (N, T) of the evaluation split as :class:`Predictions` in its object order."""
        ids = self.split_ids(self.config.eval_split).astype(np.int64)
        return Predictions(ids=ids, values=np.asarray(values, float).reshape(len(ids), -1), targets=self.targets)

    _predictions = predictions_of

    def _run_power_law(self, workdir: Path) -> MethodOutput:
        return run_power_law(self, workdir)

    def _run_lightgbm(self, workdir: Path, with_mag: bool) -> MethodOutput:
        return run_lightgbm(self, workdir, with_mag)

    # -- networks -------------------------------------------------------------------------
    def _model_config(self, inputs: Sequence[str], n_outputs: int) -> dict[str, Any]:
        """``model`` as a network of these ``inputs`` and outputs builds it (:func:`.network.model_config`)."""
        return model_config(self, inputs, n_outputs)

    def spec(self):
        """The ``cnn``'s inputs ``{branch: (C, H, W)}`` (a dict; channels 2 for the kinematic maps
        with ``kinmask_channel``), outputs: the three targets (``joint``) or one per network."""
        cfg = self.config
        px = int(cfg.image_resolution)
        if "path" in cfg.data:
            kin = int(self.galaxy_set.schema.stack("vmap").height)
        else:
            kin = int(cfg.data.get("kin_px", 48))
        shapes = {b: (2 if (cfg.kinmask_channel and b in KIN_BRANCHES) else 1,) + ((kin, kin) if b in KIN_BRANCHES
                                                                                   else (px, px))
                  for b in BRANCHES if b in cfg.inputs}
        n = len(self.targets) if cfg.joint else 1
        return TaskSpec(input_shapes=shapes, n_targets=n, n_outputs=n)

    def model_checks(self) -> list[tuple[str, Any, Any]]:
        """``model`` as the ``cnn`` builds it (a network of one input gets a tensor, not a dict:
        checked when it runs)."""
        if "cnn" not in {m.name for m in self.selected_methods()} or len(self.config.inputs) < 2:
            return []
        spec = self.spec()
        return [("model", self._model_config(tuple(spec.input_shapes), spec.n_targets), spec)]

    def split_inputs(self, split: str) -> dict[str, np.ndarray]:
        """``{branch: (N, C, H, W)}`` float32 inputs of the ``cnn``'s branches, scaled to [0, 1]
        with the training split's scaling (:meth:`network_inputs`)."""
        px = int(self.config.image_resolution)
        return {b: self.network_inputs(b, px, split) for b in BRANCHES if b in self.config.inputs}

    def _run_network(self, workdir: Path, inputs: Sequence[str], px: int, ablation: bool) -> MethodOutput:
        return run_network(self, workdir, inputs, px, ablation)

    # -- evaluation -----------------------------------------------------------------------
    def compute_metrics(self, predictions: Predictions, truth: Truth) -> dict[str, float]:
        out: dict[str, float] = {}
        for k, t in enumerate(self.targets):
            p, y = predictions.values[:, k], truth.values[:, k]
            out[f"{t}/scatter_dex"] = M.scatter_dex(p, y)
            out[f"{t}/bias_mean"] = M.bias_mean(p, y)
            out[f"{t}/rmse"] = M.rmse(p, y)
            out[f"{t}/nmad"] = M.nmad(p - y)
        out.update(M.shared_metrics(self.metadata.metrics, self.targets, predictions.values, truth.values,
                                    truth.errors))
        return out


    def summarise(self, rows: list[dict], out_dir: Path) -> None:
        """Cross-method artefacts (:func:`.report.summarise`): the correlation matrix, the LightGBM
        study table, the ablation table and the scatter of every method."""
        report.summarise(self, rows, out_dir)

    def correlation_matrix(self) -> tuple[list[str], np.ndarray]:
        """Pearson R of the features and study targets on the training split (Fig. 10)."""
        return report.correlation_matrix(self)

    def write_correlation_matrix(self, out_dir: Path) -> None:
        report.write_correlation_matrix(self, out_dir)

    def write_lightgbm_study(self, rows: list[dict], out_dir: Path) -> list[dict]:
        return report.write_lightgbm_study(self, rows, out_dir)

    def write_ablation_table(self, rows: list[dict], out_dir: Path) -> list[dict]:
        return report.write_ablation_table(self, rows, out_dir)
