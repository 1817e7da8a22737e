"""The FetchSGD claim's analysis on made-up runs, and its shipped configs (not run here)."""

from __future__ import annotations

import math

import pytest

from simulate import claims, config
from simulate.claims import fetchsgd
from simulate.runner import JobResult

#: Federated jobs: label -> (algorithm name, rho); two settings of each method.
FED_JOBS = {
    "sgd_lr0.1": ("sgd", 0.9),
    "sgd_lr0.5": ("sgd", 0.9),
    "fetchsgd_lr0.1": ("fetchsgd", 0.9),
    "fetchsgd_lr0.5": ("fetchsgd", 0.9),
    "topk_lr0.1": ("memsgd", 0.0),
    "topk_lr0.5": ("memsgd", 0.0),
    "topk_momentum_lr0.1": ("memsgd", 0.9),
    "topk_momentum_lr0.5": ("memsgd", 0.9),
}
LEVELS = (0.01, 0.05)
SEEDS = (0, 1, 2)
#: Upload per participating client and round: equal for FetchSGD and top-k.
UP = {"sgd": 44_072, "fetchsgd": 4_400, "memsgd": 4_400}
FULL_LABELS = (
    "sgd",
    *(label for pair in fetchsgd.PAIRS for label in pair),
    "topk_equal_upload",
    "topk_equal_total",
)


def _job(case: str, label: str, acc: float, up: int, steps: list[int], hit, diverge=False):
    kept = steps[:3] if diverge else steps
    rows = [
        {
            "step": t,
            "loss": math.nan if diverge and t == kept[-1] else 1.0 - acc,
            "test_accuracy": 0.1 if diverge else (acc if t >= steps[-1] // 2 else 0.1),
            "upload": up * t,
            "download": up * t,
        }
        for t in kept
    ]
    result = JobResult(
        f"{case}/{label}",
        case,
        label,
        status="diverged" if diverge else "done",
        steps=kept[-1],
        steps_to_target=None if diverge else hit,
        upload=up * kept[-1],
        download=up * kept[-1],
    )
    return result, rows


def _federated(acc, up=UP, jobs=FED_JOBS) -> claims.Run:
    """``acc(label, level, seed)``: each job's final test accuracy; ``jobs`` like FED_JOBS."""
    steps = list(range(0, 401, 20))
    algos = [
        {"name": n, "label": label, "rho": rho, "lr": float(label.rsplit("_lr", 1)[1])}
        for label, (n, rho) in jobs.items()
    ]
    cfg = {
        "workers": 1000,
        "algorithms": algos,
        "target": {"metric": "test_accuracy", "value": 0.75},
        "schedule": {"kind": "constant", "lr": 0.1},
    }
    cases, results, rows = [], [], {}
    for level in LEVELS:
        for seed in SEEDS:
            case = f"participation={level},seed={seed}"
            cases.append(config.Case(case, {"participation": level, "seed": seed}, cfg))
            for label, (name, _) in jobs.items():
                a = acc(label, level, seed)
                result, job_rows = _job(case, label, a, up[name], steps, 200 if a > 0.75 else None)
                results.append(result)
                rows[result.label] = job_rows
    return claims.Run(fetchsgd.FEDERATED, None, cases, results, rows, 1.0)


def _full() -> claims.Run:
    """The full-participation run as measured: FetchSGD ties top-k, subtract_1row diverges."""
    steps = list(range(0, 301, 10))
    cfg = {
        "workers": 10,
        "algorithms": [{"label": label} for label in FULL_LABELS],
        "target": {"metric": "test_accuracy", "value": 0.95},
    }
    cases, results, rows = [], [], {}
    for sharding in ("iid", "label"):
        for seed in SEEDS:
            case = f"model.sharding={sharding},seed={seed}"
            cases.append(config.Case(case, {"model.sharding": sharding, "seed": seed}, cfg))
            for label in FULL_LABELS:
                acc = 0.91 if label == "fetchsgd_subtract" else 0.96
                hit = 107 if label.startswith("fetchsgd") else 20
                result, job_rows = _job(
                    case, label, acc, 40_000, steps, hit, label == "fetchsgd_subtract_1row"
                )
                results.append(result)
                rows[result.label] = job_rows
    return claims.Run(fetchsgd.FULL, None, cases, results, rows, 1.0)


def _runs(acc, **kw) -> dict:
    return {fetchsgd.FEDERATED: _federated(acc, **kw), fetchsgd.FULL: _full()}


def _acc(fetch: float, *, topk=0.78, momentum=0.77, sgd=0.80):
    """Accuracies at the good setting (lr 0.1; lr 0.5 is 0.3 worse), with seed noise."""
    base = {"fetchsgd": fetch, "topk_momentum": momentum, "topk": topk, "sgd": sgd}

    def acc(label, level, seed):
        method = next(m for m in base if label.startswith(m + "_lr"))
        value = base[method](level) if callable(base[method]) else base[method]
        return value + 0.002 * (seed - 1) - (0.3 if label.endswith("0.5") else 0.0)

    return acc


def test_held_when_fetchsgd_matches_topk_and_sgd_everywhere(tmp_path):
    finding = fetchsgd.analyse(_runs(_acc(0.80)), tmp_path)
    assert finding.verdict == "held", finding.reason
    assert finding.reason.startswith("Criteria met: (a) at 10 of 1,000 (1 %) and 50 of 1,000 (5 %)")
    assert len(finding.rows) == 2 * len(fetchsgd.METHODS) + len(FULL_LABELS)
    assert all(p.exists() for p in finding.figures) and len(finding.figures) == 3


def test_failed_when_fetchsgd_is_below_both_topk_at_every_level(tmp_path):
    finding = fetchsgd.analyse(_runs(_acc(0.70)), tmp_path)
    assert finding.verdict == "failed", finding.reason
    assert "(a) at no level; (b) at no level; (c) at no level" in finding.reason


def test_failed_even_when_fetchsgd_is_close_to_sgd(tmp_path):
    """Criterion (c) alone cannot rescue the claim: it is about beating local top-k."""
    finding = fetchsgd.analyse(_runs(_acc(0.785, topk=0.80, momentum=0.80, sgd=0.80)), tmp_path)
    assert finding.verdict == "failed", finding.reason
    assert "(c) at 10 of 1,000 (1 %) and 50 of 1,000 (5 %)" in finding.reason


def test_held_partly_when_fetchsgd_wins_only_at_low_participation(tmp_path):
    def fetch(level):
        return 0.80 if level == 0.01 else 0.70

    finding = fetchsgd.analyse(_runs(_acc(fetch)), tmp_path)
    assert finding.verdict == "held partly", finding.reason
    assert "(a) at 10 of 1,000 (1 %); (b) at 10 of 1,000 (1 %)" in finding.reason


def test_a_tie_within_tolerance_holds_but_a_larger_loss_does_not(tmp_path):
    tie = fetchsgd.analyse(_runs(_acc(0.78 - 0.5 * fetchsgd.TOL)), tmp_path)
    assert tie.verdict == "held partly", tie.reason  # matches top-k, not SGD's 0.80
    assert "(a) at 10 of 1,000 (1 %) and 50" in tie.reason
    loss = fetchsgd.analyse(_runs(_acc(0.78 - 1.5 * fetchsgd.TOL)), tmp_path)
    assert "(a) at no level" in loss.reason


def test_each_method_is_compared_at_its_best_setting(tmp_path):
    finding = fetchsgd.analyse(_runs(_acc(0.80)), tmp_path)
    picked = [row[2] for row in finding.rows[: len(fetchsgd.METHODS)]]
    assert all("_lr0.1``" in cell and "(of 2)" in cell for cell in picked), picked
    fetch_row = finding.rows[0]
    assert fetch_row[4].startswith("0.8000 (0.798-0.802)")
    topk_row = finding.rows[1]
    assert topk_row[5].startswith("+2.0 pp")  # FetchSGD minus top-k, paired over seeds


def test_unequal_upload_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="equal upload"):
        fetchsgd.analyse(_runs(_acc(0.80), up={**UP, "fetchsgd": 8_800}), tmp_path)


def test_full_participation_rows_and_variants_are_reported(tmp_path):
    finding = fetchsgd.analyse(_runs(_acc(0.80)), tmp_path)
    full = finding.rows[2 * len(fetchsgd.METHODS) :]
    assert [row[2] for row in full] == [f"``{label}``" for label in FULL_LABELS]
    by_label = {row[2].strip("`"): row for row in full}
    assert by_label["fetchsgd_zero"][6] == "107 (to 0.95)"
    assert by_label["topk_equal_upload"][6] == "20 (to 0.95)"
    assert by_label["fetchsgd_subtract_1row"][7] == "3/3"
    assert "reaches 0.95 in 107 steps against 20." in finding.reason
    assert "fetchsgd_subtract_1row in 3/3" in finding.reason


def test_federated_config_compares_at_equal_upload():
    """Every FetchSGD sketch has as many float32 cells as top-k sends int32 + float32 pairs."""
    raw, cases = claims.config_cases(fetchsgd.FEDERATED)
    assert {c.values["participation"] for c in cases} == {0.01, 0.05}
    assert len({c.values["seed"] for c in cases}) >= 3
    cfg = cases[0].config
    assert cfg["workers"] == 1000 and cfg["model"]["sharding"] == "dirichlet"
    methods = {}
    for algo in cfg["algorithms"]:
        methods.setdefault(fetchsgd.method(algo), []).append(algo)
    assert set(methods) == set(fetchsgd.METHODS)
    cells = {a["rows"] * a["cols"] * 4 for a in methods["fetchsgd"]}
    pairs = {a["k"] * 8 for m in fetchsgd.TOPK for a in methods[m]}
    assert cells == pairs and len(cells) == 1
    assert all(a["error"] == "zero" for a in methods["fetchsgd"])


def test_claim_runs_both_configs():
    assert fetchsgd.CLAIM.configs == [fetchsgd.FEDERATED, fetchsgd.FULL]
    for name in fetchsgd.CLAIM.configs:
        assert claims.config_cases(name)[1]


def test_best_settings_at_the_end_of_their_grid_are_named(tmp_path):
    """lr 0.1 wins every grid of {0.1, 0.5}: the smallest, so every method is at an end."""
    finding = fetchsgd.analyse(_runs(_acc(0.80)), tmp_path)
    assert "Best learning rates at an end of their grid" in finding.notes
    assert "FetchSGD at 10 of 1,000 (1 %) (lr 0.1)" in finding.notes
    assert finding.notes.count("(lr 0.1)") == 2 * len(fetchsgd.METHODS)


def test_best_settings_inside_their_grid_are_not_flagged(tmp_path):
    jobs = {
        f"{prefix}_lr{lr}": spec
        for prefix, spec in {
            "sgd": ("sgd", 0.9),
            "fetchsgd": ("fetchsgd", 0.9),
            "topk": ("memsgd", 0.0),
            "topk_momentum": ("memsgd", 0.9),
        }.items()
        for lr in (0.05, 0.1, 0.5)
    }

    def acc(label, level, seed):
        return 0.80 if label.endswith("_lr0.1") else 0.70

    finding = fetchsgd.analyse(_runs(acc, jobs=jobs), tmp_path)
    assert finding.notes.endswith("Every method's best learning rate lies inside its grid.")
    assert finding.rows[0][2] == "FetchSGD: ``fetchsgd_lr0.1`` (of 3)"
