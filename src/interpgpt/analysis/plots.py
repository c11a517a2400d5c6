"""Figures shared by every analysis: heatmaps and line plots, written atomically as PNG.

Figures are built with matplotlib's object API (`matplotlib.figure.Figure`, which
renders through the Agg canvas) rather than `pyplot`, so plotting never touches a
global figure manager or a GUI backend and is safe inside tests and worker
processes. Each helper takes plain arrays plus labels and returns the path it
wrote; the write goes through `io.atomic_path`, so a killed run never leaves a
truncated PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from interpgpt.io import atomic_path

DPI = 120


@dataclass
class HeatmapPanel:
    """One matrix to draw as an image, rows top to bottom."""

    matrix: np.ndarray
    """2-D values, shape (rows, cols)."""
    title: str = ""
    """Panel title."""
    xlabel: str = ""
    """Label of the column axis."""
    ylabel: str = ""
    """Label of the row axis."""
    xticklabels: Sequence[str] | None = None
    """One label per column; None for matplotlib's default ticks."""
    yticklabels: Sequence[str] | None = None
    """One label per row; None for matplotlib's default ticks."""
    annotate: bool = False
    """Write each cell's value in the cell (only sensible for small matrices)."""
    outlined: Sequence[tuple[int, int]] = ()
    """(row, col) cells to outline, e.g. the pairs an assignment chose."""


@dataclass
class Series:
    """One line of a line plot."""

    x: Sequence[float] | np.ndarray
    """Abscissae."""
    y: Sequence[float] | np.ndarray
    """Ordinates, one per abscissa."""
    label: str = ""
    """Legend entry; empty for none."""
    marker: str | None = None
    """Matplotlib marker, e.g. "o"; None for a plain line."""


@dataclass
class LinePanel:
    """One axes of a line plot."""

    series: list[Series] = field(default_factory=list)
    """The lines to draw."""
    title: str = ""
    """Panel title."""
    xlabel: str = ""
    """Label of the x axis."""
    ylabel: str = ""
    """Label of the y axis."""
    logy: bool = False
    """Logarithmic y axis (for probabilities spanning orders of magnitude)."""
    xticks: Sequence[float] | None = None
    """Tick positions on the x axis; None for matplotlib's default."""
    xticklabels: Sequence[str] | None = None
    """Labels for `xticks`."""


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Render `fig` to `path` as PNG, atomically."""
    with atomic_path(path) as tmp:
        # The temporary name ends in ".tmp", so the format must be explicit.
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    return Path(path)


def save_heatmaps(
    path: str | os.PathLike[str],
    panels: Sequence[HeatmapPanel],
    *,
    suptitle: str = "",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    colorbar_label: str = "",
    panel_size: tuple[float, float] = (5.0, 4.5),
) -> Path:
    """Side-by-side heatmaps sharing one colour scale (taken over all panels unless given)."""
    if not panels:
        raise ValueError("save_heatmaps needs at least one panel")
    values = np.concatenate([np.asarray(p.matrix, dtype=float).ravel() for p in panels])
    finite = values[np.isfinite(values)]
    lo = vmin if vmin is not None else (float(finite.min()) if finite.size else 0.0)
    hi = vmax if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    fig = Figure(figsize=(panel_size[0] * len(panels), panel_size[1]))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    image = None
    for ax, panel in zip(axes, panels, strict=True):
        image = _draw_heatmap(ax, panel, cmap, lo, hi)
    assert image is not None  # panels is non-empty
    fig.colorbar(image, ax=list(axes), label=colorbar_label, shrink=0.9)
    if suptitle:
        fig.suptitle(suptitle)
    return save_figure(fig, path)


def _draw_heatmap(ax, panel: HeatmapPanel, cmap: str, lo: float, hi: float):
    matrix = np.asarray(panel.matrix, dtype=float)
    image = ax.imshow(matrix, aspect="auto", cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_title(panel.title)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    if panel.xticklabels is not None:
        ax.set_xticks(range(matrix.shape[1]), list(panel.xticklabels), rotation=90, fontsize=6)
    if panel.yticklabels is not None:
        ax.set_yticks(range(matrix.shape[0]), list(panel.yticklabels), fontsize=6)
    for row, col in panel.outlined:
        ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", lw=1))
    if panel.annotate:
        for (row, col), value in np.ndenumerate(matrix):
            r, g, b, _ = image.cmap(image.norm(value))
            colour = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            ax.text(col, row, f"{value:.2g}", ha="center", va="center", fontsize=6, color=colour)
    return image


def save_line_plot(
    path: str | os.PathLike[str],
    panels: Sequence[LinePanel],
    *,
    suptitle: str = "",
    sharey: bool = True,
    panel_size: tuple[float, float] = (5.5, 4.0),
) -> Path:
    """One or more line-plot panels side by side, with legends and a light grid."""
    if not panels:
        raise ValueError("save_line_plot needs at least one panel")
    fig = Figure(figsize=(panel_size[0] * len(panels), panel_size[1]), layout="tight")
    axes = fig.subplots(1, len(panels), sharey=sharey, squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        for series in panel.series:
            ax.plot(series.x, series.y, label=series.label or None, lw=2, marker=series.marker)
        ax.set_title(panel.title)
        ax.set_xlabel(panel.xlabel)
        ax.set_ylabel(panel.ylabel)
        if panel.logy:
            ax.set_yscale("log")
        if panel.xticks is not None:
            ax.set_xticks(list(panel.xticks), panel.xticklabels)
        if any(series.label for series in panel.series):
            ax.legend()
        ax.grid(alpha=0.3)
    if suptitle:
        fig.suptitle(suptitle)
    return save_figure(fig, path)
