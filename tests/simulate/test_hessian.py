"""Hessian tools against dense linear algebra for small d."""

from __future__ import annotations

import numpy as np
import pytest

from simulate import hessian, models

from .conftest import resolved
from .test_models import build


def _dense(model, w):
    h = np.column_stack([model.hvp(w, e) for e in np.eye(model.d)])
    return 0.5 * (h + h.T)


@pytest.mark.parametrize("name", ["quadratic-rotated", "logistic-sparse", "mlp-1"])
def test_top_eigenvalues_match_eigh(name):
    model = build(name)
    w = model.init() + 0.1
    exact = np.linalg.eigvalsh(_dense(model, w))[::-1]
    top = hessian.top_eigenvalues(lambda v: model.hvp(w, v), model.d, k=3)
    np.testing.assert_allclose(top, exact[:3], rtol=1e-6, atol=1e-8)


def test_lanczos_beyond_the_dense_shortcut():
    """d = 512 goes through ARPACK (eigsh) rather than the dense shortcut."""
    cfg = resolved(
        {
            "steps": 1,
            "workers": 1,
            "algorithms": [{"name": "sgd"}],
            "model": {"kind": "quadratic", "d": 512, "basis": "rotated", "alpha": 0.5},
        }
    )
    q = models.build(cfg["model"], 1, seed=0, dtype="float64")
    top = hessian.top_eigenvalues(lambda v: q.hvp(q.init(), v), q.d, k=4)
    np.testing.assert_allclose(top, q.lam[:4], rtol=1e-8)


@pytest.mark.parametrize("name", ["quadratic-coordinate", "mlp-1"])
def test_slq_estimates_the_sum_of_absolute_eigenvalues(name):
    model = build(name)
    w = model.init() + 0.1
    exact = np.abs(np.linalg.eigvalsh(_dense(model, w))).sum()
    estimate = hessian.slq_abs_trace(lambda v: model.hvp(w, v), model.d, probes=64, steps=40)
    assert estimate == pytest.approx(exact, rel=0.1)
    summary = hessian.spectrum_summary(model, w, top=2, probes=64, steps=40)
    assert summary["kappa"] == pytest.approx(exact / summary["lambda_max"], rel=0.1)


def test_lanczos_stops_when_the_krylov_space_is_exhausted():
    alpha, beta = hessian.lanczos(lambda v: 2.0 * v, np.ones(10), steps=5)
    assert alpha == pytest.approx([2.0]) and beta.size == 0
