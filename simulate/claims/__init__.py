"""The papers' claims, reproduced: ``python -m simulate claims [NAME ...]``.

Each claim is a module of this package that names its configs (in
``simulate/configs/claims/``) and an ``analyse`` function: the runs' results
in, a :class:`Finding` out (a table, PNG figures made from the runs, and a
verdict with its reason, decided by stated criteria on the measured numbers).
:func:`run_claim` runs the configs (in this process, or over the ranks of
``mpiexec``) and :func:`write_page` writes ``<name>.rst`` with the table, the
figures, the exact command, the machine and the wall time. The pages go into
the run's folder; ``--write-docs`` publishes them in ``docs/results/``, so
that one command regenerates them all.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import config
from ..checkpoint import atomic_write, write_json

CLAIMS = ("memsgd", "sketched_sgd", "fetchsgd", "sketchdl", "rates", "network")
CONFIG_DIR = config.CONFIG_DIR / "claims"
VERDICTS = ("held", "held partly", "failed")


@dataclass
class Run:
    """One config's results: its cases, every job's result and metrics rows."""

    name: str
    run_dir: Path
    cases: list
    results: list
    rows: dict[str, list[dict]]
    seconds: float

    def job(self, label: str, case: str | None = None):
        """The :class:`~simulate.runner.JobResult` of job ``label`` (in sweep case ``case``)."""
        full = f"{case}/{label}" if case else label
        for r in self.results:
            if r.label == full:
                return r
        raise KeyError(f"{self.name}: no job {label!r} in case {case!r}")

    def series(self, label: str, metric: str, case: str | None = None) -> tuple[list, list]:
        """``(steps, values)`` of ``metric`` for one job, from its CSV rows."""
        rows = self.rows[self.job(label, case).label]
        pairs = [(r["step"], r.get(metric)) for r in rows if r.get(metric) is not None]
        return [p[0] for p in pairs], [p[1] for p in pairs]


@dataclass
class Finding:
    """What a claim's analysis concluded.

    Attributes
    ----------
    verdict : {"held", "held partly", "failed"}
    reason : str
        Why, in terms of the measured numbers and the criteria.
    headers : list of str
    rows : list of list
        The results table.
    figures : list of Path
        PNGs the analysis made from the runs.
    notes : str
        Anything else the reader needs (how the run was scaled down).
    """

    verdict: str
    reason: str
    headers: list[str]
    rows: list[list]
    figures: list[Path] = field(default_factory=list)
    notes: str = ""

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass
class Claim:
    """A claim of a paper and how to check it."""

    name: str
    title: str
    cite: str
    statement: str
    configs: list[str]
    analyse: Callable[[dict[str, Run], Path], Finding]
    setup: str = ""


def load(name: str) -> Claim:
    """The claim called ``name`` (one of :data:`CLAIMS`)."""
    if name not in CLAIMS:
        raise config.ConfigError(f"claim must be one of {list(CLAIMS)}, got {name!r}")
    return importlib.import_module(f"{__name__}.{name}").CLAIM


def _reaches(name: str, sweep: dict, key: str) -> str | None:
    """The key of ``--set key`` as it applies to config ``name``, or ``None`` if not at all.

    ``NAME:key`` reaches config ``NAME`` only; ``sweep.<key>`` the configs that
    sweep ``<key>``; any other key every config.
    """
    prefix, sep, rest = key.partition(":")
    if sep:
        return rest if prefix == name else None
    if key.startswith("sweep.") and key[len("sweep.") :] not in sweep:
        return None
    return key


def config_cases(name: str, overrides=()) -> tuple[dict, list]:
    """The raw config ``name`` of :data:`CONFIG_DIR` with ``overrides``, and its checked cases.

    Parameters
    ----------
    name : str
        A config stem (``"memsgd_digits"``).
    overrides : sequence of (str, object)
        ``--set`` pairs. ``NAME:key`` applies to config ``NAME`` only;
        ``sweep.<swept key>`` replaces the values of a sweep in the configs that
        have it (``sweep.model.d=[1024, 4096]``); any other key applies to every
        config. A key the config sweeps cannot be set directly: the sweep would
        silently win.

    Raises
    ------
    ConfigError
        Naming the key.
    """
    raw = config.load(CONFIG_DIR / f"{name}.toml")
    sweep = raw.get("sweep", {})
    swept = {k.strip() for key in sweep for k in key.split(",")}
    for given, value in overrides:
        key = _reaches(name, sweep, given)
        if key is None:
            continue
        if key.startswith("sweep."):
            if key[len("sweep.") :] not in sweep:
                raise config.ConfigError(
                    f"--set {given}: {name} has no sweep of that key (its sweeps: "
                    f"{', '.join(sweep) or 'none'})"
                )
            sweep[key[len("sweep.") :]] = value
        elif key in swept:
            raise config.ConfigError(
                f"--set {given}: {name} sweeps {key}; set sweep.{key}=[...] to change its values"
            )
        else:
            config.set_path(raw, key, value)
    try:
        return raw, config.resolve(raw)
    except config.ConfigError as exc:
        raise config.ConfigError(f"{name}: {exc}") from None


def unreached(claims: list[Claim], overrides) -> list[str]:
    """The ``--set`` keys that reach no config of ``claims`` (see :func:`config_cases`)."""
    sweeps = {
        name: config.load(CONFIG_DIR / f"{name}.toml").get("sweep", {})
        for claim in claims
        for name in claim.configs
    }
    return [
        key
        for key, _ in overrides
        if all(_reaches(name, sweep, key) is None for name, sweep in sweeps.items())
    ]


def run_config(
    raw: dict, cases: list, run_dir: Path, layout=None, progress=None, resume: bool = False
) -> Run | None:
    """Run one resolved config into ``run_dir``; its :class:`Run` on rank 0 (``None`` elsewhere).

    Parameters
    ----------
    raw, cases
        From :func:`config_cases`.
    run_dir : Path
        The config's folder (replaced if it exists, unless ``resume``).
    layout : parallel.Layout, optional
        Ranks and communicator (default: one process).
    progress : callable, optional
        Progress-bar factory.
    resume : bool
        Keep ``run_dir`` and skip the jobs that finished there (the config must
        be the same); the others start again.
    """
    from .. import report, runner
    from ..parallel import Layout

    layout = layout or Layout(mpi=False)
    problem = None
    if layout.is_root:
        text = config.dumps(raw)
        saved = run_dir / "config.toml"
        if resume and saved.exists():
            if saved.read_text() != text:
                problem = f"--resume: {run_dir} was run with another config; start a new run"
        else:
            if run_dir.exists():
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True)
            _write_text(saved, text)
    problem = layout.bcast(problem)
    if problem:
        raise config.ConfigError(problem)
    started = time.perf_counter()
    results = runner.run_cases(cases, run_dir, layout, progress=progress, resume=resume)
    seconds = time.perf_counter() - started
    if not layout.is_root:
        return None
    rows = report.job_rows(run_dir, results)
    report.write_summary(run_dir, cases, results, {"name": raw["name"], "seconds": seconds})
    return Run(raw["name"], run_dir, cases, results, rows, seconds)


def check(claim: Claim, overrides=(), layout=None) -> dict[str, tuple[dict, list]]:
    """Every config of ``claim`` resolved with ``overrides``, checked against ``layout``.

    Called for every chosen claim before anything runs, so that a bad ``--set``
    or a worker count that the MPI ranks cannot share stops the command at once.
    """
    resolved = {}
    for name in claim.configs:
        raw, cases = config_cases(name, overrides)
        if layout is not None:
            for case in cases:
                try:
                    layout.workers(case.config["workers"])
                except config.ConfigError as exc:
                    raise config.ConfigError(f"{name}: {exc}") from None
        resolved[name] = (raw, cases)
    return resolved


def run_claim(
    claim: Claim,
    out: Path,
    progress=None,
    log=print,
    *,
    overrides=(),
    layout=None,
    resume: bool = False,
) -> tuple[Finding | None, float]:
    """Run every config of ``claim`` under ``out/<name>/`` and analyse them (on rank 0).

    Returns the :class:`Finding` (``None`` on the other ranks) and the wall time:
    of this call, or with ``resume`` the training time of every job summed (the
    finished jobs' from their records) plus this call's analysis.
    """
    started = time.perf_counter()
    root = layout is None or layout.is_root
    runs = {}
    for name, (raw, cases) in check(claim, overrides, layout).items():
        if root:
            log(f"[{claim.name}] running {name} ...")
        runs[name] = run_config(raw, cases, out / claim.name / name, layout, progress, resume)
    if not root:
        return None, time.perf_counter() - started
    analysed = time.perf_counter()
    finding = claim.analyse(runs, out / claim.name)
    if resume:
        jobs = sum(r.wall for run in runs.values() for r in run.results)
        return finding, jobs + time.perf_counter() - analysed
    return finding, time.perf_counter() - started


@dataclass
class Provenance:
    """How a claim's runs were made, for its page.

    Attributes
    ----------
    command : str
        The command line that reproduces the page.
    ranks : int
        MPI processes (1: in-process).
    threads : int
        Numba and BLAS threads of each process.
    load : float
        The machine's 1-minute load average when the runs started (others' work too).
    resumed : bool
        Whether the runs were resumed (the wall time is then the jobs' training time).
    """

    command: str
    ranks: int = 1
    threads: int = 1
    load: float = 0.0
    resumed: bool = False

    def where(self) -> str:
        """The machine and layout, in words."""
        procs = "one process" if self.ranks == 1 else f"{self.ranks} MPI processes"
        threads = f"{self.threads} Numba thread{'s' if self.threads > 1 else ''}"
        text = f"{machine()}, {procs}, {threads}; load average {self.load:.1f} when it started"
        if self.resumed:
            text += " (resumed: the jobs' training times summed)"
        return text


def machine() -> str:
    """The CPU model and the number of cores of this machine."""
    import os
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(
                (
                    v.strip()
                    for k, _, v in (line.partition(":") for line in fh)
                    if k.strip() == "model name"
                ),
                model,
            )
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)"


def _rst_table(headers: list[str], rows: list[list]) -> str:
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [headers, *rows]:
        lines.append("   * - " + str(row[0]))
        lines.extend(f"     - {cell}" for cell in row[1:])
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> None:
    """``text`` at ``path``, atomically (a crash leaves the old file or the new one)."""
    atomic_write(path, lambda f: f.write(text.encode()))


def _read_ledger(path: Path) -> dict:
    """``verdicts.json``: claim name -> title, cite, verdict, seconds; checked."""
    if not path.exists():
        return {}
    try:
        ledger = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable verdict ledger ({exc})") from exc
    if not isinstance(ledger, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(ledger).__name__}")
    for name, entry in ledger.items():
        fields = {"title", "cite", "verdict", "seconds"}
        if not isinstance(entry, dict) or set(entry) != fields:
            raise ValueError(f"{path}: entry {name!r} must have the keys {sorted(fields)}")
        if entry["verdict"] not in VERDICTS:
            raise ValueError(f"{path}: entry {name!r} has verdict {entry['verdict']!r}")
    return ledger


def write_page(claim: Claim, finding: Finding, seconds: float, docs: Path, provenance=None) -> Path:
    """``docs/<name>.rst`` (with its figures copied beside it).

    ``provenance`` (a :class:`Provenance`) gives the command and the machine; by
    default the plain ``python -m simulate claims <name> --write-docs``.
    """
    provenance = provenance or Provenance(f"python -m simulate claims {claim.name} --write-docs")
    docs.mkdir(parents=True, exist_ok=True)
    images = []
    for fig in finding.figures:
        target = docs / f"{claim.name}_{fig.name}"
        atomic_write(target, lambda f, fig=fig: f.write(fig.read_bytes()))
        images.append(f".. image:: {target.name}\n   :width: 640\n")
    configs = ", ".join(f"``simulate/configs/claims/{c}.toml``" for c in claim.configs)
    title = f"{claim.title}"
    body = [
        title,
        "=" * len(title),
        "",
        f"**Claim** ({claim.cite}): {claim.statement}",
        "",
        f"**Verdict: {finding.verdict}.** {finding.reason}",
        "",
        "Setup",
        "-----",
        "",
        claim.setup,
        "",
        f"Configs: {configs}. Reproduce with::",
        "",
        f"    {provenance.command}",
        "",
        f"Wall time: {seconds:.0f} s on {provenance.where()}.",
        "",
        "Results",
        "-------",
        "",
        _rst_table(finding.headers, finding.rows),
        "",
        *images,
    ]
    if finding.notes:
        body += ["Notes", "-----", "", finding.notes, ""]
    page = docs / f"{claim.name}.rst"
    _write_text(page, "\n".join(body).rstrip() + "\n")
    return page


def write_index(docs: Path, claim: Claim, finding: Finding, seconds: float) -> Path:
    """Record ``claim``'s verdict in ``docs/verdicts.json`` and rewrite ``docs/index.rst``.

    The index lists every claim whose page exists, so running one claim keeps the others.
    """
    ledger_path = docs / "verdicts.json"
    ledger = _read_ledger(ledger_path)
    ledger[claim.name] = {
        "title": claim.title,
        "cite": claim.cite,
        "verdict": finding.verdict,
        "seconds": round(seconds, 1),
    }
    write_json(ledger_path, ledger)
    names = [n for n in CLAIMS if n in ledger]
    total = sum(ledger[n]["seconds"] for n in names)
    lines = [
        "Results: the papers' claims",
        "===========================",
        "",
        "Each page runs one claim of a paper through the simulator and states whether",
        "it held, in which regime, and why, by criteria stated on the page that the",
        "measured numbers could fail. Every page, table and figure is regenerated by",
        f"``python -m simulate claims --write-docs`` ({total / 60:.0f} minutes for all of",
        "them; each page gives its machine and wall time).",
        "",
        _rst_table(
            ["claim", "paper", "verdict", "wall time"],
            [
                [
                    f":doc:`{ledger[n]['title']} <{n}>`",
                    ledger[n]["cite"],
                    ledger[n]["verdict"],
                    f"{ledger[n]['seconds']:.0f} s",
                ]
                for n in names
            ],
        ),
        "",
        ".. toctree::",
        "   :hidden:",
        "",
        *(f"   {n}" for n in names),
        "",
    ]
    page = docs / "index.rst"
    _write_text(page, "\n".join(lines))
    return page
