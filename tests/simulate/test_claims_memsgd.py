"""The mem-SGD claim's analysis on made-up runs (the claim itself is not run here)."""

from __future__ import annotations

import pytest

from simulate import claims, config
from simulate.claims import memsgd
from simulate.runner import JobResult

STEPS = list(range(0, 10001, 250))
LABELS = (memsgd.SGD, *memsgd.MEMORY, *memsgd.NO_MEMORY)
SEEDS = (0, 1, 2)


def _run(name: str, d: int, gaps: dict, compression: float | None = None) -> claims.Run:
    """A Run with one case per seed whose jobs have the curves ``gaps[label](t, seed)``."""
    algos = [{"label": memsgd.SGD}] + [{"label": label, "k": 1} for label in LABELS[1:]]
    cases, results, rows = [], [], {}
    for seed in SEEDS:
        case = config.Case(f"seed={seed}", {"seed": seed}, {"d": d, "algorithms": algos})
        cases.append(case)
        for label in LABELS:
            per_step = 8.0 * d if label == memsgd.SGD else 8.0
            full = f"{case.label}/{label}"
            rows[full] = [
                {
                    "step": t,
                    "suboptimality": gaps[label](t, seed),
                    "upload": per_step * t / 2,
                    "download": per_step * t / 2,
                }
                for t in STEPS
            ]
            ratio = 1.0 if label == memsgd.SGD else (compression or d)
            results.append(
                JobResult(
                    full,
                    case.label,
                    label,
                    upload=4.0 * d * STEPS[-1] / ratio,
                    download=4.0 * d * STEPS[-1] / ratio,
                    compression=ratio,
                )
            )
    return claims.Run(name, None, cases, results, rows, 1.0)


def _one_over_t(t, seed):
    return (1.0 + 0.1 * seed) / (t + 100)


def _stalled(t, seed):
    return 0.5


@pytest.fixture
def fine():
    return {label: _one_over_t for label in (memsgd.SGD, *memsgd.MEMORY)} | {
        label: _stalled for label in memsgd.NO_MEMORY
    }


def _analyse(gaps, tmp_path, compression=None):
    runs = {stem: _run(stem, 64, gaps, compression) for stem in memsgd.DATASETS}
    return memsgd.analyse(runs, tmp_path)


def test_held_when_memory_matches_sgd_and_no_memory_stalls(tmp_path, fine):
    finding = _analyse(fine, tmp_path)
    assert finding.verdict == "held", finding.reason
    assert "3 seeds" in finding.reason
    assert len(finding.rows) == 2 * len(LABELS)
    assert all(p.exists() for p in finding.figures) and len(finding.figures) == 4


def test_failed_when_memory_stalls_too(tmp_path, fine):
    finding = _analyse(fine | {label: _stalled for label in memsgd.MEMORY}, tmp_path)
    assert finding.verdict == "failed"
    assert "top-1: slope" in finding.reason


def test_held_partly_when_bytes_fall_short(tmp_path, fine):
    finding = _analyse(fine, tmp_path, compression=10.0)
    assert finding.verdict == "held partly"
    assert "below 0.5 d/k" in finding.reason


def test_final_gap_is_paired_by_seed(tmp_path, fine):
    """One seed 12x worse than SGD on its samples: the geometric mean 2.3x exceeds 2x."""

    def one_bad_seed(t, seed):
        return _one_over_t(t, seed) * (12.0 if seed == 1 and t > 5000 else 1.0)

    finding = _analyse(fine | {"top-1": one_bad_seed}, tmp_path)
    assert finding.verdict == "held partly", finding.reason
    assert "top-1: slope" in finding.reason and "final gap 2.29x SGD's" in finding.reason


def test_a_slower_rate_fails_and_a_steeper_one_catching_up_holds(tmp_path, fine):
    def slower(t, seed):  # ends at 1.5x SGD's gap, but decaying like t^-0.75
        return 1.5 * _one_over_t(STEPS[-1], seed) * ((t + 100) / (STEPS[-1] + 100)) ** -0.75

    finding = _analyse(fine | {"random-1": slower}, tmp_path)
    assert finding.verdict == "held partly"
    assert "random-1: slope -0.737 (0.75 of SGD's), final gap 1.5x" in finding.reason

    def catching_up(t, seed):  # 3x SGD's gap early, SGD's at the end: a steeper slope
        return _one_over_t(t, seed) * (1.0 + 2.0 * (1.0 - t / STEPS[-1]) ** 2)

    finding = _analyse(fine | {"random-1": catching_up}, tmp_path)
    assert finding.verdict == "held", finding.reason


def test_held_partly_when_no_memory_converges_too(tmp_path, fine):
    finding = _analyse(fine | {"random-1, no memory": _one_over_t}, tmp_path)
    assert finding.verdict == "held partly"
    assert "random-1, no memory: final gap only 1x SGD's" in finding.reason


def test_failed_when_sgd_shows_no_rate(tmp_path, fine):
    finding = _analyse(fine | {memsgd.SGD: lambda t, seed: 1.0 / (t + 100) ** 0.3}, tmp_path)
    assert finding.verdict == "failed"
    assert "SGD's slope -0.295 is not below -0.5" in finding.reason


def test_shipped_configs_resolve():
    for stem in memsgd.CLAIM.configs:
        cases = config.resolve(config.load(claims.CONFIG_DIR / f"{stem}.toml"))
        assert [c.values["seed"] for c in cases] == [0, 1, 2]
        cfg = cases[0].config
        sched = cfg["schedule"]
        assert sched["kind"] == "memsgd" and sched["average"]
        assert sched["tau"] == cfg["d"]  # tau = d/k with k = 1
        assert cfg["model"]["sampling"] == "shuffle" and cfg["model"]["batch_size"] == 1
        assert {a["label"] for a in cfg["algorithms"]} == set(LABELS)
