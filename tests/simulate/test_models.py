"""Models: gradients against finite differences, per-worker structure, GD on a quadratic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulate import models
from simulate.fwht import Rotation, fwht

from .conftest import resolved

BASE = {"steps": 1, "workers": 3, "algorithms": [{"name": "sgd"}]}
MODELS = {
    "quadratic-coordinate": {
        "kind": "quadratic",
        "d": 32,
        "spectrum": "twolevel",
        "top": 4,
        "heterogeneity": 0.3,
    },
    "quadratic-rotated": {"kind": "quadratic", "d": 32, "basis": "rotated", "heterogeneity": 0.3},
    "logistic-dense": {"kind": "logistic", "dataset": "synthetic_dense", "d": 12, "n": 60},
    "logistic-sparse": {
        "kind": "logistic",
        "dataset": "synthetic_sparse",
        "d": 40,
        "n": 60,
        "density": 0.2,
        "batch_size": 5,
    },
    "logistic-breast-cancer": {
        "kind": "logistic",
        "dataset": "breast_cancer",
        "sharding": "label",
        "solve_optimum": False,
    },
    "mlp-1": {
        "kind": "mlp",
        "dataset": "teacher_student",
        "hidden": [5],
        "n": 40,
        "inputs": 4,
        "classes": 3,
        "l2": 0.01,
    },
    "mlp-2-digits": {"kind": "mlp", "dataset": "digits", "hidden": [4, 3], "batch_size": 8},
}


def build(name: str, dtype="float64", workers=3, **changes):
    cfg = resolved({**BASE, "workers": workers, "model": {**MODELS[name], **changes}})
    return models.build(cfg["model"], workers, seed=5, dtype=dtype)


def _point(model) -> np.ndarray:
    rng = np.random.default_rng(1)
    return model.init() + 0.3 * rng.standard_normal(model.d)


def _fd_gradient(f, w, eps=1e-6):
    g = np.zeros_like(w)
    for i in range(w.size):
        e = np.zeros_like(w)
        e[i] = eps
        g[i] = (f(w + e) - f(w - e)) / (2 * eps)
    return g


@pytest.mark.parametrize("name", MODELS)
def test_full_gradient_matches_finite_differences(name):
    model = build(name)
    w = _point(model)
    fd = _fd_gradient(model.loss, w)
    np.testing.assert_allclose(model.gradient(w), fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", [n for n in MODELS if not n.startswith("quadratic")])
def test_worker_gradient_matches_finite_differences_of_its_shard(name):
    model = build(name)
    model.batch_size = 20
    w = _point(model)
    idx = model.batch(1, step=0)

    def shard_loss(v):
        value, _ = model._loss_grad(v, model.data.x_train[idx], model.data.y_train[idx], False)
        return value + 0.5 * model.l2 * float(v @ v)

    np.testing.assert_allclose(
        model.worker_gradient(w, 1, step=0), _fd_gradient(shard_loss, w), rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("name", MODELS)
def test_worker_gradients_depend_on_ids_only(name):
    model = build(name)
    w = _point(model)
    rows = model.worker_gradients(w, [2, 0], step=7, out=np.empty((2, model.d)))
    np.testing.assert_array_equal(rows[0], model.worker_gradient(w, 2, step=7))
    np.testing.assert_array_equal(rows[1], build(name).worker_gradient(w, 0, step=7))
    assert not np.array_equal(rows[0], model.worker_gradient(w, 2, step=8)) or name.startswith(
        "quadratic"
    )


def test_quadratic_workers_average_to_the_objective():
    model = build("quadratic-rotated", workers=3)
    w = _point(model)
    mean = np.mean([model.worker_gradient(w, i, 0) for i in range(3)], axis=0)
    np.testing.assert_allclose(mean, model.gradient(w), atol=1e-12)
    assert model.suboptimality(model.w_opt) == pytest.approx(0.0, abs=1e-15)
    assert model.loss(w) - model.f_star == pytest.approx(model.suboptimality(w), rel=1e-9)


def test_quadratic_noise_has_the_chosen_norm():
    cfg = resolved({**BASE, "model": {"kind": "quadratic", "d": 4096, "noise": 2.0}})
    model = models.build(cfg["model"], 3, seed=0, dtype="float64")
    w = model.w_opt
    noise = model.worker_gradient(w, 0, step=1) - model.gradient(w)
    assert np.linalg.norm(noise) == pytest.approx(2.0, rel=0.05)


@pytest.mark.parametrize("basis", ["coordinate", "rotated"])
def test_gradient_descent_on_a_quadratic_matches_the_closed_form(basis):
    """``f(w_t) - f* = 1/2 sum_i lambda_i (1 - eta lambda_i)^(2t) c_i^2``, ``c = Q^T (w0 - w*)``."""
    cfg = resolved(
        {
            **BASE,
            "model": {
                "kind": "quadratic",
                "d": 64,
                "basis": basis,
                "spectrum": "powerlaw",
                "alpha": 1.0,
            },
        }
    )
    model = models.build(cfg["model"], 3, seed=2, dtype="float64")
    eta, w = 0.9, model.init()
    e0 = w - model.w_opt
    c = e0 if model.rotation is None else model.rotation.transpose(e0)
    for t in range(1, 31):
        w = w - eta * model.worker_gradient(w, 0, step=t)
        closed = 0.5 * np.sum(model.lam * (1 - eta * model.lam) ** (2 * t) * c**2)
        assert model.suboptimality(w) == pytest.approx(closed, rel=1e-9)


@given(st.integers(0, 10), st.integers(0, 2**32 - 1))
def test_rotation_is_orthogonal(log_d, seed):
    d = 2**log_d
    q = Rotation(d, seed)
    dense = np.column_stack([q.apply(e) for e in np.eye(d)])
    np.testing.assert_allclose(dense.T @ dense, np.eye(d), atol=1e-12)
    np.testing.assert_allclose(
        q.transpose(q.apply(np.arange(d, dtype=float))), np.arange(d), atol=1e-9
    )


def test_fwht_matches_the_hadamard_matrix():
    from scipy.linalg import hadamard

    x = np.random.default_rng(0).standard_normal(16)
    np.testing.assert_allclose(fwht(x), hadamard(16) @ x, atol=1e-12)
    with pytest.raises(ValueError, match="power-of-two"):
        fwht(np.ones(6))


def test_label_sharding_is_non_iid():
    model = build("mlp-2-digits", workers=10, sharding="label")
    labels = [np.unique(model.data.y_train[s]).size for s in model.shards]
    assert max(labels) <= 3 and sum(s.size for s in model.shards) == model.data.y_train.size


def test_float32_gradients_stay_float32():
    model = build("mlp-1", dtype="float32")
    w = model.init()
    assert model.worker_gradient(w, 0, 0).dtype == np.float32
    assert model.init().dtype == np.float32


@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_shuffle_sampling_visits_each_sample_once_an_epoch(batch_size):
    model = build("logistic-dense", workers=2, batch_size=batch_size, sampling="shuffle")
    shard = model.shards[1]
    epochs = 3
    drawn = np.concatenate(
        [model.batch(1, step) for step in range(epochs * shard.size // batch_size + 1)]
    )[: epochs * shard.size]
    for e in range(epochs):
        assert sorted(drawn[e * shard.size : (e + 1) * shard.size]) == sorted(shard)
    orders = drawn[: 2 * shard.size].reshape(2, shard.size)
    assert not np.array_equal(orders[0], orders[1])  # a fresh order each epoch
    again = build("logistic-dense", workers=2, batch_size=batch_size, sampling="shuffle")
    np.testing.assert_array_equal(again.batch(1, 5), model.batch(1, 5))  # ids alone decide


def test_shuffle_sampling_refuses_local_steps():
    from simulate import config

    raw = {
        **BASE,
        "model": {**MODELS["logistic-dense"], "sampling": "shuffle"},
        "algorithms": [{"name": "sgd", "local_steps": 2}],
    }
    with pytest.raises(config.ConfigError, match=r"algorithms\.0\.local_steps"):
        resolved(raw)
