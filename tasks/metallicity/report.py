"""The paper's diagnostics: the mass-metallicity relation of the predictions (§6.2, Fig. 6) and
the resolution study's table and figure (§5.3, Fig. 4)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from sim2obs.atomic import atomic_write
from sim2obs.tasks import metrics as M
from sim2obs.tasks import plots
from sim2obs.tasks.base import PREDICTIONS_FILE, Predictions, write_csv_rows
from sim2obs.tasks.metallicity.config import MZRConfig
from sim2obs.tasks.metallicity.references import image_truth_ceiling

if TYPE_CHECKING:
    from sim2obs.tasks.metallicity.task import MetallicityTask

__all__ = ["mzr_bins", "mzr_scatter", "bootstrap_rmse_error", "resolution_table", "plot_mzr", "plot_resolution",
           "write_mzr_tables", "write_resolution_study", "RESOLUTION_PAPER_NOTES", "oracle_comparison",
           "write_oracle_comparison", "fit_mzr_oracle", "resolution_steps"]

#: What the paper says about the low resolutions (§5.4; the values themselves are only in Fig. 4).
RESOLUTION_PAPER_NOTES = {
    1: "paper: worse than the RF (RMSE > 0.130 dex), little different from 2 px (§5.3-5.4)",
    2: "paper: worse than the RF (RMSE > 0.130 dex) (§5.4)",
    4: "paper: better than the RF in RMSE and NMAD (§5.4)",
    128: "paper: RMSE 0.085, NMAD 0.067 (§4.3)",
}


def _scatter(z: np.ndarray, centre: float) -> tuple[float, float]:
    d = z - centre
    return float(np.sqrt(np.mean(d**2))), float(1.4826 * np.median(np.abs(z - np.median(z))))


def mass_edges(log_mstar: np.ndarray, bin_width: float) -> np.ndarray:
    """Bin edges of width ``bin_width`` dex covering ``log_mstar``, starting at a multiple of the width."""
    m = np.asarray(log_mstar, float)
    lo = math.floor(m.min() / bin_width) * bin_width
    return np.arange(lo, m.max() + bin_width, bin_width)


def mzr_bins(log_mstar: np.ndarray, z: np.ndarray, bin_width: float = 0.2, min_count: int = 5,
             edges: np.ndarray | None = None) -> list[dict[str, float]]:
    """The binned relation Z(M*): for each stellar-mass bin with at least ``min_count`` galaxies,
    its edges, centre, count, median Z, rms scatter about that median and NMAD."""
    m, z = np.asarray(log_mstar, float), np.asarray(z, float)
    if edges is None:
        edges = mass_edges(m, bin_width)
    rows = []
    for a, b in zip(edges[:-1], edges[1:]):
        sel = (m >= a) & (m < b)
        if sel.sum() < max(1, min_count):
            continue
        med = float(np.median(z[sel]))
        rms, nmad = _scatter(z[sel], med)
        rows.append({"log_mstar_lo": float(a), "log_mstar_hi": float(b), "log_mstar_centre": float((a + b) / 2),
                     "n": int(sel.sum()), "median": med, "rms": rms, "nmad": nmad})
    return rows


def mzr_scatter(log_mstar: np.ndarray, z: np.ndarray, bins: list[dict[str, float]]) -> dict[str, float]:
    """Global scatter of ``z`` about a binned median relation (interpolated between bin centres):
    rms and NMAD of the residuals, over the galaxies inside the binned mass range."""
    if not bins:
        return {"rms": float("nan"), "nmad": float("nan"), "n": 0}
    m, z = np.asarray(log_mstar, float), np.asarray(z, float)
    inside = (m >= bins[0]["log_mstar_lo"]) & (m < bins[-1]["log_mstar_hi"])
    ref = np.interp(m[inside], [b["log_mstar_centre"] for b in bins], [b["median"] for b in bins])
    r = z[inside] - ref
    return {"rms": float(np.sqrt(np.mean(r**2))), "nmad": M.nmad(r), "n": int(inside.sum())}


def bootstrap_rmse_error(pred: np.ndarray, true: np.ndarray, n_boot: int = 500, seed: int = 0) -> float:
    """1-sigma uncertainty of the RMSE from resampling the evaluated objects (bootstrap,
    :func:`sim2obs.tasks.metrics.bootstrap_error`)."""
    return M.bootstrap_error(M.rmse, np.asarray(pred, float), np.asarray(true, float), n_boot=n_boot, seed=seed)


def resolution_table(rows: Sequence[dict], rmse_errors: dict[str, float] | None = None) -> list[dict]:
    """One row per network of the study (the ``resolution_<n>px`` methods and the ``cnn`` at full
    resolution), sorted by resolution, with RMSE (and its bootstrap 1-sigma error when
    ``rmse_errors`` has it), NMAD, bias and outlier fraction."""
    rmse_errors = rmse_errors or {}
    table = []
    for r in rows:
        info = r.get("info") or {}
        if "resolution_px" not in info or not (r["method"] == "cnn" or r["method"].startswith("resolution_")):
            continue  # the Fig. 5, colour and label-noise networks are not points of the study
        px = int(info["resolution_px"])
        m = r["metrics"]
        network = str(info.get("_target_") or info.get("model")).rsplit(".", 1)[-1]
        table.append({"resolution_px": px, "method": r["method"], "network": network,
                      "input_px": info.get("input_px"), "rmse": m["rmse"],
                      "rmse_err": rmse_errors.get(r["method"], float("nan")), "nmad": m["nmad"],
                      "bias_median": m["bias_median"], "outlier_frac": m["outlier_frac"],
                      "paper": RESOLUTION_PAPER_NOTES.get(px, "")})
    return sorted(table, key=lambda t: (t["resolution_px"], t["method"] != "cnn"))


def write_mzr_tables(task: "MetallicityTask", rows: list[dict], out_dir: Path) -> dict[str, np.ndarray]:
    """``mzr_bins.csv``, ``mzr_summary.csv`` and ``mzr.png`` (the ``cnn``, else the best method)
    on the evaluation split. Returns the predictions per method, aligned with the truth."""
    split, mcfg = task.config.eval_split, task.config.mzr
    truth = task.truth(split)
    mass, z_true = truth.extra["log_mstar"], truth.values[:, 0]
    edges = mass_edges(mass, mcfg.bin_width)
    true_bins = mzr_bins(mass, z_true, mcfg.bin_width, mcfg.min_count, edges)
    true_global = mzr_scatter(mass, z_true, true_bins)
    bin_rows = [{"method": "truth", **b} for b in true_bins]
    summary = [{"method": "truth", "mzr_rms": true_global["rms"], "mzr_nmad": true_global["nmad"],
                "n": true_global["n"], "rmse": 0.0}]
    preds = {}
    for row in rows:
        path = out_dir / row["method"] / row.get("predictions", PREDICTIONS_FILE.format(split=split))
        if not path.exists():
            continue
        p, _ = task.align(Predictions.load(path), split)
        z = preds[row["method"]] = p.values[:, 0]
        pb = mzr_bins(mass, z, mcfg.bin_width, mcfg.min_count, edges)
        g = mzr_scatter(mass, z, pb)
        bin_rows += [{"method": row["method"], **b} for b in pb]
        summary.append({"method": row["method"], "mzr_rms": g["rms"], "mzr_nmad": g["nmad"], "n": g["n"],
                        "rmse": row["metrics"]["rmse"]})
    write_csv_rows(out_dir / "mzr_bins.csv", bin_rows)
    write_csv_rows(out_dir / "mzr_summary.csv", summary)
    ref = "cnn" if "cnn" in preds else (min(rows, key=lambda r: r["value"])["method"] if preds else None)
    if task.config.plots and ref in preds:
        plot_mzr(mass, z_true, preds[ref], out_dir / "mzr.png", mcfg, label=ref)
    return preds


def resolution_steps(table: list[dict], preds: dict[str, np.ndarray], z_true: np.ndarray, n_boot: int,
                     seed: int) -> None:
    """Add to each row of the sorted resolution ``table`` (after the first) ``minus_lower``: its RMSE
    minus that of the next lower resolution, with the paired bootstrap 1σ error ``minus_lower_err``
    (the same resamples of the evaluation split for both) and the fraction of resamples where it is
    lower (``fraction_below_lower``): does the RMSE fall from one resolution to the next?"""
    from sim2obs.tasks.bootstrap import bootstrap_indices

    if len(z_true) < 2:
        return
    idx = bootstrap_indices(len(z_true), n_boot, seed=seed)

    def reps(z):
        return np.sqrt(np.mean((np.asarray(z, float)[idx] - z_true[idx]) ** 2, axis=1))

    for lower, row in zip(table[:-1], table[1:]):
        if lower["method"] in preds and row["method"] in preds:
            d = reps(preds[row["method"]]) - reps(preds[lower["method"]])
            row.update(minus_lower=row["rmse"] - lower["rmse"], minus_lower_err=float(np.std(d)),
                       fraction_below_lower=float(np.mean(d < 0)))


def write_resolution_study(task: "MetallicityTask", rows: list[dict], preds: dict[str, np.ndarray],
                           out_dir: Path) -> None:
    """``resolution_study.{json,csv,png}``: :func:`resolution_table` with bootstrap RMSE errors and
    the paired step to the next lower resolution (:func:`resolution_steps`)."""
    z_true = task.truth(task.config.eval_split).values[:, 0]
    errors = {m: bootstrap_rmse_error(z, z_true, seed=task.config.seed) for m, z in preds.items()}
    table = resolution_table(rows, errors)
    resolution_steps(table, preds, z_true, task.config.n_bootstrap, task.config.seed)
    for row in table:
        for key in ("minus_lower", "minus_lower_err", "fraction_below_lower"):
            row.setdefault(key, float("nan"))
    if table:
        text = json.dumps(table, indent=2) + "\n"
        atomic_write(out_dir / "resolution_study.json", lambda f: f.write(text), mode="w")
        write_csv_rows(out_dir / "resolution_study.csv", table)
        if task.config.plots:
            plot_resolution(table, rows, out_dir / "resolution_study.png")


def plot_mzr(log_mstar: np.ndarray, z_true: np.ndarray, z_pred: np.ndarray, path: Path, config: MZRConfig,
             label: str = "predicted") -> Path:
    """Wu & Boada (2019) Fig. 6: predicted Z against true M*, binned median and scatter of the
    prediction (red) and of the truth (black), the Tremonti et al. (2004) relation (eq. 3); upper
    panel: scatter per mass bin."""
    from sim2obs.simgen.population import mass_metallicity  # deferred: sim2obs.simgen takes ~2 s to import

    mass = np.asarray(log_mstar, float)
    edges = mass_edges(mass, config.bin_width)
    tb = mzr_bins(mass, z_true, config.bin_width, config.min_count, edges)
    pb = mzr_bins(mass, z_pred, config.bin_width, config.min_count, edges)
    fig = plots.new_figure(5.5, 6.0)
    top, ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 2.5]})
    density = plots.point_density(mass, z_pred)
    order = np.argsort(density)
    ax.scatter(mass[order], np.asarray(z_pred)[order], c=density[order], s=5, cmap="Greys", lw=0,
               vmin=-density.max() / 3)
    xs = np.linspace(mass.min(), mass.max(), 100)
    ax.plot(xs, mass_metallicity(xs), color="tab:blue", ls=":", lw=1.2, label="Tremonti+04 (W&B eq. 3)")
    for bins, colour, name in ((tb, "k", "true Z"), (pb, "tab:red", f"{label} Z")):
        if not bins:
            continue
        c = np.array([b["log_mstar_centre"] for b in bins])
        med = np.array([b["median"] for b in bins])
        rms = np.array([b["rms"] for b in bins])
        ax.plot(c, med, color=colour, lw=1.8, label=f"{name}: median")
        ax.plot(c, med + rms, color=colour, lw=1, ls="--", label=f"{name}: ±rms")
        ax.plot(c, med - rms, color=colour, lw=1, ls="--")
        size = 8 + 60 * np.array([b["n"] for b in bins]) / max(b["n"] for b in bins)
        top.scatter(c, rms, s=size, color=colour, label=f"{name} rms")
        if colour != "k":
            top.scatter(c, [b["nmad"] for b in bins], s=size, color="tab:purple", label=f"{name} NMAD")
    ax.set_xlabel("true log M* [M_sun]")
    ax.set_ylabel("12 + log(O/H)")
    ax.legend(fontsize=7, loc="lower right")
    top.set_ylabel("scatter [dex]")
    top.legend(fontsize=7, ncol=3)
    return plots.save_figure(fig, path)


def plot_resolution(table: list[dict], rows: Sequence[dict], path: Path) -> Path:
    """Wu & Boada (2019) Fig. 4: RMSE (red) and NMAD (violet) of the networks against image
    resolution; the random forest (triangles) and the constant mean (squares) for reference."""
    fig = plots.new_figure(5.5, 5.0)
    ax = fig.add_subplot()
    study = [t for t in table if t["method"] != "cnn"]
    px = np.array([t["resolution_px"] for t in table], float)
    if study:
        x = [t["resolution_px"] for t in study]
        name = study[0]["network"]
        ax.errorbar(x, [t["rmse"] for t in study], yerr=[t.get("rmse_err", np.nan) for t in study], fmt="o-",
                    color="tab:red", capsize=2, label=f"RMSE ({name}, re-binned)")
        ax.plot(x, [t["nmad"] for t in study], "o--", color="tab:purple", label=f"NMAD ({name}, re-binned)")
    for t in table:
        if t["method"] == "cnn":
            ax.plot([t["resolution_px"]], [t["rmse"]], "*", ms=11, color="tab:red", label=f"cnn RMSE ({t['network']})")
            ax.plot([t["resolution_px"]], [t["nmad"]], "*", ms=11, color="tab:purple",
                    label=f"cnn NMAD ({t['network']})")
    marks = {"random_forest": ("^", "random forest"), "mean": ("s", "constant mean")}
    for r in rows:
        if r["method"] in marks:
            marker, name = marks[r["method"]]
            for key, colour in (("rmse", "tab:red"), ("nmad", "tab:purple")):
                ax.axhline(r["metrics"][key], color=colour, lw=0.6, ls=":")
                ax.plot([px.max() * 1.25], [r["metrics"][key]], marker, mfc="none", color=colour,
                        label=f"{name} {key.upper()}")
    ax.set_xscale("log", base=2)
    ticks = sorted(set(int(p) for p in px))
    ax.set_xticks(ticks, labels=[str(t) for t in ticks])
    ax.set_xlabel("image side [px]")
    ax.set_ylabel("scatter of ΔZ [dex]")
    ax.legend(fontsize=6, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    return plots.save_figure(fig, path)


def fit_mzr_oracle(task: "MetallicityTask", degree: int = 3) -> np.polynomial.Polynomial:
    """The best smooth M*-only predictor the training split allows: a least-squares polynomial of
    ``degree`` in the *true* log M* fitted to the training labels (a reference that reads labels)."""
    rows = task.selection("train")
    mass = task.galaxy_set.column("log_mstar", "train").astype(np.float64)
    mass = mass if rows is None else mass[rows]
    return np.polynomial.Polynomial.fit(mass, task.labels("train")[:, 0], degree)


def oracle_comparison(task: "MetallicityTask", preds: dict[str, np.ndarray],
                      references: dict[str, np.ndarray] | None = None) -> list[dict]:
    """Each method's RMSE against two MZR-only oracles that read the *true* stellar mass (what M*
    alone can say; references that read labels, not methods): ``mzr_oracle``, the exact Tremonti
    MZR (Wu & Boada eq. 3), and ``mzr_fit_oracle``, a cubic in log M* fitted to the training split
    (:func:`fit_mzr_oracle`: no offset of the simulated sample from the published relation helps a
    method). ``references`` (e.g. :func:`~.references.image_truth_ceiling`) get rows like the
    methods', listed first. On the task's bootstrap resamples of the evaluation split
    (:func:`sim2obs.tasks.bootstrap.bootstrap_indices`, the same as the recorded errors): ``rmse``,
    ``rmse_err``, the paired differences ``rmse - oracle_rmse`` (``minus_oracle``) and
    ``rmse - fit_oracle_rmse`` (``minus_fit_oracle``) with their 1σ errors, and the fractions of
    resamples where the method is lower."""
    from sim2obs.simgen.population import mass_metallicity  # deferred: sim2obs.simgen takes ~2 s to import
    from sim2obs.tasks.bootstrap import bootstrap_indices, paired_differences, replicate_metrics, Replicates

    truth = task.truth(task.config.eval_split)
    z_true = truth.values[:, 0]
    oracles = {"mzr_oracle": mass_metallicity(truth.extra["log_mstar"]),
               "mzr_fit_oracle": fit_mzr_oracle(task)(truth.extra["log_mstar"])}
    idx = bootstrap_indices(len(z_true), task.config.n_bootstrap, seed=task.config.seed)

    def score(p, t):
        return {"rmse": float(np.sqrt(np.mean((p.values[:, 0] - t.values[:, 0]) ** 2)))}

    reps: dict[str, Replicates] = {}
    values: dict[str, float] = {}
    for name, z in {**oracles, **(references or {}), **preds}.items():
        p = Predictions(truth.ids, np.asarray(z, float).reshape(-1, 1), task.targets)
        reps[name] = replicate_metrics(score, p, truth, idx)
        values[name] = score(p, truth)["rmse"]
    diffs = {(d["method"], d["versus"]): d for d in paired_differences(reps, values, "rmse", reference=list(oracles))}
    out = []
    for name in values:
        row = {"method": name, "rmse": values[name], "rmse_err": reps[name].errors().get("rmse", float("nan")),
               "n": int(len(z_true))}
        for ref, key in (("mzr_oracle", "oracle"), ("mzr_fit_oracle", "fit_oracle")):
            d = diffs.get((name, ref))
            row.update({f"minus_{key}": d["difference"] if d else float("nan"),
                        f"minus_{key}_err": d["error"] if d else float("nan"),
                        f"fraction_below_{key}": d["fraction_lower"] if d else float("nan")})
        out.append(row)
    return out


def write_oracle_comparison(task: "MetallicityTask", preds: dict[str, np.ndarray], out_dir: Path) -> list[dict]:
    """``mzr_oracle.csv``: :func:`oracle_comparison` (the paper's test that images say more than M*),
    with the ``image_truth_ceiling`` reference row on simulated sets (:func:`~.references.image_truth_ceiling`;
    its LightGBM run in ``out_dir/image_truth_ceiling/``): what the exact values of everything the
    images show allow, so whether beating the oracle is possible at all on the set."""
    if len(task.truth(task.config.eval_split).ids) <= 1:
        return []
    ceiling = image_truth_ceiling(task, Path(out_dir) / "image_truth_ceiling")
    rows = oracle_comparison(task, preds, {} if ceiling is None else {"image_truth_ceiling": ceiling})
    if rows:
        write_csv_rows(Path(out_dir) / "mzr_oracle.csv", rows)
    return rows
