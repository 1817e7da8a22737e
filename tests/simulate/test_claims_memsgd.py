"""The mem-SGD claim's analysis on made-up runs (the claim itself is not run here)."""

from __future__ import annotations

import pytest

from simulate import claims, config
from simulate.claims import memsgd
from simulate.runner import JobResult

STEPS = list(range(0, 10001, 250))
LABELS = (memsgd.SGD, *memsgd.MEMORY, *memsgd.NO_MEMORY)


def _run(name: str, d: int, gaps: dict, compression: float | None = None) -> claims.Run:
    """A Run whose jobs have the ``f - f*`` curves ``gaps[label](t)``."""
    algos = [{"label": memsgd.SGD}] + [{"label": label, "k": 1} for label in LABELS[1:]]
    case = config.Case("", {}, {"d": d, "algorithms": algos})
    results, rows = [], {}
    for label in LABELS:
        per_step = 8.0 * d if label == memsgd.SGD else 8.0
        rows[label] = [
            {
                "step": t,
                "suboptimality": gaps[label](t),
                "upload": per_step * t / 2,
                "download": per_step * t / 2,
            }
            for t in STEPS
        ]
        ratio = 1.0 if label == memsgd.SGD else (compression or d)
        results.append(
            JobResult(
                label,
                "",
                label,
                upload=4.0 * d * STEPS[-1] / ratio,
                download=4.0 * d * STEPS[-1] / ratio,
                compression=ratio,
            )
        )
    return claims.Run(name, None, [case], results, rows, 1.0)


def _one_over_t(t):
    return 1.0 / (t + 100)


def _stalled(t):
    return 0.5


@pytest.fixture
def fine():
    return {label: _one_over_t for label in (memsgd.SGD, *memsgd.MEMORY)} | {
        label: _stalled for label in memsgd.NO_MEMORY
    }


def test_held_when_memory_matches_sgd_and_no_memory_stalls(tmp_path, fine):
    runs = {stem: _run(stem, 64, fine) for stem in memsgd.DATASETS}
    finding = memsgd.analyse(runs, tmp_path)
    assert finding.verdict == "held", finding.reason
    assert len(finding.rows) == 2 * len(LABELS)
    assert all(p.exists() for p in finding.figures) and len(finding.figures) == 4


def test_failed_when_memory_stalls_too(tmp_path, fine):
    gaps = fine | {label: _stalled for label in memsgd.MEMORY}
    runs = {stem: _run(stem, 64, gaps) for stem in memsgd.DATASETS}
    finding = memsgd.analyse(runs, tmp_path)
    assert finding.verdict == "failed"
    assert "top-1: slope" in finding.reason


def test_held_partly_when_bytes_fall_short(tmp_path, fine):
    runs = {stem: _run(stem, 64, fine, compression=10.0) for stem in memsgd.DATASETS}
    finding = memsgd.analyse(runs, tmp_path)
    assert finding.verdict == "held partly"
    assert "below 0.5 d/k" in finding.reason


def test_shipped_configs_resolve():
    for stem in memsgd.CLAIM.configs:
        (case,) = config.resolve(config.load(claims.CONFIG_DIR / f"{stem}.toml"))
        sched = case.config["schedule"]
        assert sched["kind"] == "memsgd" and sched["average"]
        assert sched["tau"] == case.config["d"]  # tau = d/k with k = 1
        assert {a["label"] for a in case.config["algorithms"]} == set(LABELS)
