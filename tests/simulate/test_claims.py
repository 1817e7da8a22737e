"""The claims framework: run configs, analyse, write a page and the index."""

from __future__ import annotations

import json

import pytest

from simulate import claims, config
from simulate.claims import _analysis
from simulate.cli import main
from tests.simulate.conftest import TINY


def _claim(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(config.dumps(TINY))

    def analyse(runs, out):
        run = runs["tiny"]
        steps, loss = run.series("fetchsgd", "loss")
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
