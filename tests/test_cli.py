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
