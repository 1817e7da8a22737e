"""The simulator with clients that take part rarely (issue 19, section 1): config, Dirichlet
shards, bytes of the participants, memory of many clients, and mpiexec against one process."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from simulate import config, data, models, runner
from simulate.parallel import Layout

from ..test_distributed import needs_mpi
from .conftest import resolved
from .test_cli import assert_same_metrics, run_here_and_under_mpiexec


# ---------------------------------------------------------------- config
@pytest.mark.parametrize(
    "value, match",
    [
        (0, r"participation: must be >= 1"),
        (1.5, r"participation: a fraction of the workers must lie in \(0, 1\]"),
        (5, r"participation: 5 workers cannot take part among 4"),
        ("all", r"participation: expected an integer or a fraction of the workers"),
    ],
)
def test_bad_participation_is_refused(tiny_raw, value, match):
    with pytest.raises(config.ConfigError, match=match):
        resolved(tiny_raw, participation=value)


def test_participation_defaults_to_every_worker(tiny_raw):
    assert resolved(tiny_raw)["participation"] == 1.0
    assert resolved(tiny_raw)["download"] == "collective"
    with pytest.raises(config.ConfigError, match="download: 'sparse' is not one of"):
        resolved(tiny_raw, download="sparse")


# ---------------------------------------------------------------- Dirichlet shards
LABELS = np.random.default_rng(0).integers(0, 10, 4000)


def _top_class_share(shards) -> float:
    return float(np.mean([np.bincount(LABELS[s], minlength=10).max() / len(s) for s in shards]))


def test_dirichlet_shards_use_every_sample_once_in_equal_sizes():
    shards = data.shard(LABELS, 40, "dirichlet", seed=1, alpha=0.5)
    assert sorted(np.concatenate(shards).tolist()) == list(range(LABELS.size))
    assert {len(s) for s in shards} == {100}


def test_dirichlet_alpha_sets_how_non_iid_the_shards_are():
    """Small alpha: about one class a worker; large alpha: about the overall mix (max 0.1)."""
    few = _top_class_share(data.shard(LABELS, 20, "dirichlet", seed=1, alpha=0.01))
    mixed = _top_class_share(data.shard(LABELS, 20, "dirichlet", seed=1, alpha=1000.0))
    iid = _top_class_share(data.shard(LABELS, 20, "iid", seed=1))
    assert few > 0.8
    assert mixed < 0.16 and abs(mixed - iid) < 0.03, (mixed, iid)


def test_dirichlet_shards_are_a_function_of_the_seed():
    a = data.shard(LABELS, 30, "dirichlet", seed=2, alpha=0.3)
    b = data.shard(LABELS, 30, "dirichlet", seed=2, alpha=0.3)
    c = data.shard(LABELS, 30, "dirichlet", seed=3, alpha=0.3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


# ---------------------------------------------------------------- runs
FEDERATED = {
    "name": "fed",
    "seed": 1,
    "steps": 6,
    "workers": 1000,
    "participation": 0.01,
    "dtype": "float64",
    "eval_every": 3,
    "model": {"kind": "logistic", "dataset": "synthetic_dense", "d": 4000, "n": 1250},
    "schedule": {"kind": "constant", "lr": 0.5},
    "divergence": {"warmup": 1.0},  # 6 steps tell nothing of the accuracy
    "algorithms": [{"name": "sgd"}],
}


def _peak_of_job(raw, tmp_path, name):
    """Peak bytes traced while one job runs: the model, its data and the compiled kernels
    (a first run compiles them) are there before."""
    raw = {**raw, "algorithms": [{"name": name, **ALGO[name]}]}
    cfg, (case,) = resolved(raw), config.resolve(raw)
    model = models.build(cfg["model"], cfg["workers"], cfg["seed"], cfg["dtype"])
    runner.Job(case, cfg["algorithms"][0], model, tmp_path / "warm", Layout(mpi=False)).run()
    job = runner.Job(case, cfg["algorithms"][0], model, tmp_path, Layout(mpi=False))
    tracemalloc.start()
    try:
        result = job.run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


ALGO = {"sgd": {}, "fetchsgd": {"k": 20, "rows": 3, "cols": 200}, "memsgd": {"k": 20}}


@pytest.mark.parametrize("name", ["sgd", "fetchsgd"])
def test_a_thousand_stateless_clients_hold_no_vector_each(tmp_path, name):
    """1000 clients x d = 4000 float64 would be 32 MB; a stateless job holds a few vectors."""
    result, peak = _peak_of_job(FEDERATED, tmp_path, name)
    assert result.status == "done", result.message
    per_client = 1000 * 4000 * 8
    assert peak < per_client / 10, peak


def test_a_thousand_stateful_clients_do_hold_a_vector_each(tmp_path):
    """The contrast that shows the measure above can fail: mem-SGD keeps every memory."""
    _, peak = _peak_of_job(FEDERATED, tmp_path, "memsgd")
    assert peak > 1000 * 4000 * 8


def test_bytes_are_those_of_the_participants(tiny_raw, tmp_path):
    raw = {**tiny_raw, "workers": 8, "participation": 2, "algorithms": [{"name": "sgd"}]}
    (result,) = runner.run_cases(
        config.resolve(raw), tmp_path, Layout(mpi=False), log=lambda m: None
    )
    d, steps = 256, 12
    assert result.upload == steps * d * 8  # per worker that takes part: d float64 a step
    rows = runner.read_rows(tmp_path / "metrics" / "sgd.csv")
    assert rows[-1]["wire_sent"] == steps * 2 * (2 - 1) * d * 8 / 2  # a ring among 2, not 8


def test_changed_download_is_at_most_d_values_a_step(tiny_raw, tmp_path):
    raw = {**tiny_raw, "workers": 8, "participation": 2, "download": "changed"}
    results = runner.run_cases(config.resolve(raw), tmp_path, Layout(mpi=False), log=print)
    by_label = {r.label: r for r in results}
    assert 0 < by_label["fetchsgd"].download < by_label["sgd"].download <= 12 * 256 * 8
    assert by_label["fetchsgd"].upload == 12 * 3 * 64 * 8  # uploads are unchanged


def test_participation_changes_the_run(tiny_raw, tmp_path):
    """Sampled clients: another trajectory than every client, the same twice."""

    def final(participation, where):
        raw = {**tiny_raw, "participation": participation}
        runner.run_cases(config.resolve(raw), tmp_path / where, Layout(mpi=False), log=print)
        return runner.read_rows(tmp_path / where / "metrics" / "memsgd.csv")[-1]["loss"]

    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    assert final(0.5, "a") == final(0.5, "b") != final(1.0, "c")


@needs_mpi
@pytest.mark.mpi
@pytest.mark.parametrize("download", [{}, {"download": "topk", "download_k": 32}])
def test_mpiexec_with_participation_equals_the_in_process_run(tiny_raw, tmp_path, download):
    """One client of four a step: a rank often has none that takes part (and, downloading
    top-k, each client's replica lives on its rank)."""
    raw = {
        **tiny_raw,
        **download,
        "participation": 1,
        "model": {**tiny_raw["model"]},
        "algorithms": [
            *tiny_raw["algorithms"],
            {"name": "sketched_sgd", "k": 16, "rows": 3, "cols": 64, "p2": 2},
        ],
    }
    toml = tmp_path / "part.toml"
    toml.write_text(config.dumps(raw))
    local, mpi = run_here_and_under_mpiexec(toml, tmp_path)
    assert_same_metrics(local, mpi, ["sgd", "memsgd", "fetchsgd", "sketched_sgd"])


def test_the_memory_bound_counts_buffers_of_the_participants_only(tiny_raw):
    """Local steps keep one buffer a worker that takes part: 10 of 1000, not 1000."""
    raw = {**tiny_raw, "workers": 1000, "participation": 0.01}
    raw["algorithms"] = [{"name": "sgd", "local_steps": 2, "local_lr": 0.1}]
    terms = config.memory_terms(resolved(raw), local_workers=1000)
    assert terms["workers = 1000, model.d = 256"] == (10 - 2) * 256 * 8
