"""Settings and stages: what every stage declares about itself, in one place.

A stage's config is a dataclass whose fields are made with ``setting(default, help, range,
choices)``: the range and the help text sit beside the field, ``check_settings(config)`` checks
every field against them before any work starts, and each subcommand's ``--help`` prints them.
``apply_overrides`` turns ``key=value`` strings into a checked copy of a config.

A ``Stage`` record says everything the pipeline, the report, the summary and the command line
need to know about a stage: its name, its config, its entry point, the stages whose outputs it
reads, the file it leaves for later stages, and how its numbers enter the record, the summary
and the report. The registry (``minirlhf.registry``) lists the records; adding an algorithm is
its file in ``stages/`` and one line there.

``run_path`` is the one function that knows the run-folder layout: ``runs/<name>/<stage>/``.

Random streams live in ``minirlhf.streams``; the machine's facts (cores, thread count,
environment, peak memory) in ``minirlhf.machine``.

This module imports only ``minirlhf.files`` (a checkpoint's metadata) from the rest of the
package: every floor may use it.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import os
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

# InputError is re-exported: the stages import it from here
from minirlhf.files import CheckpointError, InputError, model_kind, read_meta  # noqa: F401

C = TypeVar("C")

DEFAULT_RUN = "runs/default"  # where a stage run on its own reads and writes by default


class ConfigError(ValueError):
    """A config key or value is wrong; the message names the key and what it allows."""


# ---------------------------------------------------------------------------- settings
def setting(default: Any, help: str, range: str | None = None,  # noqa: A002 (argparse's word)
            choices: Sequence[str] | None = None, added: bool = False) -> Any:
    """A config field with its help text and, optionally, its allowed range or choices.

    ``range`` is written as an interval: "[" and "]" are closed ends, "(" and ")" open ones, e.g.
    "(0, 1)" or "[1, inf)". ``choices`` lists the allowed strings. ``added``: a setting added
    after runs were made, whose default does what those runs did; at its default it is left out
    of a run's fingerprint (``unchanged_by_default``), so those runs stay valid."""
    if range is not None:
        _interval(range)  # a malformed range is a bug in the library: fail at import
    return field(default=default, metadata={"help": help, "range": range,
                                            "choices": tuple(choices) if choices else None,
                                            "added": added})


def unchanged_by_default(config: Any) -> set[str]:
    """The settings of ``config`` declared ``added`` that hold their default: what a run's
    fingerprint leaves out, as runs made before the setting existed did not have it."""
    return {f.name for f in dataclasses.fields(config)
            if f.metadata.get("added") and getattr(config, f.name) == f.default}


def _interval(spec: str) -> tuple[float, float, bool, bool]:
    lo_text, hi_text = spec[1:-1].split(",")
    if spec[0] not in "[(" or spec[-1] not in "])":
        raise ValueError(f"range {spec!r} must look like [lo, hi), (lo, hi] ...")
    return float(lo_text), float(hi_text), spec[0] == "[", spec[-1] == "]"


def _inside(value: float, spec: str) -> bool:
    lo, hi, lo_closed, hi_closed = _interval(spec)
    above = value >= lo if lo_closed else value > lo
    below = value <= hi if hi_closed else value < hi
    return above and below


# How many runs ``--seeds N`` may ask of a command (the course and the claims allow fewer).
SEEDS_RANGE = "[1, 100]"


def check_range(owner: str, key: str, value: float, spec: str) -> None:
    """The one test of a number against its allowed range, and its one message: ConfigError
    "OWNER: KEY = VALUE is outside its allowed range SPEC" (a setting of a config, or a
    command's option such as ``--seeds``)."""
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"{owner}: {key} is NaN")
    if not _inside(value, spec):
        raise ConfigError(f"{owner}: {key} = {value!r} is outside its allowed range {spec}")


def check_settings(config: Any) -> None:
    """Check every field of a config against its range or choices; raise ConfigError naming the
    config, the key, the value and what is allowed. The one check every command makes of its
    settings (a stage's, the pipeline's, an experiment's) before any work starts."""
    name = type(config).__name__
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, float) and math.isnan(value):
            raise ConfigError(f"{name}: {f.name} is NaN")
        spec = f.metadata.get("range")
        if spec and isinstance(value, int | float) and not isinstance(value, bool):
            check_range(name, f.name, value, spec)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{name}: {f.name} = {value!r} is not one of {', '.join(choices)}")


@dataclass
class StageConfig:
    """What every stage's config has: the run's seed, the progress switch, and ``check``. A
    stage's config is a dataclass deriving from it, its own settings made with ``setting``."""

    seed: int = setting(0, "the run's seed: each random stream of the stage derives from it",
                        "[0, inf)")
    progress: bool = setting(True, "show a tqdm bar")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass changes an inherited setting's default with a plain value
        (``lr: float = 1e-3``): its help text and range are inherited. A new setting is made
        with ``setting``; a plain value or a bare annotation for it is an error at import."""
        super().__init_subclass__(**kwargs)
        inherited = {f.name: f for base in reversed(cls.__mro__[1:])
                     for f in getattr(base, "__dataclass_fields__", {}).values()}
        for name, kind in inspect.get_annotations(cls).items():
            value = cls.__dict__.get(name, dataclasses.MISSING)
            if str(kind).startswith(("ClassVar", "typing.ClassVar")) \
                    or isinstance(value, dataclasses.Field):
                continue
            if value is dataclasses.MISSING:
                raise TypeError(f"{cls.__name__}.{name} has no default: make it with setting("
                                "default, help, range), or give an inherited one a value")
            if name not in inherited:
                raise TypeError(f"{cls.__name__}.{name} = {value!r} is a new setting without "
                                "help: make it with setting(default, help, range)")
            setattr(cls, name, field(default=value, metadata=inherited[name].metadata))

    def check(self, upstream: dict[str, Any] | None = None) -> None:
        """Every setting against its range, before any work. A stage with rules between its
        settings (or about the data ``upstream`` stages will hand it: input field -> that
        stage's config) adds them, calling this first."""
        check_settings(self)


def check_fits(config: Any, key: str | None, limit: int, what: str, fewer: str = "") -> None:
    """Data to learn from, checked as soon as it is known and before any training: ``limit``
    examples, which ``what`` names with their counts and their file. Fewer than the smallest
    batch the setting ``key`` allows (one, without a key) is nothing to learn from; more batch
    than examples is a batch the data cannot fill. Either is an error now, not a run that
    trains on nothing, or an error an hour from now. ``fewer``: why there may be fewer than
    ``limit`` when they are counted (samples yet to be drawn): the error then offers no range
    the data might not meet, and the exact check follows when they are known."""
    name = type(config).__name__
    least = 1
    if key is not None:
        spec = next(f for f in dataclasses.fields(config) if f.name == key).metadata["range"]
        lo, _, closed, _ = _interval(spec)
        least = max(1, math.floor(lo) + (not closed))
    if limit < least:
        raise ConfigError(f"{name}: nothing to learn from: {what}"
                          + (f"; {key} needs at least {least}" if least > 1 else ""))
    if key is not None and getattr(config, key) > limit:
        raise ConfigError(f"{name}: {key} = {getattr(config, key)} is larger than {what}"
                          + (f" at most ({fewer}); lower {key}" if fewer else
                             f"; allowed range [{least}, {limit}]"))


def describe(config: Any) -> str:
    """One line per field: ``key = value``."""
    return "\n".join(f"  {f.name} = {getattr(config, f.name)!r}"
                     for f in dataclasses.fields(config))


def settings_help(config_class: type) -> str:
    """Every setting of a config class, its default, range and help: the text ``--help`` ends
    with."""
    lines = ["settings (change with --set KEY=VALUE):"]
    for f in dataclasses.fields(config_class):
        allowed = f.metadata.get("range") or (
            " | ".join(f.metadata["choices"]) if f.metadata.get("choices") else "")
        lines.append(f"  {f.name} = {f.default!r}" + (f"  {allowed}" if allowed else ""))
        if f.metadata.get("help"):
            lines.append(f"      {f.metadata['help']}")
    return "\n".join(lines)


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _parse(key: str, text: str, kind: Any) -> Any:
    if kind is bool:
        low = text.lower()
        if low in _TRUE | _FALSE:
            return low in _TRUE
        raise ConfigError(f"config key {key!r} expects true or false, got {text!r}")
    if kind in (int, float, str):
        try:
            return kind(text)
        except ValueError:
            raise ConfigError(f"config key {key!r} expects {kind.__name__}, got {text!r}") from None
    raise ConfigError(f"config key {key!r} has type {kind} that cannot be set from text")


def apply_overrides(config: C, overrides: Sequence[str]) -> C:
    """A copy of ``config`` with each ``key=value`` applied (values parsed by the field type)."""
    hints = get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config)]
    changes: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"override {item!r} must look like key=value")
        if key not in names:
            raise ConfigError(f"unknown config key {key!r} for {type(config).__name__}; valid "
                              f"keys: {', '.join(names)}")
        changes[key] = _parse(key, value.strip(), hints[key])
    return dataclasses.replace(config, **changes)


# ---------------------------------------------------------------------- inputs and layout
def run_path(stage: str, file: str = "", root: str | Path = DEFAULT_RUN) -> str:
    """Where ``stage`` of the run at ``root`` keeps its files (``file`` inside that folder):
    ``<root>/<stage>/<file>``. The one place the run-folder layout is written down."""
    return str(Path(root) / stage / file) if file else str(Path(root) / stage)


def command_hint(*commands: Sequence[str], env: dict[str, str] | None = None) -> str:
    """The one way the program writes a command for its user to run (in an error, a warning,
    a hint): each command's words quoted for a POSIX shell, the commands joined by ``&&``,
    ``env``'s variables set before the first, the whole in backticks, so that it runs pasted
    as it is. Paths in it are absolute: it works from any folder. Every hint is tested by
    following it (tests/test_catalogue.py's ``follow``)."""
    words = [" ".join(shlex.quote(str(w)) for w in c) for c in commands if c]
    prefix = [f"{k}={shlex.quote(str(v))}" for k, v in (env or {}).items()]
    return "`" + " ".join([*prefix, " && ".join(words)] if words else prefix) + "`"


def minirlhf_command(*args: str, env: dict[str, str] | None = None) -> str:
    """``command_hint`` of ``python -m minirlhf ARGS``."""
    return command_hint(["python", "-m", "minirlhf", *args], env=env)


def missing_input(what: str, path: str | Path, make: str = "") -> FileNotFoundError:
    """The one error for an input file that is not there: what it is, where it was looked for
    (an absolute path: a relative one depends on the working directory), and ``make``, how to
    make it: a sentence holding a ``command_hint`` ("make it with `...`", ``output_hint``'s),
    when it can be made."""
    return FileNotFoundError(f"{what} {Path(path).absolute()} is missing"
                             + (f": {make}" if make else ""))


# The file each stage leaves in its folder (its Stage record's ``output``; a test checks that
# the two agree): what ``output_hint`` knows of the stages below the registry.
OUTPUT_NAMES = {"preferences": "preferences.jsonl", "best_of_n": "summary.json"}


def output_path_name(stage: str) -> str:
    """The name of the file ``stage`` leaves in its folder."""
    return OUTPUT_NAMES.get(stage, "model.npz")


def output_hint(stage: str, path: str | Path, **settings: Any) -> str:
    """How to make the file at ``path`` with ``stage`` (its command with ``--set out_dir=`` the
    folder of ``path``, and ``settings``, e.g. the task): "make it with `...`" when ``path`` is
    named as the stage names its output, else "make one with `...` (it writes DIR/NAME)"."""
    path = Path(path).absolute()
    name = output_path_name(stage)
    command = minirlhf_command(stage.replace("_", "-"), "--set", f"out_dir={path.parent}",
                               *(f"{k}={v}" for k, v in settings.items()))
    if path.name == name:
        return f"make it with {command}"
    return f"make one with {command} (it writes {path.parent / name})"


def require_folder_path(folder: str | Path, what: str) -> None:
    """Nothing but folders where ``folder`` and its parents would be: NotADirectoryError naming
    ``what`` and the file in the way, if a file sits there. Nothing is made (``require_writable``
    makes the folder)."""
    path = Path(folder).absolute()
    for at in (path, *path.parents):
        if at.exists():
            if not at.is_dir():
                raise NotADirectoryError(f"{what} {folder}: {at} is a file, not a folder")
            return


def require_writable(folder: str | Path) -> None:
    """Make ``folder`` (and its parents) if needed and check that a file can be written in it;
    PermissionError or NotADirectoryError naming the absolute path if not."""
    path = Path(folder).absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise NotADirectoryError(f"output folder {path} is a file, not a folder") from None
    except OSError as e:
        raise type(e)(f"cannot make the output folder {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write in the output folder {path}: permission denied")


# What a config field that names a checkpoint must hold, in every stage: the policy a stage
# starts from (also its reference, and the trunk of a critic made from it) or samples, and the
# reward model that scores (also the trunk of PPO's default critic); ``evaluate``'s reference.
# Each may be a model.npz or a Hugging Face model folder (``export`` writes one).
CHECKPOINT_FIELDS = {"init": "policy", "policy": "policy", "reward_model": "reward model",
                     "reference": "policy"}


def check_checkpoints(config: Any, unused: Sequence[str] = ()) -> None:
    """Every checkpoint the config names (``CHECKPOINT_FIELDS``; not the ``unused`` ones, nor
    a file that is not there: ``require_inputs`` names those) is of the kind its field needs,
    made for the config's task (a pretrained model serves every task), and read with one
    tokenizer: ConfigError naming the field, the file, what it holds and what was expected. Only
    the metadata is read, before any work."""
    name, first = type(config).__name__, None
    for key, kind in CHECKPOINT_FIELDS.items():
        path = getattr(config, key, "")
        if key in unused or not path or not Path(path).exists():
            continue
        meta = read_meta(path)  # a Hugging Face folder's config.json too
        extra = meta.get("extra", {})
        made_by = f" (made by the {extra['stage']} stage)" if extra.get("stage") else ""
        if model_kind(meta) != kind:
            other = model_kind(meta).startswith("Hugging Face")  # not GPT-2, or another head
            raise ConfigError(f"{name}: {key} = {path} is a {model_kind(meta)}{made_by}, not a "
                              f"{kind}" + (" (minirlhf reads GPT-2 folders: GPT2LMHeadModel "
                                           "or GPT2Model for a policy, "
                                           "GPT2ForSequenceClassification for a reward model)"
                                           if other else "")
                              + f": give a {kind}'s model.npz or Hugging Face folder")
        if meta.get("hf_tokenizer", "char") != "char":
            raise ConfigError(f"{name}: {key} = {path} is a Hugging Face folder with GPT-2's "
                              "BPE tokenizer; the stages read the worlds' text as characters: "
                              "give a folder that `export` wrote")
        task = extra.get("config", {}).get("task")
        if task and extra.get("stage") != "pretrain" and task != getattr(config, "task", task):
            raise ConfigError(f"{name}: {key} = {path} was trained for the {task!r} world, and "
                              f"task = {config.task!r}; give a {kind} of that world")
        if first is None:
            first = (key, path, meta.get("tokenizer"))
        elif meta.get("tokenizer") != first[2]:
            raise ConfigError(f"{name}: {key} = {path} reads text with another tokenizer than "
                              f"{first[0]} = {first[1]}; give checkpoints made with one "
                              "tokenizer")


def require_inputs(config: Any, inputs: dict[str, str]) -> None:
    """Raise ``missing_input`` for the first input (config field -> the stage that writes it)
    whose file does not exist."""
    for key, stage in inputs.items():
        path = getattr(config, key)
        if not str(path).strip():  # "" would be read as the current folder
            raise ConfigError(f"{type(config).__name__}: {key} is empty: give the file "
                              f"({output_path_name(stage)} as the {stage} stage writes it)")
        if not Path(path).exists():
            task = getattr(config, "task", "reviews")
            settings = {"task": task} if task != "reviews" else {}
            if stage == "pretrain" and task != "reviews":
                settings["corpus"] = task  # the world's own text (a shipped corpus)
            defaults = {f.name: f.default for f in dataclasses.fields(config)}
            if stage == "preferences" and getattr(config, "init", "") not in ("", defaults.get(
                    "init")):
                settings["policy"] = config.init  # the SFT policy the user gave this run
            raise missing_input(f"{key} file", path, output_hint(stage, path, **settings))


def require_own_folder(config: Any, stage: str, output: str, others: bool = True) -> None:
    """The file the stage will write, ``out_dir/output``, is none of its inputs, and (with
    ``others``: a folder the user named, not one the pipeline keeps by its records) not another
    stage's model: ConfigError naming the setting and the file, before any work. A run replaces
    its own stage's earlier output in its folder, as a rerun does."""
    if not str(config.out_dir).strip():
        raise ConfigError(f"{type(config).__name__}: out_dir is empty: give the folder the run "
                          "writes to")
    target = (Path(config.out_dir) / output).resolve()
    for key in dataclasses.fields(config):
        value = getattr(config, key.name)
        if key.name != "out_dir" and isinstance(value, str) and value.strip() and \
                Path(value).resolve() == target:
            raise ConfigError(f"{type(config).__name__}: out_dir = {config.out_dir} would "
                              f"overwrite {key.name} = {value}, which this run reads: give "
                              "another out_dir")
    model = Path(config.out_dir) / "model.npz"  # a folder holding a model is its stage's
    if others and model.is_file():
        try:
            made_by = read_meta(model).get("extra", {}).get("stage")
        except (CheckpointError, ValueError, OSError):
            return  # not a model this library wrote: the run replaces it, as before
        if made_by and made_by != stage:
            raise ConfigError(f"{type(config).__name__}: out_dir = {config.out_dir} holds the "
                              f"{made_by} stage's model ({model}), and this {stage} run would "
                              f"write its {output} there: give another out_dir (or delete that "
                              "folder first)")


# ------------------------------------------------------------------------------ stages
@dataclass(frozen=True)
class Stage:
    """What a stage declares about itself. The pipeline (order, fingerprints, resumption), the
    report, summary.json, the comparison table and the command line all read these records."""

    name: str  # e.g. "best_of_n": its run folder and its key in summary.json (CLI: best-of-n)
    title: str  # how the report and the plots name it, e.g. "best-of-n"
    help: str  # one line for `python -m minirlhf --help`
    config: type  # its config dataclass (fields made with `setting`, a `check(upstream)` method)
    run: Callable[[Any], Any]  # train_x(config) -> result
    record: Callable[[Any, Any], dict[str, Any]]  # (result, config) -> numbers the run keeps
    inputs: dict[str, str] = field(default_factory=dict)  # config field -> stage it reads from
    # the settings that name files it reads beyond ``inputs``, where the world decides which
    # stage made them (GRPO's init: the scratchpad route's SFT or the pipeline's)
    files: tuple[str, ...] = ()
    output: str = "model.npz"  # the file it leaves in its folder for later stages
    policy: bool = False  # a policy, judged like every policy: table, frontier, samples
    summary: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # numbers -> summary.json
    # entries (merged into it; a policy's headline figures and samples enter it anyway)
    report: Callable[[dict[str, Any]], list[str]] | None = None  # numbers -> report.md lines
    show: Callable[[Any, Any], str] | None = None  # (result, config) -> what the CLI prints
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)  # preset -> settings
    # For the pipeline's time estimate: work(config, every stage's config) is a count that
    # grows in proportion to the stage's running time (steps x batch, say), and seconds[preset]
    # the time the stage took with that preset's settings on the reference 2-core laptop.
    work: Callable[[Any, dict[str, Any]], float] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    # the inputs a config does not read (online DPO reads no preference file, say)
    unused: Callable[[Any], Sequence[str]] = lambda config: ()

    def check_inputs(self, config: Any) -> None:
        """Every setting in its range, then every input file there (naming the command that
        makes a missing one) and every checkpoint of the kind, the task and the tokenizer it
        needs (``check_checkpoints``), except the ones the config does not read (``unused``).
        Nothing is written: the command line calls it before it prints anything."""
        unused = tuple(self.unused(config))
        config.check()
        require_inputs(config, {k: v for k, v in self.inputs.items() if k not in unused})
        check_checkpoints(config, unused)

    def begin(self, config: Any) -> None:
        """What the stage's entry point does first: ``check_inputs``, then that its output
        folder can be written: a run that cannot save fails now, not after training."""
        self.check_inputs(config)
        if hasattr(config, "out_dir"):
            require_own_folder(config, self.name, self.output, others=False)
            require_writable(config.out_dir)

    @property
    def command(self) -> str:
        """Its subcommand: ``python -m minirlhf <command>``."""
        return self.name.replace("_", "-")
