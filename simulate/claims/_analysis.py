"""Helpers the claims share: fitted rates, steps to a target, and figures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def loglog_slope(steps: Sequence[float], values: Sequence[float], start: float = 0.3) -> float:
    """Slope of ``log(value)`` against ``log(step)`` over the last ``1 - start`` of the run.

    For a sublinear rate ``f - f* ~ C / t^a`` this is ``-a``; positive or
    non-finite values only (``nan`` when fewer than 3 remain).
    """
    t = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    keep = (t >= start * t.max()) & (t > 0) & np.isfinite(v) & (v > 0)
    if keep.sum() < 3:
        return math.nan
    return float(np.polyfit(np.log(t[keep]), np.log(v[keep]), 1)[0])


def log_slope(steps: Sequence[float], values: Sequence[float], start: float = 0.3) -> float:
    """Slope of ``log(value)`` against ``step`` (a linear rate ``~ exp(-c t)`` gives ``-c``)."""
    t = np.asarray(steps, dtype=float)
    v = np.asarray(values, dtype=float)
    keep = (t >= start * t.max()) & np.isfinite(v) & (v > 0)
    if keep.sum() < 3:
        return math.nan
    return float(np.polyfit(t[keep], np.log(v[keep]), 1)[0])


def first_step_below(steps: Sequence[float], values: Sequence[float], target: float) -> int | None:
    """The first recorded step whose value is at most ``target`` (``None`` if never)."""
    for t, v in zip(steps, values, strict=True):
        if v is not None and np.isfinite(v) and v <= target:
            return int(t)
    return None


def fmt(value, digits: int = 3) -> str:
    """A table cell: ``-`` for missing, ``digits`` significant digits otherwise."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}"


def human_bytes(n: float) -> str:
    """``n`` bytes as B / kB / MB / GB (decimal units)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.3g} {unit}"
        n /= 1000.0
    return f"{n:.3g} GB"  # pragma: no cover


def line_plot(
    path: Path,
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    logy: bool = True,
) -> Path:
    """One PNG with a line per curve (label -> (x, y))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    for label, (x, y) in curves.items():
        ax.plot(x, y, label=label, marker="." if len(x) < 30 else None)
    ax.set_xscale("log" if logx else "linear")
    ax.set_yscale("log" if logy else "linear")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def tail_mean(values: Sequence[float | None], n: int = 5) -> float:
    """Mean of the last ``n`` recorded values (``None`` skipped; ``nan`` if none remain).

    A run's final quality measured this way is less sensitive to where the last
    evaluation happens to fall than its last value alone.
    """
    kept = [float(v) for v in values if v is not None][-n:]
    return float(np.mean(kept)) if kept else math.nan
