"""The Sketched-SGD claim's analysis on made-up runs (the claim itself is not run here)."""

from __future__ import annotations

import math

from simulate import claims, config
from simulate.claims import _analysis, sketched_sgd
from simulate.runner import JobResult

STEPS = list(range(0, 201, 20))
D = 96_010
FACTORS = {"sketched_sgd_10x": 10.0, "sketched_sgd_40x": 40.0, "sketched_sgd_80x": 80.0}
SEEDS = (0, 1, 2, 3, 4)
WORKERS = (4, 16, 64, 256)
TARGET = {"metric": "loss", "value": 0.25, "relative": False}  # as a resolved config holds it
#: A seed's own offset, shared by all jobs of that seed (what pairing removes).
SEED_SHIFT = {0: 0.0, 1: 0.01, 2: -0.008, 3: 0.004, 4: -0.003}


def _job(case: str, label: str, acc: float, per_step: float, factor: float, hit):
    """A finished job with a flat accuracy curve and ``per_step`` bytes each way."""
    full = f"{case}/{label}"
    rows = [
        {
            "step": t,
            "test_accuracy": acc,
            "test_loss": 1.0 - acc,
            "loss": (1.0 if hit is None or t < hit else 0.2) + 0.96 - acc,
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
        wire_sent=per_step * STEPS[-1],
        wire_received=per_step * STEPS[-1],
        compression=factor,
    )
    return result, rows


def _run(name, labels, cases, acc, per_step, hit) -> claims.Run:
    """``acc``, ``per_step``, ``hit``: functions of (label, case values)."""
    algos = [{"label": label} for label in labels]
    built, results, rows = [], [], {}
    for label, values in cases:
        cfg = {"workers": values.get("workers", 8), "algorithms": algos, "target": TARGET}
        cfg["model"] = {"batch_size": 256 // cfg["workers"]}
        built.append(config.Case(label, values, cfg))
        for algo in labels:
            factor = FACTORS.get(algo, 1.0)
            result, job_rows = _job(
                label,
                algo,
                acc(algo, values) + SEED_SHIFT[values["seed"]],
                per_step(algo, values),
                factor,
                hit(algo, values),
            )
            results.append(result)
            rows[result.label] = job_rows
    return claims.Run(name, None, built, results, rows, 1.0)


def _per_step(label, values):
    """Sketched-SGD's traffic is flat in W; top-k's download grows with W."""
    if label == sketched_sgd.TOPK:
        return 4.0 * D / 40 * values["workers"]
    return 4.0 * D / FACTORS.get(label, 1.0)


def _runs(acc=lambda label, values: 0.96, hit=lambda label, values: 80) -> dict:
    comp = [(f"seed={s}", {"seed": s}) for s in SEEDS]
    sweep = [
        (f"workers={w},batch_size={256 // w},seed={s}", {"workers": w, "seed": s})
        for w in WORKERS
        for s in SEEDS
    ]
    return {
        sketched_sgd.COMPRESSION: _run(
            sketched_sgd.COMPRESSION, ["sgd", *FACTORS], comp, acc, _per_step, hit
        ),
        sketched_sgd.WORKERS: _run(
            sketched_sgd.WORKERS,
            ["sgd", sketched_sgd.SWEPT, sketched_sgd.TOPK],
            sweep,
            acc,
            _per_step,
            hit,
        ),
    }


def _noise(values) -> float:
    """Run-to-run noise that pairing cannot remove (differs between the jobs of a seed)."""
    return 0.002 * ((values["seed"] * 7919 + values.get("workers", 0)) % 5 - 2)


def test_no_loss_needs_the_paired_interval_above_the_margin_and_reaching_zero():
    # the three paired differences at 40x: each within 1 pp, consistently negative
    assert not sketched_sgd.no_loss([-0.0084, -0.0067, -0.0095])[0]
    assert sketched_sgd.no_loss([0.001, -0.002, 0.0, 0.002, -0.001])[0]
    assert not sketched_sgd.no_loss([0.03, -0.03, 0.02, -0.025, 0.0])[0]  # too noisy to tell
    assert not sketched_sgd.no_loss([0.01, math.nan, 0.0])[0]  # a diverged run


def test_held_when_80x_keeps_quality_and_nothing_grows_with_w(tmp_path):
    def acc(label, values):
        return 0.96 + (0.0 if label == "sgd" else _noise(values))

    finding = sketched_sgd.analyse(_runs(acc), tmp_path)
    assert finding.verdict == "held", finding.reason
    assert "largest reduction without loss 80x" in finding.reason
    assert len(finding.rows) == 1 + len(FACTORS) + 3 * len(WORKERS)
    assert all(p.exists() for p in finding.figures) and len(finding.figures) == 4
    topk = [r for r in finding.rows if r[1] == sketched_sgd.TOPK]
    assert topk[0][10] == "6.14 MB" and topk[-1][10] == "393 MB"  # the contrast grows 64x


def test_a_consistent_loss_within_one_point_is_a_loss(tmp_path):
    """The issue's case: 40x and 80x below SGD on every seed by less than 1 pp."""

    def acc(label, values):
        loss = 0.008 if label in ("sketched_sgd_40x", "sketched_sgd_80x") else 0.0
        return 0.96 - loss + (0.0 if label == "sgd" else _noise(values))

    finding = sketched_sgd.analyse(_runs(acc), tmp_path)
    assert finding.verdict == "held partly", finding.reason
    assert "the largest reduction without loss is 10x" in finding.reason
    rows = {r[1]: r for r in finding.rows if r[0].startswith("compression")}
    assert rows["sketched_sgd_40x"][12] == "no" and rows["sketched_sgd_10x"][12] == "yes"
    assert rows["sketched_sgd_40x"][7].startswith("-0.80 [")


def test_failed_when_even_10x_loses(tmp_path):
    finding = sketched_sgd.analyse(
        _runs(lambda label, values: 0.96 if label == "sgd" else 0.94), tmp_path
    )
    assert finding.verdict == "failed"
    assert finding.reason.startswith(
        "Met: (2) traffic per worker to the target flat in W; (3) no loss from W = 4 to 256. "
        "Not met: the largest reduction without loss is none"
    )


def test_traffic_to_the_target_that_grows_with_w_fails_part_2(tmp_path):
    def hit(label, values):
        return round(60 * (values.get("workers", 4) / 4) ** 0.2)

    finding = sketched_sgd.analyse(_runs(hit=hit), tmp_path)
    assert finding.verdict == "held partly", finding.reason
    assert "Not met: sketched_sgd_40x's bytes per worker to training loss <= 0.25 vary 2.33x" in (
        finding.reason
    )


def test_a_seed_that_never_reaches_the_target_fails_part_2(tmp_path):
    def hit(label, values):
        return None if values.get("workers") == 256 and values["seed"] == 3 else 80

    finding = sketched_sgd.analyse(_runs(hit=hit), tmp_path)
    assert finding.verdict == "held partly"
    assert "not every seed reached it at every W" in finding.reason


def test_quality_that_drops_with_w_fails_part_3(tmp_path):
    def acc(label, values):
        if label == sketched_sgd.SWEPT and values.get("workers", 0) >= 64:
            return 0.945
        return 0.96

    finding = sketched_sgd.analyse(_runs(acc), tmp_path)
    assert finding.verdict == "held partly"
    assert "sketched_sgd_40x at W = 64 against W = 4: accuracy -1.50" in finding.reason
    assert "(3) no loss from W = 4 to 256" not in finding.reason.split("Not met")[0]


def test_one_seed_cannot_show_no_loss():
    assert _analysis.paired_interval([0.0])[1:] == (-math.inf, math.inf)
    assert not sketched_sgd.no_loss([0.0])[0]


def test_shipped_configs_resolve():
    comp = config.resolve(config.load(claims.CONFIG_DIR / f"{sketched_sgd.COMPRESSION}.toml"))
    assert len(comp) >= 5  # the issue asks for at least five paired seeds
    sweep = config.resolve(config.load(claims.CONFIG_DIR / f"{sketched_sgd.WORKERS}.toml"))
    n_train = config.train_size(sweep[0].config["model"])
    for case in sweep:
        cfg = case.config
        assert cfg["workers"] * cfg["model"]["batch_size"] == 256 <= n_train
    assert {c.config["workers"] for c in sweep} == set(WORKERS)
    assert [a["label"] for a in sweep[0].config["algorithms"]] == [
        "sgd",
        sketched_sgd.SWEPT,
        sketched_sgd.TOPK,
    ]


def test_tail_mean_skips_missing_values():
    assert _analysis.tail_mean([1.0, None, 2.0, 3.0], n=2) == 2.5
    assert math.isnan(_analysis.tail_mean([None], n=5))
