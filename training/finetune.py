"""`wren finetune`: LoRA (PEFT) on chat data with the pretraining loop (`Trainer`).

    from wrenlm.training.finetune import FinetuneConfig, run_finetuning
    results = run_finetuning(FinetuneConfig(base_model="runs/wren-nano-shakespeare", data="builtin:arithmetic"))

Steps: check and render ALL the data first (chat template, labels on assistant tokens only), wrap the
base model with `get_peft_model` (Wren's default targets; the routed expert tensors too on MoE models),
train with the shared Accelerate loop (progress bar, periodic evaluation with exact match on the
held-out conversations, atomic checkpoints, exact resume, `accelerate launch` for several processes),
then save the adapter and the tokenizer to `output_dir` (`PeftModel.save_pretrained`) and, with
`merge`, a merged full model to `output_dir/merged` that loads with `AutoModelForCausalLM`.
"""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..output_dir import check_output_dir, write_text_atomic
from ..paths import DEFAULT_OUTPUT_DIR
from ..paths import FINETUNE_CONFIG_FILE as CONFIG_FILE
from ..paths import FINETUNE_RESULTS_FILE as RESULTS_FILE
from .accelerator import make_accelerator
from .callbacks import TrainerCallback
from .checkpointing import gathered_state_dict
from .config import TrainingConfig, config_to_dict
from .deepspeed_engine import is_deepspeed, model_init_context, without_zero3_init
from .engine_check import generates_here, parameters_are_sharded, planned_engine
from .fsdp import gathered_root, is_fsdp2_model
from .moe import moe_callbacks
from .nodes import NodeLayout, check_sharded_checkpoints
from .trainer import Trainer

DEFAULT_FINETUNE_OUTPUT_DIR = "runs/wren-lora"
MERGED_DIR = "merged"
EXPERT_CHOICES = ("auto", "yes", "no")


@dataclass
class FinetuneConfig(TrainingConfig):
    """LoRA fine-tuning settings on top of the loop's. The defaults fine-tune the `wren pretrain` model on
    `builtin:arithmetic` in a few CPU minutes (LoRA learns best with a higher LR than full fine-tuning)."""

    output_dir: str = DEFAULT_FINETUNE_OUTPUT_DIR
    base_model: str = DEFAULT_OUTPUT_DIR
    data: str = "builtin:arithmetic"
    # Evaluation conversations: a JSONL file or builtin:NAME (its test split); "none" turns evaluation off.
    # Unset: a built-in task's test split, or a seeded `val_fraction` of a JSONL file.
    eval_data: str | None = None
    val_fraction: float = 0.05
    train_size: int = 0  # built-in tasks: training conversations (0: the task's default)
    test_size: int = 0  # built-in tasks: test conversations (0: the task's default)
    max_length: int = 0  # longest conversation in tokens (0: the model's context); longer ones are errors

    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list[str] = field(default_factory=list)  # empty: Wren's defaults (every linear projection)
    lora_experts: str = "auto"  # LoRA on the routed expert tensors: auto (MoE models) / yes / no
    merge: bool = False

    exact_match_examples: int = 200  # held-out conversations scored by exact match at every evaluation (0: off)
    max_new_tokens: int = 32

    max_steps: int = 600
    per_device_batch_size: int = 32
    learning_rate: float = 2e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    eval_every: int = 200
    eval_batch_size: int = 64
    save_every: int = 200
    log_every: int = 20
    sample_prompts: list[str] = field(default_factory=list)  # not used: samples are answers to held-out prompts

    def validate(self) -> None:
        super().validate()
        if self.optimizer != "adamw":
            # LoRA's A/B factors are 2-D, but Muon would orthogonalise each factor's update, not their product's,
            # and alpha/r is calibrated for Adam-style updates: adapters keep AdamW (docs/fine-tuning.md).
            raise ValueError(
                f"`wren finetune` trains LoRA adapters with AdamW only; got --optimizer {self.optimizer}."
            )
        if self.lora_r <= 0 or self.lora_alpha <= 0:
            raise ValueError(f"`lora_r` and `lora_alpha` must be positive, got {self.lora_r} and {self.lora_alpha}.")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"`lora_dropout` must be in [0, 1), got {self.lora_dropout}.")
        if self.lora_experts not in EXPERT_CHOICES:
            raise ValueError(f"`lora_experts` must be one of {', '.join(EXPERT_CHOICES)}, got {self.lora_experts!r}.")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"`val_fraction` must be in [0, 1), got {self.val_fraction}.")
        for name in ("train_size", "test_size", "max_length", "exact_match_examples"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` must be >= 1, got {self.max_new_tokens}.")


class ExactMatchCallback(TrainerCallback):
    """After each evaluation, greedy answers to the held-out prompts scored with the exact-match metric."""

    def __init__(self, tokenizer, conversations, batch_size: int, max_new_tokens: int):
        self.tokenizer = tokenizer
        self.conversations = conversations
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.last: dict = {}

    def on_evaluate(self, trainer, step: int, metrics: dict) -> None:
        from .evaluation import score_exact_match

        acc = trainer.accelerator
        model = trainer.unwrapped_model
        # FSDP/ZeRO-3-sharded weights: every process generates alongside the main one (each forward gathers them).
        if generates_here(acc, model):
            was_training = model.training
            model.eval()
            with gathered_root(model):
                scored = score_exact_match(
                    model, self.tokenizer, self.conversations, self.batch_size, self.max_new_tokens
                )
            model.train(was_training)
        if acc.is_main_process:
            prefix = "eval_full/" if any(key.startswith("eval_full/") for key in metrics) else "eval/"
            self.last = {"exact_match": scored["exact_match"], "exact_match_examples": scored["examples"]}
            trainer.log({f"{prefix}exact_match": scored["exact_match"]}, step)
            from tqdm.auto import tqdm

            tqdm.write(
                f"[step {step}] exact match {scored['exact_match']:.3f} on {scored['examples']} held-out prompts"
            )
        acc.wait_for_everyone()


def _say(accelerator, message: str) -> None:
    if accelerator.is_main_process:
        from tqdm.auto import tqdm

        tqdm.write(message)


def load_base(path: str):
    """Base model + tokenizer, with a pointer to `wren pretrain` when the default model is missing."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import wrenlm  # noqa: F401  (Auto classes and PEFT defaults)

    from ..hub.loading import load_model_config

    if not Path(path).exists():
        hint = " Run `wren pretrain` first to make it." if path == DEFAULT_OUTPUT_DIR else ""
        raise FileNotFoundError(f"Base model folder {path!r} does not exist.{hint}")
    config = load_model_config(path, "Base model")
    return AutoModelForCausalLM.from_pretrained(path, config=config), AutoTokenizer.from_pretrained(path)


def _sample_fn(tokenizer, conversations, max_new_tokens: int):
    from .evaluation import generate_answers

    def sample(model, step):
        answers = generate_answers(model, tokenizer, conversations, max_new_tokens=max_new_tokens)
        return [f"{conv['messages'][-2]['content']} -> {answer}" for conv, answer in zip(conversations, answers)]

    return sample


def run_finetuning(config: FinetuneConfig, callbacks=(), accelerator=None, force: bool = False) -> dict:
    """The whole LoRA job; returns (and writes to `finetune_results.json`) the final figures.

    The output folder must be new, empty or an earlier `wren finetune` run's (continued), unless `force`."""
    import yaml
    from accelerate.utils import set_seed
    from peft import PeftModel, get_peft_model

    from ..tokenization.special_tokens import pad_token_id
    from .finetune_data import ChatEncoder, PadCollator, load_chat_splits
    from .lora import wren_lora_config
    from .pretrain import _cpu_threads_note, claim_output_dir

    config.validate()
    start = time.perf_counter()
    output_dir = Path(config.output_dir)
    continued = check_output_dir(output_dir, "finetune", force=force, resumable=True, legacy_files=(CONFIG_FILE,))
    accelerator = accelerator or make_accelerator(config)
    layout = NodeLayout.detect(accelerator, output_dir)
    check_sharded_checkpoints(layout, planned_engine(accelerator), output_dir)

    # Everything that can be wrong with the data is found before any training (and before touching checkpoints).
    splits = load_chat_splits(
        config.data,
        eval_data=config.eval_data,
        val_fraction=config.val_fraction,
        seed=config.seed,
        task_sizes=(config.train_size or None, config.test_size or None),
    )
    with model_init_context(accelerator):
        model, tokenizer = load_base(config.base_model)
    encoder = ChatEncoder(
        tokenizer, config.max_length or model.config.max_position_embeddings, vocab_size=model.config.vocab_size
    )
    train_rows = encoder.encode_all(splits["train"], what=config.data)
    eval_rows = encoder.encode_all(splits["eval"], what=config.eval_data or f"{config.data} (held out)")
    claim_output_dir(config, accelerator, "finetune", continued, layout)

    # The base stays frozen: an aux-loss-free router-bias update would move it outside the adapter.
    bias_rate = getattr(model.config, "router_bias_update_rate", 0.0)
    if bias_rate:
        model.config.router_bias_update_rate = 0.0
    set_seed(config.seed)
    experts = {"auto": None, "yes": True, "no": False}[config.lora_experts]
    lora_config = wren_lora_config(
        model.config,
        r=config.lora_r,
        alpha=config.lora_alpha,
        dropout=config.lora_dropout,
        target_modules=config.target_modules,
        experts=experts,
    )
    peft_model = get_peft_model(model, lora_config)
    trainable, total = peft_model.get_nb_trainable_parameters()
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / CONFIG_FILE).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))

    pad_id = pad_token_id(tokenizer)
    # Exact match and samples need a reply to compare with: conversations that end with the assistant.
    held_out = [conv for conv in splits["eval"] if conv["messages"][-1]["role"] == "assistant"]
    exact_match = None
    if held_out and config.exact_match_examples:
        exact_match = ExactMatchCallback(
            tokenizer, held_out[: config.exact_match_examples], config.eval_batch_size, config.max_new_tokens
        )
    periodic = eval_rows[: config.eval_blocks] if config.eval_blocks and config.eval_blocks < len(eval_rows) else None
    trainer = Trainer(
        peft_model,
        config,
        train_rows,
        eval_rows or None,
        tokenizer=tokenizer,
        collate_fn=PadCollator(pad_id),
        callbacks=[*moe_callbacks(model), *([exact_match] if exact_match else []), *callbacks],
        sample_fn=_sample_fn(tokenizer, held_out[:2], config.max_new_tokens) if held_out else None,
        periodic_eval_dataset=periodic,
        accelerator=accelerator,
        run_name="wren-finetune",
        node_layout=layout,
    )
    _say(
        accelerator,
        f"Data: {len(train_rows):,} training and {len(eval_rows):,} held-out conversations from {config.data}.\n"
        f"LoRA r={config.lora_r} alpha={config.lora_alpha} "
        f"on {sorted(peft_model.peft_config['default'].target_modules)}"
        + (f" + {peft_model.peft_config['default'].target_parameters}" if lora_config.target_parameters else "")
        + f": {trainable:,} trainable of {total:,} parameters; {accelerator.num_processes} process(es) on "
        f"{accelerator.device}{_cpu_threads_note(accelerator)}.\n"
        f"Training {config.max_steps} steps x {trainer.global_batch_size} conversations.",
    )
    state = trainer.train()
    adapter_model = trainer.unwrapped_model
    # FSDP2 / DeepSpeed: the adapter gathered from the shards or ZeRO partitions (every process takes part) before
    # the main process saves it; else the model's own state.
    sharded = is_fsdp2_model(trainer.model) or is_deepspeed(accelerator)
    adapter_state = gathered_state_dict(accelerator, trainer.model, trainable_only=True) if sharded else None
    if accelerator.is_main_process:  # before the final evaluation, so a failure there never loses the adapter
        adapter_model.save_pretrained(output_dir, state_dict=adapter_state)
        tokenizer.save_pretrained(output_dir)
    accelerator.wait_for_everyone()
    results = {
        "output_dir": str(output_dir),
        "base_model": config.base_model,
        "data": config.data,
        "global_step": state.global_step,
        "train_conversations": len(train_rows),
        "eval_conversations": len(eval_rows),
        "trainable_parameters": trainable,
        "num_parameters": total,
        "num_processes": accelerator.num_processes,
        "engine": trainer.engine,
        "train_seconds": state.elapsed_s,
    }
    failure = None
    try:
        metrics = trainer.evaluate(periodic=False, samples=False) if eval_rows else {}
        results.update({k.replace("eval_full/", "eval_"): v for k, v in metrics.items()})
        results.update({f"eval_{k}": v for k, v in exact_match.last.items()} if exact_match else {})
    except Exception as error:
        failure = error
        results["error"] = f"final evaluation failed: {type(error).__name__}: {error}"
    if accelerator.is_main_process:
        if config.merge:
            adapter_model = trainer.unwrapped_model
            if parameters_are_sharded(adapter_model):  # merging needs whole weights: the saved adapter, fresh base
                with without_zero3_init(accelerator):
                    adapter_model = PeftModel.from_pretrained(load_base(config.base_model)[0], output_dir)
            merged = adapter_model.merge_and_unload()
            merged.config.router_bias_update_rate = bias_rate
            merged.save_pretrained(output_dir / MERGED_DIR)
            tokenizer.save_pretrained(output_dir / MERGED_DIR)
            results["merged_dir"] = str(output_dir / MERGED_DIR)
        results["total_seconds"] = time.perf_counter() - start
        write_text_atomic(output_dir / RESULTS_FILE, json.dumps(results, indent=2) + "\n")
        if failure is None:
            shown = ", ".join(
                f"{key[5:]} {results[key]:.4f}"
                for key in ("eval_loss", "eval_perplexity", "eval_exact_match")
                if key in results
            )
            _say(accelerator, f"\nHeld-out: {shown or 'no evaluation set'}")
        _say(
            accelerator,
            f"Saved the LoRA adapter + tokenizer to {output_dir} ({results['total_seconds']:.0f}s in all)"
            + (f"; the final evaluation failed ({RESULTS_FILE})." if failure else "."),
        )
    accelerator.wait_for_everyone()
    trainer.end()
    if failure is not None:
        raise failure
    return results


__all__ = ["DEFAULT_FINETUNE_OUTPUT_DIR", "ExactMatchCallback", "FinetuneConfig", "load_base", "run_finetuning"]
