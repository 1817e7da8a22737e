"""Checkpoints without pickle: arrays in ``.npz``, everything else in JSON, atomically.

Each rank writes ``<stem>.r<rank>.s<step>.npz`` (its parameters and its share of
the algorithm's state); once every rank has written, rank 0 writes the commit
marker ``<stem>.json`` naming the step. A run killed at any moment therefore
resumes from the last step whose marker exists. Every file is written to a
temporary name, flushed to disk (fsync) and renamed with ``os.replace``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def atomic_write(path: str | Path, write) -> None:
    """Write ``path`` through ``write(file)``: to a temporary file, fsync'd, then renamed.

    Parameters
    ----------
    path : str or Path
        Destination.
    write : callable
        Called with a binary file object open for writing.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json(path: str | Path, obj: Any) -> None:
    """``obj`` as indented JSON at ``path``, atomically."""
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


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
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path, scalars


def commit(directory: Path, stem: str, marker: dict) -> None:
    """Rank 0, after every rank saved: write the marker and drop older step files."""
    write_json(directory / f"{stem}.json", marker)
    for old in directory.glob(f"{stem}.r*.s*.npz"):
        if int(old.stem.rsplit(".s", 1)[1]) != marker["step"]:
            old.unlink(missing_ok=True)


def load_marker(directory: Path, stem: str) -> dict | None:
    """The committed marker of job ``stem``, or ``None`` when it has none."""
    try:
        with open(directory / f"{stem}.json") as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def load(directory: Path, stem: str, rank: int, marker: dict) -> dict:
    """This rank's state at the marker's step (arrays and the marker's scalars of ``rank``)."""
    path = directory / f"{stem}.r{rank}.s{marker['step']}.npz"
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return join_state(arrays, marker["scalars"][rank])
