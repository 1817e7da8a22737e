"""Run directories: made under ``--out``, locked while a run uses them, their config recorded.

A run writes into ``<out_dir>/<name>/`` (``<name>-2``, ``-3``, ... when that
exists). While it runs, rank 0 holds an exclusive ``flock`` on ``<run>/.lock``:
a second run of the same directory (``--resume`` twice, say) is refused. The
kernel drops the lock when the process ends, however it ends, so a run killed
with ``kill -9`` leaves no stale lock behind.

The resolved configuration of every case is recorded in
``<run>/resolved.json`` when the run starts (beside ``config.toml``, never in
``checkpoints/``, where a job's marker could take the name); ``--resume`` compares the
run's ``config.toml`` (which may have been edited) against it and refuses any
change that would alter the trajectory. Keys that only change what is reported
or how often (:data:`HARMLESS`) may change.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import IO, Any

from . import checkpoint
from .config import ConfigError

LOCK = ".lock"
RECORD = Path("resolved.json")
#: Keys whose change on ``--resume`` leaves the trajectory as it was: names, where the
#: run's folder is, how often it evaluates and checkpoints, and what it reports.
HARMLESS = ("name", "description", "out_dir", "eval_every", "checkpoint_every", "target", "hessian")


def create(out: Path, name: str) -> Path:
    """A new folder ``out/name`` (or ``name-2``, ``name-3``, ...), made atomically.

    Raises
    ------
    ConfigError
        The folder cannot be made (read-only ``out``, a file in the way, ...).
    """
    path, n = out / name, 1
    while True:
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            if not path.is_dir():
                raise ConfigError(
                    f"cannot create the run folder {path}: a file is in the way"
                ) from None
        except OSError as exc:
            raise ConfigError(f"cannot create the run folder {path}: {exc.strerror}") from None
        n += 1
        path = out / f"{name}-{n}"


def lock(run_dir: Path) -> IO[str]:
    """Hold the run folder's lock; returns the open lock file (closing it releases the lock).

    Raises
    ------
    ConfigError
        Another process holds the lock (named by its process id), or the
        lock file cannot be opened.
    """
    path = run_dir / LOCK
    try:
        handle = open(path, "a+")
    except OSError as exc:
        raise ConfigError(
            f"cannot lock the run folder {run_dir}: {exc.strerror} ({path})"
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = (handle.read(64).split() or ["unknown"])[0]
        handle.close()
        raise ConfigError(
            f"{run_dir} is in use by another run (process {holder}; lock file {path}); "
            "wait for it to finish or stop it"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def record(run_dir: Path, cases: list) -> None:
    """Write the resolved configuration of every case, for :func:`check_unchanged`."""
    checkpoint.write_json(run_dir / RECORD, _configs(cases))


def check_unchanged(run_dir: Path, cases: list) -> None:
    """Refuse ``cases`` when they differ from the recorded ones in a key outside :data:`HARMLESS`.

    A run folder without a record (written by an older version) is not checked.

    Raises
    ------
    ConfigError
        Naming every key that changed, with its old and new values.
    """
    try:
        recorded = json.loads((run_dir / RECORD).read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{run_dir / RECORD}: cannot be read ({exc})") from None
    current = _configs(cases)
    if not isinstance(recorded, list) or len(recorded) != len(current):
        changes = ["sweep (the cases differ)"]
    else:
        changes = []
        for old, new in zip(recorded, current, strict=True):
            where = f" [case {new['label']}]" if new["label"] else ""
            before = old.get("config", {}) if isinstance(old, dict) else {}
            changes += [
                f"{k}{where} ({a!r} -> {b!r})" for k, a, b in _changed(before, new["config"])
            ]
    if changes:
        raise ConfigError(
            f"--resume: {run_dir / 'config.toml'} was edited since the run started, and these "
            f"keys change its trajectory: {', '.join(changes)}. Undo them, or start a new run "
            f"(keys that may change: {', '.join(HARMLESS)})"
        )


def _configs(cases: list) -> list[dict[str, Any]]:
    """The cases' labels and configs as JSON has them (lists, not tuples)."""
    return json.loads(json.dumps([{"label": c.label, "config": c.config} for c in cases]))


def _changed(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old, new)`` for every leaf that differs, outside :data:`HARMLESS`."""
    a, b = _leaves(old), _leaves(new)
    keys = sorted(k for k in set(a) | set(b) if k.split(".")[0] not in HARMLESS)
    return [(k, a.get(k), b.get(k)) for k in keys if k not in a or k not in b or a[k] != b[k]]


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as ``{"model.d": 4096, "algorithms.1.k": 16, ...}``."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: value}
    out = {}
    for key, item in items:
        out.update(_leaves(item, f"{prefix}.{key}" if prefix else str(key)))
    return out
