"""The command line: help for every subcommand, and gradcheck's table and exit code."""

import subprocess
import sys

import pytest

from minirlhf.cli import build_parser, main


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in _subcommands():
        assert name in out


@pytest.mark.parametrize("name", _subcommands())
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_gradcheck_command_passes_and_prints_table():
    run = subprocess.run([sys.executable, "-m", "minirlhf", "gradcheck"], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "max rel. error" in run.stdout
    assert "0 failed" in run.stdout


def test_gradcheck_fails_with_impossible_tolerance(capsys):
    # A tolerance of 1e-20 cannot be met: the command must report failure, not pass anyway.
    assert main(["gradcheck", "--only", "matmul", "--tol", "1e-20"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_unknown_subcommand_is_an_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["nonsense"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("argv, needle", [
    (["reward", "--set", "preferences=/nonexistent/p.jsonl"],
     "preferences file /nonexistent/p.jsonl is missing: make one with `python -m minirlhf "
     "preferences --set out_dir=/nonexistent` (it writes /nonexistent/preferences.jsonl)"),
    (["dpo", "--set", "beta=0"], "DPOConfig: beta = 0.0 is outside its allowed range (0, inf)"),
    (["ppo", "--set", "minibatch_size=7"], "minibatch_size = 7 must divide rollout_size = 64"),
    (["best-of-n", "--set", "ns=1,3"], "ns = '1,3': each n must be >= 1 and divide"),
])
def test_a_user_error_is_one_line_and_exit_code_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {err.strip()[7:]}" and needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_debug_shows_the_traceback():
    from minirlhf.config import ConfigError

    with pytest.raises(ConfigError, match="beta = 0.0"):
        main(["--debug", "dpo", "--set", "beta=0"])


def test_the_hints_know_each_stage_s_output():
    """``output_hint`` (config.py, below the registry) names the file each stage writes as the
    stage's record does: the command it prints makes that very file."""
    from minirlhf.config import OUTPUT_NAMES, output_hint
    from minirlhf.registry import COMMANDS

    for stage in COMMANDS.values():
        assert OUTPUT_NAMES.get(stage.name, "model.npz") == stage.output, stage.name
        path = f"/runs/x/{stage.name}/{stage.output}"
        assert output_hint(stage.name, path) == (f"make it with `python -m minirlhf "
                                                 f"{stage.command} --set out_dir=/runs/x/"
                                                 f"{stage.name}`")
