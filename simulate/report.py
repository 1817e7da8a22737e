"""The run's summary: the printed table and its notes, ``summary.json`` and the plots."""

from __future__ import annotations

import math
import textwrap
from dataclasses import asdict
from pathlib import Path

from . import checkpoint, config, network
from .runner import COLUMNS, HIGHER_IS_BETTER, OUTCOMES, _bytes, job_stem, read_rows

WIDTH = 100  # of the notes under the table


def _num(value, digits=4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}g}"


def compression(value: float | None) -> str:
    """``"12.5x"``, ``"5,000x"``: SGD's bytes over a job's, with no exponent notation."""
    if value is None:
        return "-"
    return f"{value:,.0f}x" if value >= 100 else f"{value:.3g}x"


def target_text(target: dict | None) -> str:
    """``"f - f* <= 0.01 f(w0) - f*"``-like description of a ``[target]``."""
    if not target:
        return "target"
    metric = "f - f*" if target["metric"] == "suboptimality" else target["metric"]
    sign = ">=" if target["metric"] in HIGHER_IS_BETTER else "<="
    value = f"{target['value']:g}"
    return f"{metric} {sign} {value} x start" if target["relative"] else f"{metric} {sign} {value}"


def title(name: str, cases: list) -> str:
    """``"sweep_d: quadratic (powerlaw spectrum), d = 1,024 to 1,048,576, W = 8"``."""
    model = cases[0].config["model"]
    if model["kind"] == "quadratic":
        what = f"quadratic ({model['spectrum']} spectrum)"
    else:
        what = f"{model['kind']} on {model['dataset']}"
    parts = []
    for symbol, key in (("d", "d"), ("W", "workers")):
        values = sorted({c.config[key] for c in cases})
        span = f"{values[0]:,}" + (f" to {values[-1]:,}" if len(values) > 1 else "")
        parts.append(f"{symbol} = {span}")
    return f"{name}: {what}, {', '.join(parts)}"


def _outcome_cell(r) -> str:
    if r.outcome is None:
        return "-"
    cell = OUTCOMES[r.outcome]
    if r.outcome == "diverge":
        cell += f" @ {r.steps}"
    return cell if r.as_expected is not False else f"{cell} (!)"


def table(results: list, target: dict | None = None) -> str:
    """The comparison table, one line per job.

    The training loss is left out where ``f - f*`` is known (it is ``f*`` plus
    that, and negative for a quadratic with a linear term).

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
    expects = any(r.expect is not None for r in results)
    head = ["algorithm"] + (["case"] if any(r.case for r in results) else [])
    head += ["final loss"] if not has["suboptimality"] else []
    head += ["test acc"] if has["test_accuracy"] else []
    head += ["f - f*"] if has["suboptimality"] else []
    head += [f"steps to {target_text(target)}" if target else "steps to target"]
    timed = any(r.sim_time is not None for r in results)
    head += ["time to target", "sim time"] if timed else []
    head += ["up/worker", "down/worker", "vs SGD", "outcome"]
    head += ["expected"] if expects else []
    lines = []
    for r in results:
        row = [r.algorithm] + ([r.case] if "case" in head else [])
        row += [_num(r.final.get("loss"))] if not has["suboptimality"] else []
        row += [_num(r.final.get("test_accuracy"), 3)] if has["test_accuracy"] else []
        row += [_num(r.final.get("suboptimality"), 3)] if has["suboptimality"] else []
        row += [
            "-" if r.steps_to_target is None else str(r.steps_to_target),
            *([_seconds(r.time_to_target), _seconds(r.sim_time)] if timed else []),
            _bytes(r.upload),
            _bytes(r.download),
            compression(r.compression),
            _outcome_cell(r),
        ]
        row += [OUTCOMES[r.expect] if r.expect else "-"] if expects else []
        lines.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines, strict=True)]
    left = 2 if "case" in head else 1
    fmt = "  ".join(
        f"{{:<{w}}}" if i < left or i >= len(widths) - 1 - expects else f"{{:>{w}}}"
        for i, w in enumerate(widths)
    )
    out = [fmt.format(*head), "  ".join("-" * w for w in widths)]
    out += [fmt.format(*row).rstrip() for row in lines]
    return "\n".join(out)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g} s"


def notes(results: list, cfg: dict) -> list[str]:
    """The lines printed under the table: how steps to target are resolved, what was expected.

    Parameters
    ----------
    results : list of runner.JobResult
    cfg : dict
        The first case's checked configuration.

    Returns
    -------
    list of str
    """
    out = []
    target = cfg["target"]
    if target:
        relative = ""
        if target["relative"]:
            start = "f(w0) - f*" if target["metric"] == "suboptimality" else "its value at step 0"
            relative = f"; the threshold is {target['value']:g} x ({start})"
        out += textwrap.wrap(
            f"steps to target: the first evaluation that meets {target_text(target)}, "
            f"resolved to eval_every = {cfg['eval_every']} steps (met within the "
            f"{cfg['eval_every']} steps before it; not interpolated){relative}.",
            width=WIDTH,
        )
    if cfg.get("network"):
        out += textwrap.wrap(
            f"time to target, sim time: simulated seconds on the network "
            f"({network.describe(cfg['network'])}), alpha-beta model of each algorithm's "
            "collectives (docs/simulator.rst, Network model).",
            width=WIDTH,
        )
    if cfg["participation"] != 1.0 or isinstance(cfg["participation"], int):
        taking = config.resolve_size(cfg["participation"], cfg["workers"])
        out += textwrap.wrap(
            f"participation = {cfg['participation']}: {taking} of the {cfg['workers']} workers "
            "take part in each step; bytes per worker are those of a worker that takes part.",
            width=WIDTH,
        )
    rule = cfg["divergence"]
    chance = (
        f", or test accuracy within {rule['chance_margin']:g} of chance after "
        f"{rule['warmup']} steps"
        if any(r.final.get("test_accuracy") is not None for r in results)
        else ""
    )
    out += textwrap.wrap(
        f"diverged: loss (f - f* where known) not finite or above {rule['loss_ratio']:g}x its "
        f"start{chance} ([divergence]).",
        width=WIDTH,
    )
    if cfg["expectation"]:
        out += textwrap.wrap(f"expected: {cfg['expectation']}", width=WIDTH)
    surprises = [r.label for r in results if r.as_expected is False]
    if surprises:
        out.append(
            f"(!) not as the config expects: {', '.join(surprises)} "
            f"({len(surprises)} of {len(results)} jobs)."
        )
    elif any(r.expect for r in results):
        jobs = "the job" if len(results) == 1 else f"all {len(results)} jobs"
        out.append(f"{jobs} behaved as the config expects.")
    out += [r.message for r in results if r.status != "done"]
    return out


def write_summary(run_dir: Path, cases, results: list, extra: dict) -> dict:
    """``summary.json``: every job's result, the cases' resolved configs and ``extra``."""
    summary = {
        **extra,
        "run_dir": str(run_dir),
        "cases": [{"label": c.label, "values": c.values, "config": c.config} for c in cases],
        "jobs": [{**asdict(r), "as_expected": r.as_expected} for r in results],
    }
    checkpoint.write_json(run_dir / "summary.json", summary)
    return summary


def job_rows(run_dir: Path, results: list) -> dict[str, list[dict]]:
    """Every job's metrics rows, read back from its CSV."""
    return {r.label: read_rows(run_dir / "metrics" / f"{job_stem(r.label)}.csv") for r in results}
