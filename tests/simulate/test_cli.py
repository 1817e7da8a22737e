"""``python -m simulate`` end to end: tiny configs, bad configs, kill and resume, mpiexec."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from simulate import cli, config

from ..test_distributed import MPIEXEC, _env, _is_open_mpi, _mpiexec, needs_mpi
from .conftest import TINY

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_toml(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(config.dumps(TINY))
    return path


def rows(run_dir: Path, label: str) -> list[dict]:
    with open(run_dir / "metrics" / f"{label}.csv") as f:
        return list(csv.DictReader(f))


def assert_same_metrics(a: Path, b: Path, labels, rel=1e-9):
    """Same CSV rows (wall time aside), floats equal up to summation order, bytes exact."""
    for label in labels:
        ra, rb = rows(a, label), rows(b, label)
        assert len(ra) == len(rb), label
        for x, y in zip(ra, rb, strict=True):
            for key in x:
                if key == "wall" or x[key] == y[key]:
                    continue
                assert key not in ("step", "upload", "download"), (label, key, x, y)
                assert float(x[key]) == pytest.approx(float(y[key]), rel=rel, abs=1e-12)


def test_list_and_help(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    for name, raw in config.shipped().items():
        (line,) = [x for x in out.splitlines() if x.startswith(f"{name} ")]
        m = raw["measured"]
        assert f"{m['seconds']:.0f} s ({m['load']:g}) [" in line, line
        assert f" {m['cpu_seconds']:.0f} s " in line, line
        assert raw["measured"]["machine"] in out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0 and "--resume" in capsys.readouterr().out


def test_run_a_tiny_config(tiny_toml, tmp_path, capsys):
    out = tmp_path / "runs"
    code = cli.main(
        [
            "run",
            str(tiny_toml),
            "-q",
            "--out",
            str(out),
            "--set",
            "steps=6",
            "--set",
            "algorithms.fetchsgd.cols=32",
        ]
    )
    text = capsys.readouterr().out
    assert code == 0, text
    run_dir = out / "tiny"
    assert "fetchsgd" in text and "f - f*" in text and str(run_dir) in text
    names = {p.name for p in run_dir.iterdir()}
    assert {
        "config.toml",
        "metrics",
        "summary.json",
        "loss_vs_steps.png",
        "loss_vs_bytes.png",
    } <= names
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["cases"][0]["config"]["algorithms"][2]["cols"] == 32
    assert [j["steps"] for j in summary["jobs"]] == [6, 6, 6]
    assert config.load(run_dir / "config.toml")["steps"] == 6
    # the same name again goes to a fresh folder
    assert cli.main(["run", str(tiny_toml), "-q", "--out", str(out), "--set", "steps=1"]) == 0
    assert (out / "tiny-2" / "summary.json").exists()


def test_a_sweep_writes_its_plot(tiny_toml, tmp_path, capsys):
    code = cli.main(
        [
            "run",
            str(tiny_toml),
            "-q",
            "--out",
            str(tmp_path),
            "--set",
            "steps=2",
            "--set",
            'sweep={"model.d" = [64, 128]}',
        ]
    )
    assert code == 0
    assert (tmp_path / "tiny" / "sweep.png").exists()
    assert "d=128" in capsys.readouterr().out


@pytest.mark.parametrize(("expect", "code"), [("diverge", 0), ("reach", 3)])
def test_a_blow_up_exits_3_unless_the_config_expects_it(tiny_toml, tmp_path, capsys, expect, code):
    args = ["run", str(tiny_toml), "-q", "--out", str(tmp_path), "--set", "schedule.lr=2.5"]
    args += [
        "--set",
        'target={metric = "loss", value = 1e-9}',
        "--set",
        f'expect={{sgd = "{expect}"}}',
    ]
    args += ["--set", 'algorithms=[{name = "sgd"}]', "--set", "steps=30", "--set", "eval_every=1"]
    assert cli.main(args) == code
    out = capsys.readouterr().out
    assert "diverged @ " in out and "above 10x its start" in out
    assert ("(!) not as the config expects: sgd" in out) == (expect == "reach")


def test_bad_config_exits_2_naming_the_key(tiny_toml, tmp_path, capsys):
    code = cli.main(["run", str(tiny_toml), "-q", "--out", str(tmp_path), "--set", "model.d=100"])
    assert code == 2
    assert "model.d: the rotated basis needs a power of two" in capsys.readouterr().err
    assert not (tmp_path / "tiny").exists()  # nothing ran
    assert cli.main(["run", str(tmp_path / "missing.toml")]) == 2


def test_hessian_command(tiny_toml, capsys):
    assert cli.main(["hessian", str(tiny_toml), "--set", "model.d=64"]) == 0
    assert "kappa" in capsys.readouterr().out


def _simulate(args, **kw):
    return subprocess.Popen(
        [sys.executable, "-m", "simulate", *args],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def kill_after_a_checkpoint(args: list[str], marker: Path) -> dict:
    """Run ``python -m simulate args`` in a session of its own, SIGKILL the session as soon
    as the checkpoint ``marker`` exists, and return the marker (the step it was cut at)."""
    cut = _simulate(args, start_new_session=True)
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline and cut.poll() is None:
        time.sleep(0.02)
    os.killpg(cut.pid, signal.SIGKILL)  # the session started here, and only it
    cut.communicate()
    assert marker.exists()
    return json.loads(marker.read_text())


def run_here_and_under_mpiexec(toml: Path, tmp_path: Path, ranks: int = 2) -> tuple[Path, Path]:
    """Run ``toml`` in this process and under ``mpiexec -n ranks``; their run folders."""
    assert cli.main(["run", str(toml), "-q", "--out", str(tmp_path / "local")]) == 0
    result = _mpiexec(
        ranks,
        ["-m", "simulate", "run", str(toml), "-q", "--out", str(tmp_path / "mpi")],
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert f"{ranks} MPI ranks" in result.stdout
    name = config.load(toml)["name"]
    return tmp_path / "local" / name, tmp_path / "mpi" / name


def test_kill_and_resume_equals_an_uninterrupted_run(tiny_toml, tmp_path):
    args = [
        "run",
        str(tiny_toml),
        "-q",
        "--set",
        "steps=3000",
        "--set",
        "checkpoint_every=50",
        "--set",
        "eval_every=25",
        "--set",
        'algorithms=[{name = "memsgd", k = 16}]',
    ]
    full = _simulate([*args, "--out", str(tmp_path / "a")])
    marker = tmp_path / "b" / "tiny" / "checkpoints" / "memsgd.json"
    cut_at = kill_after_a_checkpoint([*args, "--out", str(tmp_path / "b")], marker)
    assert not (tmp_path / "b" / "tiny" / "summary.json").exists()
    assert cut_at["result"] is None  # killed mid-way
    resumed = _simulate(["--resume", str(tmp_path / "b" / "tiny"), "-q"])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert full.communicate(timeout=300)[0] and full.returncode == 0
    assert_same_metrics(tmp_path / "a" / "tiny", tmp_path / "b" / "tiny", ["memsgd"], rel=0)


@needs_mpi
@pytest.mark.mpi
def test_mpiexec_equals_the_in_process_run(tiny_toml, tmp_path):
    """2 ranks x 2 workers, 4 ranks x 1 worker, and 1 process x 4 workers agree."""
    assert cli.main(["run", str(tiny_toml), "-q", "--out", str(tmp_path / "local")]) == 0
    for ranks, extra in [(2, []), (2, ["--workers-per-rank", "2"])]:
        out = tmp_path / f"mpi{ranks}{len(extra)}"
        result = _mpiexec(
            ranks,
            ["-m", "simulate", "run", str(tiny_toml), "-q", "--out", str(out), *extra],
            timeout=300,
        )
        assert result.returncode == 0, result.stdout[-4000:]
        assert f"{ranks} MPI ranks" in result.stdout
        assert_same_metrics(
            tmp_path / "local" / "tiny", out / "tiny", ["sgd", "memsgd", "fetchsgd"]
        )


@needs_mpi
@pytest.mark.mpi
def test_an_error_on_one_rank_stops_every_rank(tiny_toml, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")  # rank 0 cannot create runs under a file; rank 1 waits for it
    result = _mpiexec(
        2,
        ["-m", "simulate", "run", str(tiny_toml), "-q", "--out", str(blocker / "runs")],
        timeout=120,
    )
    assert result.returncode == 2, result.stdout[-4000:]
    assert "error: cannot create the run folder" in result.stdout
    assert "Traceback" not in result.stdout


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        state, _, _, session = stat.rsplit(")", 1)[1].split()[:4]
        if int(session) == sid and state != "Z":  # alive (a zombie only waits to be reaped)
            members.append(int(entry.name))
    return members


def _kill_session(sid: int) -> None:
    """SIGKILL every process of the session ``sid`` that the test started, and wait for them.

    Killing ``mpiexec``'s process group is not enough: Open MPI puts each rank in a
    process group of its own (in the same session), and they would run on.
    """
    deadline = time.monotonic() + 30
    while (members := _session_members(sid)) and time.monotonic() < deadline:
        for pid in members:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    assert not _session_members(sid)


@needs_mpi
@pytest.mark.mpi
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_bad_checkpoint_on_one_rank_stops_every_rank(tiny_toml, tmp_path):
    """Rank 1's file is damaged: both ranks exit 2 with rank 1's message, none waits."""
    args = ["run", str(tiny_toml), "-q", "--out", str(tmp_path)]
    args += ["--set", "steps=3000", "--set", "checkpoint_every=50", "--set", ONLY_MEMSGD]
    cmd = [MPIEXEC, "-n", "2", *(["--oversubscribe"] if _is_open_mpi() else [])]
    cut = subprocess.Popen(
        [*cmd, sys.executable, "-m", "simulate", *args],
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    marker = tmp_path / "tiny" / "checkpoints" / "memsgd.json"
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline and cut.poll() is None:
        time.sleep(0.02)
    _kill_session(cut.pid)
    cut.communicate()
    step = json.loads(marker.read_text())["step"]
    damaged = tmp_path / "tiny" / "checkpoints" / f"memsgd.r1.s{step}.npz"
    os.truncate(damaged, os.path.getsize(damaged) // 2)
    result = _mpiexec(2, ["-m", "simulate", "--resume", str(tmp_path / "tiny"), "-q"], timeout=120)
    assert result.returncode == 2, result.stdout[-4000:]
    assert f"error: {damaged}" in result.stdout and "Traceback" not in result.stdout


# --------------------------------------------------- issue 20 item 8: checkpoints are checked
class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def cut_run(tmp_path_factory):
    """A run of memsgd stopped after step 8 (checkpoints every 4 steps), to copy and damage."""
    from simulate import models

    raw = {
        **TINY,
        "name": "cut",
        "steps": 12,
        "checkpoint_every": 4,
        "algorithms": [{"name": "memsgd", "k": 16}],
    }
    path = tmp_path_factory.mktemp("cut") / "cut.toml"
    path.write_text(config.dumps(raw))
    real = models.Quadratic._add_worker_terms

    def failing(self, g, worker, step, local_step):
        if step == 9:
            raise Interrupt
        return real(self, g, worker, step, local_step)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models.Quadratic, "_add_worker_terms", failing)
        with pytest.raises(Interrupt):
            cli.main(["run", str(path), "-q", "--out", str(path.parent)])
    run_dir = path.parent / "cut"
    assert json.loads((run_dir / "checkpoints" / "memsgd.json").read_text())["step"] == 8
    return run_dir


def _edit_npz(path, **changes):
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays.update(changes)
    np.savez(path, **arrays)


def _edit_marker(path, change):
    marker = json.loads(path.read_text())
    change(marker)
    path.write_text(json.dumps(marker))


D = TINY["model"]["d"]
BAD_CHECKPOINTS = {
    "w scalar": (lambda c: _edit_npz(c / "memsgd.r0.s8.npz", w=np.float64(1.0)), "'w'"),
    "w of length 1": (lambda c: _edit_npz(c / "memsgd.r0.s8.npz", w=np.ones(1)), "'w'"),
    "int64 w": (lambda c: _edit_npz(c / "memsgd.r0.s8.npz", w=np.zeros(D, np.int64)), "'w'"),
    "NaN byte total": (
        lambda c: _edit_marker(
            c / "memsgd.json", lambda m: m["scalars"][0].update({"comm/upload": float("nan")})
        ),
        "comm/upload",
    ),
    "algo steps disagree": (
        lambda c: _edit_marker(
            c / "memsgd.json", lambda m: m["scalars"][0].update({"algo/steps": 5})
        ),
        "algo/steps",
    ),
    "step beyond steps": (
        lambda c: (
            _edit_marker(c / "memsgd.json", lambda m: m.update(step=800)),
            os.replace(c / "memsgd.r0.s8.npz", c / "memsgd.r0.s800.npz"),
        ),
        "'step'",
    ),
    "missing npz": (lambda c: os.unlink(c / "memsgd.r0.s8.npz"), "missing"),
    "string step": (
        lambda c: _edit_marker(c / "memsgd.json", lambda m: m.update(step="8")),
        "'step'",
    ),
    "missing scalars": (
        lambda c: _edit_marker(c / "memsgd.json", lambda m: m.pop("scalars")),
        "'scalars'",
    ),
    "malformed result": (
        lambda c: _edit_marker(c / "memsgd.json", lambda m: m.update(result={"label": 3})),
        "'result'",
    ),
    "truncated npz": (
        lambda c: os.truncate(c / "memsgd.r0.s8.npz", os.path.getsize(c / "memsgd.r0.s8.npz") // 2),
        "memsgd.r0.s8.npz",
    ),
    "marker not JSON": (lambda c: (c / "memsgd.json").write_text("{"), "memsgd.json"),
}


@pytest.mark.parametrize("damage", BAD_CHECKPOINTS)
def test_a_bad_checkpoint_exits_2_naming_the_file_and_field(cut_run, tmp_path, capsys, damage):
    run_dir = tmp_path / "cut"
    shutil.copytree(cut_run, run_dir)
    change, field = BAD_CHECKPOINTS[damage]
    change(run_dir / "checkpoints")
    capsys.readouterr()
    assert cli.main(["--resume", str(run_dir), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "checkpoints/memsgd." in err and field in err, err


def test_an_undamaged_cut_run_resumes(cut_run, tmp_path):
    shutil.copytree(cut_run, tmp_path / "cut")
    assert cli.main(["--resume", str(tmp_path / "cut"), "-q"]) == 0
    assert [int(r["step"]) for r in rows(tmp_path / "cut", "memsgd")] == [0, 3, 6, 9, 12]


def _resume(run_dir) -> int:
    return cli.main(["--resume", str(run_dir), "-q"])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


# ------------------------------------------- issue 20 item 9: edits of a run's config.toml
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("algorithms.0.k", 32),
        ("algorithms.0.compressor", "randomk"),
        ("seed", 4),
        ("schedule.lr", 0.25),
        ("model.d", 512),
    ],
)
def test_resume_refuses_edits_that_change_the_trajectory(cut_run, tmp_path, capsys, key, value):
    run_dir = tmp_path / "cut"
    shutil.copytree(cut_run, run_dir)
    raw = config.load(run_dir / "config.toml")
    old = config.resolve(raw)[0].config
    config.set_path(raw, key, value)
    (run_dir / "config.toml").write_text(config.dumps(raw))
    capsys.readouterr()
    assert _resume(run_dir) == 2
    err = _one_error_line(capsys)
    assert f"{key} (" in err and "was edited" in err, err
    marker = json.loads((run_dir / "checkpoints" / "memsgd.json").read_text())
    assert marker["step"] == 8 and marker["result"] is None  # nothing ran
    assert old != config.resolve(raw)[0].config


def test_resume_accepts_edits_that_keep_the_trajectory(cut_run, tmp_path):
    run_dir = tmp_path / "cut"
    shutil.copytree(cut_run, run_dir)
    raw = config.load(run_dir / "config.toml")
    raw.update(description="edited", eval_every=4, checkpoint_every=2)
    raw["target"] = {"metric": "loss", "value": 1.0}
    (run_dir / "config.toml").write_text(config.dumps(raw))
    assert _resume(run_dir) == 0
    fresh = tmp_path / "fresh"
    original = config.load(cut_run / "config.toml")
    (tmp_path / "fresh.toml").write_text(config.dumps({**original, "name": "fresh"}))
    assert cli.main(["run", str(tmp_path / "fresh.toml"), "-q", "--out", str(tmp_path)]) == 0
    final = [rows(d, "memsgd")[-1] for d in (run_dir, fresh)]
    assert final[0]["loss"] == final[1]["loss"] and final[0]["step"] == "12"


# ------------------------------------------------ issue 20 item 10: the run folder is locked
HOLD_LOCK = """
import fcntl, os, sys, time
handle = open(sys.argv[1], "a+")
fcntl.flock(handle, fcntl.LOCK_EX)
handle.truncate(0)
handle.write(str(os.getpid()))
handle.flush()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_run_folder_in_use_is_refused_and_a_killed_run_leaves_no_lock(cut_run, tmp_path, capsys):
    run_dir = tmp_path / "cut"
    shutil.copytree(cut_run, run_dir)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(run_dir / ".lock")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        capsys.readouterr()
        assert _resume(run_dir) == 2
        err = _one_error_line(capsys)
        assert f"is in use by another run (process {holder.pid}" in err, err
        assert not (run_dir / "summary.json").exists()
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the kernel drops the lock
        holder.communicate()
    assert _resume(run_dir) == 0
    assert [int(r["step"]) for r in rows(run_dir, "memsgd")] == [0, 3, 6, 9, 12]  # no duplicates


# ------------------------------------------- issue 20 item 11: the name stays under --out
@pytest.mark.parametrize("name", ["../../x", "ABSOLUTE", "", " ", ".", "..", "a/b"])
def test_a_name_that_is_not_a_plain_folder_name_is_refused(tiny_toml, tmp_path, capsys, name):
    name = str(tmp_path / "abs") if name == "ABSOLUTE" else name
    out = tmp_path / "a" / "b" / "runs"
    code = cli.main(["run", str(tiny_toml), "-q", "--out", str(out), "--set", f"name={name!r}"])
    assert code == 2
    assert _one_error_line(capsys).startswith("error: name: must be a plain folder name")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.toml"]  # nothing was made


# ------------------------------- issue 20 item 12: sizes that cannot fit, refused up front
ONLY_MEMSGD = 'algorithms=[{name = "memsgd", k = 16}]'
HUGE = [
    (["model.d=1099511627776"], "model.d = 1099511627776"),
    (["model.d=4611686018427387904"], "model.d = 4611686018427387904"),
    (["algorithms.fetchsgd.cols=4000000000"], "algorithms.2.cols = 4000000000"),
    (
        ['model={kind = "mlp", dataset = "digits", hidden = [100000000]}', ONLY_MEMSGD],
        "model.hidden = [100000000]",
    ),
    (
        ['model={kind = "logistic", dataset = "synthetic_dense", n = 100000000}', ONLY_MEMSGD],
        "model.n = 100000000",
    ),
    (["workers=100000000", "model.heterogeneity=0", ONLY_MEMSGD], "workers = 100000000"),
]


@pytest.mark.parametrize(("overrides", "key"), HUGE)
def test_sizes_that_cannot_fit_are_refused_naming_the_key(
    tiny_toml, tmp_path, capsys, overrides, key
):
    sets = [arg for o in overrides for arg in ("--set", o)]
    assert cli.main(["run", str(tiny_toml), "-q", "--out", str(tmp_path / "runs"), *sets]) == 2
    err = _one_error_line(capsys)
    assert key in err.split(":")[1] and "more than this machine has" in err, err
    assert not (tmp_path / "runs").exists()


def test_rows_beyond_a_sketchs_limit_name_the_key(tiny_toml, tmp_path, capsys):
    sets = ["--set", "algorithms.fetchsgd.rows=100"]
    assert cli.main(["run", str(tiny_toml), "-q", "--out", str(tmp_path / "runs"), *sets]) == 2
    assert _one_error_line(capsys).startswith("error: algorithms.2.rows: must be <= 64")
    assert not (tmp_path / "runs").exists()


def test_the_memory_estimate_is_a_lower_bound_of_a_real_run(tiny_raw, tmp_path):
    """The estimate may not exceed what a run really holds (else it would refuse runs that fit)."""
    import tracemalloc

    from simulate import runner
    from simulate.parallel import Layout

    tiny_raw["steps"] = 1
    runner.run_cases(config.resolve(tiny_raw), tmp_path / "warm", Layout(mpi=False))  # compile
    tiny_raw["model"]["d"] = 2**20
    for algo in tiny_raw["algorithms"]:
        (case,) = config.resolve({**tiny_raw, "algorithms": [algo]})
        estimate = sum(config.memory_terms(case.config, 4).values())
        tracemalloc.start()  # NumPy reports its buffers to tracemalloc
        try:
            runner.run_cases([case], tmp_path / algo["name"], Layout(mpi=False))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert 8 * 2**20 < estimate <= peak, (algo["name"], estimate, peak)


# ---------------------------------------------------------------- issue 20 item 13: CLI errors
@pytest.mark.parametrize("option", ["--threads", "--workers-per-rank"])
@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_counts_on_the_command_line_must_be_positive(tiny_toml, capsys, option, value):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", str(tiny_toml), "-q", option, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: must be" in err and "Traceback" not in err


def _unwritable(tmp_path) -> Path:
    """A folder this process cannot create anything in (root ignores modes: /sys then)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").mkdir()
    except OSError:
        return folder
    (folder / "probe").rmdir()
    if Path("/sys").is_dir() and not os.access("/sys", os.W_OK | os.X_OK):
        return Path("/sys/pysketch-test")
    try:
        (Path("/sys") / "pysketch-probe").mkdir()
    except OSError:
        return Path("/sys")
    pytest.skip("no unwritable folder here")


def test_an_unwritable_out_is_one_line_and_exit_2(tiny_toml, tmp_path, capsys):
    out = _unwritable(tmp_path) / "runs"
    assert cli.main(["run", str(tiny_toml), "-q", "--out", str(out)]) == 2
    err = _one_error_line(capsys)
    assert f"cannot create the run folder {out / 'tiny'}" in err, err


def test_a_full_disk_is_one_line_and_keeps_what_was_written(cut_run, tmp_path, capsys, monkeypatch):
    """The checkpoint after step 12 cannot be written: exit 2, the step-8 one is intact."""
    from simulate import checkpoint

    run_dir = tmp_path / "cut"
    shutil.copytree(cut_run, run_dir)
    real = np.savez

    def savez_on_a_full_disk(file, **arrays):
        file.write(b"PK\x03\x04 half")
        raise OSError(28, "No space left on device")  # as write() raises it: no file name

    monkeypatch.setattr(checkpoint.np, "savez", savez_on_a_full_disk)
    raw = config.load(run_dir / "config.toml")
    raw["checkpoint_every"] = 2
    (run_dir / "config.toml").write_text(config.dumps(raw))
    capsys.readouterr()
    assert _resume(run_dir) == 2
    err = _one_error_line(capsys)
    assert "No space left on device" in err and "checkpoints/memsgd.r0.s10.npz" in err, err
    monkeypatch.setattr(checkpoint.np, "savez", real)
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["memsgd.json", "memsgd.r0.s8.npz"]  # no temporary file left
    assert _resume(run_dir) == 0


# ------------------------------------------------------------- issue 20 item 20: stumbles
def test_the_help_examples_name_shipped_configs(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    named = re.findall(r"python -m simulate (?:run|hessian) (\w+)", text)
    assert named and set(named) <= set(config.shipped()), named


def test_every_output_file_gets_the_same_mode(tiny_toml, tmp_path):
    """summary.json was written 0600 while the other outputs were 0644 (umask 022)."""
    umask = os.umask(0o022)
    try:
        assert cli.main(["run", str(tiny_toml), "-q", "--out", str(tmp_path)]) == 0
    finally:
        os.umask(umask)
    files = [p for p in (tmp_path / "tiny").rglob("*") if p.is_file() and p.name != ".lock"]
    modes = {p.relative_to(tmp_path).as_posix(): oct(p.stat().st_mode & 0o777) for p in files}
    assert "tiny/summary.json" in modes and set(modes.values()) == {"0o644"}, modes
