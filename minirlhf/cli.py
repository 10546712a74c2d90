"""The command line: ``python -m minirlhf SUBCOMMAND``. Each subcommand calls one entry point."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def cmd_gradcheck(args: argparse.Namespace) -> int:
    """Check every op's backward against finite differences and print a table."""
    from minirlhf.autograd.gradcheck import op_cases

    cases = op_cases()
    if args.only:
        cases = [c for c in cases if c.name in args.only]
        if not cases:
            print(f"gradcheck: no case named {args.only}", file=sys.stderr)
            return 2
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


def _stage_config(default, args: argparse.Namespace, name: str):
    """A stage's config with the command line's --set overrides applied (checked), logging set
    up, and the config printed; what every stage command starts with."""
    import logging

    from minirlhf.config import apply_overrides, describe

    config = apply_overrides(default, args.set or [])
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    print(f"{name} config:\n" + describe(config))
    return config


def cmd_pretrain(args: argparse.Namespace) -> int:
    """Pretrain the GPT on the review corpus: checkpoint, loss-curve PNG, samples."""
    from minirlhf.stages.pretrain import PretrainConfig, train_pretrain

    config = _stage_config(PretrainConfig(), args, "pretrain")
    result = train_pretrain(config)
    print("\nsamples before training (from BOS):")
    for s in result.samples_before:
        print("   ", s)
    print("samples after training (from BOS):")
    for s in result.samples[:8]:
        print("   ", s)
    print(f"\nvalidation loss {result.val_loss:.4f} nats/token; grammatical samples "
          f"{result.grammatical_rate:.1%} of {len(result.samples)}; {result.seconds:.0f} s")
    print(f"checkpoint: {result.checkpoint}\nloss curve: {result.plot}")
    return 0


def _sample_table(rows, n: int = 6) -> str:
    """(prompt, response, gold) rows as aligned text."""
    lines = [f"    {'gold':>6}  text"]
    for prompt, response, gold in rows[:n]:
        lines.append(f"    {gold:>6.2f}  {prompt}|{response}")
    return "\n".join(lines)


def _print_policy_report(name: str, rep, samples_per_prompt: int) -> None:
    """A trained policy's samples (one per evaluation prompt) and its headline numbers."""
    print(f"samples after {name}:")
    print(_sample_table(rep.samples[::samples_per_prompt]))
    print(f"\ngold {rep.gold:.3f} (SFT {rep.reference_gold:.3f}); win-rate vs SFT "
          f"{rep.win_rate:.1%}; KL to SFT {rep.kl:.2f} nats/response; valid {rep.valid_rate:.1%}; "
          f"length {rep.mean_length:.1f}")


def cmd_sft(args: argparse.Namespace) -> int:
    """Supervised fine-tuning on demonstrations (response tokens only), gold before and after."""
    from minirlhf.stages.sft import SFTConfig, train_sft

    config = _stage_config(SFTConfig(), args, "sft")
    r = train_sft(config)
    print("\nsamples before SFT ('|' marks where the prompt ends; '~' an unfinished response):")
    print(_sample_table(r.before.samples[::config.eval_samples_per_prompt]))
    print("samples after SFT:")
    print(_sample_table(r.after.samples[::config.eval_samples_per_prompt]))
    print(f"\n{'':<8}{'gold reward':>12}{'valid':>8}{'length':>8}")
    for name, e in (("before", r.before), ("after", r.after)):
        print(f"{name:<8}{e.gold_mean:>12.3f}{e.valid_rate:>8.1%}{e.mean_length:>8.1f}")
    print(f"\n{r.seconds:.0f} s; checkpoint: {r.checkpoint}; loss curve: {r.plot}")
    return 0


def cmd_preferences(args: argparse.Namespace) -> int:
    """Label pairs of policy samples with simulated raters; write JSON Lines; report the
    accuracy ceiling beside the measured rater-gold agreement."""
    from minirlhf.stages.preferences import PreferenceConfig, build_preference_data

    config = _stage_config(PreferenceConfig(), args, "preference")
    r = build_preference_data(config)
    s = r.stats
    print(f"\n{s['pairs']} pairs written to {r.path} ({r.dropped_unfinished} unfinished and "
          f"{r.dropped_identical} identical pairs dropped), {r.seconds:.0f} s")
    print(f"accuracy ceiling (best any reward model can do on these labels): {s['ceiling']:.2%}")
    print(f"rater-gold agreement: expected {s['expected_gold_agreement']:.2%}, measured "
          f"{s['measured_gold_agreement']:.2%} (gold ties: {s['gold_ties']:.1%})")
    return 0


def cmd_reward(args: argparse.Namespace) -> int:
    """Train a Bradley-Terry reward model on preference pairs; report accuracy beside the
    ceiling, gold agreement, calibration; fit its normalization on SFT samples."""
    from minirlhf.stages.reward import RewardConfig, train_reward

    config = _stage_config(RewardConfig(), args, "reward")
    r = train_reward(config)
    m = r.val_metrics
    print("\nexample held-out pairs (RM scores normalized; gold is the hidden truth):")
    print(f"    {'RM chosen':>9} {'RM rej.':>8} {'gold ch.':>8} {'gold rej.':>9}  "
          "prompt|chosen  vs  rejected")
    for prompt, c, rj, sc, sr, gc, gr in r.examples:
        print(f"    {sc:>9.2f} {sr:>8.2f} {gc:>8.2f} {gr:>9.2f}  {prompt}|{c}  vs  {rj}")
    print(f"\ntrained on {r.train_pairs} pairs in {r.seconds:.0f} s")
    print(f"held-out accuracy vs rater labels: {m['accuracy']:.2%} (ceiling "
          f"{m.get('ceiling', float('nan')):.2%}); on the training pairs: {r.train_accuracy:.2%}")
    if "expected_accuracy" in m:
        print(f"expected accuracy vs a fresh rater label: {m['expected_accuracy']:.2%} (the "
              "same measure without the noise of one label per pair; the ceiling is its best)")
    if "gold_accuracy" in m:
        print(f"held-out accuracy vs gold: {m['gold_accuracy']:.2%} (a perfect label predictor "
              f"would get {m.get('gold_accuracy_ceiling', float('nan')):.2%})")
    print(f"mean margin {m['mean_margin']:.3f}; RM-gold correlation on fresh SFT samples "
          f"{r.gold_correlation:.3f}; calibration ECE {r.calibration['ece'][0]:.3f}")
    print(f"normalization: score = {r.gain:.3f} * raw + {r.bias:.3f}")
    print(f"checkpoint: {r.checkpoint}; plots: {', '.join(r.plots)}")
    return 0


def cmd_best_of_n(args: argparse.Namespace) -> int:
    """Best-of-n sampling with the reward model: gold and proxy reward against n and KL."""
    from minirlhf.stages.best_of_n import BestOfNConfig, run_best_of_n

    config = _stage_config(BestOfNConfig(), args, "best-of-n")
    r = run_best_of_n(config)
    print(f"\n{'n':>4} {'KL (nats)':>10} {'gold':>8} {'proxy':>8}")
    for n, row in r.table.items():
        print(f"{n:>4} {row['kl']:>10.3f} {row['gold']:>8.3f} {row['proxy']:>8.3f}")
    print("\nthe RM's favourite among the largest n, for a few prompts:")
    for prompt, resp, proxy, gold in r.examples:
        print(f"    proxy {proxy:6.2f}  gold {gold:6.2f}  {prompt}|{resp}")
    print(f"\n{r.seconds:.0f} s; plot: {r.plot}")
    return 0


def cmd_dpo(args: argparse.Namespace) -> int:
    """Offline DPO on the preference data, from the SFT policy; gold, win-rate vs SFT, KL."""
    from minirlhf.stages.dpo import DPOConfig, train_dpo

    config = _stage_config(DPOConfig(), args, "dpo")
    r = train_dpo(config)
    last = r.metrics[-1]
    print("\nlast step: " + ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k != "step"))
    rep = r.report
    _print_policy_report("DPO", rep, config.eval_samples_per_prompt)
    print(f"{r.seconds:.0f} s; checkpoint: {r.checkpoint}; plot: {', '.join(r.plots)}")
    from pathlib import Path

    from minirlhf.evaluation import comparison_rows

    rows = comparison_rows(Path(config.out_dir).parent)
    if len(rows) > 1:
        print(f"\n{'policy':<12}{'gold':>8}{'win-rate vs SFT':>17}{'KL (nats)':>11}")
        print(f"{'SFT':<12}{rep.reference_gold:>8.3f}{'':>17}{0.0:>11.2f}")
        for name, gold, win, kl in rows:
            win_text = "—" if win is None else f"{win:.1%}"
            print(f"{name:<12}{gold:>8.3f}{win_text:>17}{kl:>11.2f}")
    return 0


def cmd_ppo(args: argparse.Namespace) -> int:
    """RLHF with PPO against the reward model, with a KL penalty to the SFT policy."""
    from minirlhf.stages.ppo import PPOConfig, train_ppo

    config = _stage_config(PPOConfig(), args, "ppo")
    r = train_ppo(config)
    print(f"\n{'iter':>5}{'KL':>8}{'score':>8}{'gold':>8}{'length':>8}{'clipfrac':>10}")
    for m in r.metrics[:: max(1, len(r.metrics) // 10)] + r.metrics[-1:]:
        print(f"{m['iteration']:>5}{m['objective/kl']:>8.2f}{m['objective/scores']:>8.2f}"
              f"{m['gold']:>8.2f}{m['response_length']:>8.1f}{m['policy/clipfrac_avg']:>10.3f}")
    rep = r.report
    _print_policy_report("PPO", rep, config.eval_samples_per_prompt)
    print(f"{r.seconds:.0f} s; checkpoint: {r.checkpoint}; plot: {r.plot}")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    """The whole course: pretrain, SFT, preferences, reward model, best-of-n, PPO, DPO and a
    report. Stages already done with the same config are skipped (--force redoes them)."""
    import logging

    from minirlhf.pipeline import PipelineConfig, PipelineError, run_pipeline

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    config = PipelineConfig(name=args.name or args.preset, preset=args.preset, seed=args.seed,
                            force=args.force, runs_dir=args.runs_dir,
                            overrides=list(args.set or []))
    try:
        r = run_pipeline(config)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"\n{'policy':<12}{'gold':>8}{'win-rate vs SFT':>17}{'KL (nats)':>11}{'valid':>8}")
    for name, p in r.summary["policies"].items():
        print(f"{name:<12}{p['gold_reward']:>8.3f}{p['win_rate_vs_sft']:>17.1%}"
              f"{p['kl_to_ref']:>11.2f}{p['valid_rate']:>8.1%}")
    rm = r.summary["reward_model"]
    print(f"reward model: held-out accuracy {rm['accuracy']:.1%} (ceiling {rm['ceiling']:.1%})")
    print(f"\nran {', '.join(r.ran) or 'nothing'}; skipped {', '.join(r.skipped) or 'nothing'}; "
          f"{r.seconds:.0f} s")
    print(f"report: {r.report}")
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    """Where RLHF goes wrong, measured: rlaif, sycophancy, length-bias or overoptimization.
    Starts from a finished pipeline run; writes results.json and plots."""
    import json
    import logging

    from minirlhf.experiments import ExperimentConfig, run_experiment

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    base = args.base or ("tiny" if args.quick else "default")
    r = run_experiment(ExperimentConfig(name=args.name, base=base, runs_dir=args.runs_dir,
                                        quick=args.quick, seed=args.seed,
                                        progress=not args.quiet))
    shown = {k: v for k, v in r.numbers.items() if k not in ("best_of_n", "ppo")}
    print(json.dumps(shown, indent=2, sort_keys=True, default=str)[:6000])
    print(f"\n{r.name}: {r.seconds:.0f} s; results: {r.out_dir}/results.json; plots: "
          f"{', '.join(r.plots)}")
    return 0


def cmd_classroom(args: argparse.Namespace) -> int:
    """Classroom tools: make a student copy with the solutions stripped, or check exercises."""
    from pathlib import Path

    if args.action == "make-student":
        from minirlhf.course.classroom import MarkerError, make_student

        if not args.target:
            print("error: make-student needs the folder to write, e.g. "
                  "python -m minirlhf classroom make-student ../student", file=sys.stderr)
            return 2
        root = Path(__file__).resolve().parent.parent
        try:
            stripped = make_student(root, args.target)
        except (MarkerError, FileExistsError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for rel, n in stripped.items():
            print(f"  {rel}: {n} region{'s' * (n > 1)} stripped")
        print(f"student copy written to {args.target} ({sum(stripped.values())} solution regions); "
              f"students run: cd {args.target} && pip install -e . && "
              "python -m minirlhf classroom check")
        return 0

    from minirlhf.course.exercises import run_checks

    try:
        chapter = int(args.target) if args.target else None
        results = run_checks(chapter)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import minirlhf

    print(f"checking the exercises in {Path(minirlhf.__file__).parent}")
    for r in results:
        ex = r.exercise
        print(f"ch{ex.chapter} {ex.name:<22} {r.status:<16} {ex.where}: {r.message}")
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "FAIL",
                                                               "not implemented")}
    print(f"\n{counts['pass']} pass, {counts['FAIL']} fail, {counts['not implemented']} not "
          "implemented")
    return 0 if counts["pass"] == len(results) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m minirlhf",
        description="minirlhf: RLHF from scratch in pure NumPy.",
    )
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")
    sub.required = True

    p = sub.add_parser("gradcheck", help="check every op's gradient against finite differences",
                       description=cmd_gradcheck.__doc__)
    p.add_argument("--tol", type=float, default=1e-6, help="max relative error (default 1e-6)")
    p.add_argument("--seed", type=int, default=0, help="seed for the random inputs")
    p.add_argument("--only", nargs="+", metavar="OP", help="check only these ops")
    p.add_argument("-v", "--verbose", action="store_true", help="print each input's check")
    p.set_defaults(func=cmd_gradcheck)

    # Every stage command takes its config's overrides as --set KEY=VALUE.
    for name, func, help_text, cls in (
            ("pretrain", cmd_pretrain, "pretrain the GPT on the review corpus", "PretrainConfig"),
            ("sft", cmd_sft, "supervised fine-tuning on demonstrations", "SFTConfig"),
            ("preferences", cmd_preferences, "make a preference dataset with simulated raters",
             "PreferenceConfig"),
            ("reward", cmd_reward, "train the reward model", "RewardConfig"),
            ("best-of-n", cmd_best_of_n, "best-of-n sampling with the reward model",
             "BestOfNConfig"),
            ("ppo", cmd_ppo, "PPO against the reward model with a KL penalty", "PPOConfig"),
            ("dpo", cmd_dpo, "direct preference optimisation (offline)", "DPOConfig")):
        p = sub.add_parser(name, help=help_text, description=func.__doc__)
        p.add_argument("--set", nargs="+", metavar="KEY=VALUE",
                       help=f"override {cls} fields, e.g. --set seed=1 progress=false")
        p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
        p.set_defaults(func=func)

    p = sub.add_parser("pipeline", help="run every stage and write a report (resumable)",
                       description=cmd_pipeline.__doc__)
    p.add_argument("--preset", default="default", help="default (minutes) or tiny (< 1 minute)")
    p.add_argument("--name", help="the run's folder under --runs-dir (default: the preset)")
    p.add_argument("--runs-dir", default="runs", help="where run folders go (default: runs)")
    p.add_argument("--seed", type=int, default=0, help="every stage's seed")
    p.add_argument("--force", action="store_true", help="redo stages that are already done")
    p.add_argument("--set", nargs="+", metavar="STAGE.KEY=VALUE",
                   help="override a stage's config, e.g. --set ppo.beta=0.1 sft.steps=100")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("experiment", help="RLAIF, sycophancy, length bias, overoptimization",
                       description=cmd_experiment.__doc__)
    p.add_argument("name", choices=["rlaif", "sycophancy", "length-bias", "overoptimization"])
    p.add_argument("--base", help="the pipeline run to start from (default: default, or tiny "
                                  "with --quick)")
    p.add_argument("--runs-dir", default="runs", help="where pipeline runs live")
    p.add_argument("--quick", action="store_true", help="small budgets (for tests)")
    p.add_argument("--seed", type=int, default=0, help="seeds every stage")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings only")
    p.set_defaults(func=cmd_experiment)

    p = sub.add_parser("classroom", help="student copies and exercise checks",
                       description=cmd_classroom.__doc__)
    p.add_argument("action", choices=["make-student", "check"],
                   help="make-student OUTDIR: write a stripped copy; check [CHAPTER]: run the "
                        "exercise checks")
    p.add_argument("target", nargs="?", help="OUTDIR for make-student; CHAPTER for check")
    p.set_defaults(func=cmd_classroom)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from minirlhf.config import ConfigError
    from minirlhf.lm.checkpoint import CheckpointError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, CheckpointError) as e:
        # Mistakes in what the user asked for: say what is wrong, without a traceback.
        print(f"error: {e}", file=sys.stderr)
        return 2
