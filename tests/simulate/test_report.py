"""The printed summary: its columns, number formats and the notes under the table."""

from __future__ import annotations

from simulate import report
from simulate.runner import JobResult

from .conftest import resolved


def job(label, outcome, expect=None, **final):
    steps = {"reach": 40, "miss": None, "diverge": None}[outcome]
    status = "diverged" if outcome == "diverge" else "done"
    return JobResult(
        label=label,
        case="",
        algorithm=label,
        status=status,
        steps=60 if status == "done" else 30,
        final=final,
        steps_to_target=steps,
        upload=1e6,
        download=2e6,
        compression=5000.0,
        message=f"{label}: the loss is 31 after 30 steps" if status == "diverged" else "",
        expect=expect,
        outcome=outcome,
    )


def test_no_loss_column_where_f_minus_f_star_is_known_and_no_exponents():
    text = report.table([job("sgd", "reach", loss=-0.0033, suboptimality=0.2)])
    head, _, row = text.splitlines()
    assert "final loss" not in head and "f - f*" in head
    assert "-0.0033" not in row and "5,000x" in row and "e+" not in row


def test_outcomes_next_to_expectations_and_a_mark_where_they_differ():
    target = {"metric": "suboptimality", "value": 0.1, "relative": True}
    results = [
        job("sgd", "reach", "reach", suboptimality=0.01),
        job("fetchsgd", "miss", "reach", suboptimality=0.2),
        job("sketchdl-ef", "diverge", "diverge", suboptimality=4.0),
    ]
    text = report.table(results, target)
    assert "steps to f - f* <= 0.1 x start" in text
    lines = {line.split()[0]: line for line in text.splitlines()[2:]}
    assert lines["sgd"].split()[-2:] == ["reached", "reached"]
    assert lines["fetchsgd"].split()[-2:] == ["(!)", "reached"]
    assert "diverged @ 30" in lines["sketchdl-ef"] and "(!)" not in lines["sketchdl-ef"]


def test_notes_state_the_resolution_the_rules_and_the_surprises(tiny_raw):
    tiny_raw["target"] = {"metric": "suboptimality", "value": 0.1, "relative": True}
    tiny_raw["expectation"] = "SGD reaches it."
    cfg = resolved(tiny_raw)
    results = [job("sgd", "miss", "reach"), job("memsgd", "diverge", "diverge")]
    text = " ".join(report.notes(results, cfg))
    assert "resolved to eval_every = 3 steps" in text and "not interpolated" in text
    assert "above 10x its start" in text and "chance" not in text  # no test accuracy here
    assert "expected: SGD reaches it." in text
    assert "(!) not as the config expects: sgd (1 of 2 jobs)" in text
    assert "memsgd: the loss is 31 after 30 steps" in text
