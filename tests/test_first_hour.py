"""A newcomer's first hour (issue 20, items 16, 17, 20): the README and install docs, literally."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
PAGES = {p.name: p.read_text() for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.rst")]}


def test_the_distribution_is_not_the_unrelated_pysketch_on_pypi():
    """``pysketch`` on PyPI is another project (1.2); ours installs under its own name."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        project = tomllib.load(f)["project"]
    assert project["name"] == "pysketch-compress"
    assert {"pysketch", "simulate"} <= {p.name for p in ROOT.iterdir() if p.is_dir()}


def test_no_install_line_fetches_pysketch_from_the_index():
    fetches = re.compile(r"pip install\s+(?:-\S+\s+)*[\"']?pysketch\b")
    assert not [(name, m.group()) for name, text in PAGES.items() for m in fetches.finditer(text)]
    assert 'pip install ".[mpi]"' in PAGES["index.rst"]


def test_the_tests_collect_without_torch():
    """The README's test command leaves out the torch extra: nothing may need PyTorch."""
    blocked = (
        "import sys; sys.modules['torch'] = None; import pytest; "
        "sys.exit(pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider']))"
    )
    result = subprocess.run(
        [sys.executable, "-c", blocked], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "could not import 'torch'" in result.stdout  # the torch tests are there, skipped


def test_the_readme_test_command_and_the_torch_cpu_build():
    assert 'python -m pip install -e ".[test,mpi,sim]" && python -m pytest' in README
    assert "--index-url https://download.pytorch.org/whl/cpu" in README


def test_open_mpi_flags_come_with_the_first_mpirun():
    """The root and oversubscribe flags are given at or before the first mpirun command."""
    first = re.search(r"`(mpirun|mpiexec)[^`]*`", README)
    assert first is not None
    before = README[: first.end()]
    assert "--allow-run-as-root" in before and "--oversubscribe" in before
