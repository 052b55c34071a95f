"""`wren pretrain`: tokenizer -> data -> Wren model -> Accelerate loop -> `save_pretrained`.

from wrenlm.training.pretrain import run_pretraining
from wrenlm.training.config import PretrainConfig
results = run_pretraining(PretrainConfig(max_steps=100, output_dir="runs/quick"))
"""

import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from ..output_dir import check_output_dir, mark_output_dir, write_text_atomic
from ..paths import TRAIN_CONFIG_FILE as CONFIG_FILE
from ..paths import TRAIN_RESULTS_FILE as RESULTS_FILE
from ..tokenization.special_tokens import pad_token_id
from .accelerator import make_accelerator
from .callbacks import TrainerCallback
from .checkpointing import CHECKPOINT_DIR, CheckpointManager
from .config import PretrainConfig, config_to_dict
from .data import build_lm_datasets, load_documents, split_documents
from .deepspeed_engine import model_init_context
from .engine_check import generates_here, planned_engine
from .fsdp import gathered_root
from .moe import moe_callbacks
from .nodes import NodeLayout, check_sharded_checkpoints
from .optim import describe_optimizer
from .tracking import METRICS_FILE
from .trainer import Trainer
from .validation import check_sample_prompts, generate_text

logger = logging.getLogger(__name__)

# What `save_pretrained` of a Wren tokenizer may write (copied to the other nodes when their folders are not shared).
TOKENIZER_FILES = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenization_wren.py",
]


def _say(accelerator, message: str) -> None:
    if accelerator.is_main_process:
        from tqdm.auto import tqdm

        tqdm.write(message)


def prepare_tokenizer(config: PretrainConfig, train_texts, accelerator, layout: NodeLayout | None = None):
    """`config.tokenizer` if given; else the tokenizer already in the output dir; else train one there.

    The main process decides (reuse or train); on several nodes without a shared output folder its files are
    copied into every node's folder, so each node reads its own copy."""
    from transformers import AutoTokenizer

    import wrenlm  # noqa: F401  (registers the Wren Auto classes)

    if config.tokenizer:
        return AutoTokenizer.from_pretrained(config.tokenizer)
    output_dir = Path(config.output_dir)
    layout = layout or NodeLayout.detect(accelerator, output_dir)
    reuse = [(output_dir / "tokenizer.json").exists()]
    if accelerator.num_processes > 1:
        torch.distributed.broadcast_object_list(reuse, src=0)  # the main process' folder decides
    if reuse[0]:
        layout.copy_to_nodes(output_dir, TOKENIZER_FILES)
        tokenizer = AutoTokenizer.from_pretrained(output_dir)
        _say(accelerator, f"Reusing the tokenizer in {output_dir} (vocabulary {len(tokenizer)}).")
        return tokenizer
    if accelerator.is_main_process:
        from wrenlm.tokenization import train_tokenizer

        start = time.perf_counter()
        mark_output_dir(output_dir, "pretrain")  # the output folder's first file (checked by run_pretraining)
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
    layout.copy_to_nodes(output_dir, TOKENIZER_FILES)
    return AutoTokenizer.from_pretrained(output_dir)


def model_config(config: PretrainConfig, tokenizer=None):
    """The `WrenConfig` the run trains: the preset, `config.model` on top, the tokenizer's vocabulary and special
    tokens. Without a tokenizer (`config.vocab_size` stands in), it checks the model settings before any work."""
    from huggingface_hub.errors import StrictDataclassError

    from wrenlm import preset_config
    from wrenlm.configuration import PRESETS

    overrides = dict(config.model)
    vocab_size = len(tokenizer) if tokenizer is not None else config.vocab_size
    overrides.setdefault("vocab_size", vocab_size)
    if overrides["vocab_size"] < vocab_size:
        raise ValueError(f"model.vocab_size {overrides['vocab_size']} is smaller than the tokenizer ({vocab_size}).")
    preset_ctx = PRESETS.get(config.preset, {}).get("max_position_embeddings", 0)
    overrides.setdefault("max_position_embeddings", max(preset_ctx, config.seq_len))
    for name in ("bos", "eos", "pad"):
        token_id = getattr(tokenizer, f"{name}_token_id", None)
        if token_id is not None:
            overrides.setdefault(f"{name}_token_id", token_id)
    try:
        wren_config = preset_config(config.preset, **overrides)
    except StrictDataclassError as error:
        raise ValueError(f"Invalid model settings: {' '.join(str(error).split())}") from None
    if wren_config.max_position_embeddings < config.seq_len:
        raise ValueError(
            f"seq_len {config.seq_len} exceeds the model's max_position_embeddings "
            f"{wren_config.max_position_embeddings}."
        )
    return wren_config


def build_model(config: PretrainConfig, tokenizer):
    from wrenlm import WrenForCausalLM

    return WrenForCausalLM(model_config(config, tokenizer))


def default_generation_config(tokenizer):
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad_token_id(tokenizer),
        do_sample=True,
        temperature=0.8,
        top_k=50,
        max_new_tokens=256,
    )


def _cpu_threads_note(accelerator) -> str:
    return f" ({torch.get_num_threads()} threads each)" if accelerator.device.type == "cpu" else ""


def claim_output_dir(config, accelerator, command: str, continued: bool, layout=None) -> None:
    """Mark the checked output folder as this command's. With `resume: never` drop the checkpoints and metrics an
    earlier run wrote there; in a folder that is not `continued` (new, or written into with --force) a metrics
    file is stale and goes too. Files wrenlm did not write, and the tokenizer, stay."""
    if layout.is_writer if layout is not None else accelerator.is_main_process:
        output_dir = Path(config.output_dir)
        mark_output_dir(output_dir, command)
        if config.resume == "never":
            CheckpointManager(output_dir / CHECKPOINT_DIR).remove_all()
        if config.resume == "never" or not continued:
            (output_dir / METRICS_FILE).unlink(missing_ok=True)
    accelerator.wait_for_everyone()


def run_pretraining(
    config: PretrainConfig, callbacks: list[TrainerCallback] | tuple = (), accelerator=None, force: bool = False
) -> dict:
    """The whole pretraining job; returns (and writes to `train_results.json`) the final figures.

    The output folder must be new, empty or an earlier `wren pretrain` run's (continued), unless `force`."""
    import yaml
    from accelerate.utils import set_seed

    config.validate()
    # A bad model setting fails here, not after a tokenizer was trained into the output folder.
    model_config(config)
    start = time.perf_counter()
    output_dir = Path(config.output_dir)
    continued = check_output_dir(output_dir, "pretrain", force=force, resumable=True, legacy_files=(CONFIG_FILE,))
    accelerator = accelerator or make_accelerator(config)
    layout = NodeLayout.detect(accelerator, output_dir)
    check_sharded_checkpoints(layout, planned_engine(accelerator), output_dir)

    # Each node's writer first (downloads, dataset caches), then the processes that read what it made.
    with layout.writer_first():
        documents = load_documents(
            config.data, text_field=config.text_field, hf_config=config.hf_config, hf_split=config.hf_split
        )
        splits = split_documents(documents, config.val_fraction, config.split_mode, seed=config.seed)
    tokenizer = prepare_tokenizer(config, splits["train"]["text"], accelerator, layout)
    with layout.writer_first():
        train, validation, stats = build_lm_datasets(splits, tokenizer, config.seq_len)
    periodic = None
    if config.eval_blocks and config.eval_blocks < len(validation):
        periodic = validation.select(range(config.eval_blocks))

    set_seed(config.seed)
    with model_init_context(accelerator):
        model = build_model(config, tokenizer)
    num_params = sum(p.numel() for p in model.parameters())  # before ZeRO-3 partitions them
    check_sample_prompts(tokenizer, config.sample_prompts, model.config)
    claim_output_dir(config, accelerator, "pretrain", continued, layout)  # every input checked: the first write
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
        node_layout=layout,
    )
    tokens_per_step = trainer.global_batch_size * config.seq_len
    _say(
        accelerator,
        f"Data: {stats['train_tokens']:,} training tokens in {stats['train_blocks']:,} blocks of {config.seq_len}, "
        f"{stats['validation_blocks']:,} validation blocks ({stats['validation_chars']:,} characters).\n"
        f"Model: {config.preset} with {num_params / 1e6:.2f}M parameters; {accelerator.num_processes} process(es) on "
        f"{accelerator.device}{_cpu_threads_note(accelerator)}, mixed precision {accelerator.mixed_precision}.\n"
        f"Training {config.max_steps} steps x {trainer.global_batch_size} sequences ({tokens_per_step:,} tokens/step, "
        f"{config.max_steps * tokens_per_step / max(stats['train_tokens'], 1):.2f} epochs) with "
        f"{describe_optimizer(config, trainer.optimizer_name)}, {config.lr_schedule} schedule.",
    )
    state = trainer.train()
    # Saved before the final evaluation and samples, so a failure there never loses the trained model.
    trainer.save_model(output_dir, tokenizer=tokenizer, generation_config=default_generation_config(tokenizer))
    results = {
        "output_dir": str(output_dir),
        "global_step": state.global_step,
        "epochs": state.global_step * tokens_per_step / max(stats["train_tokens"], 1),
        "num_parameters": num_params,
        "num_processes": accelerator.num_processes,
        "engine": trainer.engine,
        "train_seconds": state.elapsed_s,
        "data": stats,
    }
    try:
        metrics = trainer.evaluate(periodic=False, samples=False) if config.final_eval else {}
        results.update({k.replace("eval_full/", "validation_"): v for k, v in metrics.items()})
        results["samples"] = _final_samples(config, trainer, tokenizer)
    except Exception as error:
        results["error"] = f"final evaluation failed: {type(error).__name__}: {error}"
        _write_results(accelerator, output_dir, results, start)
        _say(accelerator, f"\nSaved model + tokenizer to {output_dir}; the final evaluation failed ({RESULTS_FILE}).")
        trainer.end()
        raise
    _write_results(accelerator, output_dir, results, start)
    if accelerator.is_main_process:
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
        for text in results["samples"]:
            _say(accelerator, f"\n--- sample ---\n{text}")
        _say(accelerator, f"\nSaved model + tokenizer to {output_dir} ({results['total_seconds']:.0f}s in all).")
    trainer.end()
    return results


def _final_samples(config: PretrainConfig, trainer: Trainer, tokenizer) -> list[str]:
    model = trainer.unwrapped_model
    # FSDP/ZeRO-3-sharded weights: every process runs the generation with the main one (each forward gathers them).
    if not (generates_here(trainer.accelerator, model) and config.sample_prompts):
        return []
    with torch.random.fork_rng(), gathered_root(model):
        torch.manual_seed(config.seed)
        samples = generate_text(
            model,
            tokenizer,
            config.sample_prompts,
            max_new_tokens=max(config.sample_max_new_tokens, 120),
            temperature=config.sample_temperature,
            top_k=config.sample_top_k,
        )
    return samples if trainer.accelerator.is_main_process else []


def _write_results(accelerator, output_dir: Path, results: dict, start: float) -> None:
    results["total_seconds"] = time.perf_counter() - start
    if accelerator.is_main_process:
        write_text_atomic(output_dir / RESULTS_FILE, json.dumps(results, indent=2))


__all__ = [
    "build_model",
    "claim_output_dir",
    "default_generation_config",
    "model_config",
    "prepare_tokenizer",
    "run_pretraining",
]
