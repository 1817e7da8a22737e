"""Fixtures of the simulator's tests: tiny configs and a runner of them."""

from __future__ import annotations

import copy

import pytest

from simulate import config

TINY = {
    "name": "tiny",
    "seed": 3,
    "steps": 12,
    "workers": 4,
    "dtype": "float64",
    "eval_every": 3,
    "model": {
        "kind": "quadratic",
        "d": 256,
        "basis": "rotated",
        "noise": 0.1,
        "heterogeneity": 0.05,
    },
    "schedule": {"kind": "constant", "lr": 0.5},
    "algorithms": [
        {"name": "sgd", "rho": 0.5},
        {"name": "memsgd", "k": 16},
        {"name": "fetchsgd", "k": 16, "rows": 3, "cols": 64},
    ],
}


@pytest.fixture
def tiny_raw():
    """A raw config that runs in well under a second."""
    return copy.deepcopy(TINY)


def resolved(raw: dict, **overrides) -> dict:
    """The single checked case of ``raw`` with dotted ``overrides`` (``model__d=...``)."""
    pairs = [(k.replace("__", "."), v) for k, v in overrides.items()]
    (case,) = config.resolve(raw, pairs)
    return case.config
