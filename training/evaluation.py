"""Evaluation with `evaluate` and the shipped metric modules: what `wren eval` runs.

    from wrenlm.training.evaluation import run_evaluation
    results = run_evaluation("runs/wren-nano-shakespeare", data="builtin:arithmetic", metrics=["exact_match"],
                             adapter="runs/wren-lora-arithmetic")

Data:
* `default`: the default corpus' validation split, cut exactly as `wren pretrain` cuts it;
* text files/folders (`.txt`, `.md`, JSONL with a `text` field): every document;
* chat data (`builtin:NAME`: the task's test split; messages JSONL): perplexity and bits per character
  over the assistant tokens (what fine-tuning trains), exact match of the generated last reply.

Text is packed like pretraining validation (`data.build_eval_blocks`): overlapping blocks, every token
predicted once with in-block context, characters counted from the tokens' bytes, so bits per character
is exact. Exact match: greedy decoding of each conversation's last assistant turn from the chat template's
generation prompt (`add_generation_prompt=True`), stopped at the turn's end, compared after stripping.
"""

import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from ..hub.loading import load_model_and_tokenizer, resolve_model_and_adapter
from ..output_dir import write_text_atomic
from ..tokenization.special_tokens import pad_token_id, stop_token_ids
from .metrics import METRIC_NAMES, load_metric

logger = logging.getLogger(__name__)

DEFAULT_DATA = "default"
LIKELIHOOD_METRICS = ("perplexity", "bits_per_character")


# ----------------------------------------------------------------------------------------------
# Loading data (models and adapters load in `wrenlm.hub.loading`)
def is_chat_data(data: str) -> bool:
    """Built-in tasks and JSONL files whose first record has `messages` are chat data."""
    from .tasks import is_builtin

    if is_builtin(data):
        return True
    path = Path(data)
    if not (path.is_file() and path.suffix.lower() == ".jsonl"):
        return False
    from wrenlm.tokenization.pretokenization import decode_utf8

    offset = 0
    with open(path, "rb") as handle:
        for raw in handle:
            if raw.strip():
                line = decode_utf8(raw, path, offset)
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    return True  # let the chat reader report it with its line number
                return isinstance(record, dict) and "messages" in record
            offset += len(raw)
    return False


def text_eval_blocks(data: str, tokenizer, seq_len: int):
    """Text documents -> exact-character blocks: `default` is pretraining's validation split, else all documents."""
    from .config import PretrainConfig
    from .data import build_eval_blocks, load_documents, split_documents

    if data == DEFAULT_DATA:
        pretrain = PretrainConfig()
        documents = split_documents(
            load_documents([DEFAULT_DATA]), pretrain.val_fraction, pretrain.split_mode, seed=pretrain.seed
        )["validation"]
    else:
        documents = load_documents([data])
    return build_eval_blocks(documents, tokenizer, seq_len, desc="evaluation")


# ----------------------------------------------------------------------------------------------
# Scoring
def batched(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def score_likelihood(model, batches: Iterable[dict], metrics: Sequence[str]) -> dict:
    """Feed per-sequence NLL sums (and character counts) of `batches` into the likelihood metrics
    (the validation path training uses too: `validation.scored_batches`)."""
    from .validation import scored_batches

    modules = {name: load_metric(name) for name in metrics}
    device = next(model.parameters()).device
    for nll, count, num_chars in scored_batches(model, batches, device=device):
        nll = nll.double().tolist()
        if "perplexity" in modules:
            modules["perplexity"].add_batch(nll=nll, num_tokens=count.tolist())
        if "bits_per_character" in modules:
            modules["bits_per_character"].add_batch(nll=nll, num_chars=num_chars.tolist())
    results = {}
    for module in modules.values():
        results.update(module.compute())
    return results


def reference_answer(messages: list[dict]) -> str:
    if not messages or messages[-1].get("role") != "assistant":
        raise ValueError("Exact match needs conversations that end with the assistant's reply.")
    return messages[-1]["content"]


@torch.no_grad()
def generate_answers(model, tokenizer, conversations: Sequence[dict], batch_size: int = 32, max_new_tokens: int = 32):
    """Greedy replies to each conversation's prompt (everything before its last assistant turn)."""
    from transformers import GenerationConfig

    pad_id = pad_token_id(tokenizer)
    # Neutral sampling fields: unset ones would be taken from the model's own (sampling) generation config.
    generation_config = GenerationConfig(
        do_sample=False,
        temperature=1.0,
        top_k=None,
        top_p=None,
        max_new_tokens=max_new_tokens,
        eos_token_id=stop_token_ids(tokenizer, model.generation_config),
        pad_token_id=pad_id,
    )
    device = next(model.parameters()).device
    answers = []
    for chunk in batched(conversations, batch_size):
        prompts = [
            tokenizer.apply_chat_template(
                conv["messages"][:-1], add_generation_prompt=True, tokenize=True, return_dict=False
            )
            for conv in chunk
        ]
        # Left padding: every prompt ends where generation starts.
        width = max(len(p) for p in prompts)
        input_ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], device=device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        output = model.generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config
        )
        answers += tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)
    return answers


def score_exact_match(model, tokenizer, conversations: Sequence[dict], batch_size=32, max_new_tokens=32, samples=5):
    """`exact_match`, `matches`, `examples` and the first `samples` (prompt, expected, answer) triples."""
    references = [reference_answer(conv["messages"]) for conv in conversations]
    answers = generate_answers(model, tokenizer, conversations, batch_size, max_new_tokens)
    metric = load_metric("exact_match")
    results = metric.compute(predictions=answers, references=references)
    results["samples"] = [
        {
            "prompt": conv["messages"][-2]["content"] if len(conv["messages"]) > 1 else "",
            "expected": ref,
            "answer": ans,
        }
        for conv, ref, ans in list(zip(conversations, references, answers))[:samples]
    ]
    return results


# ----------------------------------------------------------------------------------------------
def run_evaluation(
    model_dir: str | None,
    *,
    data: str = DEFAULT_DATA,
    metrics: Sequence[str] = ("perplexity",),
    adapter: str | None = None,
    out: str | os.PathLike | None = None,
    batch_size: int = 16,
    seq_len: int = 256,
    max_new_tokens: int = 32,
    limit: int = 0,
    device: str | None = None,
) -> dict:
    """Score a model (+ adapter) on `data`; returns the results (and writes them as JSON to `out`)."""
    unknown = [m for m in metrics if m not in METRIC_NAMES]
    if unknown or not metrics:
        raise ValueError(f"Unknown metric(s) {unknown}; choose from {', '.join(METRIC_NAMES)}.")
    if limit < 0 or batch_size < 1 or max_new_tokens < 1:
        raise ValueError("--limit must be >= 0, --batch-size and --max-new-tokens >= 1.")
    start = time.perf_counter()
    chat = is_chat_data(data)
    if "exact_match" in metrics and not chat:
        raise ValueError(f"exact_match needs chat data (builtin:NAME or a messages JSONL file), not {data!r}.")
    model_dir, adapter = resolve_model_and_adapter(model_dir, adapter)
    model, tokenizer = load_model_and_tokenizer(model_dir, adapter, device)
    results: dict = {"model": model_dir, "adapter": adapter, "data": data, "metrics": {}}
    likelihood = [m for m in metrics if m in LIKELIHOOD_METRICS]
    if chat:
        from .finetune_data import ChatEncoder, PadCollator, load_chat_examples

        conversations = load_chat_examples(data)
        if limit:
            conversations = conversations[:limit]
        results["examples"] = len(conversations)
        if likelihood:
            encoder = ChatEncoder(tokenizer, max_length=model.config.max_position_embeddings)
            rows = encoder.encode_all(conversations, what=data)
            collate = PadCollator(pad_token_id(tokenizer))
            results["metrics"].update(
                score_likelihood(model, (collate(chunk) for chunk in batched(rows, batch_size)), likelihood)
            )
        if "exact_match" in metrics:
            scored = score_exact_match(model, tokenizer, conversations, batch_size, max_new_tokens)
            results["samples"] = scored.pop("samples")
            results["metrics"].update(scored)
    else:
        from .data import collate_blocks

        context = model.config.max_position_embeddings
        if seq_len > context:
            raise ValueError(f"--seq-len {seq_len} exceeds the model's context ({context} positions).")
        blocks = text_eval_blocks(data, tokenizer, seq_len)
        if limit:
            blocks = blocks.select(range(min(limit, len(blocks))))
        results["blocks"] = len(blocks)
        loader = torch.utils.data.DataLoader(blocks, batch_size=batch_size, collate_fn=collate_blocks)
        results["metrics"].update(score_likelihood(model, loader, likelihood))
    results["seconds"] = time.perf_counter() - start
    if out is not None:
        write_text_atomic(out, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return results


__all__ = [
    "DEFAULT_DATA",
    "generate_answers",
    "is_chat_data",
    "load_model_and_tokenizer",
    "reference_answer",
    "run_evaluation",
    "score_exact_match",
    "score_likelihood",
    "stop_token_ids",
    "text_eval_blocks",
]
