"""Every shipped config runs to the end at reduced size, and no job blows up unexpectedly.

Each config is run as a user runs it (``python -m simulate run NAME``), with
``--set`` overrides that keep it to a few seconds; the full runs' outcomes
(which jobs reach the target) are in each config's ``[expect]`` and measured
by running them (``docs/simulator.rst``).
"""

from __future__ import annotations

import json

import pytest

from simulate import cli, config

REDUCED = {
    "default": ["steps=20", "eval_every=10"],
    "federated_clients": ["steps=20", "eval_every=10"],
    "fetchsgd_scaling": ["workers=8", "steps=2", "eval_every=1"],
    "logistic_memsgd": ["steps=200", "eval_every=50"],
    "network_time": ["steps=20"],
    "mlp_teacher_student": ["steps=20", "eval_every=10", "model.n=4000"],
    "quadratic_basis": ["steps=20", "model.d=4096"],
    "sketchdl_local": ["steps=10"],
    "smoke": [],
    "sweep_d": ["steps=4", "eval_every=2"],
}


def test_every_shipped_config_has_reduced_settings_and_a_measured_wall_time():
    shipped = config.shipped()
    assert set(REDUCED) == set(shipped)
    for name, raw in shipped.items():
        (case, *_) = config.resolve(raw)
        assert case.config["target"] is not None, name
        assert case.config["expectation"], name
        assert case.config["measured"]["seconds"] > 0, name


@pytest.mark.parametrize("name", sorted(REDUCED))
def test_shipped_config_runs_and_no_job_blows_up(name, tmp_path, capsys):
    args = ["run", name, "-q", "--out", str(tmp_path)]
    for override in REDUCED[name]:
        args += ["--set", override]
    code = cli.main(args)
    out = capsys.readouterr().out
    assert code == 0, out
    summary = json.loads((tmp_path / name / "summary.json").read_text())
    for job in summary["jobs"]:
        assert job["status"] == "done" or job["expect"] == "diverge", (job["label"], out)
        assert job["expect"] in config.OUTCOMES
    assert (tmp_path / name / "loss_vs_bytes.png").exists()
    assert ("sweep.png" in {p.name for p in (tmp_path / name).iterdir()}) == (
        "sweep" in (config.load(name))
    )
