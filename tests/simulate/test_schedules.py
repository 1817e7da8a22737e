"""Learning-rate schedules and mem-SGD's weighted averaging."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulate.schedules import Schedule


def test_constant_and_step():
    assert Schedule({"kind": "constant", "lr": 0.3})(10**6) == 0.3
    s = Schedule({"kind": "step", "lr": 1.0, "milestones": [2, 5], "decay": 0.1}, lr=2.0)
    assert [s(t) for t in (0, 1, 2, 4, 5, 9)] == pytest.approx([2, 2, 0.2, 0.2, 0.02, 0.02])


def test_memsgd_rate():
    s = Schedule({"kind": "memsgd", "gamma": 2.0, "tau": 100.0, "lam": 0.01, "average": True})
    assert s(0) == pytest.approx(2.0) and s(100) == pytest.approx(1.0)
    assert s.averaging


@given(st.floats(0.0, 1000.0), st.integers(1, 60))
def test_online_average_is_the_weighted_average(tau, steps):
    """``w_avg`` after ``T`` steps = sum_t (t + tau)^2 w_{t+1} / sum_t (t + tau)^2 ... for tau > 0.

    The recursion of Stich et al. weighs iterate ``w_{t+1}`` by ``(t + tau)^2``
    up to the normalisation; check it against the explicit weighted mean.
    """
    s = Schedule({"kind": "memsgd", "gamma": 1.0, "tau": tau, "lam": 1.0, "average": True})
    rng = np.random.default_rng(0)
    iterates = rng.standard_normal((steps, 3))
    avg = np.zeros(3)
    for t, w in enumerate(iterates):
        s.update_average(avg, w, t)
    weights = np.array([(t + tau) ** 2 for t in range(steps)])
    if weights.sum() == 0:
        return
    # the recursion's weights: (t + tau)^2 with the t = 0 weight folded into normalisation
    expected = weights @ iterates / weights.sum()
    np.testing.assert_allclose(avg, expected, rtol=1e-6, atol=1e-9)
