"""The Sketched-SGD claim's analysis on made-up runs (the claim itself is not run here)."""

from __future__ import annotations

import math

from simulate import claims, config
from simulate.claims import _analysis, sketched_sgd
from simulate.runner import JobResult

STEPS = list(range(0, 201, 20))
D = 96_010
FACTORS = {"sketched_sgd_10x": 10.0, "sketched_sgd_40x": 40.0, "sketched_sgd_80x": 80.0}
SEEDS = (0, 1, 2)
WORKERS = (4, 16, 64, 256)


def _job(case: str, label: str, acc: float, per_step: float, compression: float):
    """A finished job with a flat accuracy curve and ``per_step`` bytes each way."""
    full = f"{case}/{label}"
    rows = [
        {
            "step": t,
            "test_accuracy": acc,
            "test_loss": 1.0 - acc,
            "upload": per_step * t,
            "download": per_step * t,
        }
        for t in STEPS
    ]
    result = JobResult(
        full,
        case,
        label,
        steps=STEPS[-1],
        upload=per_step * STEPS[-1],
        download=per_step * STEPS[-1],
        compression=compression,
    )
    return result, rows


def _run(name: str, cases: list[tuple[str, dict]], acc, per_step) -> claims.Run:
    """A Run of ``sgd`` and the labels of :data:`FACTORS` (``acc(label, case values)``)."""
    labels = ["sgd", *FACTORS] if name == sketched_sgd.COMPRESSION else ["sgd", "sketched_sgd_40x"]
    algos = [{"label": label} for label in labels]
    built, results, rows = [], [], {}
    for label, values in cases:
        built.append(config.Case(label, values, {"workers": 8, "algorithms": algos}))
        for algo in labels:
            factor = FACTORS.get(algo, 1.0)
            result, job_rows = _job(label, algo, acc(algo, values), per_step(algo, values), factor)
            results.append(result)
            rows[result.label] = job_rows
    return claims.Run(name, None, built, results, rows, 1.0)


def _runs(acc=lambda label, values: 0.96, per_step=None) -> dict:
    per_step = per_step or (lambda label, values: 4.0 * D / FACTORS.get(label, 1.0))
    comp = [(f"seed={s}", {"seed": s}) for s in SEEDS]
    sweep = [(f"workers={w}", {"workers": w}) for w in WORKERS]
    return {
        sketched_sgd.COMPRESSION: _run(sketched_sgd.COMPRESSION, comp, acc, per_step),
        sketched_sgd.WORKERS: _run(sketched_sgd.WORKERS, sweep, acc, per_step),
    }


def test_held_when_80x_keeps_quality_and_bytes_stay_flat(tmp_path):
    finding = sketched_sgd.analyse(_runs(), tmp_path)
    assert finding.verdict == "held", finding.reason
    assert "largest reduction without loss 80x" in finding.reason
    assert len(finding.rows) == 1 + len(FACTORS) + 2 * len(WORKERS)
    assert all(p.exists() for p in finding.figures) and len(finding.figures) == 4


def test_held_partly_when_only_10x_is_without_loss(tmp_path):
    def acc(label, values):
        return 0.94 if label in ("sketched_sgd_40x", "sketched_sgd_80x") else 0.96

    finding = sketched_sgd.analyse(_runs(acc), tmp_path)
    assert finding.verdict == "held partly"
    assert "the largest reduction without loss is 10x" in finding.reason


def test_held_partly_when_quality_drops_with_workers(tmp_path):
    def acc(label, values):
        if label == "sketched_sgd_40x" and values.get("workers", 0) >= 64:
            return 0.93
        return 0.96

    finding = sketched_sgd.analyse(_runs(acc), tmp_path)
    assert finding.verdict == "held partly"
    assert "accuracy drops -3.0 pp from W = 4 (at W = 64)" in finding.reason


def test_failed_when_bytes_grow_with_workers(tmp_path):
    def per_step(label, values):
        return 4.0 * D / FACTORS.get(label, 1.0) * (1 + values.get("workers", 0) / 100)

    finding = sketched_sgd.analyse(_runs(per_step=per_step), tmp_path)
    assert finding.verdict == "failed"
    assert "bytes per worker vary" in finding.reason


def test_tail_mean_skips_missing_values():
    assert _analysis.tail_mean([1.0, None, 2.0, 3.0], n=2) == 2.5
    assert math.isnan(_analysis.tail_mean([None], n=5))
