"""Plots every task writes (PNG, matplotlib Agg canvases: no display, thread-safe).

Each function writes one file atomically and returns its path.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from sim2obs.atomic import atomic_write


def new_figure(width: float = 5.0, height: float = 4.0):
    """A matplotlib ``Figure`` on an Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return path


def point_density(x: np.ndarray, y: np.ndarray, bins: int = 40) -> np.ndarray:
    """Per-point density from a 2-D histogram (cheap stand-in for a KDE colour)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) == 0:
        return np.zeros(0)
    h, xe, ye = np.histogram2d(x, y, bins=bins)
    ix = np.clip(np.searchsorted(xe, x, side="right") - 1, 0, bins - 1)
    iy = np.clip(np.searchsorted(ye, y, side="right") - 1, 0, bins - 1)
    return h[ix, iy]


def predicted_vs_true(true: np.ndarray, pred: np.ndarray, path: str | os.PathLike, label: str = "",
                      log: bool = False) -> Path:
    """Scatter of prediction against truth, coloured by point density, with the 1:1 line and
    a running median in bins of the truth."""
    true, pred = np.asarray(true, float), np.asarray(pred, float)
    fig = new_figure()
    ax = fig.add_subplot()
    density = point_density(true, pred)
    order = np.argsort(density)
    sc = ax.scatter(true[order], pred[order], c=density[order], s=6, cmap="viridis", lw=0)
    fig.colorbar(sc, ax=ax, label="points per bin")
    lo, hi = np.nanmin([true.min(), pred.min()]), np.nanmax([true.max(), pred.max()])
    ax.plot([lo, hi], [lo, hi], color="k", lw=1, label="1:1")
    if len(true) >= 20:
        edges = np.quantile(true, np.linspace(0, 1, 11))
        centres, medians = [], []
        for a, b in zip(edges[:-1], edges[1:]):
            sel = (true >= a) & (true <= b)
            if sel.sum() >= 3:
                centres.append(np.median(true[sel]))
                medians.append(np.median(pred[sel]))
        ax.plot(centres, medians, color="tab:red", lw=1.5, label="running median")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(f"true {label}")
    ax.set_ylabel(f"predicted {label}")
    ax.legend(loc="upper left", fontsize=8)
    return save_figure(fig, path)


def residual_histogram(residuals: np.ndarray, path: str | os.PathLike, label: str = "residual") -> Path:
    """Histogram of residuals with their median and ±NMAD marked."""
    r = np.asarray(residuals, float)
    fig = new_figure(5.0, 3.5)
    ax = fig.add_subplot()
    ax.hist(r, bins=min(60, max(10, len(r) // 10)), color="tab:blue", alpha=0.8)
    med = float(np.median(r))
    nmad = 1.4826 * float(np.median(np.abs(r - med)))
    ax.axvline(0.0, color="k", lw=1)
    ax.axvline(med, color="tab:red", lw=1.5, label=f"median {med:.3g}")
    for s in (-1, 1):
        ax.axvline(med + s * nmad, color="tab:red", ls="--", lw=1, label="±NMAD" if s > 0 else None)
    ax.set_xlabel(label)
    ax.set_ylabel("objects")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def coverage_curves(samples: np.ndarray, truth: np.ndarray, names: Sequence[str], path: str | os.PathLike) -> Path:
    """Empirical versus nominal coverage of central credible intervals, one line per target
    (``samples`` (S, N, T), ``truth`` (N, T))."""
    from sim2obs.tasks.metrics import coverage_curve

    levels = np.linspace(0.05, 0.99, 20)
    fig = new_figure(4.5, 4.5)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="k", lw=1, label="calibrated")
    for k, name in enumerate(names):
        nominal, empirical = coverage_curve(samples[:, :, k], truth[:, k], levels)
        ax.plot(nominal, empirical, marker="o", ms=3, label=name)
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("empirical coverage")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def bar_table(labels: Sequence[str], values: Sequence[float], path: str | os.PathLike, xlabel: str) -> Path:
    """Horizontal bar chart (importances, ablations): one bar per label, top first."""
    fig = new_figure(6.0, 0.3 * len(labels) + 1.2)
    ax = fig.add_subplot()
    y = np.arange(len(labels))[::-1]
    ax.barh(y, values, color="tab:green")
    ax.set_yticks(y, labels=list(labels), fontsize=7)
    ax.set_xlabel(xlabel)
    return save_figure(fig, path)
