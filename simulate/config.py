"""Experiment configurations: TOML in, a validated and resolved ``dict`` out.

A configuration is checked completely before anything runs: an unknown key, a
value of the wrong type or an impossible value (``k > d``, ``rows <= 0``) raises
:class:`ConfigError` with the dotted name of the key. :func:`resolve` fills in
the defaults, expands the ``[sweep]`` table into cases and turns sizes given as
fractions of ``d`` (``k = 0.01``) into integers.

Layout::

    name = "example"          # runs/<name>/
    seed = 0
    steps = 200
    workers = 8
    [model]                   # kind = "quadratic" | "logistic" | "mlp" and its keys
    [schedule]                # kind = "constant" | "step" | "memsgd"
    [[algorithms]]            # one table per algorithm: name = "sgd" | "memsgd" | ...
    [sweep]                   # "model.d" = [1024, 4096]: one case per combination;
                              # "workers,model.batch_size" = [[4, 64], [16, 16]]: zipped
"""

from __future__ import annotations

import copy
import fnmatch
import itertools
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

CONFIG_DIR = Path(__file__).parent / "configs"
REQUIRED = object()


class ConfigError(ValueError):
    """An invalid configuration; the message names the offending key."""


@dataclass(frozen=True)
class Field:
    """One configuration key: its kind, default and allowed values.

    Parameters
    ----------
    kind : str
        ``"int"``, ``"float"`` (an integer is accepted), ``"bool"``, ``"str"``,
        ``"ints"`` (a list of integers) or ``"size"`` (an integer >= 1, or a
        float in (0, 1] meaning that fraction of ``d``).
    default : object
        The value when the key is absent; ``REQUIRED`` makes it mandatory,
        ``None`` leaves it unset.
    choices : tuple of str
        Allowed values of a ``"str"`` field (empty: any string).
    low, high : float, optional
        Bounds of a number; ``open_low`` excludes ``low`` itself.
    """

    kind: str
    default: Any = None
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    open_low: bool = False


def _num(low=None, high=None, *, default=None, kind="float", open_low=False) -> Field:
    return Field(kind, default, low=low, high=high, open_low=open_low)


def _choice(*choices: str, default: Any = None) -> Field:
    return Field("str", choices[0] if default is None else default, choices=choices)


_POSITIVE = {"low": 0.0, "open_low": True}

TOP = {
    "name": Field("str", "experiment"),
    "seed": _num(0, kind="int", default=0),
    "steps": _num(1, kind="int", default=REQUIRED),
    "workers": _num(1, kind="int", default=REQUIRED),
    "dtype": _choice("float32", "float64"),
    "eval_every": _num(1, kind="int", default=10),
    "checkpoint_every": _num(0, kind="int", default=0),
    "out_dir": Field("str", "runs"),
    "description": Field("str", ""),
    "expectation": Field("str", ""),
    "presum": Field("bool", True),
    "participation": Field("size", 1.0),  # of the workers, each step (pysketch.compress)
    "download": _choice("collective", "changed", "topk"),
    # download = "topk": the entries of the weights a client downloads (FetchSGD's code's
    # do_topk_down); its replica lags the server's weights and it trains on the replica.
    "download_k": Field("size", None),
    # How the server averages: each worker alike, or weighted by its training samples (the
    # batch-size weighting of FetchSGD's released code, whose clients take their whole data).
    "weighting": _choice("uniform", "samples"),
}
TARGET = {
    "metric": _choice("loss", "test_loss", "test_accuracy", "suboptimality", "grad_norm"),
    "value": _num(default=REQUIRED),
    "relative": Field("bool", False),
}
DIVERGENCE = {
    "loss_ratio": _num(1.0, default=10.0, open_low=True),
    "warmup": Field("size", 0.25),
    "chance_margin": _num(0.0, 1.0, default=0.01),
}
MEASURED = {
    "seconds": _num(**_POSITIVE, default=REQUIRED),  # wall time
    "cpu_seconds": _num(**_POSITIVE),
    "load": _num(0.0),  # the machine's load average while it ran
    "machine": Field("str", REQUIRED),
    "command": Field("str", ""),
}
OUTCOMES = ("reach", "miss", "diverge")
# [network]: the alpha-beta model of simulate/network.py (bandwidths in bits/s, times in s).
NETWORK = {
    "topology": _choice("ring", "allgather", "ps"),
    "bandwidth": _num(**_POSITIVE, default=REQUIRED),
    "latency": _num(0.0, default=0.0),
    "up_bandwidth": _num(**_POSITIVE),  # ps only: a client's uplink (default: bandwidth)
    "down_bandwidth": _num(**_POSITIVE),
    "server_bandwidth": _num(**_POSITIVE),
}
HESSIAN = {
    "top": _num(1, kind="int", default=3),
    "probes": _num(1, kind="int", default=8),
    "lanczos_steps": _num(2, kind="int", default=30),
}
_DATA_SPLIT = {
    "sharding": _choice("iid", "label", "dirichlet"),
    "dirichlet_alpha": _num(**_POSITIVE, default=0.5),
    "test_fraction": _num(0.0, 0.9, default=0.2),
    "batch_size": _num(1, kind="int", default=32),
    "sampling": _choice("replacement", "shuffle"),
    "l2": _num(0.0, default=None),
}
MODELS = {
    "quadratic": {
        "d": _num(2, kind="int", default=REQUIRED),
        "spectrum": _choice("powerlaw", "flat", "twolevel"),
        "alpha": _num(0.0, default=1.0),
        "lambda_max": _num(**_POSITIVE, default=1.0),
        "top": _num(1, kind="int", default=10),
        "ratio": _num(**_POSITIVE, high=1.0, default=0.01),
        "basis": _choice("coordinate", "rotated"),
        "heterogeneity": _num(0.0, default=0.0),
        "noise": _num(0.0, default=0.0),
    },
    "logistic": {
        "dataset": _choice("synthetic_dense", "synthetic_sparse", "digits", "breast_cancer"),
        "d": _num(1, kind="int", default=1000),
        "n": _num(2, kind="int", default=2000),
        "density": _num(**_POSITIVE, high=1.0, default=0.01),
        "normalize": Field("bool", True),
        "solve_optimum": Field("bool", True),
        **_DATA_SPLIT,
        "batch_size": _num(1, kind="int", default=1),
    },
    "mlp": {
        "dataset": _choice("digits", "teacher_student"),
        "hidden": Field("ints", [64]),
        "n": _num(2, kind="int", default=2000),
        "inputs": _num(1, kind="int", default=32),
        "classes": _num(2, kind="int", default=10),
        "teacher_hidden": _num(1, kind="int", default=32),
        **_DATA_SPLIT,
    },
}
SCHEDULES = {
    "constant": {"lr": _num(**_POSITIVE, default=REQUIRED)},
    "step": {
        "lr": _num(**_POSITIVE, default=REQUIRED),
        "milestones": Field("ints", []),
        "decay": _num(**_POSITIVE, high=1.0, default=0.1),
    },
    "memsgd": {
        "gamma": _num(**_POSITIVE, default=2.0),
        "tau": _num(0.0, default=None),
        "lam": _num(**_POSITIVE, default=None),
        "average": Field("bool", True),
    },
}
_MOMENTUM = _num(0.0, 1.0, default=0.9)
_HASH = _choice("mix", "polynomial")
_LR_PLACEMENT = _choice("state", "update")
ALGORITHMS = {
    "sgd": {"rho": _num(0.0, 1.0, default=0.0), "nesterov": Field("bool", False)},
    "memsgd": {
        "k": Field("size", REQUIRED),
        "compressor": _choice("topk", "randomk"),
        "memory": Field("bool", True),
        "rho": _num(0.0, 1.0, default=0.0),
        "lr_placement": _LR_PLACEMENT,
        "server_rho": _num(0.0, 1.0, default=0.0),
    },
    "true_topk": {
        "k": Field("size", REQUIRED),
        "rho": _MOMENTUM,
        "error": _choice("zero", "none"),
        "lr_placement": _LR_PLACEMENT,
        "momentum_masking": Field("bool", True),
    },
    "sketched_sgd": {
        "k": Field("size", REQUIRED),
        "rows": _num(1, kind="int", default=5),
        "cols": Field("size", REQUIRED),
        "rho": _MOMENTUM,
        "p1": _num(1.0),
        "p2": _num(1.0),
        "momentum_stopping": Field("bool", True),
        "hash": _HASH,
    },
    "fetchsgd": {
        "k": Field("size", REQUIRED),
        "rows": _num(1, kind="int", default=5),
        "cols": Field("size", REQUIRED),
        "rho": _MOMENTUM,
        "error": _choice("zero", "subtract", "none"),
        "lr_placement": _LR_PLACEMENT,
        "momentum_masking": Field("bool", None),
        "clip_norm": _num(**_POSITIVE),
        "zeroing": _choice("cells", "nonzero"),
        "hash": _HASH,
    },
    "sketchdl": {
        "rows": _num(1, kind="int", default=5),
        "cols": Field("size", REQUIRED),
        "error_feedback": Field("bool", False),
        "reseed": Field("bool", False),
        "hash": _HASH,
    },
}
# Keys of an [[algorithms]] entry that the simulator uses itself (not passed on).
ALGORITHM_COMMON = {
    "label": Field("str", None),
    "lr": _num(**_POSITIVE),
    "local_steps": _num(1, kind="int", default=1),
    "local_lr": _num(**_POSITIVE),
    # Added to each worker's gradient before it is compressed, as FetchSGD's released code
    # does (which adds weight_decay / W: the same as weight_decay here divided by W).
    "weight_decay": _num(0.0, default=0.0),
}
SECTIONS = (
    "target",
    "hessian",
    "model",
    "schedule",
    "algorithms",
    "sweep",
    "divergence",
    "expect",
    "measured",
    "network",
)


# ---------------------------------------------------------------- checking values
def _type_error(path: str, want: str, value: Any) -> ConfigError:
    return ConfigError(f"{path}: expected {want}, got {value!r} ({type(value).__name__})")


def check_value(path: str, field: Field, value: Any) -> Any:
    """``value`` checked against ``field`` (and normalised: ints to float for floats).

    Parameters
    ----------
    path : str
        The dotted key, for the message.
    field : Field
        What the key accepts.
    value : object
        The value from the TOML file or the command line.

    Returns
    -------
    object
        The value, as the simulator uses it.

    Raises
    ------
    ConfigError
        When the value has the wrong type or is out of range.
    """
    kind = field.kind
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == "bool":
        if not isinstance(value, bool):
            raise _type_error(path, "true or false", value)
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise _type_error(path, "a string", value)
        if field.choices and value not in field.choices:
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(field.choices)}")
        return value
    if kind == "ints":
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            raise _type_error(path, "a list of integers", value)
        return list(value)
    if kind == "size":
        whole = "the workers" if path == "participation" else "d"
        if is_int:
            if value < 1:
                raise ConfigError(f"{path}: must be >= 1, got {value}")
            return value
        if isinstance(value, float):
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"{path}: a fraction of {whole} must lie in (0, 1], got {value}")
            return value
        raise _type_error(path, f"an integer or a fraction of {whole} in (0, 1]", value)
    if kind == "int" and not is_int:
        raise _type_error(path, "an integer", value)
    if kind == "float":
        if not (is_int or isinstance(value, float)):
            raise _type_error(path, "a number", value)
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{path}: must be finite, got {value}")
    if field.low is not None and (value < field.low or (field.open_low and value == field.low)):
        raise ConfigError(f"{path}: must be {'>' if field.open_low else '>='} {field.low}")
    if field.high is not None and value > field.high:
        raise ConfigError(f"{path}: must be <= {field.high}, got {value}")
    return value


def _check_table(path: str, table: Any, schema: Mapping[str, Field], skip=()) -> dict:
    """``table`` with every key checked and every default filled in."""
    prefix = f"{path}." if path else ""
    if not isinstance(table, Mapping):
        raise _type_error(path or "config", "a table", table)
    unknown = sorted(set(table) - set(schema) - set(skip))
    if unknown:
        known = ", ".join(sorted(set(schema) | set(skip)))
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (known: {known})")
    out = {}
    for key, field in schema.items():
        if key in table:
            out[key] = check_value(prefix + key, field, table[key])
        elif field.default is REQUIRED:
            raise ConfigError(f"{prefix}{key}: missing (required)")
        else:
            out[key] = copy.copy(field.default)
    return out


def _check_kind(path: str, table: Any, kinds: Mapping[str, Mapping[str, Field]], key="kind"):
    if not isinstance(table, Mapping):
        raise _type_error(path, "a table", table)
    if key not in table:
        raise ConfigError(f"{path}.{key}: missing (one of {', '.join(kinds)})")
    kind = check_value(f"{path}.{key}", Field("str", choices=tuple(kinds)), table[key])
    return kind, {key: kind, **_check_table(path, table, kinds[kind], skip=(key,))}


# ---------------------------------------------------------------- dimensions
def model_dimension(model: Mapping[str, Any]) -> int:
    """The number of parameters ``d`` of a checked ``[model]`` table, without loading data.

    Parameters
    ----------
    model : mapping
        A ``[model]`` table with its defaults filled in.

    Returns
    -------
    int
        ``d``.
    """
    kind = model["kind"]
    if kind == "quadratic":
        return model["d"]
    if kind == "logistic":
        return {"digits": 64, "breast_cancer": 30}.get(model["dataset"], model["d"])
    inputs, classes = (
        (64, 10) if model["dataset"] == "digits" else (model["inputs"], model["classes"])
    )
    sizes = [inputs, *model["hidden"], classes]
    return sum((a + 1) * b for a, b in itertools.pairwise(sizes))


DATASET_SIZES = {"digits": 1797, "breast_cancer": 569}


def train_size(model: Mapping[str, Any]) -> int:
    """The number of training samples of a data model (all samples less the test split)."""
    n = DATASET_SIZES.get(model["dataset"], model.get("n", 0))
    return n - round(model["test_fraction"] * n)


def resolve_size(value: int | float, d: int) -> int:
    """An integer size: ``value`` itself, or ``value * d`` rounded (at least 1) for a fraction."""
    return value if isinstance(value, int) else max(1, round(value * d))


def memory_terms(cfg: Mapping[str, Any], local_workers: int) -> dict[str, int]:
    """Lower bounds of the bytes one process holds for the checked case ``cfg``.

    Counted: the model's arrays and data, then, for the algorithm that needs
    most, the parameters, the workers' gradient buffer, the workers' own state
    and the sketches. Each term is keyed by the config keys that set it, with
    their values (``"workers = 8, model.d = 4096"`` for a vector per worker).

    Parameters
    ----------
    cfg : mapping
        One checked case (from :func:`resolve`).
    local_workers : int
        The workers this process simulates (all of them without MPI).

    Returns
    -------
    dict of str to int
    """
    model, d = cfg["model"], cfg["d"]
    item = 4 if cfg["dtype"] == "float32" else 8
    if model["kind"] == "mlp":
        d_key = f"model.hidden = {model['hidden']} (d = {d})"
    else:
        d_key = f"model.d = {d}"
    w_key = f"workers = {local_workers}, {d_key}"
    terms: dict[str, int] = {d_key: 0}
    if model["kind"] == "quadratic":  # spectrum, optimum, the offsets' mean, ... in float64
        terms[d_key] += 5 * 8 * d
    elif model["dataset"] not in DATASET_SIZES:
        n = model["n"]
        width = model["d"] if model["kind"] == "logistic" else model["inputs"]
        width_key = "model.d" if model["kind"] == "logistic" else "model.inputs"
        sparse = model["dataset"] == "synthetic_sparse"
        per_value = 12 * model["density"] if sparse else 8  # CSR: value and column index
        terms[f"model.n = {n}, {width_key} = {width}"] = int(per_value * n * width)
    worst: dict[str, int] = {}
    for i, algo in enumerate(cfg["algorithms"]):
        name = algo["name"]
        # Vectors of d each worker keeps: mem-SGD's memory, Sketched-SGD's momentum and error.
        kept = {"memsgd": int(algo.get("memory", False)), "sketched_sgd": 2}.get(name, 0)
        kept = int(algo.get("error_feedback", False)) if name == "sketchdl" else kept
        kept += cfg["download"] == "topk"  # each worker's replica of the weights
        presum = cfg["presum"] and algo["local_steps"] == 1 and not kept
        presum = presum and cfg["weighting"] == "uniform" and cfg["download"] != "topk"
        # The gradient buffer: of the workers that take part in a step, at most.
        taking = min(local_workers, resolve_size(cfg["participation"], cfg["workers"]))
        rows = min(taking, 2) if presum else taking
        averaging = cfg["schedule"]["kind"] == "memsgd" and cfg["schedule"]["average"]
        job = {
            d_key: (1 + averaging + min(rows, 2)) * d * item,
            w_key: (rows - min(rows, 2) + kept * local_workers) * d * item,
        }
        if "cols" in algo:
            tables = 2 if name == "fetchsgd" else 1
            key = f"algorithms.{i}.rows = {algo['rows']}, algorithms.{i}.cols = {algo['cols']}"
            job[key] = tables * algo["rows"] * algo["cols"] * item
        if sum(job.values()) > sum(worst.values()):
            worst = job
    for key, value in worst.items():
        terms[key] = terms.get(key, 0) + value
    # Python ints and tuples of the worker ids, twice over (communicator, algorithm).
    terms[f"workers = {local_workers}"] = 2 * 36 * local_workers
    return terms


def check_memory(cfg: Mapping[str, Any], local_workers: int) -> None:
    """Raise :class:`ConfigError` naming the key when case ``cfg`` cannot fit in memory.

    The bound is :func:`memory_terms` against this machine's physical memory
    (or its cgroup's limit); see :mod:`pysketch._memory`.
    """
    from pysketch._memory import check_fits

    try:
        check_fits(memory_terms(cfg, local_workers), "this run")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


# ---------------------------------------------------------------- whole configs
def _check_algorithm(path: str, entry: Any, d: int) -> dict:
    if not isinstance(entry, Mapping):
        raise _type_error(path, "a table", entry)
    name = entry.get("name")
    if name is None:
        raise ConfigError(f"{path}.name: missing (one of {', '.join(ALGORITHMS)})")
    check_value(f"{path}.name", Field("str", choices=tuple(ALGORITHMS)), name)
    schema = {**ALGORITHM_COMMON, **ALGORITHMS[name]}
    algo = {"name": name, **_check_table(path, entry, schema, skip=("name",))}
    for key in ("k", "cols"):
        if key in algo:
            algo[key] = resolve_size(algo[key], d)
    _check_sketch_shape(path, algo)
    if algo.get("k", 0) > d:
        raise ConfigError(f"{path}.k: k = {algo['k']} exceeds the dimension d = {d}")
    for key in ("p1", "p2"):
        if algo.get(key) is not None and algo[key] * algo["k"] > d:
            raise ConfigError(
                f"{path}.{key}: {key} * k = {algo[key] * algo['k']:g} exceeds d = {d}"
            )
    if algo["label"] is None:
        algo["label"] = name
    return algo


def _check_sketch_shape(path: str, algo: Mapping[str, Any]) -> None:
    """The limits of pysketch's sketches, checked here so that the message names the key."""
    if "rows" not in algo:
        return
    from pysketch.hashing import MAX_COLS
    from pysketch.kernels.reductions import MAX_ROWS

    if algo["rows"] > MAX_ROWS:
        raise ConfigError(
            f"{path}.rows: must be <= {MAX_ROWS} (a sketch's rows), got {algo['rows']}"
        )
    if algo["cols"] > MAX_COLS:
        raise ConfigError(f"{path}.cols: must be <= {MAX_COLS} (2**32 - 1), got {algo['cols']}")


def _check_name(name: str) -> None:
    """``name`` must be one plain folder name: it becomes ``<out_dir>/<name>/``."""
    separators = {"/", "\\", os.sep, os.altsep or "/", "\0"}
    if not name.strip() or name in (".", "..") or any(c in name for c in separators):
        raise ConfigError(
            f"name: must be a plain folder name (not empty, not '.' or '..', no '/' or "
            f"'\\'), got {name!r}"
        )


def _check_model(model: Mapping[str, Any], workers: int) -> None:
    """Cross-key checks of a ``[model]`` table that the per-key checks cannot make."""
    kind = model["kind"]
    if kind == "quadratic":
        d = model["d"]
        if model["basis"] == "rotated" and d & (d - 1):
            raise ConfigError(f"model.d: the rotated basis needs a power of two, got {d}")
        if model["spectrum"] == "twolevel" and model["top"] > d:
            raise ConfigError(f"model.top: {model['top']} exceeds d = {d}")
        return
    if kind == "mlp" and not 1 <= len(model["hidden"]) <= 2:
        raise ConfigError(f"model.hidden: one or two hidden layers, got {model['hidden']}")
    if kind == "mlp" and min(model["hidden"]) < 1:
        raise ConfigError(f"model.hidden: widths must be >= 1, got {model['hidden']}")
    n_train = train_size(model)
    if n_train < workers:
        key = "model.n" if model["dataset"] not in DATASET_SIZES else "workers"
        raise ConfigError(f"{key}: {n_train} training samples cannot feed {workers} workers")
    if model["l2"] is None:  # mem-SGD's lambda = 1/n for logistic regression
        model["l2"] = 1.0 / n_train if kind == "logistic" else 0.0


def _check_network(table: Any) -> dict:
    """A ``[network]`` table: :data:`NETWORK` plus ``compute`` (seconds a step, or "measured")."""
    net = _check_table("network", table, NETWORK, skip=("compute",))
    if "compute" not in table:
        raise ConfigError('network.compute: missing (seconds a step, or "measured")')
    compute = table["compute"]
    if compute != "measured":
        if isinstance(compute, str):
            raise ConfigError(
                f'network.compute: a number of seconds or "measured", got {compute!r}'
            )
        compute = check_value("network.compute", _num(0.0), compute)
    net["compute"] = compute
    if net["topology"] != "ps":
        for key in ("up_bandwidth", "down_bandwidth", "server_bandwidth"):
            if net[key] is not None:
                raise ConfigError(
                    f"network.{key}: only for topology = 'ps', not {net['topology']!r}"
                )
    return net


def _check_case(raw: Mapping[str, Any]) -> dict:
    """One fully specified case (no sweep): checked, with defaults, sizes resolved."""
    cfg = _check_table("", raw, TOP, skip=SECTIONS)
    _check_name(cfg["name"])
    if "model" not in raw:
        raise ConfigError("model: missing (a [model] table with kind = ...)")
    _, cfg["model"] = _check_kind("model", raw["model"], MODELS)
    _check_model(cfg["model"], cfg["workers"])
    if isinstance(cfg["participation"], int) and cfg["participation"] > cfg["workers"]:
        raise ConfigError(
            f"participation: {cfg['participation']} workers cannot take part among {cfg['workers']}"
        )
    if (cfg["download"] == "topk") != (cfg["download_k"] is not None):
        raise ConfigError("download_k: needed with download = 'topk', and only with it")
    if cfg["weighting"] == "samples" and cfg["model"]["kind"] == "quadratic":
        raise ConfigError(
            "weighting: 'samples' needs a model with data shards (logistic or mlp), "
            "not the quadratic"
        )
    d = model_dimension(cfg["model"])
    _, cfg["schedule"] = _check_kind(
        "schedule", raw.get("schedule", {"kind": "constant", "lr": 0.1}), SCHEDULES
    )
    sched = cfg["schedule"]
    if sched["kind"] == "step" and sched["milestones"] != sorted(set(sched["milestones"])):
        raise ConfigError("schedule.milestones: must be strictly increasing")
    if sched["kind"] == "memsgd":
        sched["tau"] = float(d) if sched["tau"] is None else sched["tau"]
        if sched["lam"] is None:
            sched["lam"] = cfg["model"].get("l2")
        if not sched["lam"]:
            raise ConfigError("schedule.lam: needed by the memsgd schedule (or a model l2 > 0)")
    cfg["target"] = _check_table("target", raw["target"], TARGET) if "target" in raw else None
    if cfg["target"] and cfg["target"]["relative"] and cfg["target"]["metric"] == "test_accuracy":
        raise ConfigError("target.relative: only for a metric that decreases, not test_accuracy")
    cfg["divergence"] = _check_table("divergence", raw.get("divergence", {}), DIVERGENCE)
    cfg["divergence"]["warmup"] = resolve_size(cfg["divergence"]["warmup"], cfg["steps"])
    cfg["measured"] = (
        _check_table("measured", raw["measured"], MEASURED) if "measured" in raw else None
    )
    if cfg["download_k"] is not None:
        cfg["download_k"] = resolve_size(cfg["download_k"], d)
    cfg["hessian"] = _check_table("hessian", raw.get("hessian", {}), HESSIAN)
    cfg["network"] = _check_network(raw["network"]) if "network" in raw else None
    fetched = cfg["download"] != "collective"
    if cfg["network"] and fetched and cfg["network"]["topology"] != "ps":
        # The changed weights (or their top-k) come from a server; a ring's or an allgather's
        # participants receive the step's sum through the collective, and nothing times a
        # fetch besides it.
        raise ConfigError(
            f"download: {cfg['download']!r} counts what a returning client fetches from a "
            f"server, which only network.topology = 'ps' times, not "
            f"{cfg['network']['topology']!r}"
        )
    algos = raw.get("algorithms")
    if not isinstance(algos, list) or not algos:
        raise ConfigError("algorithms: expected a non-empty array of tables [[algorithms]]")
    cfg["algorithms"] = [_check_algorithm(f"algorithms.{i}", a, d) for i, a in enumerate(algos)]
    for i, algo in enumerate(cfg["algorithms"]):
        if cfg["model"].get("sampling") == "shuffle" and algo["local_steps"] > 1:
            raise ConfigError(
                f"algorithms.{i}.local_steps: model.sampling = 'shuffle' draws one minibatch "
                "a step; use sampling = 'replacement' with local steps"
            )
    labels = [a["label"] for a in cfg["algorithms"]]
    for label in labels:
        if labels.count(label) > 1:
            raise ConfigError(f"algorithms: label {label!r} is used twice (set label = ...)")
    cfg["d"] = d
    return cfg


# ---------------------------------------------------------------- paths and overrides
def _algorithm_list(cfg: dict, path: str) -> list[dict]:
    """The raw [[algorithms]] entries, for setting ``path`` in them."""
    algos = cfg.get("algorithms")
    if not isinstance(algos, list):
        raise ConfigError(f"{path}: the config has no [[algorithms]]")
    return algos


def set_path(cfg: dict, path: str, value: Any) -> None:
    """Set the dotted key ``path`` in the raw config ``cfg`` (in place).

    ``algorithms.<label or index>.<key>`` sets one algorithm's key;
    ``algorithms.<key>`` sets ``key`` on every algorithm that accepts it.

    Parameters
    ----------
    cfg : dict
        A raw (unchecked) configuration.
    path : str
        Dotted key, such as ``"model.d"`` or ``"algorithms.fetchsgd.cols"``.
    value : object
        The new value (checked later, with the whole config).
    """
    parts = path.split(".")
    if not all(parts):
        raise ConfigError(f"{path}: not a valid dotted key")
    if parts[0] == "algorithms" and len(parts) in (2, 3):
        algos = _algorithm_list(cfg, path)
        if len(parts) == 3:
            sel = parts[1]
            chosen = [
                a
                for i, a in enumerate(algos)
                if str(i) == sel or a.get("label", a.get("name")) == sel
            ]
            if not chosen:
                raise ConfigError(f"{path}: no algorithm with label or index {sel!r}")
        else:
            chosen = [a for a in algos if parts[1] in ALGORITHMS.get(a.get("name"), {})]
            chosen = chosen or [a for a in algos if parts[1] in ALGORITHM_COMMON]
            if not chosen:
                raise ConfigError(f"{path}: no algorithm takes the key {parts[1]!r}")
        for a in chosen:
            a[parts[-1]] = copy.deepcopy(value)
        return
    node = cfg
    for i, part in enumerate(parts[:-1]):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: not a table, cannot set {path}")
    node[parts[-1]] = copy.deepcopy(value)


def parse_override(text: str) -> tuple[str, Any]:
    """``"key=value"`` from the command line: the value read as TOML, else as a string.

    Examples
    --------
    >>> parse_override("model.d=4096")
    ('model.d', 4096)
    >>> parse_override("model.basis=rotated")
    ('model.basis', 'rotated')
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key=value")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.strip(), parsed


# ---------------------------------------------------------------- loading and resolving
def load(path: str | Path) -> dict:
    """The raw configuration in a TOML file (``name`` defaults to the file's stem).

    Parameters
    ----------
    path : str or Path
        A ``.toml`` file, or the name of a shipped config (``simulate list``).

    Returns
    -------
    dict
        The parsed, not yet checked, configuration.
    """
    path = Path(path)
    if not path.exists() and (CONFIG_DIR / f"{path.stem}.toml").exists() and path.parent == Path():
        path = CONFIG_DIR / f"{path.stem}.toml"
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file (python -m simulate list)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    raw.setdefault("name", path.stem)
    return raw


def shipped() -> dict[str, dict]:
    """The shipped configs: name -> raw configuration (as :func:`load` returns it)."""
    return {path.stem: load(path) for path in sorted(CONFIG_DIR.glob("*.toml"))}


@dataclass
class Case:
    """One point of a sweep: its label, the swept values and the checked config."""

    label: str
    values: dict
    config: dict


def resolve(raw: Mapping[str, Any], overrides: list[tuple[str, Any]] = ()) -> list[Case]:
    """Check ``raw`` (after ``overrides``) and expand its sweep into cases.

    Parameters
    ----------
    raw : mapping
        A raw configuration (from :func:`load`).
    overrides : list of (str, object)
        ``--set`` pairs, applied before checking.

    Returns
    -------
    list of Case
        One case per combination of the swept values (one case when there is no
        ``[sweep]``), each checked completely.

    Raises
    ------
    ConfigError
        Naming the first bad key.
    """
    raw = copy.deepcopy(dict(raw))
    for key, value in overrides:
        set_path(raw, key, value)
    sweep = raw.pop("sweep", {})
    if not isinstance(sweep, Mapping):
        raise _type_error("sweep", "a table of lists", sweep)
    axes = []  # one list of {key: value} points per sweep entry
    for key, values in sweep.items():
        if not isinstance(values, list) or not values:
            raise _type_error(f"sweep.{key}", "a non-empty list", values)
        keys = [k.strip() for k in key.split(",")]
        if len(keys) == 1:
            axes.append([{key: v} for v in values])
            continue
        for v in values:  # "a,b" = [[a1, b1], [a2, b2]]: the keys move together
            if not isinstance(v, list) or len(v) != len(keys):
                raise _type_error(f"sweep.{key}", f"a list of {len(keys)}-element lists", v)
        axes.append([dict(zip(keys, v, strict=True)) for v in values])
    cases = []
    for combo in itertools.product(*axes):
        values = {k: v for point in combo for k, v in point.items()}
        case_raw = copy.deepcopy(raw)
        for key, value in values.items():
            try:
                set_path(case_raw, key, value)
            except ConfigError as exc:
                raise ConfigError(f"sweep.{exc}") from None
        label = ",".join(f"{k.split('.')[-1]}={v}" for k, v in values.items())
        try:
            cases.append(Case(label, values, _check_case(case_raw)))
        except ConfigError as exc:
            raise ConfigError(f"{exc} [sweep case {label}]" if label else str(exc)) from None
    _resolve_expectations(raw.get("expect"), cases)
    return cases


def job_label(case_label: str, algorithm_label: str) -> str:
    """A job's label: ``"d=1024/fetchsgd"`` in a sweep, the algorithm's label otherwise."""
    return f"{case_label}/{algorithm_label}" if case_label else algorithm_label


def _resolve_expectations(table: Any, cases: list[Case]) -> None:
    """Set every job's ``expect`` from the ``[expect]`` table (``None`` without one).

    Its keys are glob patterns over job labels (``"*/fetchsgd"``, ``"sketchdl-ef"``)
    or ``default`` (``"reach"`` unless given); its values are outcomes: ``"reach"``
    the target, ``"miss"`` it, or ``"diverge"``.
    """
    if table is not None and not isinstance(table, Mapping):
        raise _type_error("expect", "a table of job-label patterns", table)
    if table is not None and cases[0].config["target"] is None:
        raise ConfigError("expect: needs a [target] (outcomes are reaching it or not)")
    rules = {
        pattern: check_value(f"expect.{pattern}", Field("str", choices=OUTCOMES), value)
        for pattern, value in (table or {}).items()
    }
    default = rules.pop("default", "reach" if table is not None else None)
    used, labels = set(), []
    for case in cases:
        for algo in case.config["algorithms"]:
            label = job_label(case.label, algo["label"])
            labels.append(label)
            hits = [p for p in rules if fnmatch.fnmatchcase(label, p)]
            if len({rules[p] for p in hits}) > 1:
                raise ConfigError(f"expect: {label} matches {hits}, which disagree")
            used.update(hits)
            algo["expect"] = rules[hits[0]] if hits else default
    for pattern in rules:
        if pattern not in used:
            raise ConfigError(f"expect.{pattern}: matches no job (jobs: {', '.join(labels)})")


# ---------------------------------------------------------------- writing TOML
def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def dumps(cfg: Mapping[str, Any]) -> str:
    """``cfg`` (scalars, lists, tables, arrays of tables; ``None`` skipped) as TOML text.

    Examples
    --------
    >>> print(dumps({"steps": 3, "model": {"kind": "quadratic", "d": 8}}), end="")
    steps = 3
    <BLANKLINE>
    [model]
    kind = "quadratic"
    d = 8
    """
    lines, tables = [], []
    for key, value in cfg.items():
        if value is None:
            continue
        if isinstance(value, Mapping) or (
            isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value)
        ):
            tables.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in tables:
        for table in [value] if isinstance(value, Mapping) else value:
            head = f"[{key}]" if isinstance(value, Mapping) else f"[[{key}]]"
            body = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items() if v is not None]
            lines += ["", head, *body]
    return "\n".join(lines) + "\n"
