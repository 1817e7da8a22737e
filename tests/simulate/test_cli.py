"""``python -m simulate`` end to end: tiny configs, bad configs, kill and resume, mpiexec."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulate import cli, config

from ..test_distributed import _env, _mpiexec, needs_mpi
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
    cut = _simulate([*args, "--out", str(tmp_path / "b")], start_new_session=True)
    marker = tmp_path / "b" / "tiny" / "checkpoints" / "memsgd.json"
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline and cut.poll() is None:
        time.sleep(0.02)
    os.killpg(cut.pid, signal.SIGKILL)  # the session started above, and only it
    cut.communicate()
    assert marker.exists() and not (tmp_path / "b" / "tiny" / "summary.json").exists()
    assert json.loads(marker.read_text())["result"] is None  # killed mid-way
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
    assert result.returncode != 0
    assert "aborting" in result.stdout or "NotADirectoryError" in result.stdout
