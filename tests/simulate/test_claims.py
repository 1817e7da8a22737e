"""The claims framework: run configs, analyse, write a page and the index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulate import claims, config
from simulate.claims import _analysis
from simulate.cli import main
from tests.simulate.conftest import TINY
from tests.simulate.test_cli import assert_same_metrics
from tests.test_distributed import _mpiexec, needs_mpi


def _claim(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(config.dumps({**TINY, "sweep": {"seed": [3]}}))

    def analyse(runs, out):
        run = runs["tiny"]
        steps, loss = run.series("fetchsgd", "loss", run.cases[0].label)
        fig = _analysis.line_plot(
            out / "loss.png", {"fetchsgd": (steps, loss)}, xlabel="step", ylabel="loss", title="t"
        )
        held = loss[-1] < loss[0]
        return claims.Finding(
            "held" if held else "failed",
            f"loss went from {loss[0]:.3g} to {loss[-1]:.3g}",
            ["algorithm", "final loss"],
            [[r.label, _analysis.fmt(r.final["loss"])] for r in run.results],
            [fig],
        )

    return claims.Claim("tiny", "A tiny claim", "[RPU20]_", "loss goes down.", ["tiny"], analyse)


def test_run_claim_writes_page_figure_and_index(tmp_path, monkeypatch):
    claim = _claim(tmp_path)
    monkeypatch.setattr(claims, "CONFIG_DIR", tmp_path)
    monkeypatch.setattr(claims, "CLAIMS", ("tiny",))
    finding, seconds = claims.run_claim(claim, tmp_path / "runs", log=lambda *_: None)
    assert finding.verdict == "held" and seconds > 0
    docs = tmp_path / "docs"
    page = claims.write_page(claim, finding, seconds, docs).read_text()
    assert "**Verdict: held.**" in page and "python -m simulate claims tiny" in page
    assert "tiny_loss.png" in page and (docs / "tiny_loss.png").stat().st_size > 0
    claims.write_index(docs, claim, finding, seconds)
    assert json.loads((docs / "verdicts.json").read_text())["tiny"]["verdict"] == "held"
    assert ":doc:`A tiny claim <tiny>`" in (docs / "index.rst").read_text()


def test_finding_refuses_unknown_verdicts():
    with pytest.raises(ValueError, match="verdict must be one of"):
        claims.Finding("maybe", "", [], [])


def test_unknown_claim_is_a_config_error(capsys):
    assert main(["claims", "nonsense"]) == 2
    assert "claim must be one of" in capsys.readouterr().err


def test_rate_helpers():
    steps = [1, 2, 4, 8, 16, 32]
    assert _analysis.loglog_slope(steps, [1 / t for t in steps], start=0) == pytest.approx(-1)
    assert _analysis.first_step_below(steps, [1 / t for t in steps], 0.1) == 16
    assert _analysis.human_bytes(12_300) == "12.3 kB" and _analysis.fmt(None) == "-"


def test_a_damaged_verdict_ledger_is_a_clear_error(tmp_path):
    claim = _claim(tmp_path)
    finding = claims.Finding("held", "", [], [])
    (tmp_path / "verdicts.json").write_text('{"tiny": {"verdict": "maybe"}}')
    with pytest.raises(ValueError, match="entry 'tiny' must have the keys"):
        claims.write_index(tmp_path, claim, finding, 1.0)
    (tmp_path / "verdicts.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable verdict ledger"):
        claims.write_index(tmp_path, claim, finding, 1.0)
    assert not (tmp_path / "index.rst").exists()


@pytest.fixture
def tiny_claim(tmp_path, monkeypatch):
    """A claim ``tiny`` that ``python -m simulate claims tiny`` finds."""
    claim = _claim(tmp_path)
    monkeypatch.setattr(claims, "CONFIG_DIR", tmp_path)
    monkeypatch.setattr(claims, "CLAIMS", ("tiny",))
    real = claims.load
    monkeypatch.setattr(claims, "load", lambda name: claim if name == "tiny" else real(name))
    return claim


def test_claims_set_reaches_the_runs_and_pages_stay_in_the_run_folder(tiny_claim, tmp_path):
    out = tmp_path / "runs"
    args = ["claims", "tiny", "-q", "--out", str(out), "--set", "steps=6"]
    assert main([*args, "--set", "tiny:sweep.seed=[4, 5]"]) == 0
    run = out / "claims"
    for seed in (4, 5):
        with open(run / "tiny" / "tiny" / "metrics" / f"seed={seed}_fetchsgd.csv") as f:
            assert f.read().splitlines()[-1].startswith("6,")  # 6 steps, not the config's 12
    page = (run / "pages" / "tiny.rst").read_text()
    assert "claims tiny --set steps=6 --set 'tiny:sweep.seed=[4, 5]' --write-docs" in page
    assert "one process, 1 Numba thread" in page and "load average" in page
    assert not (tmp_path / "docs").exists() and not Path("docs/results/tiny.rst").exists()
    assert main(args) == 0 and (out / "claims-2" / "pages" / "tiny.rst").exists()


def test_claims_write_docs_publishes_the_pages(tiny_claim, tmp_path):
    docs = tmp_path / "docs"
    assert main(["claims", "-q", "--out", str(tmp_path / "runs"), "--docs", str(docs)]) == 0
    assert (docs / "tiny.rst").exists() and (docs / "tiny_loss.png").exists()
    assert json.loads((docs / "verdicts.json").read_text())["tiny"]["verdict"] == "held"
    assert f"--docs {docs}" in (docs / "tiny.rst").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers-per-rank", "2"], "--workers-per-rank: each claim fixes its workers"),
        (["--set", "seed=4"], "tiny sweeps seed; set sweep.seed=[...]"),
        (["--set", "sweep.model.d=[64]"], "--set sweep.model.d: reaches no config"),
        (["--set", "tiny:sweep.model.d=[64]"], "tiny has no sweep of that key"),
        (["--set", "other:steps=3"], "--set other:steps: reaches no config of the chosen"),
        (["--set", "model.nonsense=1"], "model.nonsense: unknown key"),
        (["--set", "steps"], "expected key=value"),
    ],
)
def test_claims_refuses_what_it_cannot_honour(tiny_claim, tmp_path, capsys, args, message):
    out = tmp_path / "runs"
    assert main(["claims", "tiny", "-q", "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # refused before anything ran


def test_claims_resume_skips_finished_jobs_and_refuses_another_config(tiny_claim, tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["claims", "tiny", "-q", "--out", str(out), "--set", "steps=6"]) == 0
    run = out / "claims"
    csv = run / "tiny" / "tiny" / "metrics" / "seed=3_fetchsgd.csv"
    first, stamp = csv.read_text(), csv.stat().st_mtime_ns
    assert main(["claims", "tiny", "-q", "--resume", str(run), "--set", "steps=6"]) == 0
    assert csv.stat().st_mtime_ns == stamp and csv.read_text() == first  # not run again
    page = (run / "pages" / "tiny.rst").read_text()
    assert "(resumed: the jobs' training times summed)" in page
    capsys.readouterr()
    assert main(["claims", "tiny", "-q", "--resume", str(run), "--set", "steps=8"]) == 2
    assert "was run with another config" in capsys.readouterr().err
    assert main(["claims", "tiny", "-q", "--resume", str(tmp_path / "nope")]) == 2


RATES_SMALL = [
    "--set",
    "steps=10",
    "--set",
    "sweep.model.d,algorithms.Sketched-SGD.cols,algorithms.FetchSGD.cols="
    "[[1024, 100, 100], [4096, 120, 120]]",
]


@needs_mpi
@pytest.mark.mpi
def test_claims_under_mpiexec_equal_the_in_process_run(tmp_path):
    """The rates claim, cut down by --set, on 2 ranks x 2 workers and in one process."""
    local = tmp_path / "local"
    assert main(["claims", "rates", "-q", "--out", str(local), *RATES_SMALL]) == 0
    mpi = tmp_path / "mpi"
    result = _mpiexec(
        2, ["-m", "simulate", "claims", "rates", "-q", "--out", str(mpi), *RATES_SMALL], 600
    )
    assert result.returncode == 0, result.stdout[-4000:]
    stems = [p.stem for p in (local / "claims/rates/rates_quadratic/metrics").glob("*.csv")]
    assert len(stems) == 10
    # A rank sketches its own workers' sum, then the ranks' sketches are summed: the
    # buckets add in another order than in one process (Sketched-SGD differs by ~1e-8).
    assert_same_metrics(
        local / "claims/rates/rates_quadratic",
        mpi / "claims/rates/rates_quadratic",
        stems,
        rel=1e-6,
    )
    page = (mpi / "claims" / "pages" / "rates.rst").read_text()
    assert "mpiexec -n 2 python -m simulate claims rates --set steps=10" in page
    assert "2 MPI processes" in page
