"""PNG plots of a run (matplotlib, Agg backend): loss vs steps and bytes, sweeps vs a value."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _metric(rows_by_job: dict) -> str:
    """``suboptimality`` where every job has it (log scale works), else ``loss``."""
    everywhere = all(
        rows and all(r.get("suboptimality") is not None for r in rows)
        for rows in rows_by_job.values()
    )
    return "suboptimality" if everywhere else "loss"


def write(run_dir: Path, results: list, rows_by_job: dict, sweep_keys: list[str]) -> list[Path]:
    """Write the run's plots; returns their paths.

    Parameters
    ----------
    run_dir : Path
        The run's folder.
    results : list of runner.JobResult
    rows_by_job : dict
        Job label -> its metrics rows.
    sweep_keys : list of str
        The swept keys (the first one is the x axis of ``sweep.png``).

    Returns
    -------
    list of Path
    """
    plt = _pyplot()
    metric = _metric(rows_by_job)
    paths = []
    panels = [
        ("step", "steps", "loss_vs_steps.png"),
        ("bytes", "bytes sent per worker (up + down)", "loss_vs_bytes.png"),
    ]
    for x_key, x_label, name in panels:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for label, rows in rows_by_job.items():
            xs = [
                r["step"] if x_key == "step" else (r["upload"] or 0) + (r["download"] or 0)
                for r in rows
            ]
            ys = [r[metric] for r in rows]
            ax.plot(xs, ys, label=label)
        positive = all(
            y is not None and y > 0
            for rows in rows_by_job.values()
            for y in [r[metric] for r in rows]
        )
        if positive:
            ax.set_yscale("log")
        if x_key == "bytes":
            ax.set_xscale("symlog", linthresh=1e3)
        ax.set(xlabel=x_label, ylabel="f - f*" if metric == "suboptimality" else "training loss")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(run_dir / name, dpi=110)
        plt.close(fig)
        paths.append(run_dir / name)
    if any(r.get("test_accuracy") is not None for rows in rows_by_job.values() for r in rows):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for label, rows in rows_by_job.items():
            ax.plot([r["step"] for r in rows], [r["test_accuracy"] for r in rows], label=label)
        ax.set(xlabel="steps", ylabel="test accuracy")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(run_dir / "accuracy_vs_steps.png", dpi=110)
        plt.close(fig)
        paths.append(run_dir / "accuracy_vs_steps.png")
    if sweep_keys:
        paths.append(_sweep(plt, run_dir, results, sweep_keys[0], metric))
    return paths


def _sweep(plt, run_dir: Path, results: list, key: str, metric: str) -> Path:
    """Final metric and steps to target against the first swept value, one line per algorithm."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for algo in dict.fromkeys(r.algorithm for r in results):
        mine = [
            r
            for r in results
            if r.algorithm == algo and isinstance(r.case_values.get(key), (int, float))
        ]
        xs = [r.case_values[key] for r in mine]
        axes[0].plot(xs, [r.final.get(metric) for r in mine], "o-", label=algo)
        hits = [(x, r.steps_to_target) for x, r in zip(xs, mine, strict=True) if r.steps_to_target]
        axes[1].plot([h[0] for h in hits], [h[1] for h in hits], "o-", label=algo)
    for ax, ylabel in zip(axes, [f"final {metric}", "steps to target"], strict=True):
        ax.set(xlabel=key, ylabel=ylabel, xscale="log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = run_dir / "sweep.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
