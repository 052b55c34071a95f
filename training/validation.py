"""Validation: next-token likelihood of held-out batches and sample generations.

    metrics = validation_metrics(model, loader, gather=accelerator.gather_for_metrics)
    # {"loss", "perplexity", "tokens"} (+ "bits_per_char", "chars" when the batches carry `num_chars`)
    for nll, tokens, chars in scored_batches(model, loader, device="cpu"): ...   # per sequence

`Trainer.evaluate` uses `validation_metrics`; `wren eval` (evaluation.py) feeds `scored_batches` into the
`evaluate` metric modules. Both end in `metrics/likelihood.py`, so training and `wren eval` report the
same figures for the same model and blocks, with the same edge cases.

Batches are dicts of tensors with `input_ids`, `labels` (-100: not scored; labels[t+1] is the target
after position t) and optionally `attention_mask` and `num_chars` (characters spelled by each row's
scored tokens).
"""

from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F

from ..tokenization.special_tokens import pad_token_id
from .metrics.likelihood import bits_per_character, mean_nll, perplexity_from_loss

NOT_MODEL_INPUTS = ("labels", "num_chars")


def per_sequence_nll(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100):
    """Summed next-token NLL (nats) and target count per row; logits[t] predicts labels[t+1]."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:].to(shift_logits.device)
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
    ).view(shift_labels.shape)
    valid = shift_labels != ignore_index
    return (nll * valid).sum(dim=1), valid.sum(dim=1)


@torch.no_grad()
def scored_batches(
    model, batches: Iterable[dict], device: torch.device | str | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Per batch: (summed NLL per sequence, scored tokens per sequence, `num_chars` or None).

    `device`: where to move the model inputs (None: the batches are already there, e.g. Accelerate's loaders).
    """
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k not in NOT_MODEL_INPUTS}
        if device is not None:
            inputs = {k: v.to(device) for k, v in inputs.items()}
        logits = model(**inputs, use_cache=False).logits
        nll, count = per_sequence_nll(logits, batch["labels"])
        yield nll, count, batch.get("num_chars")


@torch.no_grad()
def validation_metrics(model, batches: Iterable[dict], gather: Callable | None = None) -> dict:
    """Loss (mean NLL per scored token), perplexity and token count over all `batches` (+ bits per character
    and characters when they carry `num_chars`); `gather` pools them across processes, e.g.
    `accelerator.gather_for_metrics`, which also drops the samples repeated to even out the last batch."""
    total_nll, total_tokens, total_chars, has_chars = 0.0, 0, 0, False
    for nll, count, num_chars in scored_batches(model, batches):
        if num_chars is None:
            num_chars = torch.zeros_like(count)
        else:
            has_chars = True
        num_chars = num_chars.to(count.device, count.dtype)
        if gather is not None:
            nll, count, num_chars = gather((nll, count, num_chars))
        total_nll += float(nll.double().sum())
        total_tokens += int(count.sum())
        total_chars += int(num_chars.sum())
    loss = mean_nll(total_nll, total_tokens)
    metrics = {"loss": loss, "perplexity": perplexity_from_loss(loss), "tokens": total_tokens}
    if has_chars:
        metrics["bits_per_char"] = bits_per_character(total_nll, total_chars)
        metrics["chars"] = total_chars
    return metrics


# ----------------------------------------------------------------------------------------------
# Samples
def _prompt_ids(tokenizer, prompt: str) -> torch.Tensor:
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    if tokenizer.eos_token_id is not None:
        # Documents are packed as `EOS doc`; starting from EOS makes the prompt a document start.
        ids = torch.cat([torch.tensor([[tokenizer.eos_token_id]]), ids], dim=1)
    return ids


def _room(model_config, prompt_length: int) -> int | None:
    """Tokens that fit after a prompt in the context window (None: unbounded, dynamic NTK rope)."""
    rope = getattr(model_config, "rope_parameters", None) or {}
    if rope.get("rope_type") == "dynamic":
        return None
    return model_config.max_position_embeddings - prompt_length


def check_sample_prompts(tokenizer, prompts: list[str], model_config) -> None:
    """Refuse, before any training, a sample prompt that leaves no room in the context window to generate."""
    for prompt in prompts:
        length = _prompt_ids(tokenizer, prompt).shape[1]
        room = _room(model_config, length)
        if room is not None and room < 1:
            shown = prompt if len(prompt) <= 40 else prompt[:37] + "..."
            raise ValueError(
                f"Sample prompt {shown!r} is {length} tokens (with the document-start token), which fills the "
                f"model's context window of {model_config.max_position_embeddings}; shorten it or remove it from "
                "sample_prompts."
            )


def generate_text(model, tokenizer, prompts: list[str], max_new_tokens=60, temperature=0.8, top_k=40) -> list[str]:
    """Sample a continuation of each prompt (prompt included in the returned text), cut at the context window."""
    check_sample_prompts(tokenizer, prompts, model.config)
    device = next(model.parameters()).device
    texts = []
    for prompt in prompts:
        ids = _prompt_ids(tokenizer, prompt).to(device)
        room = _room(model.config, ids.shape[1])
        output = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            temperature=temperature,
            top_k=top_k,
            max_new_tokens=max_new_tokens if room is None else min(max_new_tokens, room),
            pad_token_id=pad_token_id(tokenizer),
            eos_token_id=tokenizer.eos_token_id,
        )
        texts.append(tokenizer.decode(output[0, 1:], skip_special_tokens=True))
    return texts


def sample_texts(accelerator, model, config, step: int, *, sample_fn=None, tokenizer=None) -> list[str]:
    """Short generations on the main process, with their own RNG (the training RNG is untouched).

    `model` is the unwrapped model; `sample_fn(model, step)` replaces `config.sample_prompts`; the seed is
    `config.seed + step`. With sharded parameters (FSDP2, ZeRO-3) every process generates alongside (each forward
    gathers the weights from all ranks) and the main process keeps the texts.
    Every process must call it (it ends with a barrier).
    """
    from .engine_check import generates_here
    from .fsdp import gathered_root

    texts: list[str] = []
    if generates_here(accelerator, model):
        was_training = model.training
        model.eval()
        devices = [accelerator.device] if accelerator.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), gathered_root(model):
            torch.manual_seed(config.seed + step)
            if sample_fn is not None:
                texts = list(sample_fn(model, step))
            elif tokenizer is not None and config.sample_prompts:
                texts = generate_text(
                    model,
                    tokenizer,
                    config.sample_prompts,
                    max_new_tokens=config.sample_max_new_tokens,
                    temperature=config.sample_temperature,
                    top_k=config.sample_top_k,
                )
        model.train(was_training)
    accelerator.wait_for_everyone()
    return texts if accelerator.is_main_process else []


__all__ = [
    "check_sample_prompts",
    "generate_text",
    "per_sequence_nll",
    "sample_texts",
    "scored_batches",
    "validation_metrics",
]
