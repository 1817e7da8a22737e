"""The run's summary: the printed table, ``summary.json`` and the plots."""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

from . import checkpoint
from .runner import COLUMNS, HIGHER_IS_BETTER, _bytes, job_stem, read_rows


def _num(value, digits=4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}"


def table(results: list, target: dict | None = None) -> str:
    """The comparison table, one line per job.

    Parameters
    ----------
    results : list of runner.JobResult
    target : dict, optional
        The config's ``[target]`` (names the steps-to-target column).

    Returns
    -------
    str
    """
    has = {key: any(r.final.get(key) is not None for r in results) for key in COLUMNS[1:6]}
    head = ["algorithm"] + (["case"] if any(r.case for r in results) else [])
    head += ["final loss"]
    head += ["test acc"] if has["test_accuracy"] else []
    head += ["f - f*"] if has["suboptimality"] else []
    goal = "steps to target"
    if target:
        sign = ">=" if target["metric"] in HIGHER_IS_BETTER else "<="
        goal = f"steps to {target['metric']} {sign} {target['value']:g}"
    head += [goal, "up/worker", "down/worker", "vs SGD"]
    lines = []
    for r in results:
        row = [r.algorithm] + ([r.case] if "case" in head else []) + [_num(r.final.get("loss"))]
        row += [_num(r.final.get("test_accuracy"), 3)] if has["test_accuracy"] else []
        row += [_num(r.final.get("suboptimality"), 3)] if has["suboptimality"] else []
        row += [
            "-" if r.steps_to_target is None else str(r.steps_to_target),
            _bytes(r.upload),
            _bytes(r.download),
            "-" if r.compression is None else f"{r.compression:.3g}x",
        ]
        if r.status != "done":
            row[0] += f" ({r.status} @ {r.steps})"
        lines.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*head), "  ".join("-" * w for w in widths)]
    out += [fmt.format(*row) for row in lines]
    return "\n".join(out)


def write_summary(run_dir: Path, cases, results: list, extra: dict) -> dict:
    """``summary.json``: every job's result, the cases' resolved configs and ``extra``."""
    summary = {
        **extra,
        "run_dir": str(run_dir),
        "cases": [{"label": c.label, "values": c.values, "config": c.config} for c in cases],
        "jobs": [asdict(r) for r in results],
    }
    checkpoint.write_json(run_dir / "summary.json", summary)
    return summary


def job_rows(run_dir: Path, results: list) -> dict[str, list[dict]]:
    """Every job's metrics rows, read back from its CSV."""
    return {r.label: read_rows(run_dir / "metrics" / f"{job_stem(r.label)}.csv") for r in results}
