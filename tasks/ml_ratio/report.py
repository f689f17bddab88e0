"""The paper's figures and tables: permutation importances (Fig. 5), scaled examples (Fig. 1),
the error histograms of Fig. 4, ℒ1 per method (Fig. 8 style) and the ablation (Table 1)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sim2obs.atomic import atomic_write
from sim2obs.tasks import metrics as M
from sim2obs.tasks import plots
from sim2obs.tasks.base import Predictions, Truth
from sim2obs.tasks.common.boosting import predict_booster
from sim2obs.tasks.ml_ratio.config import BAND, TARGET
from sim2obs.tasks.ml_ratio.estimators import permutation_importance
from sim2obs.tasks.ml_ratio.preprocessing import log_scale, rescale_unit, resize_images
from sim2obs.tasks.ml_ratio.sample import crop_centre

if TYPE_CHECKING:
    from sim2obs.tasks.ml_ratio.task import MLRatioTask

__all__ = ["write_importances", "plot_scaled_examples", "plot_error_histograms", "write_ablation_table",
           "write_noiseless_scores"]


def write_importances(task: "MLRatioTask", workdir: Path, booster, x_val: np.ndarray, names: list[str],
                      groups: list[str]) -> None:
    """Permutation importances on the validation set (Fig. 5): ``importances.csv`` and a bar
    chart of the 20 most important features."""
    y, e = task.labels("val")[:, 0], task.target_errors("val")
    counts = booster.feature_importance("split")
    used = np.flatnonzero(counts > 0)  # an unused feature cannot change a prediction
    mean, std = np.zeros(len(names)), np.zeros(len(names))
    m, s = permutation_importance(lambda a: predict_booster(booster, a), x_val, y, e, used,
                                  task.config.importance_repeats, task.config.seed)
    mean[used], std[used] = m, s
    order = np.argsort(-mean, kind="stable")
    lines = ["feature,group,importance_l1,importance_std,split_count"]
    lines += [f"{names[j]},{groups[j]},{mean[j]:.6g},{std[j]:.6g},{int(counts[j])}" for j in order]
    atomic_write(workdir / "importances.csv", lambda f: f.write("\n".join(lines) + "\n"), mode="w")
    top = order[:20]
    if task.config.plots:
        plots.bar_table([f"{names[j]} ({groups[j]})" for j in top], mean[top], workdir / "importances.png",
                        xlabel="increase of validation ℒ1 when permuted")


def plot_scaled_examples(task: "MLRatioTask", path: Path) -> None:
    """Fig. 1: three training galaxies of low, median and high scaling value (their 1.125 D25 cutouts at
    the working size), shown linearly, log-scaled with the median scaling value, and with their
    automatic scaling value."""
    f = task.image_features("train")
    a = f["a"]
    order = np.argsort(a)
    picks = [order[len(order) // 20], order[len(order) // 2], order[-1 - len(order) // 20]]
    gs = task.galaxy_set
    raw = gs.images("image", "train", indices=gs.indices("train")[task.sample_rows("train")[picks]])
    raw = raw[:, gs.schema.stack("image").channels.index(BAND)]
    unit = np.stack([resize_images(torch.from_numpy(rescale_unit(crop_centre(r, int(side))))[None],
                                   f["scaled"].shape[-1])[0, 0].numpy() for r, side in zip(raw, f["size_px"][picks])])
    rows = [("linear", unit), (f"a = {np.median(a):.3g} (median)", log_scale(unit, float(np.median(a)))),
            ("automatic a", f["scaled"][picks])]
    fig = plots.new_figure(7.5, 7.5)
    for r, (title, imgs) in enumerate(rows):
        for col in range(3):
            ax = fig.add_subplot(3, 3, 3 * r + col + 1)
            ax.imshow(imgs[col], origin="lower", cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(title, fontsize=8)
            if r == 2:
                ax.set_title(f"a = {a[picks[col]]:.3g}, noise {f['noise'][picks[col]]:.2f}", fontsize=8)
    plots.save_figure(fig, path)


def plot_error_histograms(predictions: Predictions, truth: Truth, out_dir: Path) -> list[Path]:
    """The paper's Fig. 4 (right) histograms: dex errors with the ±0.15 dex band, and signed ℒ1 terms."""
    p, t = predictions.values[:, 0], truth.values[:, 0]
    e = (M.floored_error(t, truth.errors[:, 0], M.MIN_RELATIVE_ERROR) if truth.errors is not None
         else np.abs(t) * M.MIN_RELATIVE_ERROR)
    return [plots.residual_histogram(M.log_residuals(p, t), out_dir / f"dex_errors_{TARGET}.png",
                                     label="log10(predicted / true M/L_g) [dex]"),
            plots.residual_histogram((p - t) / e, out_dir / f"l1_terms_{TARGET}.png",
                                     label="(predicted − true) / ΔΥ  (signed ℒ1 terms)")]


def _table_lines(table: list[dict]) -> tuple[list[str], list[str]]:
    """CSV and Markdown lines of the scored ablation rows (bootstrap errors; differences from the
    first row with their paired errors)."""
    csv = ["row,cnn1-3,cnn4,luminosity,distance,n_features,val_l1,test_l1,test_l1_err,delta_vs_all,"
           "delta_vs_all_err,test_rmsle,paper_test_l1"]
    md = ["| CNN 1-3 | CNN 4 | Luminosity | Distance | features | val ℒ1 | test ℒ1 | Δ vs all (paired) "
          "| test RMSLE | paper ℒ1 |", "|:-:|:-:|:-:|:-:|--:|--:|--:|--:|--:|--:|"]
    tick = {True: "✓", False: ""}
    for r in table:
        f = r["flags"]
        nf = "" if r["n_features"] is None else str(r["n_features"])
        vl = "" if r["val_l1"] is None else f"{r['val_l1']:.4g}"
        paper = "" if r["paper_l1"] is None else f"{r['paper_l1']:.2f}"
        csv.append(f"{r['row']},{int(f['cnn1-3'])},{int(f['cnn4'])},{int(f['luminosity'])},"
                   f"{int(f['distance'])},{nf},{vl},{r['l1']:.6g},{r['l1_err']:.3g},{r['delta']:.6g},"
                   f"{r['delta_err']:.3g},{r['rmsle']:.6g},{paper}")
        md.append(f"| {tick[f['cnn1-3']]} | {tick[f['cnn4']]} | {tick[f['luminosity']]} | "
                  f"{tick[f['distance']]} | {nf} | {vl} | {r['l1']:.3f} ± {r['l1_err']:.3f} | "
                  f"{r['delta']:+.3f} ± {r['delta_err']:.3f} | {r['rmsle']:.3f} | {paper} |")
    return csv, md


def write_ablation_table(task: "MLRatioTask", rows: list[dict], out_dir: Path) -> None:
    """``ablation_table.{csv,md,png}`` (Table 1): the ``cnn_gbm`` ablation rows scored on the
    evaluation split (written when ``cnn_gbm`` ran with ablation)."""
    if not any(r["method"] == "cnn_gbm" for r in rows):
        return
    manifest_path = out_dir / "cnn_gbm" / "ablation" / "manifest.json"
    if not manifest_path.exists():
        return
    table, first = [], None
    for entry in json.loads(manifest_path.read_text()):
        aligned, truth = task.align(Predictions.load(manifest_path.parent / entry["file"]), task.config.eval_split)
        metrics = task.evaluate(aligned)
        boot = task._replicates(aligned, truth).values.get("l1")  # the task's resamples: paired across rows
        first = boot if first is None else first
        paired = (lambda a, b: float(np.std(a - b))) if boot is not None and first is not None else None
        table.append({**entry, "l1": metrics["l1"], "rmsle": metrics["rmsle"],
                      "l1_err": float(np.std(boot)) if boot is not None else float("nan"),
                      "delta": metrics["l1"] - (table[0]["l1"] if table else metrics["l1"]),
                      "delta_err": paired(boot, first) if paired else float("nan")})
    const = next((r for r in rows if r["method"] == "best_constant"), None)
    csv, md = _table_lines(table)
    note = (f"\nBaseline ℒ1 (best constant): {const['metrics']['l1']:.3f} (paper 6.52).\n" if const else "")
    md_text = ("Test-set ℒ1 of LightGBM trained on the checked feature groups (Dobbels et al. 2019, "
               "Table 1), with 1σ bootstrap errors; Δ vs all: the row minus the first row on the same "
               "resamples (paired error). Without distance, luminosity statistics are replaced by flux "
               "statistics.\n\n"
               + "\n".join(md) + "\n" + note)
    atomic_write(out_dir / "ablation_table.csv", lambda fh: fh.write("\n".join(csv) + "\n"), mode="w")
    atomic_write(out_dir / "ablation_table.md", lambda fh: fh.write(md_text), mode="w")
    if task.config.plots:
        plots.bar_table([r["row"] for r in table], [r["l1"] for r in table], out_dir / "ablation_table.png",
                        xlabel=f"test ℒ1 ({task.config.eval_split} split)")


def write_noiseless_scores(task: "MLRatioTask", rows: list[dict], out_dir: Path) -> None:
    """``noiseless_truth.csv``: each method's ℒ1 against the labels it is ranked on (SED-fit-like, with
    noise) and against the generator's noiseless M/L (same ΔΥ weights), with bootstrap errors on the
    task's resamples. Written for simulated sets with label noise only."""
    split = task.config.eval_split
    truth = task.truth(split)
    if "ml_g_noiseless" not in truth.extra:
        return
    lines = ["method,l1_measured_labels,l1_measured_labels_err,l1_noiseless,l1_noiseless_err"]
    for r in rows:
        path = out_dir / r["method"] / f"predictions_{split}.h5"
        if not path.exists():
            continue
        aligned, t = task.align(Predictions.load(path), split)
        clean = Truth(t.ids, t.extra["ml_g_noiseless"][:, None], t.errors, {})
        vals = []
        for tr in (t, clean):
            boot = task._replicates(aligned, tr).values.get("l1")
            vals += [M.l1(aligned.values[:, 0], tr.values[:, 0], tr.errors[:, 0]),
                     float(np.std(boot)) if boot is not None else float("nan")]
        lines.append(f"{r['method']}," + ",".join(f"{v:.6g}" for v in vals))
    atomic_write(out_dir / "noiseless_truth.csv", lambda fh: fh.write("\n".join(lines) + "\n"), mode="w")
