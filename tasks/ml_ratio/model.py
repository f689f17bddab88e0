"""The paper's pipeline, ``cnn_gbm`` ("g + morph", Dobbels et al. 2019 §3): morphology CNN
features, luminosity statistics, redshift and pixel size into LightGBM; with the feature-group
ablation of Table 1."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sim2obs.atomic import atomic_write
from sim2obs.tasks.base import MethodOutput, Predictions
from sim2obs.tasks.common.boosting import predict_booster
from sim2obs.tasks.ml_ratio.config import GROUPS, PAPER_ABLATION
from sim2obs.tasks.ml_ratio.features import assemble, blocks, fit_gbm, method_output, positive
from sim2obs.tasks.ml_ratio.report import plot_scaled_examples, write_importances

if TYPE_CHECKING:
    from sim2obs.tasks.ml_ratio.task import MLRatioTask

__all__ = ["run_model", "ablation_rows", "write_ablation"]

#: Table 1's rows: label, feature groups ("flux": the luminosity statistics without distance).
ABLATION_ROWS = (("all", ["cnn1-3", "cnn4", "luminosity", "distance"]),
                 ("no cnn1-3", ["cnn4", "luminosity", "distance"]),
                 ("no cnn4", ["cnn1-3", "luminosity", "distance"]),
                 ("no luminosity", ["cnn1-3", "cnn4", "distance"]),
                 ("no distance (fluxes)", ["cnn1-3", "cnn4", "flux"]),
                 ("luminosity + distance", ["luminosity", "distance"]))


def run_model(task: "MLRatioTask", workdir: Path) -> MethodOutput:
    """CNNs + LightGBM on every feature group; importances (Fig. 5), scaled examples (Fig. 1) and
    the ablation (Table 1) next to the predictions."""
    split = task.config.eval_split
    t0 = time.perf_counter()
    feature_blocks = blocks(task, workdir, print)
    t_features = time.perf_counter() - t0
    x, names, group_of = {}, None, None
    for s in ("train", "val", split):
        x[s], names, group_of = assemble(feature_blocks[s], GROUPS)
    booster, keep, record = fit_gbm(task, workdir, x, names)
    pred = predict_booster(booster, x[split][:, keep])
    scaling = task.image_features("train")
    write_importances(task, workdir, booster, x["val"][:, keep], [names[j] for j in keep],
                      [group_of[j] for j in keep])
    if task.config.plots:
        plot_scaled_examples(task, workdir / "scaled_examples.png")
    (workdir / "ablation" / "manifest.json").unlink(missing_ok=True)
    if task.config.ablation:
        write_ablation(task, workdir, feature_blocks, pred, record)
    return method_output(task, pred, {"model": "CNNs + LightGBM", "_target_": "lightgbm.Booster",
                                      "n_features": len(keep), "n_estimators": record["n_estimators"],
                                      "best_val_l1": record["best_val_loss"], "feature_seconds": t_features,
                                      "cnns": sorted(task.config.morphology_cnns), "cnn4": task.config.ml_cnn_from,
                                      "scaling_value_median": float(np.median(scaling["a"])),
                                      "frac_noise_level_reached": float(np.mean(scaling["reached"]))})


def ablation_rows(split_blocks) -> list[tuple[str, list[str]]]:
    """Table 1's rows whose groups are present, each distinct set of groups once."""
    has = set(split_blocks)
    out, seen = [], set()
    for label, groups in ABLATION_ROWS:
        present = tuple(g for g in groups if g in has)
        if present and present not in seen:
            seen.add(present)
            out.append((label, list(present)))
    return out


def write_ablation(task: "MLRatioTask", workdir: Path, feature_blocks, main_pred: np.ndarray,
                   main_record: dict) -> None:
    """Table 1: LightGBM retrained on feature-group subsets; their evaluation-split predictions
    are written to ``ablation/`` (scored by :meth:`MLRatioTask.summarise`, which owns the held-out truth)."""
    split = task.config.eval_split
    folder = workdir / "ablation"
    folder.mkdir(exist_ok=True)
    manifest = []
    for k, (label, groups) in enumerate(ablation_rows(feature_blocks[split])):
        if k == 0:
            pred, n_feat, val_l1 = main_pred, main_record["n_features"], main_record["best_val_loss"]
        else:
            x, names = {}, None
            for s in ("train", "val", split):
                x[s], names, _ = assemble(feature_blocks[s], groups)
            booster, keep, record = fit_gbm(task, folder, x, names, f"gbm_{k}")
            pred, n_feat, val_l1 = predict_booster(booster, x[split][:, keep]), len(keep), record["best_val_loss"]
        values, _ = positive(pred)
        path = Predictions(task.split_ids(split), values[:, None], task.targets).save(
            folder / f"row{k}.h5", task=task.name, split=split, ablation=label)
        flags = {g: (g in groups) or (g == "luminosity" and "flux" in groups) for g in GROUPS}
        flags["distance"] = "distance" in groups
        manifest.append({"row": label, "groups": groups, "flags": flags, "file": path.name,
                         "n_features": n_feat, "val_l1": val_l1, "paper_l1": PAPER_ABLATION.get(label)})
    text = json.dumps(manifest, indent=2) + "\n"
    atomic_write(folder / "manifest.json", lambda f: f.write(text), mode="w")
