"""PNG plots of a run (matplotlib, Agg backend): loss vs steps and bytes, test error, sweeps.

Every figure has a title (run, model, ``d``, ``W``) and its legend outside the
axes. Each job gets its own colour and line style (colour by algorithm and
style by sweep case when those fit, else a distinct pair per job). The y range
is that of the jobs that did not diverge (and every job's start), so a blown-up
curve is clipped at the top instead of squashing the others.
"""

from __future__ import annotations

import math
from pathlib import Path

from .network import describe
from .runner import target_threshold

LINESTYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 4))]
MARKERS = ["", "o", "s", "^", "v", "D"]
FIGSIZE = (7.5, 4.2)
LEGEND = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def styles(results: list) -> dict[str, dict]:
    """Line keywords for each job label: no two jobs share colour, line style and marker.

    Colour by algorithm and line style by sweep case when there are at most 10
    algorithms and 6 cases; otherwise job ``i`` gets colour ``i % 10``, line
    style ``(i // 10) % 6`` and, beyond 60 jobs, a marker.
    """
    from matplotlib import colormaps

    colors = colormaps["tab10"].colors
    algos = list(dict.fromkeys(r.algorithm for r in results))
    cases = list(dict.fromkeys(r.case for r in results))
    grid = len(algos) <= len(colors) and len(cases) <= len(LINESTYLES)
    out = {}
    for i, r in enumerate(results):
        if grid:
            color, style, marker = algos.index(r.algorithm), cases.index(r.case), 0
        else:
            color, style = i % len(colors), (i // len(colors)) % len(LINESTYLES)
            marker = (i // (len(colors) * len(LINESTYLES))) % len(MARKERS)
        out[r.label] = {
            "color": colors[color],
            "linestyle": LINESTYLES[style],
            "marker": MARKERS[marker],
            "markevery": 0.2,
        }
    return out


def _legend_label(result) -> str:
    if result.status == "diverged":
        return f"{result.label} (diverged @ {result.steps})"
    return result.label


def _metric(rows_by_job: dict) -> str:
    """``suboptimality`` where every job has it (log scale works), else ``loss``."""
    everywhere = all(
        rows and all(r.get("suboptimality") is not None for r in rows)
        for rows in rows_by_job.values()
    )
    return "suboptimality" if everywhere else "loss"


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _y_range(curves: dict, results: list, log: bool) -> tuple[float, float] | None:
    """Limits that hold every job that did not diverge and every job's start."""
    diverged = {r.label for r in results if r.status == "diverged"}
    kept, starts = [], []
    for label, ys in curves.items():
        ys = _finite(ys)
        if log:
            ys = [y for y in ys if y > 0]
        starts += ys[:1]
        kept += ys if label not in diverged else ys[:1]
    if not kept:
        return None
    low, high = min(kept), max(kept + starts)
    if log:
        return low / 1.5, high * 1.5
    pad = 0.05 * (high - low) or 0.05 * abs(high) or 1.0
    return low - pad, high + pad


def _finish(ax, title: str) -> None:
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", **LEGEND)


def _threshold(results: list, rows_by_job: dict, target: dict | None) -> float | None:
    """The target's threshold when every job shares it (one case, or an absolute target)."""
    values = {target_threshold(target, (rows_by_job.get(r.label) or [None])[0]) for r in results}
    return values.pop() if len(values) == 1 else None


def _curves_figure(plt, results, rows_by_job, x_key, metric, title, target):
    fig, ax = plt.subplots(figsize=FIGSIZE)
    style = styles(results)
    curves = {}
    for r in results:
        rows = rows_by_job.get(r.label, [])
        if x_key == "step":
            points = [(row["step"], row[metric]) for row in rows]
        elif x_key == "sim_time":
            points = [(row["sim_time"], row[metric]) for row in rows]
        else:  # bytes: the first row (step 0) has sent nothing, and a log axis starts above 0
            points = [((row["upload"] or 0) + (row["download"] or 0), row[metric]) for row in rows]
            points = [(x, y) for x, y in points if x > 0]
        curves[r.label] = [y for _, y in points]
        ax.plot(
            [x for x, _ in points],
            [math.nan if y is None else y for _, y in points],
            label=_legend_label(r),
            **style[r.label],
        )
    log = all(y > 0 for ys in curves.values() for y in _finite(ys))
    if log:
        ax.set_yscale("log")
    limits = _y_range(curves, results, log)
    if limits:
        ax.set_ylim(*limits)
    if x_key == "bytes":
        xs = [x for line in ax.get_lines() for x in line.get_xdata()]
        ax.set_xscale("log")
        if xs:
            ax.set_xlim(min(xs), max(xs) * 1.2)
    threshold = _threshold(results, rows_by_job, target) if target else None
    if threshold is not None and target["metric"] == metric:
        ax.axhline(threshold, color="0.3", linewidth=0.8, linestyle="--", label="target")
    xlabel = {"step": "steps", "bytes": "bytes sent per worker (up + down), log scale"}
    ax.set(
        xlabel=xlabel.get(x_key, x_key),
        ylabel="f - f*" if metric == "suboptimality" else "training loss",
    )
    _finish(ax, title)
    return fig


def _error_figure(plt, results, rows_by_job, title, target):
    """Test error, 1 - accuracy, on a log axis: 0.95 and 0.99 are far apart."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    style = styles(results)
    curves = {}
    for r in results:
        rows = [row for row in rows_by_job.get(r.label, []) if row.get("test_accuracy") is not None]
        errors = [1.0 - row["test_accuracy"] for row in rows]
        curves[r.label] = errors
        ax.plot([row["step"] for row in rows], errors, label=_legend_label(r), **style[r.label])
    ax.set_yscale("log")
    limits = _y_range(curves, results, log=True)
    if limits:
        ax.set_ylim(limits[0], min(limits[1], 1.0))
    if target and target["metric"] == "test_accuracy":
        ax.axhline(
            1.0 - target["value"], color="0.3", linewidth=0.8, linestyle="--", label="target"
        )
    ax.set(xlabel="steps", ylabel="test error (1 - accuracy), log scale")
    _finish(ax, title)
    return fig


def _categorical(values: list) -> bool:
    return any(isinstance(v, (str, bool)) or not isinstance(v, (int, float)) for v in values)


SWEEP_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h"]


def _sweep_figure(plt, results, rows_by_job, key, metric, title, target, steps):
    """Final metric and steps to target against the first swept key, one series per algorithm.

    A categorical key (``"coordinate"``, ``"rotated"``) gets one slot per value with the
    algorithms' points side by side; a numeric one a line, on a log axis when its values
    span a factor of 10 or more, with a marker per algorithm, each smaller than the one
    before so that equal values stay visible. Under a relative target the final metric
    is shown as a fraction of its start, next to the target. A job that missed the
    target is an open marker at the run's length; a diverged one an ``x`` there.
    """
    from matplotlib.lines import Line2D

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    values = list(dict.fromkeys(r.case_values.get(key) for r in results))
    categorical = _categorical(values)
    algos = list(dict.fromkeys(r.algorithm for r in results))
    look = styles(results)
    relative = bool(target and target["relative"] and target["metric"] == metric)
    width = 0.6 / max(len(algos), 1)
    for i, algo in enumerate(algos):
        mine = [r for r in results if r.algorithm == algo]
        xs = [r.case_values.get(key) for r in mine]
        if categorical:
            xs = [values.index(x) + (i - (len(algos) - 1) / 2) * width for x in xs]
        kw = {
            "color": look[mine[0].label]["color"],
            "marker": SWEEP_MARKERS[i % len(SWEEP_MARKERS)],
            "markersize": max(9 - 1.5 * i, 3),
            "linestyle": "none" if categorical else LINESTYLES[i % len(LINESTYLES)],
        }
        finals = []
        for r in mine:
            value = r.final.get(metric)
            start = (rows_by_job.get(r.label) or [{}])[0].get(metric) if relative else 1.0
            finals.append(math.nan if value is None or not start else value / start)
        axes[0].plot(xs, finals, label=algo, **kw)
        hit = [(x, r.steps_to_target) for x, r in zip(xs, mine, strict=True)]
        hit = [(x, h) for x, h in hit if h is not None]
        axes[1].plot([h[0] for h in hit], [h[1] for h in hit], label=algo, **kw)
        for status, marker, face in (("done", "o", "none"), ("diverged", "x", kw["color"])):
            missed = [
                x
                for x, r in zip(xs, mine, strict=True)
                if r.steps_to_target is None and r.status == status
            ]
            axes[1].plot(
                missed, [steps] * len(missed), marker, mfc=face, color=kw["color"], linestyle=""
            )
    axes[1].axhline(steps, color="0.5", linewidth=0.8, linestyle=":")
    name = "f - f*" if metric == "suboptimality" else metric
    ylabel = f"final {name} / start" if relative else f"final {name}"
    for ax, label in zip(axes, [ylabel, "steps to target"], strict=True):
        ax.set(xlabel=key, ylabel=label)
        ax.grid(alpha=0.3, which="both")
        if categorical:
            ax.set_xticks(range(len(values)), [str(v) for v in values])
            ax.set_xlim(-0.5, len(values) - 0.5)
        elif all(v > 0 for v in values) and max(values) >= 10 * min(values):
            ax.set_xscale("log")
    finals = [y for line in axes[0].get_lines() for y in _finite(line.get_ydata())]
    if relative:
        axes[0].axhline(target["value"], color="0.3", linewidth=0.8, linestyle="--")
        finals.append(target["value"])
    if finals and all(f > 0 for f in finals):
        axes[0].set_yscale("log")
        axes[0].set_ylim(min(finals) / 1.5, max(finals) * 1.5)
    axes[1].set_ylim(0, steps * 1.1)
    handles, labels = axes[1].get_legend_handles_labels()
    gray = {"color": "0.4", "linestyle": ""}
    keys = [
        ("not reached (at the run's length)", Line2D([], [], marker="o", mfc="none", **gray)),
        ("diverged", Line2D([], [], marker="x", **gray)),
    ]
    if relative:
        keys.insert(0, ("target", Line2D([], [], color="0.3", linewidth=0.8, linestyle="--")))
    handles += [h for _, h in keys]
    labels += [label for label, _ in keys]
    axes[1].legend(handles, labels, fontsize="small", **LEGEND)
    fig.suptitle(title, fontsize="medium")
    return fig


def figures(
    results: list,
    rows_by_job: dict,
    sweep_keys: list[str],
    title: str = "",
    target: dict | None = None,
    steps: int = 0,
    network: dict | None = None,
) -> dict:
    """The run's figures by file name (the caller closes them).

    Parameters
    ----------
    results : list of runner.JobResult
    rows_by_job : dict
        Job label -> its metrics rows.
    sweep_keys : list of str
        The swept keys (the first one is the x axis of ``sweep.png``).
    title : str
        The figures' title (run, model, ``d``, ``W``).
    target : dict, optional
        The ``[target]``, drawn as a dashed line where the plot shows its metric.
    steps : int
        The run's length (where ``sweep.png`` puts jobs that missed the target).
    network : dict, optional
        The ``[network]`` table: adds ``loss_vs_time.png``, against the simulated
        time, with the network's parameters on the axis.

    Returns
    -------
    dict of str to matplotlib.figure.Figure
    """
    plt = _pyplot()
    metric = _metric(rows_by_job)
    out = {
        "loss_vs_steps.png": _curves_figure(
            plt, results, rows_by_job, "step", metric, title, target
        ),
        "loss_vs_bytes.png": _curves_figure(
            plt, results, rows_by_job, "bytes", metric, title, target
        ),
    }
    if network and all(r.get("sim_time") is not None for rs in rows_by_job.values() for r in rs):
        fig = _curves_figure(plt, results, rows_by_job, "sim_time", metric, title, target)
        fig.axes[0].set_xlabel(f"simulated time (s): {describe(network)}", fontsize="small")
        out["loss_vs_time.png"] = fig
    if any(r.get("test_accuracy") is not None for rows in rows_by_job.values() for r in rows):
        out["accuracy_vs_steps.png"] = _error_figure(plt, results, rows_by_job, title, target)
    if sweep_keys:
        out["sweep.png"] = _sweep_figure(
            plt, results, rows_by_job, sweep_keys[0], metric, title, target, steps
        )
    return out


def write(run_dir: Path, figs: dict) -> list[Path]:
    """Save the :func:`figures` into ``run_dir`` and close them; returns their paths."""
    plt = _pyplot()
    paths = []
    for name, fig in figs.items():
        fig.savefig(run_dir / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(run_dir / name)
    return paths
