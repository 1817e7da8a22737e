"""Sketch allreduce vs dense allreduce under MPI: runs
``mpiexec -n 2 python asv_bench/allreduce_bench.py --json`` and tracks what its
rank 0 prints (skipped where ``mpiexec`` or ``mpi4py`` is absent).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from .common import ASV_BENCH, HEAD_COLS, HEAD_ROWS, sizes

SCRIPT = os.path.join(ASV_BENCH, "allreduce_bench.py")


class AllreduceSketchVsDense:
    """Seconds and bytes of one allreduce of a rows x cols sketch vs a dense d vector, 2 ranks."""

    params = [sizes([10**6], [10**7])]
    param_names = ["d"]
    timeout = 600

    def setup_cache(self):
        if not os.path.exists(SCRIPT):
            return None
        mpiexec = shutil.which("mpiexec")
        if mpiexec is None:
            return None
        env = dict(
            os.environ,
            OMPI_ALLOW_RUN_AS_ROOT="1",
            OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
            OMPI_MCA_rmaps_base_oversubscribe="1",
        )
        env["PYTHONPATH"] = os.pathsep.join(
            [os.path.dirname(ASV_BENCH), env.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep)
        results = {}
        for d in self.params[0]:
            cmd = [
                mpiexec,
                "-n",
                "2",
                sys.executable,
                SCRIPT,
                "--d",
                str(d),
                "--rows",
                str(HEAD_ROWS),
                "--cols",
                str(HEAD_COLS),
                "--json",
            ]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=280, env=env)
            except subprocess.TimeoutExpired:
                continue
            if proc.returncode == 0:
                results[d] = json.loads(proc.stdout.strip().splitlines()[-1])
            else:
                sys.stderr.write(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}\n")
        return results

    def setup(self, results, d):
        if not results or d not in results:
            raise NotImplementedError(f"{SCRIPT} absent, mpiexec missing, or the run failed")
        self.fields = results[d]

    def track_sketch_allreduce_seconds(self, results, d):
        return self.fields["sketch_seconds"]

    track_sketch_allreduce_seconds.unit = "seconds"

    def track_dense_allreduce_seconds(self, results, d):
        return self.fields["dense_seconds"]

    track_dense_allreduce_seconds.unit = "seconds"

    def track_sketch_wire_bytes(self, results, d):
        return self.fields["sketch_wire_bytes"]

    track_sketch_wire_bytes.unit = "bytes"

    def track_dense_wire_bytes(self, results, d):
        return self.fields["dense_wire_bytes"]

    track_dense_wire_bytes.unit = "bytes"
