"""The diagnostics of ``multibranch_mass``: the correlation matrix of the features and study
targets (Fig. 10), the LightGBM study table (Table 6), the ablation table (Table 4) and the
scatter of every method."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from sim2obs.atomic import atomic_write
from sim2obs.errors import DataFormatError
from sim2obs.tasks import metrics as M
from sim2obs.tasks import plots
from sim2obs.tasks.base import Predictions, write_csv_rows
from sim2obs.tasks.multibranch_mass.config import LUMINOSITY, PAPER_GBDT, UNITS, paper_ablation_value

if TYPE_CHECKING:
    from sim2obs.tasks.multibranch_mass.task import MultibranchMassTask

__all__ = ["summarise", "correlation_matrix", "write_correlation_matrix", "write_lightgbm_study",
           "write_ablation_table", "plot_correlation_matrix"]


def summarise(task: "MultibranchMassTask", rows: list[dict], out_dir: Path) -> None:
    """Cross-method artefacts: the correlation matrix (training split), the LightGBM study
    table, the ablation table and the scatter of every method."""
    out_dir = Path(out_dir)
    write_correlation_matrix(task, out_dir)
    write_lightgbm_study(task, rows, out_dir)
    write_ablation_table(task, rows, out_dir)
    if rows and task.config.plots:
        key = task.metadata.main_score
        plots.bar_table([r["method"] for r in rows], [r["metrics"][key] for r in rows],
                        out_dir / "scatter_by_method.png",
                        xlabel=f"scatter of Δ log M* [dex] ({task.config.eval_split} split)")


def correlation_matrix(task: "MultibranchMassTask") -> tuple[list[str], np.ndarray]:
    """Pearson R between the LightGBM features, log L_r and the study targets on the training
    split (paper Fig. 10): ``(names, (K, K) matrix)``."""
    lg = task.config.lightgbm
    feats = list(dict.fromkeys([*lg.features, LUMINOSITY]))
    targets = list(dict.fromkeys([*task.targets, *lg.study_targets]))
    x = np.concatenate([task.features("train", feats), task.training_columns("train", targets)], axis=1)
    import pandas as pd  # deferred: pandas takes ~1 s to import

    # pairwise over the objects where both are measured (unmeasured statistics are NaN)
    r = pd.DataFrame(x, columns=feats + targets).corr(method="pearson").to_numpy()
    return feats + targets, np.atleast_2d(r)


def write_correlation_matrix(task: "MultibranchMassTask", out_dir: Path) -> None:
    """``correlation_matrix.csv`` (and ``.png`` with ``plots``) of :func:`correlation_matrix`."""
    names, r = correlation_matrix(task)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["", *names])
    for name, row in zip(names, r):
        w.writerow([name, *(f"{v:.4f}" for v in row)])
    atomic_write(out_dir / "correlation_matrix.csv", lambda f: f.write(buf.getvalue()), mode="w")
    if task.config.plots:
        plot_correlation_matrix(names, r, out_dir / "correlation_matrix.png")


def write_lightgbm_study(task: "MultibranchMassTask", rows: list[dict], out_dir: Path) -> list[dict]:
    """``lightgbm_study.{csv,md}`` from the ``lightgbm`` and ``lightgbm_no_mag`` runs: per study
    target and input set, bias and scatter on the evaluation split, the top-3 features by gain
    and the paper's Table 6 scatter. Returns the table rows."""
    split = task.config.eval_split
    table = []
    for method in ("lightgbm", "lightgbm_no_mag"):
        manifest_path = out_dir / method / "study" / "manifest.json"
        if not any(r["method"] == method for r in rows) or not manifest_path.exists():
            continue
        for entry in json.loads(manifest_path.read_text()):
            p = Predictions.load(manifest_path.parent / entry["file"])
            target = entry["target"]
            truth_ids = task.split_ids(split)
            if not np.array_equal(np.sort(p.ids), np.sort(truth_ids)):
                raise DataFormatError(manifest_path.parent / entry["file"], "ids", "do not match the "
                                      f"evaluation split {split!r}")
            order = np.argsort(p.ids)[np.searchsorted(np.sort(p.ids), truth_ids)]
            pred, truth = p.values[order, 0], task._columns(split, [target])[:, 0]
            paper = PAPER_GBDT.get((target, bool(entry["with_mag"])))
            table.append({"target": target, "unit": UNITS.get(target, "dex"),
                          "inputs": "default" if entry["with_mag"] else "default w/o mag",
                          "method": method, "bias": M.bias_mean(pred, truth), "scatter": M.scatter_dex(pred, truth),
                          "top_features": " > ".join(entry["top_features"]),
                          "paper_scatter": "" if paper is None else paper})
    if not table:
        return table
    order = {t: i for i, t in enumerate(dict.fromkeys([*task.config.lightgbm.study_targets, *task.targets]))}
    table.sort(key=lambda r: (order[r["target"]], r["method"]))  # the config's order (default: Table 6's)
    write_csv_rows(out_dir / "lightgbm_study.csv", table)
    lines = ["| target | inputs | bias | scatter | top-3 features (gain) | paper scatter (Table 6) |",
             "|---|---|--:|--:|---|--:|"]
    for r in table:
        paper = "" if r["paper_scatter"] == "" else f"{r['paper_scatter']:.2f}"
        lines.append(f"| {r['target']} [{r['unit']}] | {r['inputs']} | {r['bias']:+.3f} | {r['scatter']:.3f} | "
                     f"{r['top_features']} | {paper} |")
    text = (f"LightGBM per target ({task.config.lightgbm.num_boost_round} trees, "
            f"{task.config.lightgbm.params.get('num_leaves')} leaves) on the summary statistics; bias and 1-sigma "
            f"scatter of prediction - truth on the {split!r} split (Chu et al. 2024, Table 6; the paper's "
            "numbers are for TNG100-1, ours for the generated set).\n\n" + "\n".join(lines) + "\n")
    atomic_write(out_dir / "lightgbm_study.md", lambda f: f.write(text), mode="w")
    return table


def _paired_scatter_differences(task: "MultibranchMassTask", nets: list[dict],
                                out_dir: Path) -> dict[str, dict[str, tuple[float, float]]]:
    """``{method: {target: (scatter - the cnn's scatter, paired bootstrap 1-sigma error)}}`` (dex)
    from the saved predictions, every method scored on the task's same bootstrap resamples of the
    evaluated objects ({} without a ``cnn`` row)."""
    if not any(r["method"] == "cnn" for r in nets):
        return {}
    reps = {}
    for r in nets:
        aligned, truth = task.align(Predictions.load(out_dir / r["method"] / r["predictions"]), task.config.eval_split)
        reps[r["method"]] = task._replicates(aligned, truth)
    out: dict[str, dict[str, tuple[float, float]]] = {}
    values = {r["method"]: r["metrics"] for r in nets}
    for name, rep in reps.items():
        out[name] = {}
        for t in task.targets:
            key = f"{t}/scatter_dex"
            if key in rep.values and key in reps["cnn"].values:
                d = rep.values[key] - reps["cnn"].values[key]
                out[name][t] = (float(values[name][key] - values["cnn"][key]), float(np.std(d)))
    return out


def _ablation_rows(task: "MultibranchMassTask", nets: list[dict], out_dir: Path) -> list[dict]:
    """One row per (network method, target) of :func:`write_ablation_table`."""
    paired = _paired_scatter_differences(task, nets, out_dir)
    table = []
    for r in nets:
        info = r.get("info") or {}
        inputs = list(info.get("inputs") or [])
        px = int(info.get("resolution_px") or 0)
        imaged = "image" in inputs or "colour" in inputs
        for t in task.targets:
            value, note = paper_ablation_value(inputs, px, t, joint=bool(info.get("joint")))
            diff, diff_err = paired.get(r["method"], {}).get(t, ("", ""))
            table.append({"method": r["method"], "variant": info.get("variant") or r["method"],
                          "inputs": "+".join(inputs), "resolution_px": px if imaged else "", "target": t,
                          "bias": r["metrics"][f"{t}/bias_mean"], "scatter": r["metrics"][f"{t}/scatter_dex"],
                          "scatter_error": (r.get("errors") or {}).get(f"{t}/scatter_dex", ""),
                          "minus_cnn": diff, "minus_cnn_error": diff_err,
                          "paper_scatter": "" if value is None else value, "paper_note": note})
    return table


def write_ablation_table(task: "MultibranchMassTask", rows: list[dict], out_dir: Path) -> list[dict]:
    """``ablation_table.{csv,md}`` (paper Table 4) from the network methods (``cnn`` and every
    ``cnn_*``): variant, inputs, resolution, target, bias, scatter with its bootstrap error, the
    scatter minus the ``cnn``'s with the paired bootstrap error (the same resamples of the
    evaluated objects for every method), the paper's scatter. Written when an ablation variant
    ran. Returns the table rows."""
    nets = [r for r in rows if r["method"] == "cnn" or r["method"].startswith("cnn_")]
    if not any(r["method"] != "cnn" for r in nets):
        return []
    table = _ablation_rows(task, nets, Path(out_dir))
    write_csv_rows(out_dir / "ablation_table.csv", table)
    header = ("method", "inputs", "resolution [px]", "target", "bias [dex]", "scatter [dex]",
              "minus cnn [dex]", "paper scatter", "paper source")
    lines = ["| " + " | ".join(header) + " |", "|---|---|--:|---|--:|--:|--:|--:|---|"]
    for t in table:
        paper = "" if t["paper_scatter"] == "" else f"{t['paper_scatter']:.2f}"
        scatter = f"{t['scatter']:.3f}" + ("" if t["scatter_error"] == "" else f" ± {t['scatter_error']:.3f}")
        minus = "" if t["minus_cnn"] == "" or t["method"] == "cnn" else \
            f"{t['minus_cnn']:+.3f} ± {t['minus_cnn_error']:.3f}"
        lines.append(f"| {t['method']} | {t['inputs']} | {t['resolution_px']} | {t['target']} | "
                     f"{t['bias']:+.3f} | {scatter} | "
                     f"{minus} | {paper} | {t['paper_note']} |")
    text = ("Input and resolution ablation of the multi-branch network (Chu et al. 2024, Table 4): bias and "
            f"1-sigma scatter of prediction - truth on the {task.config.eval_split!r} split, with bootstrap "
            "errors; 'minus cnn' is the scatter minus the cnn's (the cnn's inputs: "
            f"{' + '.join(task.config.inputs)}) with its paired bootstrap error (positive: the cnn is better). "
            f"Our networks predict the three targets {'jointly' if task.config.joint else 'one per network'}; "
            "the paper trained one target per network on 300 px images and 20,000 training objects.\n\n"
            + "\n".join(lines) + "\n")
    atomic_write(out_dir / "ablation_table.md", lambda f: f.write(text), mode="w")
    return table


def plot_correlation_matrix(names: Sequence[str], r: np.ndarray, path: Path) -> Path:
    """Heat map of Pearson R (paper Fig. 10), values written in the cells."""
    n = len(names)
    fig = plots.new_figure(1.0 + 0.45 * n, 0.6 + 0.42 * n)
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(r), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(n), labels=list(names), rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels=list(names), fontsize=7)
    for i in range(n):
        for j in range(n):
            if np.isfinite(r[i, j]):
                ax.text(j, i, f"{r[i, j]:.2f}", ha="center", va="center", fontsize=5,
                        color="white" if abs(r[i, j]) > 0.6 else "black")
    fig.colorbar(im, ax=ax, label="Pearson R (training split)", shrink=0.8)
    return plots.save_figure(fig, path)
