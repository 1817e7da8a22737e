"""The rates claim's analysis on made-up runs (the claim itself is not run here)."""

from __future__ import annotations

from simulate.claims import rates
from tests.simulate.test_claims_sketchdl import fake_run


def _d(case) -> int:
    return int(case.config["d"])


def _rates_run(steps_of):
    """``steps_of(algo name, d)``: the step at which a job's f - f* crosses 0.15 f0."""

    def metrics(case, algo, t):
        cross = steps_of(algo["name"], _d(case))
        return {"suboptimality": (1.0 + cross / 6.0) / (1.0 + t / 6.0) * 0.15 if t else 1.0}

    return {rates.CONFIG: fake_run(rates.CONFIG, metrics)}


def test_rates_held(tmp_path):
    finding = rates.analyse(_rates_run(lambda name, d: 70), tmp_path)
    assert finding.verdict == "held", finding.reason
    assert len(finding.rows) == 25 and len(finding.figures) == 3
    assert "[SIL24]_" in finding.rows[-5][6] and finding.rows[-4][6] == ""


def test_rates_held_partly_when_sketchdl_grows_with_d(tmp_path):
    finding = rates.analyse(
        _rates_run(lambda name, d: 70 * (d / 1024) ** 0.2 if name == "sketchdl" else 70),
        tmp_path,
    )
    assert finding.verdict == "held partly"
    assert "does not match: sketch-DL" in finding.reason


def test_rates_memsgd_may_grow_like_d_over_k(tmp_path):
    finding = rates.analyse(
        _rates_run(lambda name, d: 30 + d / 4096 if name == "memsgd" else 70), tmp_path
    )
    assert finding.verdict == "held", finding.reason  # x3 in steps: within O(d/k), not "none"


def test_rates_failed_when_nothing_reaches_the_target(tmp_path):
    finding = rates.analyse(_rates_run(lambda name, d: 10**6), tmp_path)
    assert finding.verdict == "failed"
    assert "never" in finding.rows[0][3]
