"""This machine's memory, to refuse sizes that cannot fit before allocating them.

The command-line tools estimate the bytes a run must hold at the least and
refuse it, naming the size that dominates, when that exceeds the memory this
process could ever get: the machine's physical memory, or its cgroup's limit
when that is lower. A size under the limit may still fail when other
processes hold the memory; NumPy then raises ``MemoryError`` as usual.
"""

from __future__ import annotations

import os

_CGROUP_LIMITS = (
    "/sys/fs/cgroup/memory.max",  # cgroup v2
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",  # cgroup v1
)


def memory_limit() -> int | None:
    """The most bytes of memory this process could get, or ``None`` when unknown.

    Examples
    --------
    >>> limit = memory_limit()
    >>> limit is None or limit > 0
    True
    """
    try:
        limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX
        return None
    for path in _CGROUP_LIMITS:
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():  # "max" means no limit
            limit = min(limit, int(text))
    return limit if limit > 0 else None


def format_bytes(n: float) -> str:
    """``n`` bytes for people, in binary units.

    Examples
    --------
    >>> format_bytes(3 * 2**30)
    '3 GiB'
    >>> format_bytes(1.5 * 2**40)
    '1.5 TiB'
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024:
            return f"{n:.4g} {unit}"
        n /= 1024
    return f"{n:.4g} PiB"


def check_fits(terms: dict[str, int], what: str) -> None:
    """Raise ``ValueError`` naming the largest term when the terms' sum cannot fit in memory.

    Parameters
    ----------
    terms : dict of str to int
        Bytes needed, keyed by the arguments or keys that set them (with
        their values: ``"model.d = 4096"``).
    what : str
        What needs them, for the message ("this run").

    Raises
    ------
    ValueError
        ``"<key> = <value>: <what> needs at least ... of memory (... for
        this), more than this machine has (...)"``, naming the largest term.
    """
    limit = memory_limit()
    needed = sum(terms.values())
    if limit is None or needed <= limit:
        return
    key = max(terms, key=terms.__getitem__)
    share = f" ({format_bytes(terms[key])} for this)" if terms[key] < needed else ""
    raise ValueError(
        f"{key}: {what} needs at least {format_bytes(needed)} of memory{share}, "
        f"more than this machine has ({format_bytes(limit)})"
    )
