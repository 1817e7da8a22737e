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


def loglog_fit(
    x: Sequence[float], y: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """Least-squares slope of ``log y`` against ``log x`` and its Student-t interval.

    For ``y ~ C x^a`` this is ``a``; ``(nan, nan, nan)`` with fewer than three
    positive points (no residual left to estimate the interval).

    Examples
    --------
    >>> a, low, high = loglog_fit([1, 2, 4, 8], [3, 6.1, 11.9, 24.2])
    >>> round(a, 2), low < 1 < high
    (1.0, True)
    """
    from scipy import stats

    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys) & (xs > 0) & (ys > 0)
    if keep.sum() < 3:
        return math.nan, math.nan, math.nan
    fit = stats.linregress(np.log(xs[keep]), np.log(ys[keep]))
    half = stats.t.ppf(0.5 + confidence / 2, keep.sum() - 2) * fit.stderr
    return float(fit.slope), float(fit.slope - half), float(fit.slope + half)


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


def paired_interval(
    differences: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean of paired differences and its two-sided Student-t confidence interval.

    Parameters
    ----------
    differences : sequence of float
        One difference per pair (a run and its reference on the same seed).
    confidence : float
        Coverage of the interval.

    Returns
    -------
    mean, low, high : float
        ``nan`` when a difference is not finite; the interval is ``(-inf, inf)``
        with fewer than two pairs.

    Examples
    --------
    >>> mean, low, high = paired_interval([-0.84, -0.67, -0.95])
    >>> round(mean, 3), round(low, 3), round(high, 3)
    (-0.82, -1.17, -0.47)
    """
    from scipy import stats

    x = np.asarray(differences, dtype=float)
    if x.size == 0 or not np.all(np.isfinite(x)):
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, -math.inf, math.inf
    half = stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return mean, float(mean - half), float(mean + half)


def interval_plot(
    path: Path,
    series: dict[str, tuple[Sequence[float], Sequence[float], Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    hlines: dict[str, float] | None = None,
    logx: bool = False,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """One PNG of points with interval bars: label -> (x, mean, low, high); ``hlines`` labelled.

    With ``ylim``, a mean outside it is written at the edge of the axes instead of
    stretching them (a diverged run would squash the others).
    """
    plt, fig, ax = _figure()
    for i, (label, (x, mean, low, high)) in enumerate(series.items()):
        x, mean = np.asarray(x, dtype=float), np.asarray(mean, dtype=float)
        below = np.clip(mean - np.asarray(low, dtype=float), 0, None)
        above = np.clip(np.asarray(high, dtype=float) - mean, 0, None)
        shift = x * (1 + 0.03 * i) if logx else x  # side by side, not on top of each other
        ax.errorbar(shift, mean, yerr=[below, above], marker="o", capsize=3, label=label)
        if ylim is not None:
            for xi, yi in zip(shift, mean, strict=True):
                if not ylim[0] <= yi <= ylim[1]:
                    edge = min(max(yi, ylim[0]), ylim[1])
                    ax.annotate(f"{yi:.3g}", (xi, edge), ha="center", va="bottom", fontsize=8)
    if ylim is not None:
        ax.set_ylim(*ylim)
    for j, (label, y) in enumerate((hlines or {}).items()):
        ax.axhline(y, color="0.4", linestyle=("--", ":", "-.")[j % 3], linewidth=1, label=label)
    ax.set_xscale("log" if logx else "linear")
    return _save(plt, fig, ax, path, xlabel, ylabel, title)


def _figure():
    """pyplot (Agg), a figure and its axes, the size of every claim figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    return plt, fig, ax


def _save(plt, fig, ax, path: Path, xlabel: str, ylabel: str, title: str) -> Path:
    """Label, grid and legend ``ax``, write ``fig`` to ``path`` and close it."""
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
    plt, fig, ax = _figure()
    for label, (x, y) in curves.items():
        ax.plot(x, y, label=label, marker="." if len(x) < 30 else None)
    ax.set_xscale("log" if logx else "linear")
    ax.set_yscale("log" if logy else "linear")
    return _save(plt, fig, ax, path, xlabel, ylabel, title)


def tail_mean(values: Sequence[float | None], n: int = 5) -> float:
    """Mean of the last ``n`` recorded values (``None`` skipped; ``nan`` if none remain).

    A run's final quality measured this way is less sensitive to where the last
    evaluation happens to fall than its last value alone.
    """
    kept = [float(v) for v in values if v is not None][-n:]
    return float(np.mean(kept)) if kept else math.nan
