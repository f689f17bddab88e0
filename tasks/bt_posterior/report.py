"""The paper's figures and tables: the dropout-selection table, coverages and CRPS with bootstrap
errors, PIT histograms, the transformer's input/output figure, example posteriors (Fig. 2) and
``summary.md``."""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from sim2obs.atomic import atomic_write
from sim2obs.tasks import metrics as M
from sim2obs.tasks import plots
from sim2obs.tasks.base import PREDICTIONS_FILE, Predictions, Truth
from sim2obs.tasks.bt_posterior.config import N_BOOTSTRAP, NANOMAGGY_NJY

if TYPE_CHECKING:
    from sim2obs.tasks.bt_posterior.task import BTPosteriorTask

__all__ = ["calibration_with_errors", "write_summary"]


def _write_selection_table(recs: list[dict], targets: Sequence[str], workdir: Path) -> None:
    """``dropout_selection.csv`` / ``.md`` (validation coverage per rate) and
    ``dropout_selection.png`` (distance from nominal per rate)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    levels = list(recs[0]["pooled"])
    head = ["rate"] + [f"{t}_cov{float(lvl) * 100:.2f}" for t in targets for lvl in levels] + \
        [f"pooled_cov{float(lvl) * 100:.2f}" for lvl in levels] + \
        [f"{t}_calibration_error" for t in targets] + [f"{t}_nmad_ratio" for t in targets] + \
        [f"{t}_width_scale" for t in targets] + ["best_val_loss", "raw_distance", "distance", "selected"]
    rows = []
    for r in recs:
        rows.append([f"{r['rate']:g}"] + [f"{r['coverage'][t][lvl]:.4f}" for t in targets for lvl in levels]
                    + [f"{r['pooled'][lvl]:.4f}" for lvl in levels]
                    + [f"{r['calibration_error'][t]:.4f}" for t in targets]
                    + [f"{r['nmad_ratio'][t]:.4f}" for t in targets]
                    + [f"{r['width_scale'][t]:.4f}" for t in targets]
                    + [f"{r['train']['best_val_loss']:.5g}", f"{r['raw_distance']:.4f}", f"{r['distance']:.4f}",
                       str(bool(r["selected"]))])
    csv = "\n".join(",".join(x) for x in [head] + rows) + "\n"
    atomic_write(workdir / "dropout_selection.csv", lambda f: f.write(csv), mode="w")
    md = ["Validation coverage per dropout rate (nominal 68.27 / 95.45 / 99.73 %); distance = mean |empirical - "
          "nominal| over levels and targets of the coverages shown (raw distance: before the width "
          "recalibration, the paper's criterion; distance: of the reported, recalibrated posterior when "
          "recalibrate is on); the selected rate has the smallest distance. Width scale: the per-target factor "
          "the recalibration fits on validation.", "",
          "| rate | " + " | ".join(f"{t} cov (68/95/99)" for t in targets) + " | pooled | width scale | raw distance "
          "| distance | selected |", "|---|" + "---|" * (len(targets) + 5)]
    for r in recs:
        cells = [f"{r['rate']:g}"] + ["/".join(f"{r['coverage'][t][lvl]:.3f}" for lvl in levels) for t in targets]
        cells += ["/".join(f"{r['pooled'][lvl]:.3f}" for lvl in levels),
                  "/".join(f"{r['width_scale'][t]:.3f}" for t in targets), f"{r['raw_distance']:.4f}",
                  f"{r['distance']:.4f}",
                  "**yes**" if r["selected"] else ""]
        md.append("| " + " | ".join(cells) + " |")
    text = "\n".join(md) + "\n"
    atomic_write(workdir / "dropout_selection.md", lambda f: f.write(text), mode="w")

    fig = plots.new_figure(5.0, 3.8)
    ax = fig.add_subplot()
    rates = [r["rate"] for r in recs]
    for lvl in levels:
        ax.plot(rates, [r["pooled"][lvl] for r in recs], marker="o", label=f"nominal {float(lvl):.4f}")
        ax.axhline(float(lvl), color="0.6", lw=0.8, ls=":")
    sel = [r["rate"] for r in recs if r["selected"]][0]
    ax.axvline(sel, color="tab:red", lw=1, label=f"selected {sel:g}")
    ax.set_xlabel("dropout rate")
    ax.set_ylabel("validation coverage (pooled)")
    ax.legend(fontsize=7)
    plots.save_figure(fig, workdir / "dropout_selection.png")


def calibration_with_errors(samples: np.ndarray, truth: np.ndarray, targets: Sequence[str], seed: int = 0,
                            n_boot: int = N_BOOTSTRAP, point: np.ndarray | None = None) -> dict:
    """Per target: coverages at 68.27/95.45/99.73 %, CRPS and (with ``point`` (N, T)) the NMAD of
    the point estimate, each with its 1σ bootstrap error (:func:`~sim2obs.tasks.metrics.bootstrap_error`,
    test objects resampled), the PIT KS distance and the PIT histogram (10 bins). ``samples``
    (S, N, T), ``truth`` (N, T)."""
    rows, hists = [], {}
    for k, t in enumerate(targets):
        s, y = samples[:, :, k], truth[:, k]
        row: dict[str, Any] = {"target": t}
        if point is not None:
            res = point[:, k] - y
            row["nmad"], row["nmad_err"] = M.nmad(res), M.bootstrap_error(M.nmad, res, n_boot=n_boot, seed=seed)
        for key, level in M.COVERAGE_LEVELS.items():
            inside = M.inside_interval(s, y, level)
            row[key], row[f"{key}_err"] = float(inside.mean()), M.bootstrap_error(np.mean, inside, n_boot=n_boot,
                                                                                  seed=seed)
        per_object = np.array([M.crps(s[:, i:i + 1], y[i:i + 1]) for i in range(len(y))])
        row["crps"], row["crps_err"] = float(per_object.mean()), M.bootstrap_error(np.mean, per_object,
                                                                                   n_boot=n_boot, seed=seed)
        row["pit_ks"] = M.pit_ks(s, y, seed=seed)
        hists[t] = M.pit_histogram(s, y, bins=10, seed=seed).tolist()
        rows.append(row)
    return {"rows": rows, "pit_histogram": hists}


def _bootstrap_lines(boot_rows: list[dict], targets: Sequence[str]) -> list[str]:
    if not boot_rows:
        return []
    out = [f"Coverage of the central 68.27 / 95.45 / 99.73 % intervals, CRPS and the point estimate's NMAD, "
           f"± 1σ bootstrap error ({N_BOOTSTRAP} resamples of the test objects); PIT KS = distance of the "
           "PIT distribution from uniform (pit_histogram.csv).", "",
           "| method | target | cov68 | cov95 | cov99.7 | CRPS | PIT KS | NMAD |", "|---|---|---|---|---|---|---|---|"]
    for b in boot_rows:
        cov = [f"{b[k]:.3f} ± {b[k + '_err']:.3f}" for k in M.COVERAGE_LEVELS]
        out.append(f"| {b['method']} | {b['target']} | " + " | ".join(cov)
                   + f" | {b['crps']:.4g} ± {b['crps_err']:.2g} | {b['pit_ks']:.3f} | "
                   f"{b['nmad']:.4g} ± {b['nmad_err']:.2g} |")
    return out + [""]


def _plot_pit(p: Predictions, truth: Truth, targets: Sequence[str], path: Path, seed: int) -> Path:
    """PIT histograms, one panel per target (flat at 1 when the posteriors are calibrated)."""
    fig = plots.new_figure(3.0 * len(targets), 2.4)
    for k, t in enumerate(targets):
        ax = fig.add_subplot(1, len(targets), k + 1)
        frac = M.pit_histogram(p.samples[:, :, k], truth.values[:, k], bins=10, seed=seed)
        ax.bar(np.arange(10) / 10 + 0.05, frac * 10, width=0.1, color="tab:blue", alpha=0.7)
        ax.axhline(1.0, color="k", lw=0.8, ls=":")
        ax.set_xlabel(f"PIT {t}", fontsize=7)
        ax.tick_params(labelsize=6)
    return plots.save_figure(fig, path)


def _stn_diagnostics(task: "BTPosteriorTask", model, images: np.ndarray, split: str, workdir: Path, device) -> dict:
    """Figure ``stn_input_output.png`` (input with the sampled region outlined / transformer
    output, for test galaxies with secondaries first) and the mean area fraction the
    transformer samples (|det A|; < 1: it zooms in), with and without secondaries."""
    n_sec = task.galaxy_set.column("n_secondary", split) if "n_secondary" in task.galaxy_set.schema.column_names \
        else np.zeros(len(images), int)
    stn = model.stn
    with torch.no_grad():
        thetas, outs = [], []
        for start in range(0, len(images), 256):
            x = torch.from_numpy(np.ascontiguousarray(images[start:start + 256])).to(device)
            thetas.append(stn.theta(x).float().cpu().numpy())
        theta = np.concatenate(thetas)
        area = np.abs(np.linalg.det(theta[:, :, :2]))
        order = np.concatenate([np.flatnonzero(n_sec > 0), np.flatnonzero(n_sec == 0)])
        pick = order[:min(task.config.stn_plot_galaxies, len(order))]
        x = torch.from_numpy(np.ascontiguousarray(images[pick])).to(device)
        outs = stn(x).float().cpu().numpy()
    k = len(pick)
    fig = plots.new_figure(1.9 * k + 0.4, 4.0)
    side = images.shape[-1]
    corners = np.array([[-1, -1, 1], [1, -1, 1], [1, 1, 1], [-1, 1, 1], [-1, -1, 1]], dtype=float)
    for j, i in enumerate(pick):
        vmin, vmax = np.percentile(images[i, 0], [1, 99.8])
        ax = fig.add_subplot(2, k, j + 1)
        ax.imshow(images[i, 0], origin="lower", cmap="gray", vmin=vmin, vmax=vmax)
        box = corners @ theta[i].T  # normalised input coordinates of the output frame's corners
        ax.plot((box[:, 0] + 1) * side / 2 - 0.5, (box[:, 1] + 1) * side / 2 - 0.5, color="tab:red", lw=1)
        ax.set_title(f"input ({int(n_sec[i])} sec.)", fontsize=7)
        ax.set_xlim(-0.5, side - 0.5)
        ax.set_ylim(-0.5, side - 0.5)
        ax.axis("off")
        ax = fig.add_subplot(2, k, k + j + 1)
        ax.imshow(outs[j, 0], origin="lower", cmap="gray", vmin=vmin, vmax=vmax)
        ax.set_title(f"STN output (area {area[i]:.2f})", fontsize=7)
        ax.axis("off")
    plots.save_figure(fig, Path(workdir) / "stn_input_output.png")
    with_sec = area[n_sec > 0]
    without = area[n_sec == 0]
    return {"area_fraction_mean": float(area.mean()),
            "area_fraction_with_secondaries": float(with_sec.mean()) if len(with_sec) else None,
            "area_fraction_without_secondaries": float(without.mean()) if len(without) else None,
            "translation_mean_px": float(np.mean(np.hypot(theta[:, 0, 2], theta[:, 1, 2])) * side / 2)}


def _plot_example_posteriors(p: Predictions, truth: Truth, targets: Sequence[str], units: Sequence[str],
                             path: Path) -> Path:
    """Marginal posteriors of three evaluation galaxies (histograms of the samples) with the
    truth, mode/point estimate and median marked (the paper's Fig. 2)."""
    rows = min(3, len(p.ids))
    fig = plots.new_figure(3.0 * len(targets), 2.2 * rows)
    for r in range(rows):
        for k, (t, u) in enumerate(zip(targets, units)):
            ax = fig.add_subplot(rows, len(targets), r * len(targets) + k + 1)
            s = p.samples[:, r, k]
            ax.hist(s, bins=min(40, max(5, len(s) // 5)), color="tab:blue", alpha=0.7)
            ax.axvline(truth.values[r, k], color="gold", lw=2, label="truth")
            ax.axvline(p.values[r, k], color="tab:red", lw=1, label="point")
            ax.axvline(np.median(s), color="k", lw=1, ls="--", label="median")
            ax.set_xlabel(f"{t} [{u}]" if u else t, fontsize=7)
            ax.tick_params(labelsize=6)
            if r == 0 and k == 0:
                ax.legend(fontsize=6)
    return plots.save_figure(fig, path)


def write_summary(task: "BTPosteriorTask", rows: list[dict], out_dir: Path) -> None:
    """``summary.md`` (per-method accuracy and coverage, beside the paper's sigmas; coverages
    and CRPS with bootstrap errors), ``coverage_curves.csv`` (nominal vs empirical coverage
    per method and target), ``coverage_bootstrap.csv`` (the 68/95/99.7 % coverages and CRPS
    with their 1σ bootstrap errors, ``N_BOOTSTRAP`` resamples of the test objects) and
    ``pit_histogram.csv`` (fraction of test objects per PIT decile)."""
    if not rows:
        return
    split = task.config.eval_split
    lines = ["# bt_posterior: summary", "",
             f"Evaluation split `{split}`; point estimate in `values`: posterior {task.config.point_estimate}. "
             "sigma = standard deviation of the residuals (the paper's sigma).", "",
             "| method | kind | posterior_score | " + " | ".join(
                 f"{t} nmad | {t} sigma | {t} cov68 | {t} cov95" for t in task.targets) + " | cov68 | cov95 | "
             "cov99 | calib. error |",
             "|" + "---|" * (4 + 4 * len(task.targets) + 4)]
    for r in rows:
        m = r["metrics"]
        cells = [r["method"], r["kind"], f"{m['posterior_score']:.4f}"]
        for t in task.targets:
            sigma = math.sqrt(max(m[f"{t}/rmse"] ** 2 - m[f"{t}/bias_mean"] ** 2, 0.0))
            cells += [f"{m[f'{t}/nmad']:.4g}", f"{sigma:.4g}", f"{m[f'{t}/coverage_68']:.3f}",
                      f"{m[f'{t}/coverage_95']:.3f}"]
        cells += [f"{m[k]:.3f}" for k in ("coverage_68", "coverage_95", "coverage_99", "calibration_error")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Paper (Ghosh et al. 2021, HSC-Wide g band, z < 0.25 real galaxies, Simard+2011 truth, "
              "after transfer learning; not our data): sigma(B/T) = 0.19, sigma(R_e) = 0.38 arcsec, "
              f"sigma(flux) = 4.7e4 nJy = {4.7e4 / NANOMAGGY_NJY:.1f} nanomaggy; coverage roughly nominal at "
              "dropout 0.1 (not quantified).", ""]
    curve_rows, boot_rows, pit_rows = ["method,target,nominal,empirical"], [], []
    for r in rows:
        path = out_dir / r["method"] / PREDICTIONS_FILE.format(split=split)
        if not path.exists():
            continue
        p, truth = task.align(Predictions.load(path), split)
        for k, t in enumerate(task.targets):
            nominal, empirical = M.coverage_curve(p.samples[:, :, k], truth.values[:, k])
            curve_rows += [f"{r['method']},{t},{a:.4f},{b:.4f}" for a, b in zip(nominal, empirical)]
        cal = calibration_with_errors(p.samples, truth.values, task.targets, seed=task.config.seed,
                                      point=p.values)
        boot_rows += [{"method": r["method"], **row} for row in cal["rows"]]
        pit_rows += [f"{r['method']},{t},{j / 10:.1f},{(j + 1) / 10:.1f},{f:.4f}"
                     for t, hist in cal["pit_histogram"].items() for j, f in enumerate(hist)]
    lines += _bootstrap_lines(boot_rows, task.targets)
    text = "\n".join(lines)
    atomic_write(out_dir / "summary.md", lambda f: f.write(text), mode="w")
    csv = "\n".join(curve_rows) + "\n"
    atomic_write(out_dir / "coverage_curves.csv", lambda f: f.write(csv), mode="w")
    keys = ["method", "target", "coverage_68", "coverage_68_err", "coverage_95", "coverage_95_err",
            "coverage_99", "coverage_99_err", "crps", "crps_err", "pit_ks", "nmad", "nmad_err"]
    csv = "\n".join([",".join(keys)] + [",".join(str(b[k]) if isinstance(b[k], str) else f"{b[k]:.5g}"
                                                 for k in keys) for b in boot_rows]) + "\n"
    atomic_write(out_dir / "coverage_bootstrap.csv", lambda f: f.write(csv), mode="w")
    csv = "\n".join(["method,target,pit_lo,pit_hi,fraction"] + pit_rows) + "\n"
    atomic_write(out_dir / "pit_histogram.csv", lambda f: f.write(csv), mode="w")
