"""Checkpoints without pickle: arrays in ``.npz``, everything else in JSON, atomically.

Each rank writes ``<stem>.r<rank>.s<step>.npz`` (its parameters and its share of
the algorithm's state); once every rank has written, rank 0 writes the commit
marker ``<stem>.json`` naming the step. A run killed at any moment therefore
resumes from the last step whose marker exists. Every file is written to a
temporary name, flushed to disk (fsync) and renamed with ``os.replace``.

Nothing read back is trusted: :func:`load_marker` checks every field of the
marker, and :func:`load` checks each array's ``.npy`` header (shape, dtype,
size) before reading its data. A bad file raises :class:`CheckpointError`,
whose message names the file and the field.
"""

from __future__ import annotations

import json
import math
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from pysketch._files import NpzReader, write_atomically

from .config import ConfigError

MARKER_FIELDS = ("step", "wall", "ranks", "workers", "scalars", "result")


# The name simulate's other modules write files with: atomically, mode 0o666 less the umask.
atomic_write = write_atomically


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used; the message names the file and the field."""


def write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON at ``path``, atomically."""
    write_atomically(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def split_state(state: dict[str, Any], prefix: str = "") -> tuple[dict, dict]:
    """A flat state dict split into arrays (for ``.npz``) and JSON scalars.

    Parameters
    ----------
    state : dict
        Names to arrays, ints, floats, strings, bools or ``None`` (nested dicts
        are flattened with ``/``).
    prefix : str
        Prepended to every name.

    Returns
    -------
    arrays, scalars : dict, dict
    """
    arrays, scalars = {}, {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            a, s = split_state(value, f"{name}/")
            arrays.update(a)
            scalars.update(s)
        elif isinstance(value, np.ndarray):
            arrays[name] = value
        elif isinstance(value, np.generic):
            scalars[name] = value.item()
        elif value is None or isinstance(value, (bool, int, float, str)):
            scalars[name] = value
        elif hasattr(value, "__array__") or hasattr(value, "__cuda_array_interface__"):
            arrays[name] = np.asarray(value.get() if hasattr(value, "get") else value)
        else:
            raise TypeError(f"state entry {name!r}: cannot store {type(value).__name__}")
    return arrays, scalars


def join_state(arrays: dict, scalars: dict, prefix: str = "") -> dict[str, Any]:
    """The inverse of :func:`split_state` for the names under ``prefix``."""
    out: dict[str, Any] = {}
    items = [*arrays.items(), *scalars.items()]
    for name, value in items:
        if not name.startswith(prefix):
            continue
        node = out
        *parents, leaf = name[len(prefix) :].split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def save(directory: Path, stem: str, rank: int, step: int, state: dict) -> tuple[Path, dict]:
    """Write this rank's ``state`` for ``step``; returns the file and its JSON scalars.

    Parameters
    ----------
    directory : Path
        The run's checkpoint folder.
    stem : str
        Name of the job.
    rank : int
        This process's rank.
    step : int
        Rounds completed.
    state : dict
        Arrays and scalars (see :func:`split_state`).
    """
    arrays, scalars = split_state(state)
    path = directory / f"{stem}.r{rank}.s{step}.npz"
    write_atomically(path, lambda f: np.savez(f, **arrays))
    return path, scalars


def commit(directory: Path, stem: str, marker: dict) -> None:
    """Rank 0, after every rank saved: write the marker and drop older step files."""
    write_json(directory / f"{stem}.json", marker)
    for old in directory.glob(f"{stem}.r*.s*.npz"):
        if old.stem.rsplit(".s", 1)[1] != str(marker["step"]):
            old.unlink(missing_ok=True)


def load_marker(
    directory: Path, stem: str, *, steps: int | None = None, result_type: type | None = None
) -> dict | None:
    """The committed marker of job ``stem``, checked field by field; ``None`` when it has none.

    Parameters
    ----------
    directory, stem : Path, str
        The run's checkpoint folder and the job's name, as for :func:`save`.
    steps : int, optional
        The run's ``steps``: the marker's step may not exceed it.
    result_type : dataclass, optional
        The type of a finished job's ``result``: its fields and their types
        are checked.

    Raises
    ------
    CheckpointError
        Naming the file and the field: not JSON, a field missing or of the
        wrong type, a step beyond ``steps``, a non-finite state scalar.
    """
    path = directory / f"{stem}.json"
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc})") from None
    try:
        marker = json.loads(text)
    except ValueError as exc:
        raise CheckpointError(f"{path}: not a valid checkpoint marker ({exc})") from None
    _check_marker(marker, path, steps, result_type)
    return marker


def _check_marker(marker: Any, path: Path, steps: int | None, result_type: type | None) -> None:
    def bad(field: str, want: str) -> CheckpointError:
        value = marker.get(field, "missing") if isinstance(marker, dict) else marker
        return CheckpointError(f"{path}: field {field!r} must be {want}, got {value!r}")

    if not isinstance(marker, dict):
        raise CheckpointError(f"{path}: must hold a JSON object, got {type(marker).__name__}")
    for field in MARKER_FIELDS:
        if field not in marker:
            raise CheckpointError(f"{path}: field {field!r} is missing")
    last = steps if steps is not None else math.inf
    if not _is_int(marker["step"]) or not 0 <= marker["step"] <= last:
        raise bad("step", f"an integer in [0, {last}] (the run's steps)")
    if not _is_number(marker["wall"]) or not 0 <= marker["wall"] < math.inf:
        raise bad("wall", "a finite number of seconds >= 0")
    for field in ("ranks", "workers"):
        if not _is_int(marker[field]) or marker[field] < 1:
            raise bad(field, "an integer >= 1")
    scalars = marker["scalars"]
    if not isinstance(scalars, list) or len(scalars) != marker["ranks"]:
        raise bad("scalars", f"a list of one table per rank ({marker['ranks']})")
    for rank, table in enumerate(scalars):
        if not isinstance(table, dict):
            raise CheckpointError(f"{path}: field 'scalars[{rank}]' must be a JSON object")
        for name, value in table.items():
            if not (value is None or isinstance(value, (bool, int, str)) or _is_finite(value)):
                raise CheckpointError(
                    f"{path}: field 'scalars[{rank}][{name!r}]' must be a finite number, "
                    f"an integer, a string, a bool or null, got {value!r}"
                )
    if marker["result"] is not None:
        _check_result(marker["result"], path, marker["step"], result_type)


def _check_result(result: Any, path: Path, step: int, result_type: type | None) -> None:
    if not isinstance(result, dict):
        raise CheckpointError(f"{path}: field 'result' must be a JSON object or null")
    if result_type is not None:
        hints = typing.get_type_hints(result_type)
        names = {f.name for f in fields(result_type)}
        if set(result) != names:
            odd = sorted(set(result) ^ names)
            raise CheckpointError(f"{path}: field 'result' has missing or unknown keys {odd}")
        for name in sorted(names):
            if not _has_type(result[name], hints[name]):
                raise CheckpointError(
                    f"{path}: field 'result.{name}' must be {hints[name]}, got {result[name]!r}"
                )
    if result.get("steps") != step:
        raise CheckpointError(
            f"{path}: field 'result.steps' is {result.get('steps')!r}, the marker's step {step}"
        )


def _has_type(value: Any, hint: Any) -> bool:
    """``isinstance`` for the plain and optional types of a dataclass (ints count as floats)."""
    kinds = typing.get_args(hint) or (hint,)
    if float in kinds and _is_number(value):
        return True
    if int in kinds and _is_int(value):
        return True
    return any(
        k is not int and k is not float and isinstance(value, typing.get_origin(k) or k)
        for k in kinds
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


def _is_finite(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def load(
    directory: Path,
    stem: str,
    rank: int,
    marker: dict,
    *,
    like: dict[str, np.ndarray] | None = None,
    max_bytes: int | None = None,
    counters: tuple[str, ...] = (),
) -> dict:
    """This rank's state at the marker's step (arrays and the marker's scalars of ``rank``).

    Parameters
    ----------
    directory, stem, rank
        Where the rank's file is.
    marker : dict
        From :func:`load_marker`.
    like : dict of ndarray, optional
        Arrays that must be in the file with exactly these shapes and dtypes
        (byte order aside), checked from their headers.
    max_bytes : int, optional
        The most bytes any other array may hold, checked from its header
        before its data are read.
    counters : tuple of str
        Scalars that must equal the marker's step (step counts).

    Raises
    ------
    CheckpointError
        Naming the file and the field.
    """
    path = directory / f"{stem}.r{rank}.s{marker['step']}.npz"
    like = like or {}
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise CheckpointError(
            f"{path}: missing, though {stem}.json names step {marker['step']}"
        ) from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc})") from None
    arrays = {}
    try:
        with handle, NpzReader(handle, path) as archive:
            missing = sorted(set(like) - archive.names)
            if missing:
                raise ValueError(f"{path}: field {missing[0]!r} is missing")
            for name in sorted(archive.names):
                arrays[name] = _read_array(archive, name, like.get(name), max_bytes)
    except CheckpointError:
        raise
    except ValueError as exc:  # NpzReader's messages name the file and the field
        raise CheckpointError(str(exc)) from None
    scalars = marker["scalars"][rank]
    for name in counters:
        if scalars.get(name) != marker["step"]:
            raise CheckpointError(
                f"{directory / stem}.json: field 'scalars[{rank}][{name!r}]' is "
                f"{scalars.get(name, 'missing')!r}, not the marker's step {marker['step']}"
            )
    return join_state(arrays, scalars)


def _read_array(
    archive: NpzReader, name: str, like: np.ndarray | None, max_bytes: int | None
) -> np.ndarray:
    shape, dtype = archive.header(name)
    if like is not None and (shape, dtype.newbyteorder("=")) != (like.shape, like.dtype):
        raise CheckpointError(
            f"{archive.source}: field {name!r} must have shape {like.shape} and dtype "
            f"{like.dtype}, got {shape} and {dtype}"
        )
    if like is None and max_bytes is not None and math.prod(shape) * dtype.itemsize > max_bytes:
        raise CheckpointError(
            f"{archive.source}: field {name!r} ({shape}, {dtype}) is larger than any state "
            f"of this run ({max_bytes} bytes)"
        )
    return archive.read(name).astype(dtype.newbyteorder("="))
