"""The training loop in-process: resume, divergence, local steps, checkpoints."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from simulate import checkpoint, config, models, runner
from simulate.parallel import Layout

from .conftest import TINY, resolved


def run(raw, run_dir, resume=False, overrides=()):
    run_dir.mkdir(parents=True, exist_ok=True)
    cases = config.resolve(raw, list(overrides))
    return runner.run_cases(cases, run_dir, Layout(mpi=False), resume=resume, log=lambda m: None)


def metrics(run_dir, label):
    rows = runner.read_rows(run_dir / "metrics" / f"{label}.csv")
    return [{k: v for k, v in r.items() if k != "wall"} for r in rows]


def test_run_writes_metrics_and_results(tiny_raw, tmp_path):
    results = run(tiny_raw, tmp_path)
    assert [r.label for r in results] == ["sgd", "memsgd", "fetchsgd"]
    rows = metrics(tmp_path, "fetchsgd")
    assert [r["step"] for r in rows] == [0, 3, 6, 9, 12]
    assert rows[-1]["suboptimality"] < rows[0]["suboptimality"]
    assert rows[-1]["upload"] > 0 and rows[0]["upload"] == 0
    sgd = results[0]
    assert sgd.compression == pytest.approx(1.0) and results[2].compression > 1


class Interrupt(Exception):
    pass


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"participation": 2, "download": "changed"},
        {"participation": 2, "download": "topk", "download_k": 32},
    ],
)
def test_resume_equals_an_uninterrupted_run(tiny_raw, tmp_path, monkeypatch, extra):
    """Also with clients sampled per step and their downloads counted since their last round."""
    tiny_raw.update(checkpoint_every=4, **extra)
    run(tiny_raw, tmp_path / "full")

    real = models.Quadratic._add_worker_terms

    def failing(self, g, worker, step, local_step):
        if step == 9:
            raise Interrupt
        return real(self, g, worker, step, local_step)

    monkeypatch.setattr(models.Quadratic, "_add_worker_terms", failing)
    with pytest.raises(Interrupt):
        run(tiny_raw, tmp_path / "cut")
    assert checkpoint.load_marker(tmp_path / "cut" / "checkpoints", "sgd")["step"] == 8
    monkeypatch.setattr(models.Quadratic, "_add_worker_terms", real)
    results = run(tiny_raw, tmp_path / "cut", resume=True)
    for label in ("sgd", "memsgd", "fetchsgd"):
        assert metrics(tmp_path / "cut", label) == metrics(tmp_path / "full", label)
    assert [r.status for r in results] == ["done"] * 3
    # A second resume finds every job done and runs nothing.
    assert [r.steps for r in run(tiny_raw, tmp_path / "cut", resume=True)] == [12] * 3


def test_divergence_stops_with_a_message_and_keeps_the_files(tiny_raw, tmp_path):
    tiny_raw["schedule"]["lr"] = 1e6
    tiny_raw["steps"] = 30
    tiny_raw["algorithms"] = tiny_raw["algorithms"][:1]
    results = run(tiny_raw, tmp_path)
    assert results[0].status == "diverged" and results[0].steps < 30
    assert "stopped" in results[0].message and "Files so far are kept" in results[0].message
    assert len(metrics(tmp_path, "sgd")) >= 1


def test_local_steps_are_gradient_steps(tmp_path):
    """SGD with K local steps, global lr = local lr: one round = K gradient steps."""
    raw = {
        "steps": 4,
        "workers": 1,
        "dtype": "float64",
        "eval_every": 1,
        "model": {"kind": "quadratic", "d": 64, "basis": "rotated"},
        "schedule": {"kind": "constant", "lr": 0.9},
        "algorithms": [{"name": "sgd", "local_steps": 3}],
    }
    run(raw, tmp_path)
    cfg = resolved(raw)
    model = models.build(cfg["model"], 1, seed=0, dtype="float64")
    c = model.rotation.transpose(model.init() - model.w_opt)
    for row in metrics(tmp_path, "sgd"):
        t = 3 * row["step"]
        closed = 0.5 * np.sum(model.lam * (1 - 0.9 * model.lam) ** (2 * t) * c**2)
        assert row["suboptimality"] == pytest.approx(closed, rel=1e-6)


def test_memsgd_schedule_evaluates_the_average(tmp_path):
    raw = {
        "steps": 20,
        "workers": 2,
        "eval_every": 10,
        "model": {"kind": "logistic", "dataset": "breast_cancer"},
        "schedule": {"kind": "memsgd", "tau": 30.0},
        "algorithms": [{"name": "memsgd", "k": 3}],
    }
    (result,) = run(raw, tmp_path)
    rows = metrics(tmp_path, "memsgd")
    assert rows[-1]["lr"] == pytest.approx(2.0 / (1 / 455 * (19 + 30)))
    assert result.final["suboptimality"] < rows[0]["suboptimality"]


def test_checkpoint_state_round_trips(tmp_path):
    state = {
        "w": np.arange(3.0),
        "algo": {"steps": 4, "name": "x", "server.m": np.ones(2)},
        "flag": True,
        "none": None,
    }
    arrays, scalars = checkpoint.split_state(state)
    assert set(arrays) == {"w", "algo/server.m"}
    path, scalars = checkpoint.save(tmp_path, "job", 0, 7, state)
    marker = {"step": 7, "wall": 1.0, "ranks": 1, "workers": 1, "scalars": [scalars]}
    checkpoint.commit(tmp_path, "job", {**marker, "result": None})
    back = checkpoint.load(tmp_path, "job", 0, checkpoint.load_marker(tmp_path, "job"))
    np.testing.assert_array_equal(back["algo"]["server.m"], np.ones(2))
    assert back["algo"]["steps"] == 4 and back["flag"] is True and back["none"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.json", "job.r0.s7.npz"]


def test_presummed_gradients_give_the_same_run(tiny_raw, tmp_path):
    """The linearity shortcut (on by default) against one vector per worker."""
    tiny_raw["algorithms"] = [
        {"name": "sgd", "rho": 0.5},
        {"name": "fetchsgd", "k": 16, "rows": 3, "cols": 64},
        {"name": "sketchdl", "cols": 64},
    ]
    run(tiny_raw, tmp_path / "on")
    run(tiny_raw, tmp_path / "off", overrides=[("presum", False)])
    for label in ("sgd", "fetchsgd", "sketchdl"):
        assert metrics(tmp_path / "on", label) == metrics(tmp_path / "off", label)


def test_a_loss_far_above_its_start_is_a_divergence(tiny_raw, tmp_path):
    """lr 2.5 on lambda_max = 1: f - f* grows 2.25x a step, finite, and is stopped at 10x."""
    tiny_raw.update(steps=30, eval_every=1)
    tiny_raw["schedule"]["lr"] = 2.5
    tiny_raw["algorithms"] = [{"name": "sgd"}]
    (result,) = run(tiny_raw, tmp_path)
    rows = metrics(tmp_path, "sgd")
    assert result.status == "diverged" and result.outcome == "diverge"
    assert np.isfinite(rows[-1]["suboptimality"])
    assert rows[-1]["suboptimality"] > 10 * rows[0]["suboptimality"]
    assert rows[-2]["suboptimality"] <= 10 * rows[0]["suboptimality"]
    assert result.steps == rows[-1]["step"] < 30
    assert "above 10x its start" in result.message
    # the ratio is configurable: at 1e6 the same run goes further
    (late,) = run(tiny_raw, tmp_path / "late", overrides=[("divergence.loss_ratio", 1e6)])
    assert late.status == "diverged" and late.steps > result.steps


@pytest.mark.parametrize(
    ("step", "accuracy", "why"),
    [(10, 0.52, None), (30, 0.52, "at chance (0.510"), (30, 0.53, None), (30, 0.5, "at chance")],
)
def test_accuracy_at_chance_after_the_warm_up_is_a_divergence(step, accuracy, why):
    cfg = {"divergence": {"loss_ratio": 10.0, "warmup": 25, "chance_margin": 0.01}}
    first = {"step": 0, "loss": 0.69, "test_accuracy": 0.5}
    row = {"step": step, "loss": 0.6, "test_accuracy": accuracy}
    message = runner.blow_up(row, first, cfg, chance=0.51)
    assert (message is None) == (why is None)
    if why:
        assert why in message and f"after {step} steps" in message


def test_relative_target_is_a_fraction_of_the_start(tiny_raw, tmp_path):
    tiny_raw["target"] = {"metric": "suboptimality", "value": 0.83, "relative": True}
    tiny_raw["algorithms"] = [{"name": "sgd"}]
    (result,) = run(tiny_raw, tmp_path)
    rows = metrics(tmp_path, "sgd")
    first = next(r["step"] for r in rows if r["suboptimality"] <= 0.83 * rows[0]["suboptimality"])
    assert result.steps_to_target == first > 0 and result.outcome == "reach"
    tiny_raw["target"]["value"] = 1e-9
    (missed,) = run(tiny_raw, tmp_path / "miss")
    assert missed.steps_to_target is None and missed.outcome == "miss"


def test_expectations_are_set_per_job_from_label_patterns(tiny_raw):
    tiny_raw["target"] = {"metric": "suboptimality", "value": 0.5, "relative": True}
    tiny_raw["sweep"] = {"model.d": [64, 128]}
    tiny_raw["expect"] = {"d=128/sgd": "miss", "*/fetchsgd": "diverge"}
    cases = config.resolve(tiny_raw)
    got = {
        config.job_label(c.label, a["label"]): a["expect"]
        for c in cases
        for a in c.config["algorithms"]
    }
    assert got == {
        "d=64/sgd": "reach",
        "d=64/memsgd": "reach",
        "d=64/fetchsgd": "diverge",
        "d=128/sgd": "miss",
        "d=128/memsgd": "reach",
        "d=128/fetchsgd": "diverge",
    }
    result = runner.JobResult("d=64/sgd", "d=64", "sgd", expect="reach", outcome="miss")
    assert result.as_expected is False


@pytest.mark.parametrize(
    ("expect", "error"),
    [
        ({"d=256/sgd": "miss"}, r"expect\.d=256/sgd: matches no job"),
        ({"sgd": "fail"}, r"expect\.sgd: 'fail' is not one of reach, miss, diverge"),
        ({"*": "miss", "sgd": "reach"}, "sgd matches"),
    ],
)
def test_bad_expectations_name_the_key(tiny_raw, expect, error):
    tiny_raw["target"] = {"metric": "loss", "value": 0.5}
    tiny_raw["expect"] = expect
    with pytest.raises(config.ConfigError, match=error):
        config.resolve(tiny_raw)
    del tiny_raw["target"]
    with pytest.raises(config.ConfigError, match=r"expect: needs a \[target\]"):
        config.resolve(tiny_raw)


def test_resume_says_which_jobs_it_skipped_resumed_and_started(tiny_raw, tmp_path, monkeypatch):
    tiny_raw["checkpoint_every"] = 4
    real = models.Quadratic._add_worker_terms
    calls = {"fetchsgd": 0}

    def failing(self, g, worker, step, local_step):
        calls["fetchsgd"] += 1
        if step == 9 and calls["fetchsgd"] > 2 * 12 * 4:  # during the third job
            raise Interrupt
        return real(self, g, worker, step, local_step)

    monkeypatch.setattr(models.Quadratic, "_add_worker_terms", failing)
    with pytest.raises(Interrupt):
        run(tiny_raw, tmp_path)
    monkeypatch.setattr(models.Quadratic, "_add_worker_terms", real)
    lines = []
    cases = config.resolve(tiny_raw)
    runner.run_cases(cases, tmp_path, Layout(mpi=False), resume=True, log=lines.append)
    assert lines == [
        "resume: skipped sgd (finished before: done at step 12)",
        "resume: skipped memsgd (finished before: done at step 12)",
        "resume: resumed fetchsgd from step 8 to 12",
    ]


def _job(raw, tmp_path, algo=0):
    """A built job of ``raw``'s ``algo``-th algorithm (its model, algorithm and weights)."""
    (case,) = config.resolve(raw, [])
    cfg = case.config
    model = models.build(cfg["model"], cfg["workers"], seed=cfg["seed"], dtype=cfg["dtype"])
    job = runner.Job(case, cfg["algorithms"][algo], model, tmp_path, Layout(mpi=False))
    job._build()
    return job


MLP = {
    "steps": 1,
    "workers": 3,
    "dtype": "float64",
    "model": {"kind": "mlp", "dataset": "digits", "hidden": [8], "sharding": "dirichlet"},
    "schedule": {"kind": "constant", "lr": 0.5},
    "algorithms": [{"name": "sgd"}],
}


def test_weight_decay_is_added_to_each_gradient_before_compression(tmp_path):
    raw = copy.deepcopy(MLP)
    plain, decayed = _job(raw, tmp_path / "a"), None
    raw["algorithms"][0]["weight_decay"] = 0.1
    decayed = _job(raw, tmp_path / "b")
    w0 = plain.w.copy()
    difference = decayed._step(0, 0.5) - plain._step(0, 0.5)
    np.testing.assert_allclose(difference, 0.5 * 0.1 * w0, rtol=1e-9, atol=1e-15)


def test_samples_weighting_weighs_each_worker_by_its_shard(tmp_path):
    raw = {**copy.deepcopy(MLP), "weighting": "samples"}
    job = _job(raw, tmp_path)
    assert not job.presum
    sizes = np.array([len(s) for s in job.model.shards], dtype=np.float64)
    assert len(set(sizes)) > 1  # Dirichlet shards differ in size
    grads = [job.model.worker_gradient(job.w, i, 0) for i in range(3)]
    expected = 0.5 * sum(n * g for n, g in zip(sizes, grads, strict=True)) / sizes.sum()
    np.testing.assert_allclose(job._step(0, 0.5), expected, rtol=1e-9)


def test_samples_weighting_needs_data_shards():
    raw = {**copy.deepcopy(TINY), "weighting": "samples"}
    with pytest.raises(config.ConfigError, match="weighting"):
        config.resolve(raw, [])


@pytest.mark.parametrize(
    "algo",
    [
        {"name": "true_topk", "k": 16, "lr_placement": "update"},
        {"name": "memsgd", "k": 16, "rho": 0.9, "server_rho": 0.5, "lr_placement": "update"},
        {
            "name": "fetchsgd",
            "k": 16,
            "cols": 64,
            "error": "none",
            "momentum_masking": False,
            "clip_norm": 5.0,
        },
    ],
)
def test_the_released_codes_options_run_from_a_config(algo, tmp_path):
    raw = {**copy.deepcopy(TINY), "algorithms": [algo]}
    (result,) = run(raw, tmp_path)
    assert result.status == "done" and result.steps == TINY["steps"]
