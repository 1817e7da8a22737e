"""The plots as a reader sees them, checked through matplotlib's objects (Agg backend)."""

from __future__ import annotations

import pytest

from simulate import plots
from simulate.runner import JobResult

TITLE = "run: quadratic (powerlaw spectrum), d = 4,096, W = 4"


def curve(label, values, bytes_per_step=1000.0, accuracy=None, case="", status="done"):
    """A job's result and metrics rows: ``values`` every 10 steps, bytes growing linearly."""
    rows = [
        {
            "step": 10 * i,
            "loss": v,
            "suboptimality": v,
            "upload": bytes_per_step * 10 * i / 2,
            "download": bytes_per_step * 10 * i / 2,
            "test_accuracy": None if accuracy is None else accuracy[i],
        }
        for i, v in enumerate(values)
    ]
    algorithm = label.split("/")[-1]
    result = JobResult(label=label, case=case, algorithm=algorithm, status=status)
    result.steps = rows[-1]["step"]
    result.final = {"suboptimality": values[-1]}
    result.case_values = {"model.basis": case.split("=")[-1]} if case else {}
    return result, rows


def make(*jobs, sweep=(), target=None, steps=30):
    results = [r for r, _ in jobs]
    rows = {r.label: rows for r, rows in jobs}
    figs = plots.figures(results, rows, list(sweep), title=TITLE, target=target, steps=steps)
    return {name: fig.axes for name, fig in figs.items()}, figs


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plots._pyplot().close("all")


def test_loss_vs_bytes_is_log_from_the_first_positive_count():
    axes, _ = make(curve("sgd", [1.0, 0.5, 0.2, 0.1]), curve("fetchsgd", [1.0, 0.6, 0.3, 0.2], 10))
    (ax,) = axes["loss_vs_bytes.png"]
    assert ax.get_xscale() == "log"
    assert ax.get_xlim()[0] == pytest.approx(100.0)  # fetchsgd's first evaluation: 10 steps x 10 B
    assert ax.get_yscale() == "log" and ax.get_title() == TITLE


def test_a_diverged_curve_is_clipped_and_labelled():
    axes, _ = make(
        curve("sgd", [1.0, 0.5, 0.2, 0.1]),
        curve("sketched_sgd", [1.0, 30.0, 1e29], status="diverged"),
    )
    ax = axes["loss_vs_steps.png"][0]
    low, high = ax.get_ylim()
    assert high < 10.0 and low < 0.1  # the others' range, not 1e29
    labels = ax.get_legend_handles_labels()[1]
    assert "sketched_sgd (diverged @ 20)" in labels


def test_accuracy_is_plotted_as_error_on_a_log_axis():
    acc = [0.1, 0.95, 0.98, 0.99]
    axes, _ = make(curve("sgd", [1.0, 0.5, 0.2, 0.1], accuracy=acc))
    (ax,) = axes["accuracy_vs_steps.png"]
    assert ax.get_yscale() == "log" and "1 - accuracy" in ax.get_ylabel()
    line = ax.get_lines()[0]
    assert list(line.get_ydata()) == pytest.approx([0.9, 0.05, 0.02, 0.01])
    low, high = ax.get_ylim()
    assert low < 0.01 and high <= 1.0


def test_categorical_sweep_draws_points_at_named_slots():
    jobs = [
        curve(f"basis={b}/{a}", [1.0, v], case=f"basis={b}")
        for b, v in (("coordinate", 0.1), ("rotated", 0.3))
        for a in ("sgd", "fetchsgd")
    ]
    for (r, _), hit in zip(jobs, [10, 10, 10, None], strict=True):
        r.steps_to_target = hit
    axes, _ = make(*jobs, sweep=["model.basis"])
    final, steps = axes["sweep.png"]
    assert [t.get_text() for t in final.get_xticklabels()] == ["coordinate", "rotated"]
    assert final.get_xscale() == "linear"
    drawn = [x for line in final.get_lines() for x in line.get_xdata()]
    assert len(drawn) == 4 and all(-0.5 < x < 1.5 for x in drawn)
    # the job that missed is an open marker at the run's length
    assert any(
        line.get_markerfacecolor() == "none" and list(line.get_ydata()) == [30]
        for line in steps.get_lines()
    )


def test_many_curves_differ_in_colour_or_style_and_the_legend_is_outside():
    jobs = [curve(f"job{i}", [1.0, 0.5 + i / 100]) for i in range(12)]
    axes, figs = make(*jobs)
    ax = axes["loss_vs_steps.png"][0]
    looks = {(line.get_color(), str(line.get_linestyle())) for line in ax.get_lines()}
    assert len(looks) == 12
    fig = figs["loss_vs_steps.png"]
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1


def test_styles_colour_by_algorithm_and_style_by_case():
    jobs = [
        curve(f"d={d}/{a}", [1.0, 0.5], case=f"d={d}")[0]
        for d in (1, 2)
        for a in ("sgd", "fetchsgd")
    ]
    look = plots.styles(jobs)
    assert look["d=1/sgd"]["color"] == look["d=2/sgd"]["color"]
    assert look["d=1/sgd"]["linestyle"] != look["d=2/sgd"]["linestyle"]
    assert look["d=1/sgd"]["color"] != look["d=1/fetchsgd"]["color"]


def test_a_target_line_is_drawn_where_its_metric_is_plotted():
    target = {"metric": "suboptimality", "value": 0.25, "relative": True}
    axes, _ = make(curve("sgd", [2.0, 0.5, 0.2]), target=target)
    ax = axes["loss_vs_steps.png"][0]
    assert any(list(line.get_ydata()) == [0.5, 0.5] for line in ax.get_lines())
