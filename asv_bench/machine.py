"""The machine a figure was measured on, and the instruction set Numba compiled for.

Every benchmark script prints :func:`cpu_description` with its figures (and
:func:`gpu_description`, from :func:`require_gpu`, with GPU figures). On a
machine with AVX-512, ``--target avx2`` (see :func:`add_target_argument`)
reruns a script with Numba generating code for an AVX2 CPU (Haswell: AVX2,
FMA, BMI2, no AVX-512), the level of most users' CPUs. Both variables are
needed: ``NUMBA_CPU_NAME`` alone keeps the host's feature flags, AVX-512
included, and only changes the tuning.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

# LLVM's feature set of a Haswell CPU: AVX2 and FMA, no AVX-512.
AVX2_FEATURES = (
    "+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+cx8,+f16c,+fma,+fsgsbase,+fxsr,+lzcnt,+mmx,"
    "+movbe,+pclmul,+popcnt,+rdrnd,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave,"
    "+xsaveopt"
)
TARGETS = {
    "host": {},
    "avx2": {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": AVX2_FEATURES},
}
_LEVELS = (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"))


def _host() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return model, flags


def _level(flags: set[str]) -> str:
    return next((name for flag, name in _LEVELS if flag in flags), "unknown")


def cpu_description() -> str:
    """CPU model and SIMD level, and the CPU and SIMD level Numba's LLVM compiles for."""
    import llvmlite.binding as llvm

    model, flags = _host()
    name = os.environ.get("NUMBA_CPU_NAME") or llvm.get_host_cpu_name()
    features = os.environ.get("NUMBA_CPU_FEATURES")
    if features is None:
        code = _level(flags)
    else:  # LLVM spells sse4_2 as sse4.2
        code = _level({f[1:].replace(".", "_") for f in features.split(",") if f[:1] == "+"})
    return f"{model} ({_level(flags)}; Numba compiles for {name}, {code})"


def add_target_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        choices=sorted(TARGETS),
        default="host",
        help="instruction set Numba compiles for: the host's, or AVX2 without AVX-512",
    )


def target_in(argv: list[str]) -> str:
    """The value of ``--target`` in a command line (checked later by argparse), or ``"host"``."""
    for i, arg in enumerate(argv):
        if arg == "--target" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--target="):
            return arg.partition("=")[2]
    return "host"


def use_target(target: str) -> None:
    """Re-execute this script with the Numba target variables set, unless they already are.

    Call it before anything imports Numba (the target is fixed at import).
    """
    wanted = TARGETS.get(target, {})
    if all(os.environ.get(key) == value for key, value in wanted.items()):
        return
    if "numba" in sys.modules:
        raise RuntimeError("use_target must run before numba is imported")
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **wanted})


def require_gpu(what: str):
    """CuPy, once a CUDA device is known to be there; else exit with a message naming
    ``what`` and what is missing (GPU figures need a GPU: no fallback)."""
    try:
        import cupy
    except ImportError:
        sys.exit(f"{what} needs CuPy and a CUDA GPU: pip install 'pysketch[cuda12]' (or [cuda13])")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, or a broken one
        sys.exit(f"{what} needs a CUDA GPU: the CUDA runtime reports {exc}")
    if count == 0:
        sys.exit(f"{what} needs a CUDA GPU: CuPy sees none")
    return cupy


def gpu_description() -> str:
    """The current CUDA device, its SM count and the driver (after :func:`require_gpu`)."""
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    driver = cupy.cuda.runtime.driverGetVersion()
    return (
        f"{name}, {props['multiProcessorCount']} SMs, CUDA driver API "
        f"{driver // 1000}.{driver % 1000 // 10}, CuPy {cupy.__version__}"
    )
