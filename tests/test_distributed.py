"""Launch the MPI tests (tests/distributed) under mpiexec from a plain pytest run.

Each launch runs ``mpiexec -n W python -m mpi4py -m pytest tests/distributed``
with a timeout, so a collective that hangs on some rank fails the run instead
of blocking CI; ``-m mpi4py`` turns an unhandled exception on one rank into
``MPI_Abort`` for all. Skipped when mpiexec or mpi4py is missing.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MPIEXEC = shutil.which("mpiexec")
HAVE_MPI4PY = importlib.util.find_spec("mpi4py") is not None
TIMEOUT = 300

needs_mpi = pytest.mark.skipif(
    MPIEXEC is None or not HAVE_MPI4PY, reason="needs mpiexec and mpi4py (pip install .[mpi])"
)


def _is_open_mpi() -> bool:
    try:
        version = subprocess.run(
            [MPIEXEC, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "Open MPI" in version or "OpenRTE" in version


def _env() -> dict[str, str]:
    """This environment, minus any MPI launcher's variables, plus what the ranks need."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OMPI_COMM_WORLD", "PMIX_", "PMI_", "PRTE_"))
    }
    env.update(
        OMPI_ALLOW_RUN_AS_ROOT="1",  # containers run as root
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_rmaps_base_oversubscribe="1",
        OMPI_MCA_mpi_yield_when_idle="1",  # oversubscribed ranks must not spin-wait
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
    )
    if env.get("PYSKETCH_REAL_GPU") != "1":
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    return env


def _mpiexec(n: int, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``mpiexec -n n python args`` in its own session; kill that session on timeout."""
    cmd = [MPIEXEC, "-n", str(n)]
    if _is_open_mpi():
        cmd.append("--oversubscribe")  # more ranks than cores
    cmd += [sys.executable, *args]
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the session started above, and only it
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd)} hung for {timeout} s:\n{out[-6000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out)


@needs_mpi
@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [2, 4])
def test_collectives_under_mpiexec(ranks):
    args = ["-m", "mpi4py", "-m", "pytest", "tests/distributed", "-q", "-p", "no:cacheprovider"]
    result = _mpiexec(ranks, args, TIMEOUT)
    assert result.returncode == 0, f"{' '.join(result.args)} failed:\n{result.stdout[-8000:]}"
    assert "passed" in result.stdout


_RAISE_ON_RANK_1 = """
from mpi4py import MPI
from pysketch.distributed import abort_on_error
comm = MPI.COMM_WORLD
{wrap}
    if comm.rank == 1:
        raise RuntimeError("boom on rank 1")
    comm.Barrier()  # rank 0 would wait here forever without MPI_Abort
"""


@needs_mpi
@pytest.mark.mpi
@pytest.mark.parametrize(
    "launch,wrap",
    [
        (["-m", "mpi4py", "-c"], "if True:"),  # python -m mpi4py aborts on the exception
        (["-c"], "with abort_on_error():"),  # abort_on_error() does it for one block
    ],
    ids=["python-m-mpi4py", "abort_on_error"],
)
def test_exception_on_one_rank_aborts_all(launch, wrap):
    result = _mpiexec(2, [*launch, _RAISE_ON_RANK_1.format(wrap=wrap)], timeout=120)
    assert result.returncode != 0
    assert "boom on rank 1" in result.stdout


def test_importing_distributed_does_not_need_mpi4py():
    code = "import sys, pysketch.distributed; assert 'mpi4py' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), check=True, timeout=120)


def test_missing_mpi4py_names_the_extra(monkeypatch):
    from pysketch import distributed

    monkeypatch.setitem(sys.modules, "mpi4py", None)  # makes `import mpi4py` fail
    with pytest.raises(ImportError, match=r"pip install pysketch\[mpi\]"):
        distributed.allreduce([1.0, 2.0])


def test_byte_counter_without_mpi():
    from pysketch.distributed import ByteCounter, ByteTotals

    counter = ByteCounter()
    counter.record("allreduce", "host", 4, payload_sent=100, payload_received=100, wire_sent=150)
    assert counter.current == ByteTotals(1, 100, 100, 150, 0, 0)
    assert counter.step().payload == 200
    assert counter.last_step.wire == 150 and counter.current.calls == 0
    counter.record("allgather_sparse", "staged", 4, payload_sent=8)
    assert counter.total.calls == 2 and counter.total.payload_sent == 108
    assert counter.total.as_dict()["payload_sent"] == 108
