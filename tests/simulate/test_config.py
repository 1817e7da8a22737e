"""Configs: checking (unknown keys, types, impossible values), overrides, sweeps, TOML."""

from __future__ import annotations

import inspect
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulate import config
from simulate.config import ConfigError

from .conftest import resolved

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_defaults_are_filled_in(tiny_raw):
    cfg = resolved(tiny_raw)
    assert cfg["model"]["spectrum"] == "powerlaw" and cfg["d"] == 256
    assert cfg["algorithms"][2]["error"] == "zero" and cfg["algorithms"][2]["label"] == "fetchsgd"
    assert cfg["checkpoint_every"] == 0 and cfg["target"] is None


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("stepz", 3, r"stepz: unknown key"),
        ("model.dd", 3, r"model\.dd: unknown key"),
        ("algorithms.fetchsgd.kk", 3, r"algorithms\.2\.kk: unknown key"),
        ("steps", "ten", r"steps: expected an integer"),
        ("steps", 1.5, r"steps: expected an integer"),
        ("workers", 0, r"workers: must be >= 1"),
        ("model.basis", "diagonal", r"model\.basis: 'diagonal' is not one of"),
        ("model.d", 100, r"model\.d: the rotated basis needs a power of two"),
        ("algorithms.fetchsgd.k", 1000, r"algorithms\.2\.k: k = 1000 exceeds the dimension"),
        ("algorithms.fetchsgd.rows", 0, r"algorithms\.2\.rows: must be >= 1"),
        ("algorithms.fetchsgd.k", 1.5, r"algorithms\.2\.k: a fraction of d must lie in"),
        ("algorithms.sgd.nesterov", 1, r"algorithms\.0\.nesterov: expected true or false"),
        ("schedule.lr", -1.0, r"schedule\.lr: must be > 0"),
        ("dtype", "float16", r"dtype: 'float16' is not one of"),
    ],
)
def test_bad_values_name_the_key(tiny_raw, key, value, match):
    with pytest.raises(ConfigError, match=match):
        config.resolve(tiny_raw, [(key, value)])


def test_missing_and_structural_errors(tiny_raw):
    del tiny_raw["steps"]
    with pytest.raises(ConfigError, match=r"steps: missing"):
        config.resolve(tiny_raw)
    with pytest.raises(ConfigError, match=r"^model: missing"):
        config.resolve({"steps": 1, "workers": 1, "algorithms": [{"name": "sgd"}]})
    with pytest.raises(ConfigError, match=r"algorithms\.0\.name: 'adam' is not one of"):
        config.resolve(
            {
                "steps": 1,
                "workers": 1,
                "model": {"kind": "quadratic", "d": 8},
                "algorithms": [{"name": "adam"}],
            }
        )
    with pytest.raises(ConfigError, match=r"algorithms: label 'sgd' is used twice"):
        config.resolve(
            {
                "steps": 1,
                "workers": 1,
                "model": {"kind": "quadratic", "d": 8},
                "algorithms": [{"name": "sgd"}, {"name": "sgd"}],
            }
        )


def test_workers_need_samples():
    raw = {
        "steps": 1,
        "workers": 2000,
        "model": {"kind": "logistic", "dataset": "breast_cancer"},
        "algorithms": [{"name": "sgd"}],
    }
    with pytest.raises(ConfigError, match=r"workers: 455 training samples cannot feed 2000"):
        config.resolve(raw)


def test_fractions_of_d_and_memsgd_defaults():
    raw = {
        "steps": 1,
        "workers": 2,
        "model": {"kind": "logistic", "dataset": "digits"},
        "schedule": {"kind": "memsgd"},
        "algorithms": [{"name": "memsgd", "k": 0.1}],
    }
    cfg = resolved(raw)
    assert cfg["algorithms"][0]["k"] == 6  # round(0.1 * 64)
    assert cfg["schedule"]["tau"] == 64.0 and cfg["schedule"]["lam"] == pytest.approx(1 / 1438)


def test_set_path_selects_algorithms(tiny_raw):
    config.set_path(tiny_raw, "algorithms.k", 8)  # every algorithm taking k
    assert [a.get("k") for a in tiny_raw["algorithms"]] == [None, 8, 8]
    config.set_path(tiny_raw, "algorithms.1.k", 4)
    assert tiny_raw["algorithms"][1]["k"] == 4
    with pytest.raises(ConfigError, match=r"no algorithm with label or index 'nope'"):
        config.set_path(tiny_raw, "algorithms.nope.k", 1)
    assert config.parse_override("model.hidden=[8, 8]") == ("model.hidden", [8, 8])
    with pytest.raises(ConfigError, match="expected key=value"):
        config.parse_override("steps")


def test_sweep_expands_cases(tiny_raw):
    tiny_raw["sweep"] = {"model.d": [64, 128], "algorithms.fetchsgd.cols": [16, 32]}
    cases = config.resolve(tiny_raw)
    assert [c.label for c in cases] == [
        "d=64,cols=16",
        "d=64,cols=32",
        "d=128,cols=16",
        "d=128,cols=32",
    ]
    assert cases[3].config["d"] == 128 and cases[3].config["algorithms"][2]["cols"] == 32
    tiny_raw["sweep"] = {"model.d": [64, 100]}
    with pytest.raises(ConfigError, match=r"power of two.*\[sweep case d=100\]"):
        config.resolve(tiny_raw)


def test_zipped_sweep_keys_move_together(tiny_raw):
    tiny_raw["sweep"] = {
        "model.d": [64, 128],
        "workers,algorithms.fetchsgd.cols": [[2, 16], [4, 32]],
    }
    cases = config.resolve(tiny_raw)
    assert [c.label for c in cases] == [
        "d=64,workers=2,cols=16",
        "d=64,workers=4,cols=32",
        "d=128,workers=2,cols=16",
        "d=128,workers=4,cols=32",
    ]
    assert cases[1].values == {"model.d": 64, "workers": 4, "algorithms.fetchsgd.cols": 32}
    assert cases[1].config["workers"] == 4 and cases[1].config["algorithms"][2]["cols"] == 32
    tiny_raw["sweep"] = {"workers,model.d": [[2, 64], [4]]}
    with pytest.raises(ConfigError, match=r"sweep\.workers,model\.d: expected a list of 2-element"):
        config.resolve(tiny_raw)


def test_shipped_configs_are_valid():
    names = config.shipped()
    assert "default" in names
    for name in names:
        assert config.resolve(config.load(config.CONFIG_DIR / f"{name}.toml"))


def test_schema_matches_pysketch_constructors():
    from pysketch.compress import ALGORITHMS

    for name, cls in ALGORITHMS.items():
        params = set(inspect.signature(cls.__init__).parameters) - {"self", "d", "lr", "kw"}
        assert params == set(config.ALGORITHMS[name]), name


_scalars = st.one_of(
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8),
)
_keys = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)


@given(
    st.dictionaries(_keys, st.one_of(_scalars, st.lists(st.integers(-5, 5), max_size=3))),
    st.dictionaries(_keys, _scalars, max_size=3),
)
def test_dumps_round_trips(top, table):
    cfg = {**top, "tbl": table, "arr": [table, table]}
    assert tomllib.loads(config.dumps(cfg)) == cfg
