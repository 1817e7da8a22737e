"""``python -m simulate``: run the default comparison, a config, a sweep, or resume a run.

Examples::

    python -m simulate                                  # the default comparison
    python -m simulate list                             # the shipped configs
    python -m simulate run quadratic_basis --set model.d=65536 -q
    python -m simulate --resume runs/default
    python -m simulate hessian logistic_memsgd          # lambda_max, sum |lambda|, kappa
    python -m simulate claims memsgd --set steps=2000   # a claim: runs and pages in runs/
    python -m simulate claims --write-docs              # every claim, pages in docs/results
    mpirun -n 2 python -m simulate run fetchsgd_scaling --workers-per-rank 128
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time
from pathlib import Path

from . import config

EXIT_CONFIG, EXIT_DIVERGED = 2, 3


def _positive_int(text: str) -> int:
    """An argparse type: an integer >= 1 (argparse names the option in its message)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    common.add_argument(
        "--workers-per-rank",
        type=_positive_int,
        metavar="N",
        help="under MPI: N workers per rank (W = ranks x N, replacing the config's workers)",
    )
    common.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        metavar="N",
        help="threads of each process's Numba kernels and BLAS (default 1: the simulator "
        "runs many small kernels, and MPI ranks take the cores)",
    )
    common.add_argument("--out", metavar="DIR", help="parent folder of the run (default: runs)")
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (dotted: model.d=4096, algorithms.fetchsgd.cols=2000; "
        "algorithms.k=100 sets k on every algorithm that takes it); repeatable",
    )
    parser = argparse.ArgumentParser(
        prog="python -m simulate",
        description="Simulate distributed training with pysketch's compressed-communication "
        "algorithms. Without a command, runs the default comparison.",
        epilog=__doc__.split("Examples::")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", parents=[common], help="run a config (a .toml file or a name)")
    run.add_argument("config", help="path of a TOML config, or a shipped name (see list)")
    sub.add_parser("list", help="list the shipped configs")
    claims = sub.add_parser(
        "claims",
        parents=[common],
        help="reproduce the papers' claims: runs and pages in a run folder (--write-docs: "
        "publish the pages in docs/results/)",
    )
    claims.add_argument(
        "names", nargs="*", metavar="NAME", help="which claims (default: all of them)"
    )
    claims.add_argument(
        "--write-docs",
        action="store_true",
        help="also publish the pages, figures and index in --docs (default docs/results)",
    )
    claims.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted claims run in RUN_DIR (runs/claims-N): finished jobs "
        "are not run again",
    )
    claims.add_argument(
        "--docs",
        metavar="DIR",
        help="where --write-docs publishes (default: docs/results; giving it implies --write-docs)",
    )
    hess = sub.add_parser("hessian", parents=[common], help="Hessian spectrum at the initial w")
    hess.add_argument("config")
    return parser


def _progress(quiet: bool):
    if quiet:
        return None
    from tqdm.auto import tqdm

    def bar(job, total, initial):
        return tqdm(total=total, initial=initial, desc=job.label, unit="step", leave=False)

    return bar


def _prepare(args, layout) -> tuple[dict, list]:
    """The raw config (overrides applied) and its checked cases."""
    raw = config.load(args.config)
    for text in args.overrides:
        config.set_path(raw, *config.parse_override(text))
    if layout.comm is not None and args.workers_per_rank:
        raw["workers"] = layout.ranks * args.workers_per_rank
    if args.out:
        raw["out_dir"] = args.out
    return raw, config.resolve(raw)


def _run(args, layout) -> int:
    if args.resume:
        raw = config.load(Path(args.resume) / "config.toml")
        cases = config.resolve(raw)
    else:
        raw, cases = _prepare(args, layout)
    for case in cases:
        total = layout.workers(case.config["workers"])
        config.check_memory(case.config, total // layout.ranks)
    with _run_directory(args, raw, cases, layout) as run_dir:
        return _train(args, layout, raw, cases, run_dir)


@contextlib.contextmanager
def _run_directory(args, raw: dict, cases: list, layout):
    """The run's folder, made (or found, with ``--resume``) and locked by rank 0.

    Its errors (a folder that cannot be made, a run already using it, a
    config edited in a way that changes the trajectory) reach every rank.
    """
    from . import checkpoint, rundir

    def prepare(run_dir: Path | None) -> Path:
        if run_dir is not None:
            rundir.check_unchanged(run_dir, cases)
            return run_dir
        run_dir = rundir.create(Path(raw.get("out_dir", "runs")), raw["name"])
        text = config.dumps(raw).encode()
        checkpoint.atomic_write(run_dir / "config.toml", lambda f: f.write(text))
        rundir.record(run_dir, cases)
        return run_dir

    with _locked_folder(layout, args.resume, prepare) as run_dir:
        try:
            yield run_dir
        except OSError as exc:
            if exc.filename is None:  # write() names no file: name the run's folder
                raise OSError(exc.errno, exc.strerror or str(exc), f"{run_dir}/") from exc
            raise


@contextlib.contextmanager
def _locked_folder(layout, resume: str | None, prepare):
    """A run folder held by rank 0's lock while the block runs: ``resume``, or the new
    one ``prepare(None)`` makes; ``prepare(folder)`` returns it after the lock is taken on a
    resumed one (a new folder is locked as soon as ``prepare`` made it). Its errors
    reach every rank."""
    from . import rundir

    run_dir, held, error = None, None, None
    if layout.is_root:
        try:
            if resume:
                held = rundir.lock(Path(resume))
                run_dir = prepare(Path(resume))
            else:
                run_dir = prepare(None)
                held = rundir.lock(run_dir)
        except config.ConfigError as exc:
            error = exc
        except OSError as exc:
            error = config.ConfigError(_os_error(exc))
    try:
        layout.raise_together(error)
        yield Path(layout.bcast(str(run_dir) if run_dir else None))
    finally:
        if held is not None:
            held.close()


def _train(args, layout, raw: dict, cases: list, run_dir: Path) -> int:
    from . import plots, report, runner

    started = time.perf_counter()
    results = runner.run_cases(
        cases, run_dir, layout, progress=_progress(args.quiet), resume=bool(args.resume)
    )
    if not layout.is_root:
        return _exit_status(results)
    extra = {"name": raw["name"], "ranks": layout.ranks, "seconds": time.perf_counter() - started}
    first = cases[0].config
    report.write_summary(run_dir, cases, results, extra)
    figs = plots.figures(
        results,
        report.job_rows(run_dir, results),
        list(raw.get("sweep", {})),
        title=report.title(raw["name"], cases),
        target=first["target"],
        steps=max(c.config["steps"] for c in cases),
        # One network for the time axis; a sweep over [network] keys gets no time plot.
        network=first["network"]
        if all(c.config["network"] == first["network"] for c in cases)
        else None,
    )
    plots.write(run_dir, figs)
    where = f"{layout.ranks} MPI ranks" if layout.comm is not None else "one process"
    print(
        f"{report.title(raw['name'], cases)} ({where}), {first['steps']} steps, "
        f"{extra['seconds']:.1f} s"
    )
    print(report.table(results, first["target"]))
    for line in report.notes(results, first):
        print(line)
    print(f"files: {run_dir}/ (config.toml, metrics/*.csv, summary.json, *.png)")
    return _exit_status(results)


def _exit_status(results: list) -> int:
    """3 when a job diverged that the config does not expect to, else 0."""
    unexpected = [r for r in results if r.status != "done" and r.expect != "diverge"]
    return EXIT_DIVERGED if unexpected else 0


def _list() -> None:
    """The shipped configs: name, measured wall and CPU time, description (machines as notes)."""
    checked = {name: config.resolve(raw)[0].config for name, raw in config.shipped().items()}
    measured = {name: cfg["measured"] for name, cfg in checked.items()}
    machines = list(dict.fromkeys(m["machine"] for m in measured.values() if m))
    print(f"{'config':<20} {'wall (load)':>15} {'CPU':>6}  description")
    for name, cfg in checked.items():
        wall, cpu, m = "-", "-", measured[name]
        if m:
            load = "" if m["load"] is None else f" ({m['load']:g})"
            wall = f"{m['seconds']:.0f} s{load} [{machines.index(m['machine']) + 1}]"
            cpu = "-" if m["cpu_seconds"] is None else f"{m['cpu_seconds']:.0f} s"
        print(f"{name:<20} {wall:>15} {cpu:>6}  {cfg['description']}")
        if m and m["command"]:
            print(f"{'':<20} {'':>15} {'':>6}  (measured as: {m['command']})")
    for i, machine in enumerate(machines, 1):
        print(f"[{i}] `python -m simulate run NAME -q` unless noted, on {machine}")
    print("(load) is the load average while it ran; on an idle core, wall time ~ CPU time.")


def _hessian(args, layout) -> int:
    from . import hessian, models

    _, cases = _prepare(args, layout)
    for case in cases:
        cfg = case.config
        model = models.build(cfg["model"], cfg["workers"], cfg["seed"], "float64")
        h = cfg["hessian"]
        s = hessian.spectrum_summary(
            model, model.init(), h["top"], h["probes"], h["lanczos_steps"], cfg["seed"]
        )
        if layout.is_root:
            top = ", ".join(f"{e:.4g}" for e in s["top_eigenvalues"])
            print(
                f"{case.label or cfg['name']}: d = {model.d:,}  top eigenvalues {top}  "
                f"sum|lambda| ~ {s['sum_abs_eigenvalues']:.4g}  kappa ~ {s['kappa']:.4g}"
            )
    return 0


def _claims_command(args) -> str:
    """The shell command that reproduces a claims run (for its pages)."""
    import shlex

    words = ["python", "-m", "simulate", "claims", *args.names]
    for text in args.overrides:
        words += ["--set", text]
    if args.threads != 1:
        words += ["--threads", str(args.threads)]
    words += ["--write-docs"] if args.docs is None else ["--docs", args.docs]
    return shlex.join(words)


def _claims(args, layout) -> int:
    from . import claims

    if args.workers_per_rank is not None:
        raise config.ConfigError(
            "--workers-per-rank: each claim fixes its workers W (the Sketched-SGD claim sweeps "
            "them); change W with --set workers=N, and run under mpiexec -n R with R dividing W"
        )
    chosen = [claims.load(name) for name in args.names or claims.CLAIMS]
    overrides = [config.parse_override(text) for text in args.overrides]
    for key in claims.unreached(chosen, overrides):
        names = ", ".join(c for claim in chosen for c in claim.configs)
        raise config.ConfigError(
            f"--set {key}: reaches no config of the chosen claims ({names}); NAME:key sets "
            "config NAME only, sweep.<key> the configs that sweep <key>"
        )
    for claim in chosen:  # every --set and worker count checked before anything runs
        claims.check(claim, overrides, layout)
    if args.resume and not Path(args.resume).is_dir():
        raise config.ConfigError(f"--resume: {args.resume} is not a folder of a claims run")
    from . import rundir

    def prepare(run_dir: Path | None) -> Path:
        return run_dir or rundir.create(Path(args.out or "runs"), "claims")

    with _locked_folder(layout, args.resume, prepare) as out:
        return _run_claims(args, layout, chosen, overrides, out)


def _run_claims(args, layout, chosen: list, overrides: list, out: Path) -> int:
    import os

    from . import claims

    pages = out / "pages"
    docs = Path(args.docs or "docs/results") if (args.write_docs or args.docs) else None
    command = _claims_command(args)
    if layout.comm is not None:
        command = f"mpiexec -n {layout.ranks} {command}"
    started = time.perf_counter()
    for claim in chosen:
        provenance = claims.Provenance(
            command, layout.ranks, args.threads, os.getloadavg()[0], bool(args.resume)
        )
        finding, seconds = claims.run_claim(
            claim,
            out,
            _progress(args.quiet),
            overrides=overrides,
            layout=layout,
            resume=bool(args.resume),
        )
        if finding is None:  # not rank 0
            continue
        for where in filter(None, (pages, docs)):
            claims.write_page(claim, finding, seconds, where, provenance)
            claims.write_index(where, claim, finding, seconds)
        print(f"{claim.name}: {finding.verdict} ({seconds:.0f} s). {finding.reason}")
    if layout.is_root:
        published = f"; published in {docs}/" if docs else " (--write-docs publishes them)"
        print(
            f"all: {time.perf_counter() - started:.0f} s; runs in {out}/, pages in "
            f"{pages}/{published}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m simulate``; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 for a bad config, 3 when a run diverged.
    """
    args = _parser().parse_args(argv)
    if args.command == "list":
        _list()
        return 0
    if args.command is None and not args.resume:
        args.config = "default"
    from .parallel import Layout, limit_threads

    layout = Layout(None if args.command == "claims" else args.workers_per_rank)
    commands = {"claims": _claims, "hessian": _hessian}
    try:
        limit_threads(args.threads)
        with _abort_on_error(layout):
            return commands.get(args.command, _run)(copy.copy(args), layout)
    except (config.ConfigError, ValueError) as exc:
        if layout.is_root:
            print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:  # a read-only --out, a full disk: what was written is kept
        print(f"error: {_os_error(exc)}", file=sys.stderr)
        return EXIT_CONFIG


def _os_error(exc: OSError) -> str:
    """One line for a failed file operation: what failed, on which path."""
    if exc.filename is None:
        return str(exc)
    return f"{exc.strerror or exc}: {exc.filename}"


def _abort_on_error(layout):
    """``MPI_Abort`` on an unexpected exception when several ranks run (no rank hangs)."""
    if layout.comm is None or layout.ranks == 1:
        return contextlib.nullcontext()
    from pysketch.distributed import abort_on_error

    return _ConfigErrorsPass(abort_on_error(layout.comm), layout)


class _ConfigErrorsPass:
    """Wrap a context manager so that a ``ConfigError`` (raised on every rank alike) passes.

    An ``OSError`` (one rank's full disk, say) aborts every rank with exit status 2 after
    one line naming the file, as a bad config does, instead of a traceback.
    """

    def __init__(self, inner, layout):
        self.inner, self.layout = inner, layout

    def __enter__(self):
        return self.inner.__enter__()

    def __exit__(self, kind, exc, tb):
        if kind is not None and issubclass(kind, config.ConfigError):
            return self.inner.__exit__(None, None, None)
        if kind is not None and issubclass(kind, OSError):
            print(f"error: [rank {self.layout.rank}] {_os_error(exc)}", file=sys.stderr, flush=True)
            self.layout.comm.Abort(EXIT_CONFIG)
        return self.inner.__exit__(kind, exc, tb)
