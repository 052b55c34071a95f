"""Helpers for the LoRA / fine-tuning / evaluation tests (`wren_testing.finetune`)."""

import json
from pathlib import Path

import torch

import wrenlm
from wren_testing import tiny_config_kwargs, tiny_moe_config_kwargs


def save_tiny_base(tokenizer, path: Path, moe: bool = False, seed: int = 0, **overrides) -> Path:
    """A randomly initialised tiny Wren model sized to `tokenizer`, saved with it (a `--model` folder)."""
    make = tiny_moe_config_kwargs if moe else tiny_config_kwargs
    torch.manual_seed(seed)
    ids = {f"{name}_token_id": getattr(tokenizer, f"{name}_token_id") for name in ("pad", "bos", "eos")}
    model = wrenlm.WrenForCausalLM(wrenlm.WrenConfig(**make(vocab_size=len(tokenizer), **ids, **overrides)))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_jsonl(path: Path, records) -> Path:
    """One line per record: dicts are dumped as JSON, strings written as they are (to make broken lines)."""
    lines = [record if isinstance(record, str) else json.dumps(record) for record in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def chat(question: str, answer: str, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": [*messages, {"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def copy_digits_records(count: int, seed: int = 0) -> list[dict]:
    """'Copy: 4 7 1' -> '4 7 1': every conversation has the same token count (digits are single bytes)."""
    generator = torch.Generator().manual_seed(seed)
    digits = torch.randint(0, 10, (count, 3), generator=generator).tolist()
    return [chat("Copy: " + " ".join(map(str, row)), " ".join(map(str, row))) for row in digits]
