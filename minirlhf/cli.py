"""The command line: ``python -m minirlhf SUBCOMMAND``. Each subcommand calls one entry point."""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn


def cmd_gradcheck(args: argparse.Namespace) -> int:
    """Check every op's backward against finite differences and print a table."""
    from minirlhf.autograd.gradcheck import op_cases
    from minirlhf.config import ConfigError, check_range

    check_range("gradcheck", "--tol", args.tol, "(0, inf)")
    check_range("gradcheck", "--seed", args.seed, "[0, inf)")
    cases = op_cases()
    if args.only:
        names = list(dict.fromkeys(c.name for c in cases))  # an op may have several cases
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            raise ConfigError(f"gradcheck: no case named {', '.join(unknown)}; the cases: "
                              f"{', '.join(names)}")
        cases = [c for c in cases if c.name in args.only]
    print(f"{'op':<14} {'input shapes':<30} {'max rel. error':>14}  {'result':<6} note")
    failed = 0
    for case in cases:
        result = case.check(seed=args.seed, tol=args.tol)
        shapes = ", ".join(str(s) for s in case.shapes)
        verdict = "pass" if result.passed else "FAIL"
        failed += not result.passed
        err = result.max_rel_error
        print(f"{case.name:<14} {shapes:<30} {err:>14.2e}  {verdict:<6} {case.note}")
        if not result.passed or args.verbose:
            print("    " + result.report().replace("\n", "\n    "))
    print(f"\n{len(cases) - failed} passed, {failed} failed (float64, eps 1e-6, tolerance "
          f"{args.tol:.0e})")
    return 1 if failed else 0


def _logging(args: argparse.Namespace) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def stage_command(stage):
    """The subcommand of one registered stage: its config with the --set overrides applied
    (checked), logging set up, the config printed, the stage run, its result shown, and for a
    policy the comparison with every other policy of the same run folder."""

    def command(args: argparse.Namespace) -> int:
        import dataclasses
        import logging
        from pathlib import Path

        from minirlhf.config import (
            SEEDS_RANGE,
            apply_overrides,
            check_range,
            describe,
            require_own_folder,
        )
        from minirlhf.pipeline import announce, estimate_stage
        from minirlhf.registry import comparison_rows

        config = apply_overrides(stage.config(), args.set or [])
        if args.quiet and hasattr(config, "progress"):
            config = dataclasses.replace(config, progress=False)
        config.check()  # every setting in its range (check_settings), before any work
        if hasattr(config, "out_dir"):  # nothing written is lost, in the folder of each seed
            runs = [dataclasses.replace(config, out_dir=str(Path(config.out_dir) / f"seed{s}"))
                    for s in range(config.seed, config.seed + args.seeds)
                    ] if args.seeds > 1 and str(config.out_dir).strip() else [config]
            for run in runs:
                require_own_folder(run, stage.name, stage.output)
        check_range(stage.command, "--seeds", args.seeds, SEEDS_RANGE)
        stage.check_inputs(config)  # its input files and checkpoints, before anything is shown
        _logging(args)
        seconds = estimate_stage(stage.name, config)  # the whole run: every seed
        if seconds is not None:
            announce({stage.name: seconds * args.seeds}, f"{args.seeds} seed"
                     + "s" * (args.seeds > 1), logging.getLogger(f"minirlhf.stages.{stage.name}"),
                     "every finished seed" if args.seeds > 1 else "nothing of this stage")
        print(f"{stage.command} config:\n" + describe(config))
        if getattr(args, "seeds", 1) != 1:
            return _stage_seeds(stage, config, args.seeds)
        result = stage.run(config)
        if stage.show is not None:
            print("\n" + stage.show(result, config))
        rows = comparison_rows(Path(config.out_dir).parent) if stage.policy else []
        if len(rows) > 1:
            print(f"\n{'policy':<12}{'gold':>8}{'win-rate vs SFT':>17}{'KL (nats)':>11}")
            for name, gold, win, kl in rows:
                print(f"{name:<12}{gold:>8.3f}{win:>17.1%}{kl:>11.2f}")
        return 0

    command.__doc__ = stage.run.__doc__
    return command


def _stage_seeds(stage, config, n: int) -> int:
    """A stage command with ``--seeds N``: the stage run N times (seeds config.seed ..
    config.seed + N - 1, each in out_dir/seed<k>/), then every figure of its record over seeds
    (mean, 95% interval, per seed) printed and written to out_dir/seeds.json."""
    import dataclasses
    import json
    from pathlib import Path

    from minirlhf.evaluation import figures_over_seeds, run_over_seeds

    def one(seed: int) -> dict:
        cfg = dataclasses.replace(config, seed=seed,
                                  out_dir=str(Path(config.out_dir) / f"seed{seed}"))
        numbers = stage.record(stage.run(cfg), cfg)
        print(f"seed {seed}: done ({cfg.out_dir})")
        return numbers

    seeds, _, over_seeds = run_over_seeds(config.seed, n, one, figures_over_seeds)
    figures = {"seeds": seeds, **over_seeds}
    path = Path(config.out_dir) / "seeds.json"
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(f"\n{n} seeds ({', '.join(map(str, seeds))}): mean ± 95% half-width over seeds "
          "(Student's t)")
    for key, (lo, hi) in figures["ci95"].items():
        print(f"  {key:<24}{figures[key]:>12.4f} ± {(hi - lo) / 2:.4f}   per seed: "
              + ", ".join(f"{v:.4f}" for v in figures["per_seed"][key]))
    print(f"written to {path}")
    return 0


def _refuse_other_threads(config, seeds: list[int] | None, force: bool,
                          argv: Sequence[str] = ()) -> None:
    """An experiment's files made with another thread count are not replaced unless
    ``force``: one line, before any work, naming how to reuse them (``argv``: the command's
    own words, run again with that count) or replace them."""
    from minirlhf.config import ConfigError
    from minirlhf.experiments import made_with_other_threads
    from minirlhf.machine import blas_threads
    from minirlhf.pipeline import other_count_error

    threads = blas_threads()
    found = made_with_other_threads(config, seeds, threads)
    if found is not None and not force:
        raise ConfigError(other_count_error(
            str(found[0]), found[1], threads, "it is made again to the same numbers",
            f"train again with {threads}, replacing it",
            ["python", "-m", "minirlhf", *argv] if argv else ()))


def cmd_pipeline(args: argparse.Namespace) -> int:
    """The whole course: pretrain, SFT, preferences, reward model, best-of-n, PPO, DPO and a
    report. Stages already done with the same config are skipped (--force redoes them)."""
    from minirlhf.config import SEEDS_RANGE, check_range
    from minirlhf.pipeline import PipelineConfig, run_pipeline, stage_configs
    from minirlhf.world.preference_data import NO_GOLD, figure

    _logging(args)
    check_range("pipeline", "--seeds", args.seeds, SEEDS_RANGE)
    name = args.name or (args.preset if args.seeds == 1 else f"{args.preset}-{args.seeds}seeds")
    config = PipelineConfig(name=name, preset=args.preset, seed=args.seed,
                            force=args.force, runs_dir=args.runs_dir, progress=not args.quiet,
                            overrides=list(args.set or []))
    stage_configs(config)  # its settings and every stage's, before any work
    if args.seeds != 1:
        return _pipeline_seeds(config, args.seeds)
    r = run_pipeline(config)  # its errors are one line, exit code 2 (see main)
    print(f"\n{'policy':<12}{'gold':>8}{'win-rate vs SFT':>17}{'KL (nats)':>11}{'valid':>8}")
    for name, p in r.summary["policies"].items():
        print(f"{name:<12}{p['gold_reward']:>8.3f}{p['win_rate_vs_sft']:>17.1%}"
              f"{p['kl_to_ref']:>11.2f}{p['valid_rate']:>8.1%}")
    rm = r.summary["reward_model"]
    bare = all(rm[k] is None for k in ("ceiling", "expected_accuracy", "gold_accuracy"))
    print(f"reward model: held-out accuracy {rm['accuracy']:.1%} (ceiling "  # bare: a file
          f"{figure(rm['ceiling'], '.1%', NO_GOLD if bare else 'n/a')})")  # of plain pairs
    print(f"\nran {', '.join(r.ran) or 'nothing'}; skipped {', '.join(r.skipped) or 'nothing'}; "
          f"{r.seconds:.0f} s")
    print(f"report: {r.report}")
    return 0


def _pipeline_seeds(config, n: int) -> int:
    """``pipeline --seeds N``: the runs, then each figure's mean ± the half-width of its 95%
    interval over seeds."""
    from minirlhf.evaluation import with_interval
    from minirlhf.pipeline import run_seeds

    r = run_seeds(config, n)  # a bad N is a ConfigError: one line, exit code 2

    def cell(p: dict, key: str, spec: str, width: int) -> str:
        return f"{with_interval(p[key], p['ci95'][key], spec):>{width}}"

    print(f"\n{n} seeds ({', '.join(map(str, r.seeds))}): mean ± 95% half-width over seeds")
    print(f"{'policy':<12}{'gold':>16}{'win-rate vs SFT':>18}{'KL (nats)':>15}")
    for name, p in r.summary["policies"].items():
        print(f"{name:<12}{cell(p, 'gold_reward', '.3f', 16)}"
              f"{cell(p, 'win_rate_vs_sft', '.1%', 18)}{cell(p, 'kl_to_ref', '.2f', 15)}")
    print(f"\n{r.seconds:.0f} s; report: {r.report}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    """Where RLHF goes wrong, measured, and every method compared: rlaif, sycophancy,
    length-bias, overoptimization, critic-free, frontier, rankings, ppo-details or dpo-details.
    Starts from a finished run; writes results.json and plots. It runs again each time (a run
    it shares by settings with the pipeline or another experiment is read back; `course`
    reads finished results back)."""
    import json
    import logging

    from minirlhf.config import SEEDS_RANGE, check_range
    from minirlhf.course.build import experiment_seconds
    from minirlhf.experiments import (
        ExperimentConfig,
        check_experiment,
        default_base,
        default_seeds,
        run_experiment,
    )
    from minirlhf.pipeline import announce
    from minirlhf.records import Owner

    _logging(args)
    base = args.base or default_base(args.name, args.quick)
    config = ExperimentConfig(name=args.name, base=base, runs_dir=args.runs_dir,
                              quick=args.quick, seed=args.seed, progress=not args.quiet)
    n = getattr(args, "seeds", None)
    n = default_seeds(args.name, args.quick) if n is None else n
    check_range(f"experiment {args.name}", "--seeds", n, SEEDS_RANGE)
    check_experiment(config)  # its settings and the base run's files, before any work
    same = [*(["frontier"] if args.command == "frontier" else ["experiment", args.name]),
            "--base", base, "--runs-dir", str(Path(args.runs_dir).absolute()),
            *(["--quick"] if args.quick else []), *(["--seed", str(args.seed)] if args.seed
                                                    else []),
            *(["--seeds", str(n)] if getattr(args, "seeds", None) is not None else [])]
    _refuse_other_threads(config, None if n == 1 else list(range(args.seed, args.seed + n)),
                          args.force, same)
    folder = Path(args.runs_dir) / base / "experiments" / args.name
    for top in [folder] if n == 1 else [folder / f"seed{k}" for k in range(args.seed,
                                                                          args.seed + n)]:
        if (top / ".lock").exists():  # a live holder: its error now, before the estimate
            Owner.read(top / ".lock").stale_because(top / ".lock", instead="")
    share = 1.0  # of the experiment's time still to spend: the frontier's points left to train
    if args.name == "frontier" and n == 1:
        from minirlhf.experiments import frontier
        from minirlhf.experiments.common import Context

        ctx = Context(config, frontier.NEEDS)
        points = frontier.QUICK_POINTS if args.quick else frontier.POINTS
        share = len(frontier.points_to_train(ctx)) / len(points)
        if share == 0:
            logging.getLogger("minirlhf.experiments").info(
                "every point is finished: each is read back, none trained")
    announce({args.name: experiment_seconds(args.name, args.quick) * n * share} if share else {},
             f"{n} seed{'s' * (n > 1)}", logging.getLogger("minirlhf.experiments"),
             "every finished seed" + (" and point" if args.name == "frontier" else ""))
    if n != 1:
        from minirlhf.experiments import run_experiment_seeds

        numbers = run_experiment_seeds(config, n)
        seeds = numbers["run_seeds"]
        print(f"{len(seeds)} seeds ({', '.join(map(str, seeds))}): "
              "mean ± 95% half-width over seeds (Student's t)")
        for line in _intervals(numbers)[:80]:
            print("  " + line)
        print(f"written to {numbers['path']}")
        return 0
    r = run_experiment(config)
    if "table" in r.numbers:  # the frontier: its table says it all
        print(r.numbers["table"])
    else:
        shown = {k: v for k, v in r.numbers.items()
                 if k not in ("best_of_n", "ppo", "base_files")}
        print(json.dumps(shown, indent=2, sort_keys=True, default=str)[:6000])
    print(f"\n{r.name}: {r.seconds:.0f} s; results: {r.out_dir}/results.json; plots: "
          f"{', '.join(r.plots)}")
    if args.name == "frontier":
        print(_frontier_report_line(Path(args.runs_dir) / base))
    return 0


def _frontier_report_line(root: Path) -> str:
    """How the base run's report.md gains the frontier: the pipeline writes the report, so
    its command, run again, reads every stage back and adds it."""
    from minirlhf.pipeline import report_command

    report = root / "report.md"
    if not report.is_file():
        return f"the pipeline's report of {root} will show it (the run has none yet)"
    again = report_command(root)
    if again is None:
        return (f"{report} shows it once the pipeline writes its report again: the command "
                f"that made {root}, with its settings and thread count, trains nothing")
    return f"{report} shows it once the pipeline runs again (it trains nothing): {again}"


def _intervals(numbers: dict, prefix: str = "") -> list[str]:
    """Every figure of nested results over seeds, one line each: path, mean ± half-width."""
    lines = []
    for key, (lo, hi) in numbers.get("over_seeds", {}).get("ci95", {}).items():
        if key not in ("seed", "seconds"):
            lines.append(f"{prefix}{key}: {numbers[key]:.4g} ± {(hi - lo) / 2:.2g}")
    for key, value in numbers.items():
        if isinstance(value, dict) and key != "over_seeds":
            lines += _intervals(value, f"{prefix}{key}/")
    return lines


def cmd_classroom(args: argparse.Namespace) -> int:
    """Classroom tools: make a student copy with the solutions stripped, check exercises, or grade
    a submission with this copy's checks."""
    from pathlib import Path

    if args.action == "make-student":
        from minirlhf.course.classroom import make_student

        root = Path(__file__).resolve().parent.parent
        try:
            stripped = make_student(root, args.target)
        except (ValueError, FileExistsError) as e:  # a marker, the folder
            print(f"error: {e}", file=sys.stderr)
            return 2
        for rel, n in stripped.items():
            print(f"  {rel}: {n} region{'s' * (n > 1)} stripped")
        from minirlhf.config import command_hint

        target = Path(args.target).resolve()
        check = command_hint(["cd", str(target)], ["python", "-m", "minirlhf", "classroom",
                                                    "check"])
        print(f"student copy written to {target} ({sum(stripped.values())} solution and "
              "teacher-only regions); each student installs it in a virtual environment of their "
              "own (docs/teaching.md: not in this one, where it would replace this copy) and "
              f"checks their work with {check}")
        return 0

    if args.action == "record-expected":
        from minirlhf.course.exercises import (
            EXPECTED,
            RecordError,
            record_expected,
            write_expected,
        )

        try:
            recorded = record_expected()
        except RecordError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        out = Path(args.out) if args.out else EXPECTED
        try:
            changed = write_expected(recorded, out)
        except ValueError as e:
            if args.out:  # a file of the teacher's that is something else: kept
                print(f"error: {e}; give another --out (it is kept as it is)", file=sys.stderr)
                return 2
            out.unlink()  # the package's own file, damaged: recorded afresh
            print(f"{e}: recording it afresh")
            changed = write_expected(recorded, out)
        print(f"{len(recorded)} expected values recorded from the solutions into {out}: "
              + (f"{len(changed)} new or changed ({', '.join(changed[:4])}"
                 f"{', ...' if len(changed) > 4 else ''})" if changed else "up to date, "
                 "file unchanged"))
        return 0

    if args.action == "nbgrader":
        from minirlhf.course.autograder import ASSIGNMENT, write_course

        written = write_course(args.target)
        for path in written:
            print(f"  wrote {path}")
        print(f"an nbgrader course in {args.target}: cd {args.target} && nbgrader "
              f"generate_assignment {ASSIGNMENT}; each submission is a student copy's minirlhf/ "
              f"and grade.ipynb in submitted/STUDENT/{ASSIGNMENT}/; then nbgrader autograde "
              f"{ASSIGNMENT} --create (docs/teaching.md)")
        return 0

    from minirlhf.course.exercises import run_checks
    from minirlhf.course.grades import graded, render

    try:
        if args.action == "grade":
            from minirlhf.course.autograder import SubmissionError, grade, graded_package

            try:
                package = graded_package(args.target)
            except SubmissionError as e:
                if args.out:  # an autograder still gets its report: 0 points, and why
                    from minirlhf.course.exercises import EXERCISES, CheckResult
                    from minirlhf.lm.checkpoint import atomic_write

                    report = render([CheckResult(ex, "FAIL", str(e)) for ex in EXERCISES],
                                    args.format, str(args.target))
                    atomic_write(Path(args.out), lambda f: f.write(report.encode()))
                raise
            results, folder = grade(package.parent), str(package.absolute())
        else:
            results = run_checks(args.target, args.exercise)
            folder = str(Path(__file__).resolve().parent)
    except ValueError as e:  # no such chapter or exercise; a submission without minirlhf/
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = render(results, args.format, folder)
    if args.out:
        from minirlhf.lm.checkpoint import atomic_write

        atomic_write(Path(args.out), lambda f: f.write(report.encode()))
        total = graded(results)
        print(f"{args.format} report written to {args.out}: {total['points']:g} of "
              f"{total['max_points']:g} points")
    else:
        print(report, end="")
    return 0 if all(r.status == "pass" for r in results) else 1


def _classroom_arguments(p: argparse.ArgumentParser) -> None:
    """``classroom make-student OUTDIR``, ``classroom check [CHAPTER] [EXERCISE]``, whose help
    lists the chapters and their exercises (from the registry), ``classroom grade SUBMISSION``,
    ``classroom record-expected`` and ``classroom nbgrader FOLDER``."""
    import textwrap

    from minirlhf.course.exercises import CHAPTERS, EXERCISES

    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    m = actions.add_parser("make-student", help="write a copy with every solution region "
                           "stripped", description="Copy the project to OUTDIR with every "
                           "solution region replaced by a stub (see docs/teaching.md).")
    m.add_argument("target", metavar="OUTDIR", help="the folder to write (must not exist yet)")
    listing = "\n".join(textwrap.fill(", ".join(e.name for e in EXERCISES if e.chapter == k),
                                      96, initial_indent=f"  {k:>2} {name:<12} ",
                                      subsequent_indent=" " * 18)
                        for k, name in CHAPTERS.items())
    c = actions.add_parser("check", help="run the exercise checks",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           description="Run the exercise checks against the minirlhf imported "
                           "(the student copy, when run from its\nfolder); the exit status is 0 "
                           "only when every selected check passes.",
                           epilog=f"chapters (number, name) and their exercises:\n{listing}")
    c.add_argument("target", nargs="?", metavar="CHAPTER",
                   help="a chapter (number or name: 5 or ppo) or one exercise (gae); all if "
                        "left out")
    c.add_argument("exercise", nargs="?", metavar="EXERCISE", help="one exercise of CHAPTER")
    g = actions.add_parser("grade", help="grade a submission with this copy's checks and points",
                           description="Grade the student copy's minirlhf/ folder in SUBMISSION "
                           "with this copy's checks, recorded values and points (the teacher's: "
                           "the submission's own are replaced), in fresh Python processes; the "
                           "exit status is 0 only when every check passes.")
    g.add_argument("target", metavar="SUBMISSION", help="a folder holding a student copy's "
                                                        "minirlhf/ (the copy's root will do)")
    for a in (c, g):
        a.add_argument("--format", default="text", choices=("text", "json", "gradescope",
                                                            "junit"),
                       help="text (default): a table; json: each exercise's status and points, "
                            "and the totals; gradescope: Gradescope's results.json; junit: "
                            "JUnit XML")
        a.add_argument("--out", metavar="FILE", help="write the report to FILE (atomically) "
                                                    "instead of printing it")
    r = actions.add_parser("record-expected", help="record the checks' expected values from "
                           "the solutions (the teacher's copy)",
                           description="Run every check on this copy's solutions and record the "
                           "values the checks compare with into minirlhf/course/expected.npz "
                           "(package data, shipped with the student copy); rewritten only when a "
                           "value changed.")
    r.add_argument("--out", metavar="FILE", help="write to FILE instead (an .npz)")
    n = actions.add_parser("nbgrader", help="write an nbgrader course that grades the exercises",
                           description="Write FOLDER/nbgrader_config.py (unless there) and "
                           "FOLDER/source/exercises/grade.ipynb: one autograder test cell per "
                           "exercise, worth its points (see docs/teaching.md).")
    n.add_argument("target", metavar="FOLDER", help="the course folder (made if needed)")


def cmd_export(args: argparse.Namespace) -> int:
    """Save a checkpoint as a Hugging Face folder: a policy as GPT2LMHeadModel, a reward model
    as GPT2ForSequenceClassification (its tokenizer appends EOS, where the score is read), each
    with its tokenizer (tokenizer.json), generation_config.json and a README.md model card
    (task, stage, settings, and the run's figures when the checkpoint or its run folder has
    them), so that transformers and TRL open it (see docs/trl.md). A folder that is not empty
    is refused unless --force, which first removes the previous model's files (config.json,
    weights and shards, tokenizer files, generation_config.json, README.md) and nothing else."""
    from minirlhf.lm.checkpoint import load_model
    from minirlhf.lm.pretrained import model_files, save_pretrained, save_reward_model
    from minirlhf.lm.reward_model import RewardModel

    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        print(f"error: {out} is a file, not a folder; export writes a folder", file=sys.stderr)
        return 2
    if not out.exists() and out.suffix in (".npz", ".json", ".safetensors", ".bin"):
        print(f"error: {out} looks like a file; export writes a folder (e.g. {out.with_suffix('')}"
              ")", file=sys.stderr)
        return 2
    if out.is_dir() and any(out.iterdir()) and not args.force:
        print(f"error: {out} is not empty; pass --force to replace the model files in it "
              "(its other files are kept), or export into a new folder", file=sys.stderr)
        return 2
    model, tokenizer, extra = load_model(args.checkpoint)  # before removing anything
    reward = "reward_head" in model.scalar_heads
    rm = RewardModel.load(args.checkpoint) if reward else None
    about = _export_about(Path(args.checkpoint), extra, reward)
    removed = model_files(out) if out.is_dir() else []
    for path in removed:
        path.unlink()
    if rm is not None:
        save_reward_model(rm, out, about, extra=extra)
        kind = "GPT2ForSequenceClassification (a reward model)"
    else:
        save_pretrained(model, tokenizer, out, about, extra=extra)
        kind = "GPT2LMHeadModel"
    print((f"removed the previous model's {len(removed)} files from {out}\n" if removed else "")
          + f"{args.checkpoint} -> {out}: {kind}, {model.num_parameters():,} parameters;"
          f" open it with transformers' from_pretrained({str(out)!r})")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Read a Hugging Face GPT-2 folder (one `export` wrote, or one transformers or TRL saved
    from it) into a minirlhf checkpoint: GPT2LMHeadModel as a policy,
    GPT2ForSequenceClassification as a reward model, told apart by config.json's architecture.
    OUT is the checkpoint (a .npz) or a folder that gets OUT/model.npz. Every stage's init= and
    reward_model= also take such a folder directly."""
    from minirlhf.lm.pretrained import import_folder

    path, kind, model = import_folder(args.folder, args.out, args.force)
    print(f"{args.folder} -> {path}: {kind}, {model.num_parameters():,} parameters")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Judge a policy (a model.npz or a Hugging Face folder) as the pipeline judges each
    policy: on the task's evaluation prompts, its gold reward, its win-rate against a reference
    SFT policy (gold decides each pair), its KL to that reference, its share of valid responses
    and their length, with 95% bootstrap intervals over the prompts. With the settings of a
    run's policy stage (its seed, eval_samples_per_prompt and max_new_tokens as
    samples_per_prompt and max_new_tokens) it prints the row that run's report holds."""
    import dataclasses

    from minirlhf.config import apply_overrides, describe
    from minirlhf.evaluation import (
        EvaluateConfig,
        check_evaluation,
        evaluate_checkpoint,
        policy_table,
    )

    config = apply_overrides(EvaluateConfig(policy=args.policy), args.set or [])
    if args.quiet:
        config = dataclasses.replace(config, progress=False)
    check_evaluation(config)  # before anything is printed
    print("evaluate config:\n" + describe(config))
    rep = evaluate_checkpoint(config)
    print("\n" + rep.describe("the policy", config.samples_per_prompt))
    print("\n" + policy_table({config.policy: rep.to_dict()}))  # what was judged
    return 0


# what each task is, for an exported model's card (docs/DESIGN's world)
TASK_NOTES = {
    "reviews": "short movie reviews from a grammar; a hidden gold reward scores validity, "
               "sentiment (intensifiers, negation), repeats and rambling",
    "arithmetic": "sums with a hint that is right half the time (`12+7=? i think 20.`); gold "
                  "rewards the correct sum",
    "scratchpad": "sums of 2-5 terms worked step by step (` 7+12=19, 19+5=24. answer 24.`); a "
                  "verifier checks the final answer",
}
# settings that are paths on the machine that trained: the card names their last two parts
_PATH_SETTINGS = ("init", "reward_model", "preferences", "corpus", "data")


def _export_about(checkpoint: Path, extra: dict[str, Any], reward: bool) -> dict[str, Any]:
    """What an exported model's card says about it: the task, the stage and its settings from
    the checkpoint's metadata, and its figures: the run's summary.json figures when the run's
    record of the stage names this very file (same SHA-256); else a reward model's validation
    figures from its metadata, or a policy stage's own summary.json written after it."""
    config = dict(extra.get("config") or {})
    stage = extra.get("stage")
    settings = {}
    for key, value in config.items():
        if key in ("out_dir", "progress"):
            continue
        if key in _PATH_SETTINGS and isinstance(value, str) and "/" in value:
            value = "/".join(Path(value).parts[-2:])
        settings[key] = value
    task = config.get("task")
    about: dict[str, Any] = {"stage": stage, "task": task, "task_note": TASK_NOTES.get(task, ""),
                             "settings": settings, "figures": []}
    figures = _run_figures(checkpoint, stage, reward) if stage else None
    if figures is not None:
        about["figures"].append(figures)
    elif reward and isinstance(extra.get("val"), dict):
        about["figures"].append({"from": "the checkpoint's validation on held-out preference "
                                         "pairs", "values": dict(extra["val"])})
    elif stage and not reward:
        own = checkpoint.parent / "summary.json"
        if own.is_file() and own.stat().st_mtime >= checkpoint.stat().st_mtime:
            about["figures"] += _figures(own, None, "the stage's summary.json (its own "
                                         "evaluation)")
    return about


def _run_figures(checkpoint: Path, stage: str, reward: bool) -> dict[str, Any] | None:
    """The figures of the run's summary.json for the model in ``checkpoint``, if the run's
    record of ``stage`` names this very file (its path in the run and its SHA-256)."""
    from minirlhf.lm.checkpoint import file_digest
    from minirlhf.records import record_path

    root = checkpoint.parent.parent
    try:
        record = json.loads(record_path(root, stage).read_text(encoding="utf-8"))
        if record["outputs"][os.path.relpath(checkpoint, root)] != file_digest(checkpoint):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    found = _figures(root / "summary.json", ("reward_model",) if reward else ("policies", stage),
                     "the run's summary.json (the run's own evaluation)")
    return found[0] if found else None


def _figures(path: Path, keys: tuple[str, ...] | None, where: str) -> list[dict[str, Any]]:
    """[{"from": where, "values": numbers, "ci95": intervals}] from the JSON object at ``keys``
    in ``path``; [] if it is not there."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
        for key in keys or ():
            obj = obj[key]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if not isinstance(obj, dict):
        return []
    values = {k: v for k, v in obj.items() if isinstance(v, int | float)
              and not isinstance(v, bool)}
    ci = obj.get("ci95") if isinstance(obj.get("ci95"), dict) else {}
    return [{"from": where, "values": values, "ci95": ci}] if values else []


def _add_pipeline_and_course(sub: Any) -> None:
    """The two commands that run many stages: ``pipeline`` and ``course``."""
    p = sub.add_parser("pipeline", help="run every stage and write a report (resumable)",
                       description=cmd_pipeline.__doc__)
    p.add_argument("--preset", default="default", help="default (minutes) or tiny (< 1 minute)")
    p.add_argument("--name", help="the run's folder under --runs-dir (default: the preset)")
    p.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    p.add_argument("--seed", type=int, default=0, help="every stage's seed")
    p.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="N independent runs (seeds SEED .. SEED+N-1), each in runs/NAME/seedK/, "
                        "then every figure's mean and 95%% interval over seeds in "
                        "runs/NAME/summary.json and report.md (default NAME: PRESET-Nseeds)")
    p.add_argument("--force", action="store_true",
                   help="redo stages that are already done (also a run made with another "
                        "thread count, which is refused otherwise)")
    p.add_argument("--set", nargs="+", action="extend", metavar="STAGE.KEY=VALUE",
                   help="override a stage's config, e.g. --set ppo.beta=0.1 sft.steps=100")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="log warnings only, no progress bars")
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("course", help="everything the chapters read, in worker processes "
                       "(resumable)", description=cmd_course.__doc__)
    p.add_argument("--preset", default="default", choices=("default", "tiny"),
                   help="default, or tiny (the tiny pipeline and quick experiments)")
    p.add_argument("--seeds", type=int, default=3, metavar="N",
                   help="each experiment over seeds 0 .. N-1 (default 3, what the chapters read)")
    from minirlhf.machine import cores

    p.add_argument("--workers", type=int, default=cores(), metavar="N",
                   help="worker processes of one thread each (default: one per core)")
    p.add_argument("--executor", default="", metavar="dask://HOST:PORT",
                   help="run the jobs on a Dask cluster instead (pip install -e '.[cluster]')")
    p.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    p.add_argument("--plan", action="store_true", help="print the jobs and stop")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="log warnings only, no progress bars")
    p.set_defaults(func=cmd_course)

    p = sub.add_parser("claims", help="every conclusion the course states, checked on each "
                       "seed", description=cmd_claims.__doc__)
    p.add_argument("--seeds", type=int, default=3, metavar="N",
                   help="seeds 0 .. N-1 (default 3)")
    p.add_argument("--threads", type=int, default=1, metavar="T",
                   help="engine threads per run (default 1, what the course makes; another "
                        "count rounds differently: another draw of training)")
    p.add_argument("--only", default="", metavar="ID", help="one claim")
    p.add_argument("--chapter", default="", metavar="N",
                   help="one chapter's claims (e.g. 05)")
    p.add_argument("--preset", default="default", choices=("default", "tiny"),
                   help="default, or tiny (rules run, verdicts mean nothing)")
    p.add_argument("--runs-dir", default="", metavar="DIR",
                   help="where the runs are (default: runs, or runs/threadsT for T > 1)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="worker processes for what is missing (default: cores / threads)")
    p.add_argument("--no-run", action="store_true",
                   help="judge what exists; run nothing (missing seeds show as not run)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="log warnings only, no progress bars")
    p.set_defaults(func=cmd_claims)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, and its subcommands', without prefixes of long options: ``--seed``
    would otherwise be read as ``--seeds`` by the commands that have only the latter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments: --seed"):  # where only --seeds is
            message += (" (this command has no --seed: --seeds N runs N seeds from 0; a stage "
                        "command takes one seed as --set seed=N)")
        super().error(message)


def _about(minutes: float) -> str:
    """The course's estimate, as its plan's first line ends."""
    return ", under a minute" if minutes < 1 else f", about {minutes:.0f} min"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m minirlhf",
        description="minirlhf: RLHF from scratch in pure NumPy.",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of one line")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    sub.required = True

    p = sub.add_parser("gradcheck", help="check every op's gradient against finite differences",
                       description=cmd_gradcheck.__doc__)
    p.add_argument("--tol", type=float, default=1e-6, help="max relative error (default 1e-6)")
    p.add_argument("--seed", type=int, default=0, help="seed for the random inputs")
    p.add_argument("--only", nargs="+", metavar="OP", help="check only these ops")
    p.add_argument("-v", "--verbose", action="store_true", help="print each input's check")
    p.set_defaults(func=cmd_gradcheck)

    # Every registered stage is a command; each takes its config's overrides as --set KEY=VALUE,
    # and its --help lists every setting with its range and help.
    from minirlhf.config import settings_help
    from minirlhf.registry import COMMANDS

    for stage in COMMANDS.values():
        p = sub.add_parser(stage.command, help=stage.help,
                           description=inspect.cleandoc(stage.run.__doc__ or ""),
                           epilog=settings_help(stage.config),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                       help=f"override {stage.config.__name__} fields, e.g. --set seed=1 "
                            "progress=false")
        p.add_argument("--seeds", type=int, default=1, metavar="N",
                       help="N runs with seeds SEED .. SEED+N-1 (the stage's own randomness; "
                            "its input files stay the same), each in OUT_DIR/seedK/, then "
                            "each figure's mean and 95%% interval over seeds in "
                            "OUT_DIR/seeds.json")
        p.add_argument("-q", "--quiet", action="store_true",
                       help="log warnings only, no progress bars")
        p.set_defaults(func=stage_command(stage))

    _add_pipeline_and_course(sub)

    p = sub.add_parser("experiment", help="RLAIF, sycophancy, length bias, overoptimization, "
                       "critic-free RL, rankings, PPO's and DPO's knobs",
                       description=cmd_experiment.__doc__)
    from minirlhf.experiments import EXPERIMENTS, default_seeds

    p.add_argument("name", choices=list(EXPERIMENTS))
    p.add_argument("--base", help="the run to start from (default: default, or tiny with "
                                  "--quick; scratchpad for critic-free)")
    p.add_argument("--runs-dir", default="runs", help="where pipeline runs live")
    p.add_argument("--quick", action="store_true", help="small budgets (for tests)")
    p.add_argument("--seed", type=int, default=0, help="seeds every stage")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="N runs with seeds SEED .. SEED+N-1, each in experiments/NAME/seedK/, "
                        "then every number's mean and 95%% interval over seeds in "
                        "experiments/NAME/seeds.json (default: " + ", ".join(
                            f"{default_seeds(e, False)} for {e}" for e in EXPERIMENTS
                            if default_seeds(e, False) != 1)
                        + "; 1 for the others and with --quick. Three seeds where three run "
                        "in about 5 minutes on 2 cores, else one)")
    p.add_argument("--force", action="store_true",
                   help="train again, with this process's thread count, what another thread "
                        "count made in the folders this command writes (refused otherwise)")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("frontier", help="every method on one gold-vs-KL frontier (the "
                       "'frontier' experiment; resumes point by point)",
                       description="Every method on one gold-reward-vs-KL frontier: each "
                       "trained from the base run's SFT policy on its preference data or "
                       "reward model, at a few strengths, and judged like every policy (gold, "
                       "KL to SFT, win-rate vs SFT, valid share, length, with 95% intervals "
                       "over the evaluation prompts). A finished point is read back, not "
                       "trained again. Writes results.json, its table and plot under "
                       "runs/BASE/experiments/frontier/.")
    p.add_argument("--base", help="the run to start from (default: default, or tiny with "
                                  "--quick)")
    p.add_argument("--runs-dir", default="runs", help="where pipeline runs live")
    p.add_argument("--quick", action="store_true", help="one strength per method, small "
                                                        "budgets, on the tiny run")
    p.add_argument("--seed", type=int, default=0, help="seeds every stage")
    p.add_argument("--force", action="store_true",
                   help="train again, with this process's thread count, what another thread "
                        "count made in the folder this command writes (refused otherwise)")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    p.set_defaults(func=cmd_experiment, name="frontier")

    p = sub.add_parser("export", help="save a checkpoint as a Hugging Face GPT-2 folder",
                       description=cmd_export.__doc__)
    p.add_argument("checkpoint", help="a model.npz (a policy or a reward model)")
    p.add_argument("out_dir", help="the folder to write (new or empty, unless --force)")
    p.add_argument("--force", action="store_true",
                   help="write into a folder that is not empty, first removing the previous "
                        "model's files (config.json, weights and shards, tokenizer files, "
                        "generation_config.json, README.md); other files are kept")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="read a Hugging Face GPT-2 folder into a checkpoint",
                       description=cmd_import.__doc__)
    p.add_argument("folder", metavar="HF_FOLDER", help="a Hugging Face model folder (a policy "
                   "or a reward model)")
    p.add_argument("out", metavar="OUT", help="the checkpoint to write (a .npz, or a folder "
                   "for OUT/model.npz); refused if it exists, unless --force")
    p.add_argument("--force", action="store_true", help="replace an existing checkpoint at OUT")
    p.set_defaults(func=cmd_import)

    from minirlhf.evaluation import EvaluateConfig

    p = sub.add_parser("evaluate", help="judge a policy: gold, win-rate vs SFT, KL, valid, "
                       "length, with intervals",
                       description=inspect.cleandoc(cmd_evaluate.__doc__ or ""),
                       epilog=settings_help(EvaluateConfig),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("policy", metavar="POLICY", help="a policy's model.npz or Hugging Face folder")
    p.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                   help="override EvaluateConfig fields (after POLICY), e.g. --set "
                        "task=arithmetic reference=runs/default/sft/model.npz seed=1 "
                        "samples_per_prompt=4")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("classroom", help="student copies and exercise checks",
                       description=cmd_classroom.__doc__)
    _classroom_arguments(p)
    p.set_defaults(func=cmd_classroom)
    return parser


def cmd_course(args: argparse.Namespace) -> int:
    """Everything the chapters read, built in worker processes of one thread each: the
    pipeline's run, the scratchpad world's route, every experiment once per seed with its
    summary over seeds, and the frontier; then every claim judged on those seeds, as
    ``claims --no-run`` judges them. It prints its plan first; finished jobs are kept, so a
    rerun (after a failure, Ctrl-C or a kill) runs only what is left."""
    import time
    from pathlib import Path

    from minirlhf.config import check_range, require_folder_path
    from minirlhf.course.build import (
        THREADS,
        aside_line,
        build,
        estimate_minutes,
        fingerprints,
        finished,
        is_done,
        plan,
        set_aside,
    )

    check_range("course", "--workers", args.workers, "[1, 64]")  # --plan's estimate too
    _check_executor(args.executor)
    require_folder_path(args.runs_dir, "--runs-dir")
    jobs = plan(args.preset, args.seeds, args.runs_dir)

    def show(to_run, finished, checked, workers):
        # checked: jobs that run to read their results back (about no time) or make them again
        trained = [j for j in to_run if j not in checked]
        print(f"course: {len(jobs)} jobs for --seeds {args.seeds} in "
              f"{Path(args.runs_dir) / args.preset}: {len(finished)} done, {len(to_run)} to "
              f"run on {workers} worker(s) of one thread"
              + (f" ({len(checked)} to check their results against a run trained back)"
                 if checked else "")
              + _about(estimate_minutes(trained, workers, args.preset == "tiny")))
        for j in jobs:
            state = "done" if j in finished else "to check" if j in checked else "to run"
            print(f"  {j.name:<28}{state:<9}"
                  + (f"after {', '.join((*j.needs, *j.after))}" if j.needs or j.after
                     else ""))

    if args.plan:
        prints = fingerprints(jobs)
        asides, gone = set_aside(jobs, args.runs_dir, args.preset, move=False, done=lambda j:
                                 is_done(j, prints[j.name], args.runs_dir, args.preset))
        for a in asides:
            print(aside_line(a, THREADS, will=True))
        done, again = finished(jobs, prints, args.runs_dir, args.preset, THREADS, gone,
                               mark=False)
        show([j for j in jobs if j.name not in done], [j for j in jobs if j.name in done],
             [j for j in jobs if j.name in again], args.workers)
        return 0
    _logging(args)
    client, executor, workers = _executor(args.executor, args.workers)
    t0 = time.time()
    try:
        r = build(jobs, base=args.preset, runs_dir=args.runs_dir, workers=workers,
                  executor=executor, progress=not args.quiet,
                  on_start=lambda to_run, done, checked: show(to_run, done, checked, workers))
    finally:
        if client is not None:
            client.close()
    print(f"\ncourse: {len(r.done)} done now, {len(r.reused)} reused, {len(r.failed)} failed, "
          f"{len(r.not_started)} not started")
    for name, seconds in sorted(r.seconds.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<28}{seconds:>8.0f} s")
    for name, message in r.failed.items():
        print(f"  failed: {name}: {message}")
    for name, why in r.not_started.items():
        print(f"  not started: {name}: {why}")
    if r.failed or r.not_started:
        print("claims: not judged: a job failed or did not start; the same command again runs "
              "what is left, then judges them")
        return 1
    if args.preset == "tiny":
        print("claims: not judged: the tiny preset's runs are too small for the course's "
              "conclusions")
        return 0
    from minirlhf.course import claims as C
    from minirlhf.course.build import THREADS

    _, line = _judge_claims(C.CLAIMS, args.runs_dir, args.preset, args.seeds, THREADS, t0,
                            f"python -m minirlhf course --seeds {args.seeds}")
    print(line)
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    """Every conclusion the chapters and the README state, judged on each seed's results with
    its rule (minirlhf/course/claims.py): first the runs that are missing are made (the course's
    jobs, resumable), then the table — each claim's figure per seed, how many seeds it holds
    in, its verdict — is printed and written to claims.json and claims.md beside the runs.
    Exit code 1 when a claim does not hold in every seed."""
    import time
    from pathlib import Path

    from minirlhf.config import check_range, require_folder_path
    from minirlhf.course import claims as C
    from minirlhf.machine import cores

    check_range("claims", "--seeds", args.seeds, "[1, 10]")
    check_range("claims", "--threads", args.threads, f"[1, {cores()}]")  # this machine's cores
    check_range("claims", "--workers", args.workers, "[0, 64]")
    chosen = C.select(args.only, args.chapter)
    runs_dir = args.runs_dir or ("runs" if args.threads == 1 else f"runs/threads{args.threads}")
    require_folder_path(runs_dir, "--runs-dir")
    workers = args.workers or max(1, cores() // args.threads)
    t0 = time.time()
    if not args.no_run:
        from minirlhf.course.build import build

        _logging(args)
        jobs = C.needed_jobs(chosen, args.preset, args.seeds, runs_dir)
        r = build(jobs, base=args.preset, runs_dir=runs_dir, workers=workers,
                  progress=not args.quiet, threads=args.threads,
                  on_start=lambda to_run, done, _: print(
                      f"claims: {len(chosen)} claims read {len(jobs)} runs in "
                      f"{Path(runs_dir) / args.preset}: {len(done)} done, {len(to_run)} to run "
                      f"on {workers} worker(s) of {args.threads} thread(s)"))
        for name, message in r.failed.items():
            print(f"  failed: {name}: {message}")
    part, command = "", ""  # a part of the claims never replaces the whole table
    if len(chosen) < len(C.CLAIMS):
        part = f"only-{args.only}" if args.only else f"chapter-{chosen[0].chapter}"
        command = (f"python -m minirlhf claims --seeds {args.seeds} --threads {args.threads} "
                   + (f"--only {args.only}" if args.only else f"--chapter {chosen[0].chapter}"))
    verdicts, line = _judge_claims(chosen, runs_dir, args.preset, args.seeds, args.threads, t0,
                                   command, part)
    print(C.table(verdicts))
    print(line)
    return 0 if all(v.verdict == "holds" for v in verdicts) else 1


def _judge_claims(chosen: list, runs_dir: str, preset: str, seeds: int, threads: int,
                  t0: float, command: str = "", part: str = "") -> tuple[list, str]:
    """``chosen`` claims judged on seeds 0 .. seeds-1 of what exists, written to claims.json
    and claims.md beside the runs (in ``claims/``, or ``claims/PART/`` for a part of them): (the
    verdicts, the line that counts them and names the files). ``t0``: when the command started
    (the header's seconds); ``command``: the one that made the table, when not ``claims``
    itself."""
    import time

    from minirlhf.course import claims as C
    from minirlhf.machine import environment

    verdicts = C.evaluate(chosen, runs_dir, preset, list(range(seeds)), threads)
    header = {"seeds": list(range(seeds)), "threads": threads, "preset": preset,
              "environment": environment(), "seconds": round(time.time() - t0, 1),
              "date": time.strftime("%Y-%m-%d"),
              "job_seconds": round(C.job_seconds(runs_dir, preset), 1),
              **({"command": command} if command else {})}
    json_path, md_path = C.write(verdicts, Path(runs_dir) / preset / "claims" / part, header)
    counts = ", ".join(f"{n} {k}" for k, n in C.counts(verdicts).items() if n)
    return verdicts, f"claims: {counts}; {md_path}, {json_path}"


def _check_executor(spec: str) -> None:
    """``--executor`` is empty or dask://HOST:PORT (PORT a number): ConfigError if not."""
    import re

    from minirlhf.config import ConfigError

    if spec and not re.fullmatch(r"dask://[^\s:/]+:\d+", spec):
        raise ConfigError(f"course: --executor must look like dask://HOST:PORT (e.g. "
                          f"dask://127.0.0.1:8786), got {spec!r}")


def _executor(spec: str, workers: int) -> tuple[Any, Any, int]:
    """(Dask client or None, executor or None, workers): our own worker processes, or a Dask
    cluster's executor for ``dask://HOST:PORT`` (as many jobs at once as its threads)."""
    from minirlhf.config import ConfigError, check_range

    check_range("course", "--workers", workers, "[1, 64]")
    if not spec:  # (its form was checked before any work: _check_executor)
        return None, None, workers
    try:
        from distributed import Client
    except ImportError:
        raise ConfigError("course: --executor dask://... needs Dask: pip install -e "
                          "'.[cluster]'") from None
    client = Client(spec[len("dask://"):])
    return client, client.get_executor(), max(1, min(64, sum(client.nthreads().values())))


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["classroom"]:
        # before the parser of every command, which imports the whole library: a student's file
        # that does not compile fails the exercises that import it, not the command
        parser = _Parser(prog="python -m minirlhf classroom",
                         description=cmd_classroom.__doc__)
        _classroom_arguments(parser)
        try:
            return cmd_classroom(parser.parse_args(argv[1:]))
        except OSError as e:  # --out or make-student's folder: the path and the reason
            print(f"error: {e}", file=sys.stderr)
            return 2

    from minirlhf.config import ConfigError, InputError
    from minirlhf.lm.checkpoint import CheckpointError
    from minirlhf.lm.pretrained import PretrainedError
    from minirlhf.lm.safetensors import SafetensorsError
    from minirlhf.records import PipelineError

    args = build_parser().parse_args(argv)
    from minirlhf.machine import THREAD_VARIABLES, cores

    given = os.environ.get(THREAD_VARIABLES[0], "").strip()  # ours; the BLAS's are its own
    if given and not (given.isdigit() and int(given) > 0):
        print(f"error: {THREAD_VARIABLES[0]} = {given!r} is not a thread count: give a whole "
              f"number in [1, {cores()}], or unset it", file=sys.stderr)
        return 2
    if given and int(given) > cores():
        print(f"warning: {THREAD_VARIABLES[0]} = {given} is more than the {cores()} core(s) "
              f"this process may use: it runs with {cores()}", file=sys.stderr)
    # Both cores and the allocator setting (minirlhf/autograd/runtime.py); MINIRLHF_THREADS=1
    # keeps one thread.
    from minirlhf.autograd.runtime import configure

    configure()
    if not args.debug:  # a NaN or an overflow is said in one line where the run checks for it,
        import warnings  # not first in NumPy's words from inside the engine (--debug shows them)

        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"minirlhf\.")
    # settings, input files (corpus, preference data: file and line), checkpoints, a stage
    # that stopped, and the file system (missing, permission denied, not a directory, disk
    # full: OSError names the path)
    expected = (ConfigError, InputError, CheckpointError, PipelineError, OSError,
                FloatingPointError, PretrainedError, SafetensorsError)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        resumes = args.command in ("pipeline", "experiment", "frontier", "course", "claims")
        print("interrupted: every finished stage is kept; run the same command again to resume"
              if resumes else "interrupted: what this command was making is not kept; run the "
              "same command again to start it over", file=sys.stderr)
        return 130
    except expected as e:
        # Mistakes in what the user asked for, or in their files: one line that names the
        # problem, without a traceback (--debug shows it).
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
