"""The FetchSGD claim's analysis on made-up runs (the claim itself is not run here)."""

from __future__ import annotations

import math

from simulate import claims, config
from simulate.claims import fetchsgd
from simulate.runner import JobResult

STEPS = list(range(0, 301, 10))
LABELS = ("sgd", *(label for pair in fetchsgd.PAIRS for label in pair), "topk_equal_upload")
LABELS = (*LABELS, "topk_equal_total")
#: Bytes up and down per worker and step of each job (W = 10, d = 96,010).
BYTES = {"sgd": (384_040, 384_040), "topk_equal_upload": (40_000, 360_000)}
BYTES["topk_equal_total"] = (8_000, 72_000)


def _job(case: str, label: str, acc: float, hit: int | None, diverge: bool):
    up, down = BYTES.get(label, (40_000, 40_000))
    steps = STEPS[:3] if diverge else STEPS
    rows = [
        {
            "step": t,
            "loss": math.nan if diverge and t == steps[-1] else 1.0 - acc,
            "test_accuracy": 0.1 if diverge else min(acc, 0.1 + t / 100),
            "upload": up * t,
            "download": down * t,
        }
        for t in steps
    ]
    result = JobResult(
        f"{case}/{label}",
        case,
        label,
        status="diverged" if diverge else "done",
        steps=steps[-1],
        steps_to_target=None if diverge else hit,
        upload=up * steps[-1],
        download=down * steps[-1],
        compression=2 * 384_040 / (up + down),
    )
    return result, rows


def _run(acc, hit, diverge=lambda label: label == "fetchsgd_subtract_1row") -> dict:
    """``acc(label, sharding)``, ``hit(label)``: steps to target; ``diverge(label)``."""
    algos = [{"label": label} for label in LABELS]
    cfg = {
        "workers": 10,
        "algorithms": algos,
        "target": {"metric": "test_accuracy", "value": 0.95},
    }
    cases, results, rows = [], [], {}
    for sharding in ("iid", "label"):
        for seed in (0, 1, 2):
            label = f"sharding={sharding},seed={seed}"
            cases.append(config.Case(label, {"model.sharding": sharding, "seed": seed}, cfg))
            for algo in LABELS:
                result, job_rows = _job(label, algo, acc(algo, sharding), hit(algo), diverge(algo))
                results.append(result)
                rows[result.label] = job_rows
    return {fetchsgd.CONFIG: claims.Run(fetchsgd.CONFIG, None, cases, results, rows, 1.0)}


def _acc(label, sharding):
    return 0.91 if label == "fetchsgd_subtract" else 0.96


def _hit(label):
    return 100 if label.startswith("fetchsgd") else 20


def test_held_partly_when_fetchsgd_only_ties_with_topk(tmp_path):
    finding = fetchsgd.analyse(_run(_acc, _hit), tmp_path)
    assert finding.verdict == "held partly", finding.reason
    assert finding.reason.startswith(
        "Met: (1) error='zero' is at least as stable and accurate as error='subtract'. "
        "Not met: (2) FetchSGD beats local top-k"
    )
    assert "fetchsgd_subtract_1row in 6/6" in finding.reason
    assert len(finding.rows) == 2 * len(LABELS)
    assert all(p.exists() for p in finding.figures) and len(finding.figures) == 3


def test_held_when_fetchsgd_is_better_on_label_shards(tmp_path):
    def acc(label, sharding):
        if label.startswith("topk") and sharding == "label":
            return 0.93
        return _acc(label, sharding)

    finding = fetchsgd.analyse(_run(acc, _hit), tmp_path)
    assert finding.verdict == "held", finding.reason
    assert finding.reason.startswith("Both parts held")


def test_held_when_tied_but_faster(tmp_path):
    finding = fetchsgd.analyse(
        _run(_acc, lambda label: 20 if label == "fetchsgd_zero" else 50), tmp_path
    )
    assert finding.verdict == "held", finding.reason


def test_failed_when_topk_is_better_on_label_shards(tmp_path):
    def acc(label, sharding):
        if label == "fetchsgd_zero" and sharding == "label":
            return 0.93
        return _acc(label, sharding)

    finding = fetchsgd.analyse(_run(acc, _hit), tmp_path)
    assert finding.verdict == "failed"
    assert finding.reason.startswith("FetchSGD does worse than local top-k")


def test_zero_that_diverges_is_not_the_stable_variant(tmp_path):
    def acc(label, sharding):
        return 0.90 if label.startswith("topk") else _acc(label, sharding)

    finding = fetchsgd.analyse(
        _run(acc, _hit, diverge=lambda label: label == "fetchsgd_zero_1row"), tmp_path
    )
    assert finding.verdict == "held partly"
    assert "Not met: (1) error='zero' is at least as stable" in finding.reason


def test_failed_when_no_criterion_holds(tmp_path):
    """error='zero' diverges and FetchSGD only ties with top-k: nothing held, so failed."""
    finding = fetchsgd.analyse(
        _run(_acc, _hit, diverge=lambda label: label == "fetchsgd_zero_1row"), tmp_path
    )
    assert finding.verdict == "failed", finding.reason
    assert finding.reason.startswith("Not met: (1) error='zero'")
    assert "(2) FetchSGD beats local top-k" in finding.reason


def test_subtract_more_accurate_than_zero_fails_the_variant_part(tmp_path):
    def acc(label, sharding):
        if label == "fetchsgd_subtract":
            return 0.99
        return 0.90 if label.startswith("topk") else _acc(label, sharding)

    finding = fetchsgd.analyse(_run(acc, _hit), tmp_path)
    assert finding.verdict == "held partly", finding.reason
    assert "Not met: (1)" in finding.reason
