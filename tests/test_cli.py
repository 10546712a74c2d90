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
    # a hint keeps what the command was given: the world's corpus, the policy it starts from
    (["sft", "--set", "task=scratchpad", "init=/nonexistent/model.npz"],
     "make it with `python -m minirlhf pretrain --set out_dir=/nonexistent task=scratchpad "
     "corpus=scratchpad`"),
    (["reward", "--set", f"init={__file__}", "preferences=/nonexistent/preferences.jsonl"],
     "make it with `python -m minirlhf preferences --set out_dir=/nonexistent "
     f"policy={__file__}`"),
    (["sft", "--set", "init="], "SFTConfig: init is empty: give the file (model.npz as the "
                                "pretrain stage writes it)"),
    (["evaluate", ""], "EvaluateConfig: policy is empty"),
    # settings that would be silently meaningless
    (["reward", "--set", "corr_samples=1"], "corr_samples = 1 is outside its allowed range [2, "),
    (["pretrain", "--set", "min_lr=0.1", "lr=0.001"], "min_lr = 0.1 is above lr = 0.001"),
    (["dpo", "--set", "labeler=reward_model"], "DPOConfig: labeler = reward_model labels online "
                                              "DPO's fresh pairs, and online_rounds = 0"),
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


def test_a_stage_never_overwrites_its_input_or_another_stage_s_model(tiny_run, tmp_path, capsys):
    """Nothing already written is lost: a run whose out_dir holds the model it starts from, or
    another stage's model, is refused in one line before any work, the files untouched; an empty
    out_dir (the current folder) is refused too."""
    import shutil

    runs, _ = tiny_run
    sft, reward = tmp_path / "sft", tmp_path / "reward"
    shutil.copytree(runs / "tiny" / "sft", sft)
    shutil.copytree(runs / "tiny" / "reward", reward)
    before = {p: p.read_bytes() for p in (sft / "model.npz", reward / "model.npz")}
    prefs = runs / "tiny" / "preferences" / "preferences.jsonl"
    for argv, needle in (
        (["dpo", "--set", f"init={sft / 'model.npz'}", f"out_dir={sft}", f"preferences={prefs}"],
         f"DPOConfig: out_dir = {sft} would overwrite init = {sft / 'model.npz'}, which this "
         "run reads: give another out_dir"),
        (["sft", "--set", f"out_dir={reward}"],
         f"SFTConfig: out_dir = {reward} holds the reward stage's model ({reward / 'model.npz'}"
         "), and this sft run would write its model.npz there: give another out_dir (or delete "
         "that folder first)"),
        (["best-of-n", "--set", f"out_dir={sft}"],  # its summary.json over the policy's
         f"holds the sft stage's model ({sft / 'model.npz'}), and this best_of_n run would "
         "write its summary.json there"),
        (["sft", "--set", "out_dir="], "SFTConfig: out_dir is empty"),
    ):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert captured.err.strip() == f"error: {captured.err.strip()[7:]}", captured.err
        assert needle in captured.err and len(captured.err.strip().splitlines()) == 1
        assert "config:" not in captured.out  # refused before the run's settings are printed
    assert all(p.read_bytes() == data for p, data in before.items())
    # a rerun of a stage into its own folder replaces its own model, as it always did
    from minirlhf.config import require_own_folder
    from minirlhf.stages.sft import SFTConfig

    require_own_folder(SFTConfig(out_dir=str(sft)), "sft", "model.npz")


@pytest.mark.parametrize("argv, said", [
    (["import", "a", "b"], "interrupted: what this command was making is not kept; run the same "
                           "command again to start it over"),
    (["pipeline"], "interrupted: every finished stage is kept; run the same command again to "
                   "resume"),
])
def test_ctrl_c_says_what_a_rerun_does(argv, said, monkeypatch, capsys):
    """Only a command that keeps its finished parts promises to resume (the pipeline's own
    case runs in the catalogue)."""
    import minirlhf.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, f"cmd_{argv[0]}", interrupted)
    assert main(argv) == 130
    assert capsys.readouterr().err == said + "\n"


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5"])
def test_a_thread_count_that_is_none_is_one_line_before_any_work(tmp_path, value):
    """MINIRLHF_THREADS=abc was passed over silently (the next variable, or every core,
    decided), so a run took another count than the one asked for."""
    import os

    env = dict(os.environ, MINIRLHF_THREADS=value)
    proc = subprocess.run([sys.executable, "-m", "minirlhf", "pipeline", "--preset", "tiny",
                           "--runs-dir", str(tmp_path / "runs")], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith(
        f"error: MINIRLHF_THREADS = {value!r} is not a thread count: give a whole number in [1, ")
    assert len(proc.stderr.strip().splitlines()) == 1 and not any(tmp_path.iterdir())


@pytest.mark.parametrize("command", [["pipeline"], ["ppo"], ["evaluate", "model.npz"]])
def test_set_given_twice_keeps_every_setting(command):
    """``--set a=1 --set b=2`` is ``--set a=1 b=2``: a repeated flag used to keep only its
    last settings, silently."""
    args = build_parser().parse_args([*command, "--set", "a=1", "--set", "b=2", "c=3"])
    assert args.set == ["a=1", "b=2", "c=3"]


def test_evaluate_in_the_scratchpad_world_names_its_route_for_the_reference(tmp_path,
                                                                           monkeypatch, capsys):
    """The default reference is the reviews world's, however it is written (relative or
    absolute): for the scratchpad world the hint is the route's two commands, in
    runs/scratchpad, not an SFT run of the reviews world's recipe."""
    from minirlhf.cli import main

    monkeypatch.chdir(tmp_path)
    policy = tmp_path / "policy.npz"
    policy.write_bytes(b"")  # there: the reference is checked next
    route = tmp_path / "runs" / "scratchpad"
    for reference in ([], [f"reference={tmp_path / 'runs/default/sft/model.npz'}"]):
        assert main(["evaluate", str(policy), "--set", "task=scratchpad", *reference]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: reference {tmp_path / 'runs/default/sft/model.npz'} is "
                              "missing: give an SFT policy of the scratchpad world: make it with "
                              "`python -m minirlhf pretrain --set task=scratchpad "
                              f"corpus=scratchpad out_dir={route / 'pretrain'} && "), err
        assert err.endswith(f"out_dir={route / 'sft'}`, then give it as the reference (--set "
                            f"reference={route / 'sft' / 'model.npz'})\n"), err


@pytest.mark.parametrize("argv", [["ppo", "--seed", "2"], ["course", "--seed", "1", "--plan"],
                                  ["claims", "--seed", "1", "--no-run"]])
def test_a_prefix_of_an_option_is_not_taken_for_it(argv, capsys):
    """`--seed` on a command that has only `--seeds` is an error, not two runs of seeds 0 and 1
    (argparse reads a prefix of a long option as the option unless told not to)."""
    from minirlhf.cli import main

    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert f"unrecognized arguments: --seed {argv[2]} (this command has no --seed: --seeds N " \
           "runs N seeds from 0; a stage command takes one seed as --set seed=N)" in err, err


def test_evaluate_in_another_world_names_its_reference_when_the_default_is_the_reviews(
        tmp_path, monkeypatch, capsys):
    """After a pipeline run the default reference is there, an SFT policy of the reviews world:
    evaluating in the scratchpad world names that world's own SFT policy when it is made,
    before any work."""
    from test_pretrained import TOK, tiny_gpt

    from minirlhf.cli import main
    from minirlhf.lm.checkpoint import save_model

    monkeypatch.chdir(tmp_path)
    for world in ("default", "scratchpad"):
        save_model(tmp_path / "runs" / world / "sft" / "model.npz", tiny_gpt(), TOK,
                   {"stage": "sft", "config": {"task": "reviews" if world == "default"
                                               else "scratchpad"}})
    policy = tmp_path / "runs" / "scratchpad" / "sft" / "model.npz"
    assert main(["evaluate", str(policy), "--set", "task=scratchpad"]) == 2
    assert capsys.readouterr().err == (
        "error: EvaluateConfig: reference = runs/default/sft/model.npz, the default, was "
        "trained for the 'reviews' world, and task = 'scratchpad': the scratchpad world's SFT "
        f"policy is {policy}: give it as the reference (--set reference={policy})\n")
