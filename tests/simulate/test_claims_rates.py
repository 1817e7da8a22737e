"""The rates claim's analysis on made-up runs (the claim itself is not run here)."""

from __future__ import annotations

from simulate import claims, config
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
    assert "[SIL24]_" in finding.rows[-5][7] and finding.rows[-4][7] == ""
    assert finding.rows[5][2] == "k = 4" and finding.rows[9][2] == "k = 1024"  # k = d/256


def test_rates_held_partly_when_sketchdl_grows_with_d(tmp_path):
    finding = rates.analyse(
        _rates_run(lambda name, d: 70 * (d / 1024) ** 0.2 if name == "sketchdl" else 70),
        tmp_path,
    )
    assert finding.verdict == "held partly"
    assert "do not match: sketch-DL" in finding.reason


def test_rates_memsgd_steps_growing_with_d_no_longer_pass(tmp_path):
    """3x more steps over the sweep: the old allowance (1.5 d_max / d_min = 384x) passed it."""
    finding = rates.analyse(
        _rates_run(lambda name, d: 30 + d / 4096 if name == "memsgd" else 70), tmp_path
    )
    assert finding.verdict == "held partly", finding.reason
    assert "do not match: mem-SGD top-(d/256)" in finding.reason


def test_a_rise_within_the_metrics_resolution_and_a_fall_both_match(tmp_path):
    def steps_of(name, d):
        if name == "fetchsgd":
            return 70 if d < 65536 else 75  # one metrics row later
        if name == "memsgd":
            return 100 - 30 * (d >= 16384)  # fewer steps at larger d: bounds are upper bounds
        return 70

    finding = rates.analyse(_rates_run(steps_of), tmp_path)
    assert finding.verdict == "held", finding.reason


def test_a_rise_in_the_middle_of_the_sweep_counts(tmp_path):
    """Largest rise over any pair, not only the ends: 70 -> 90 -> 70."""
    finding = rates.analyse(
        _rates_run(lambda name, d: 90 if name == "sketched_sgd" and d == 16384 else 70),
        tmp_path,
    )
    assert "do not match: Sketched-SGD" in finding.reason


def test_rates_failed_when_nothing_reaches_the_target(tmp_path):
    finding = rates.analyse(_rates_run(lambda name, d: 10**6), tmp_path)
    assert finding.verdict == "failed"
    assert "never" in finding.rows[0][4]


def test_shipped_config_scales_each_size_as_its_bound_needs():
    import math

    for case in config.resolve(config.load(claims.CONFIG_DIR / f"{rates.CONFIG}.toml")):
        d = case.config["d"]
        algos = {a["name"]: a for a in case.config["algorithms"]}
        assert algos["memsgd"]["k"] == d // 256
        for name in ("sketched_sgd", "fetchsgd"):
            a = algos[name]
            assert a["rows"] * a["cols"] == a["k"] * math.log2(d)
        assert algos["sketchdl"]["rows"] * algos["sketchdl"]["cols"] == 500
