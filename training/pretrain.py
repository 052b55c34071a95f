"""`wren pretrain`: tokenizer -> data -> Wren model -> Accelerate loop -> `save_pretrained`.

from wrenlm.training.pretrain import run_pretraining
from wrenlm.training.config import PretrainConfig
results = run_pretraining(PretrainConfig(max_steps=100, output_dir="runs/quick"))
"""

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import torch

from .accelerator import make_accelerator
from .callbacks import TrainerCallback
from .checkpointing import CHECKPOINT_DIR
from .config import PretrainConfig, config_to_dict
from .data import build_lm_datasets, load_documents, split_documents
from .deepspeed_engine import generation_needs_every_process, model_init_context
from .moe import moe_callbacks
from .tracking import METRICS_FILE
from .trainer import Trainer
from .validation import generate_text

logger = logging.getLogger(__name__)

RESULTS_FILE = "train_results.json"
CONFIG_FILE = "training_config.yaml"


def _say(accelerator, message: str) -> None:
    if accelerator.is_main_process:
        from tqdm.auto import tqdm

        tqdm.write(message)


def prepare_tokenizer(config: PretrainConfig, train_texts, accelerator):
    """`config.tokenizer` if given; else the tokenizer already in the output dir; else train one there."""
    from transformers import AutoTokenizer

    import wrenlm  # noqa: F401  (registers the Wren Auto classes)

    if config.tokenizer:
        return AutoTokenizer.from_pretrained(config.tokenizer)
    output_dir = Path(config.output_dir)
    if (output_dir / "tokenizer.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(output_dir)
        _say(accelerator, f"Reusing the tokenizer in {output_dir} (vocabulary {len(tokenizer)}).")
        return tokenizer
    if accelerator.is_main_process:
        from wrenlm.tokenization import train_tokenizer

        start = time.perf_counter()
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="wren-tokenizer-") as tmp:
            # Only the training split, one file per document, so validation text never shapes the vocabulary.
            for index, text in enumerate(train_texts):
                (Path(tmp) / f"{index:06d}.txt").write_text(text, encoding="utf-8")
            tokenizer = train_tokenizer(
                [tmp],
                vocab_size=config.vocab_size,
                min_frequency=config.tokenizer_min_frequency,
                show_progress=config.progress_bar,
            )
        tokenizer.save_pretrained(output_dir)
        _say(
            accelerator,
            f"Trained a byte-level BPE tokenizer (vocabulary {len(tokenizer)}) in {time.perf_counter() - start:.1f}s.",
        )
    accelerator.wait_for_everyone()
    return AutoTokenizer.from_pretrained(output_dir)


def build_model(config: PretrainConfig, tokenizer):
    from wrenlm.configuration import PRESETS

    from wrenlm import WrenForCausalLM, preset_config

    overrides = dict(config.model)
    overrides.setdefault("vocab_size", len(tokenizer))
    if overrides["vocab_size"] < len(tokenizer):
        raise ValueError(
            f"model.vocab_size {overrides['vocab_size']} is smaller than the tokenizer ({len(tokenizer)})."
        )
    preset_ctx = PRESETS.get(config.preset, {}).get("max_position_embeddings", 0)
    overrides.setdefault("max_position_embeddings", max(preset_ctx, config.seq_len))
    for name in ("bos", "eos", "pad"):
        token_id = getattr(tokenizer, f"{name}_token_id")
        if token_id is not None:
            overrides.setdefault(f"{name}_token_id", token_id)
    model_config = preset_config(config.preset, **overrides)
    if model_config.max_position_embeddings < config.seq_len:
        raise ValueError(
            f"seq_len {config.seq_len} exceeds the model's max_position_embeddings "
            f"{model_config.max_position_embeddings}."
        )
    return WrenForCausalLM(model_config)


def default_generation_config(tokenizer):
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        do_sample=True,
        temperature=0.8,
        top_k=50,
        max_new_tokens=256,
    )


def _start_over(config: PretrainConfig, accelerator) -> None:
    """`resume: never`: drop the old checkpoints and metrics of this output dir (the tokenizer stays)."""
    if accelerator.is_main_process:
        output_dir = Path(config.output_dir)
        shutil.rmtree(output_dir / CHECKPOINT_DIR, ignore_errors=True)
        (output_dir / METRICS_FILE).unlink(missing_ok=True)
    accelerator.wait_for_everyone()


def run_pretraining(config: PretrainConfig, callbacks: list[TrainerCallback] | tuple = (), accelerator=None) -> dict:
    """The whole pretraining job; returns (and writes to `train_results.json`) the final figures."""
    import yaml
    from accelerate.utils import set_seed

    config.validate()
    start = time.perf_counter()
    accelerator = accelerator or make_accelerator(config)
    output_dir = Path(config.output_dir)
    if config.resume == "never":
        _start_over(config, accelerator)

    with accelerator.main_process_first():
        documents = load_documents(
            config.data, text_field=config.text_field, hf_config=config.hf_config, hf_split=config.hf_split
        )
        splits = split_documents(documents, config.val_fraction, config.split_mode, seed=config.seed)
    tokenizer = prepare_tokenizer(config, splits["train"]["text"], accelerator)
    with accelerator.main_process_first():
        train, validation, stats = build_lm_datasets(splits, tokenizer, config.seq_len)
    periodic = None
    if config.eval_blocks and config.eval_blocks < len(validation):
        periodic = validation.select(range(config.eval_blocks))

    set_seed(config.seed)
    with model_init_context(accelerator):
        model = build_model(config, tokenizer)
    num_params = sum(p.numel() for p in model.parameters())  # before ZeRO-3 partitions them
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / CONFIG_FILE).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))

    trainer = Trainer(
        model,
        config,
        train,
        validation,
        tokenizer=tokenizer,
        periodic_eval_dataset=periodic,
        callbacks=[*moe_callbacks(model), *callbacks],
        accelerator=accelerator,
    )
    tokens_per_step = trainer.global_batch_size * config.seq_len
    _say(
        accelerator,
        f"Data: {stats['train_tokens']:,} training tokens in {stats['train_blocks']:,} blocks of {config.seq_len}, "
        f"{stats['validation_blocks']:,} validation blocks ({stats['validation_chars']:,} characters).\n"
        f"Model: {config.preset} with {num_params / 1e6:.2f}M parameters; {accelerator.num_processes} process(es) on "
        f"{accelerator.device}, mixed precision {accelerator.mixed_precision}.\n"
        f"Training {config.max_steps} steps x {trainer.global_batch_size} sequences ({tokens_per_step:,} tokens/step, "
        f"{config.max_steps * tokens_per_step / max(stats['train_tokens'], 1):.2f} epochs).",
    )
    state = trainer.train()
    metrics = trainer.evaluate(periodic=False, samples=False) if config.final_eval else {}
    generation_config = default_generation_config(tokenizer)
    trainer.save_model(output_dir, tokenizer=tokenizer, generation_config=generation_config)

    samples = []
    if config.sample_prompts and (accelerator.is_main_process or generation_needs_every_process(accelerator)):
        with torch.random.fork_rng():
            torch.manual_seed(config.seed)
            samples = generate_text(
                trainer.unwrapped_model,
                tokenizer,
                config.sample_prompts,
                max_new_tokens=max(config.sample_max_new_tokens, 120),
                temperature=config.sample_temperature,
                top_k=config.sample_top_k,
            )
    results = {
        "output_dir": str(output_dir),
        "global_step": state.global_step,
        "epochs": state.global_step * tokens_per_step / max(stats["train_tokens"], 1),
        "num_parameters": num_params,
        "num_processes": accelerator.num_processes,
        "train_seconds": state.elapsed_s,
        "total_seconds": time.perf_counter() - start,
        **{k.replace("eval_full/", "validation_"): v for k, v in metrics.items()},
        "data": stats,
        "samples": samples,
    }
    if accelerator.is_main_process:
        (output_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2))
        summary = ", ".join(
            f"{name} {results[key]:.4f}"
            for name, key in (
                ("loss", "validation_loss"),
                ("perplexity", "validation_perplexity"),
                ("bits/char", "validation_bits_per_char"),
            )
            if key in results
        )
        _say(accelerator, f"\nValidation (all {stats['validation_blocks']} blocks): {summary}")
        for text in samples:
            _say(accelerator, f"\n--- sample ---\n{text}")
        _say(accelerator, f"\nSaved model + tokenizer to {output_dir} ({results['total_seconds']:.0f}s in all).")
    trainer.end()
    return results


__all__ = ["build_model", "default_generation_config", "prepare_tokenizer", "run_pretraining"]
