"""``python -m pysketch``: argument errors, exit status, help text, timings."""

from __future__ import annotations

import re

import pytest

from pysketch.__main__ import build_parser, main

SMALL = ["--d", "20000", "--cols", "2000", "--k", "10", "--workers", "2"]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--k", "200", "--d", "100"], "--k must be at most --d (100), got 200"),
        (["--seed", "-1"], "argument --seed: must be in [0, "),
        (["--seed", str(2**64)], "argument --seed: must be in [0, "),
        (["--rows", "0"], "argument --rows: must be in [1, 64], got 0"),
        (["--rows", "65"], "argument --rows: must be in [1, 64], got 65"),
        (["--workers", "0"], "argument --workers: must be at least 1, got 0"),
        (["--cols", "0"], "argument --cols: must be in [1, "),
        (["--d", "x"], "argument --d: must be an integer, got 'x'"),
        (["--k", "0"], "argument --k: must be at least 1, got 0"),
        (["--hash", "md5"], "argument --hash: invalid choice"),
        (["--min-recall", "1.5"], "argument --min-recall: must lie in [0, 1]"),
        # Sizes that cannot fit are refused before allocating (issue 20 item 12).
        (["--d", "1e11"], "--d 100000000000: the quick start needs at least"),
        (["--d", "100000000000"], "more than this machine has"),
        (["--cols", "4000000000"], "--rows 5, --cols 4000000000: the quick start needs"),
    ],
)
def test_bad_arguments_are_argparse_errors(argv, fragment, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_help_documents_every_option_with_defaults_and_no_rest():
    text = build_parser().format_help()
    options = [action for action in build_parser()._actions if action.dest != "help"]
    assert options and all(action.help for action in options)
    for option in ("--d", "--workers", "--rows", "--cols", "--k", "--seed", "--hash"):
        assert option in text
    assert text.count("(default:") == len(options)
    assert "``" not in text and ":func:" not in text
    assert "exit status" in text and "NUMBA_CACHE_DIR" in text


def test_success_reports_compile_apart_from_run(capsys):
    assert main(SMALL) == 0
    out = capsys.readouterr().out
    assert "recall of the true top-10: 1.000" in out
    assert "compile or load kernels" in out and "time (sketch 2 workers + recover)" in out


def test_low_recall_exits_1_with_a_message(capsys):
    code = main(["--d", "20000", "--cols", "4", "--rows", "1", "--k", "20", "--workers", "1"])
    assert code == 1
    err = capsys.readouterr().err
    assert "below --min-recall 0.9" in err and "--cols" in err


def test_min_recall_zero_accepts_anything():
    argv = ["--d", "20000", "--cols", "4", "--rows", "1", "--k", "20", "--min-recall", "0"]
    assert main([*argv, "--workers", "1"]) == 0


# ------------------------------------------------------------------ issue 20 items 12 and 20
def test_integers_in_float_notation_are_accepted():
    args = build_parser().parse_args(["--d", "2e4", "--cols", "2e3"])
    assert (args.d, args.cols) == (20_000, 2_000)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--d", "2.5e0"])


def test_the_error_is_given_with_the_scale_of_the_values(capsys):
    assert main(SMALL) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("max |estimate"))
    error, scale = (float(x) for x in re.findall(r": ([\d.]+) \(.* value, ([\d.]+)\)", line)[0])
    assert f"{error / scale:.1%} of the largest recovered |true| value" in line
