"""minirlhf: RLHF from scratch in pure NumPy, every derivative checked, every claim measured.

The package is a house with floors; a module imports only from its own floor or below:

    autograd/     the engine: Tensor, ops (forward beside backward), fused functions, gradcheck
    lm/           the GPT, its tokenizer, checkpoints, sampling, sequences, the reward model
    world/        the toy tasks and their hidden gold, the raters, preference data
    evaluation    gold reward, win-rate vs SFT and KL to the reference, for any policy
    stages/       one algorithm per file: pretrain, sft, preferences, reward, best_of_n, ppo, dpo
    experiments/  rlaif, sycophancy, length bias, overoptimization (projects over the library)
    pipeline, report, registry   every stage in order, resumable, and its report
    course/       solution regions, student copies, exercise checks
    cli           ``python -m minirlhf --help``

Start with ``Tensor`` (the autograd engine), ``minirlhf.autograd.functional`` (imported as
``F``) and ``minirlhf.autograd.gradcheck``. The names below are re-exported here for readers and
notebooks (``from minirlhf import Tensor, train_ppo``); the stages' names and ``functional`` load
on first use, so ``import minirlhf`` stays light and imports no file a student writes in
(``classroom check`` then reports a student's file that does not compile as an exercise's
failure). It changes nothing outside the package: the command-line entry points call
``configure_runtime()`` (both cores, and freed memory kept for reuse; see
``minirlhf.autograd.runtime``), and a notebook may call it once.
"""

from importlib import import_module
from typing import Any

from minirlhf.autograd import ops
from minirlhf.autograd.runtime import configure as configure_runtime
from minirlhf.autograd.tensor import Tensor, is_grad_enabled, no_grad, unbroadcast

__version__ = "0.1.0"

# name -> the module that defines it, imported when the name is first asked for
_LAZY = {
    **dict.fromkeys(("functional",), "minirlhf.autograd.functional"),  # a module: itself
    **dict.fromkeys(("GPT", "GPTConfig"), "minirlhf.lm.model"),
    **dict.fromkeys(("CharTokenizer",), "minirlhf.lm.tokenizer"),
    **dict.fromkeys(("load_model", "save_model"), "minirlhf.lm.checkpoint"),
    **dict.fromkeys(("generate", "generate_text", "rollout"), "minirlhf.lm.sampling"),
    **dict.fromkeys(("encode_pairs", "token_logprobs", "sequence_logps", "eos_positions"),
                    "minirlhf.lm.sequences"),
    **dict.fromkeys(("RewardModel",), "minirlhf.lm.reward_model"),
    **dict.fromkeys(("get_task",), "minirlhf.world"),
    **dict.fromkeys(("PreferencePair", "load_jsonl", "save_jsonl"),
                    "minirlhf.world.preference_data"),
    **dict.fromkeys(("policy_report", "PolicyReport"), "minirlhf.evaluation"),
    **dict.fromkeys(("PretrainConfig", "train_pretrain"), "minirlhf.stages.pretrain"),
    **dict.fromkeys(("SFTConfig", "train_sft"), "minirlhf.stages.sft"),
    **dict.fromkeys(("PreferenceConfig", "build_preference_data"), "minirlhf.stages.preferences"),
    **dict.fromkeys(("RewardConfig", "train_reward"), "minirlhf.stages.reward"),
    **dict.fromkeys(("BestOfNConfig", "run_best_of_n"), "minirlhf.stages.best_of_n"),
    **dict.fromkeys(("PPOConfig", "train_ppo"), "minirlhf.stages.ppo"),
    **dict.fromkeys(("DPOConfig", "train_dpo"), "minirlhf.stages.dpo"),
    **dict.fromkeys(("dpo_loss",), "minirlhf.objectives.preference"),
    **dict.fromkeys(("PipelineConfig", "run_pipeline"), "minirlhf.pipeline"),
    **dict.fromkeys(("ExperimentConfig", "run_experiment"), "minirlhf.experiments"),
}

__all__ = ["Tensor", "no_grad", "is_grad_enabled", "unbroadcast", "ops", "configure_runtime",
           *_LAZY]


def __getattr__(name: str) -> Any:
    """``minirlhf.train_ppo`` and ``from minirlhf import train_ppo``: loaded on first use."""
    if name in _LAZY:
        module = import_module(_LAZY[name])
        value = module if module.__name__.endswith(f".{name}") else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'minirlhf' has no attribute {name!r}")
