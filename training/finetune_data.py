"""Chat data for fine-tuning and evaluation: validated messages JSONL or a built-in task, rendered with
the tokenizer's chat template, with labels on the assistant's tokens only.

A JSONL file holds one conversation per line: `{"messages": [{"role": "user", "content": "..."},
{"role": "assistant", "content": "..."}]}` (roles: system, user, assistant; blank lines are skipped).
`read_chat_jsonl` checks the WHOLE file first and raises one error listing every bad line with its
number, so training never starts on half a file.

Each example becomes `input_ids`, `labels` (-100 except where the template's `{% generation %}` marks
the assistant's reply, i.e. its content and the `<|im_end|>` that closes it) and `num_chars`
(characters those target tokens spell, for exact bits per character).
"""

import io
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

import torch

from .tasks import is_builtin, load_task

ROLES = ("system", "user", "assistant")
_MAX_LISTED_ERRORS = 50


class ChatDataError(ValueError):
    """Bad chat data; `problems` holds (line number, message) pairs (line 0: the file as a whole)."""

    def __init__(self, source: str, problems: list[tuple[int, str]]):
        self.source = source
        self.problems = problems
        shown = [f"  line {line}: {message}" if line else f"  {message}" for line, message in problems]
        if len(shown) > _MAX_LISTED_ERRORS:
            shown = shown[:_MAX_LISTED_ERRORS] + [f"  ... and {len(problems) - _MAX_LISTED_ERRORS} more"]
        super().__init__(f"{source}: {len(problems)} bad line(s), nothing was trained on it:\n" + "\n".join(shown))


def message_problems(record) -> list[str]:
    """What is wrong with one conversation record (empty list: nothing)."""
    if not isinstance(record, dict):
        return [f"expected a JSON object with a 'messages' list, got {type(record).__name__}"]
    if "messages" not in record:
        return [f"missing 'messages' (keys: {', '.join(sorted(record)) or 'none'})"]
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        return ["'messages' must be a non-empty list"]
    problems = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            problems.append(f"message {index} is not an object")
            continue
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            problems.append(f"message {index} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            problems.append(f"message {index} has no string 'content'")
        elif not content.strip():
            problems.append(f"message {index} ({role}) has empty content")
    if not problems and not any(m["role"] == "assistant" for m in messages):
        problems.append("no assistant message (nothing to train on)")
    return problems


def read_chat_jsonl(path: str | os.PathLike) -> list[dict]:
    """All conversations of a messages-format JSONL file, each with its `line` number; validates every line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Chat data file {str(path)!r} does not exist.")
    from wrenlm.tokenization.pretokenization import decode_utf8

    records, problems = [], []
    # decode_utf8 names the offset of a bad byte and drops a leading byte-order mark (files saved by Windows tools).
    lines = io.StringIO(decode_utf8(path.read_bytes(), path), newline=None)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append((number, f"invalid JSON ({error.msg} at column {error.colno})"))
            continue
        found = message_problems(record)
        problems.extend((number, message) for message in found)
        if not found:
            records.append({"messages": record["messages"], "line": number})
    if problems:
        raise ChatDataError(str(path), problems)
    if not records:
        raise ChatDataError(str(path), [(0, "no conversations (the file is empty)")])
    return records


def load_chat_splits(
    data: str, *, eval_data: str | None = None, val_fraction: float = 0.05, seed: int = 0, task_sizes=(None, None)
) -> dict[str, list[dict]]:
    """`{"train": [...], "eval": [...]}` conversations.

    `data` is `builtin:NAME` (its train split; eval: its test split) or a JSONL file. `eval_data` (a file or
    `builtin:NAME`, whose test split is used) overrides the evaluation set; `"none"` turns it off. Without it a
    file's evaluation set is a `val_fraction` of its conversations picked with `seed` (none when `val_fraction` is 0).
    Built-in tasks always use their fixed split (not `seed`), so `wren eval` scores the very conversations
    fine-tuning held out, whatever seed the training run used.
    """
    if is_builtin(data):
        splits = load_task(data, train_size=task_sizes[0], test_size=task_sizes[1])
        train, held_out = splits["train"], splits["test"]
    else:
        train = read_chat_jsonl(data)
        held_out = []
        if eval_data is None and val_fraction > 0:
            if not 0 < val_fraction < 1:
                raise ValueError(f"`val_fraction` must be in [0, 1), got {val_fraction}.")
            if len(train) < 2:
                raise ValueError(f"{data} holds one conversation; it cannot also give a validation split.")
            order = list(range(len(train)))
            random.Random(seed).shuffle(order)
            num_val = max(1, round(len(train) * val_fraction))
            held = set(order[:num_val])
            held_out = [ex for i, ex in enumerate(train) if i in held]
            train = [ex for i, ex in enumerate(train) if i not in held]
    if eval_data is not None:
        held_out = [] if eval_data == "none" else load_chat_examples(eval_data, test_size=task_sizes[1])
    return {"train": train, "eval": held_out}


def load_chat_examples(data: str, *, test_size: int | None = None) -> list[dict]:
    """Evaluation conversations: a built-in task's test split, or every conversation of a JSONL file."""
    if is_builtin(data):
        return load_task(data, train_size=0, test_size=test_size)["test"]
    return read_chat_jsonl(data)


def _describe(example: dict, index: int) -> str:
    return f"line {example['line']}" if "line" in example else f"example {index}"


class ChatEncoder:
    """Renders conversations with the tokenizer's chat template into training rows."""

    def __init__(self, tokenizer, max_length: int, vocab_size: int | None = None):
        """`vocab_size`: the model's; token ids at or above it are reported by `encode_all` (the model does
        not check training batches on accelerators, where reading the check back would stall every step)."""
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("The tokenizer has no chat template; fine-tuning on chat data needs one.")
        from .data import token_char_table

        self.tokenizer = tokenizer
        self.max_length = max_length
        self.vocab_size = vocab_size
        self.char_table = token_char_table(tokenizer)

    def encode(self, messages: list[dict]) -> dict:
        rendered = self.tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        input_ids = list(rendered["input_ids"])
        mask = list(rendered["assistant_masks"])
        labels = [token if keep else -100 for token, keep in zip(input_ids, mask)]
        return {"input_ids": input_ids, "labels": labels, "num_chars": self._chars(labels)}

    def _chars(self, labels: list[int]) -> int:
        targets = [t for t in labels if t != -100]
        if self.char_table is not None:
            return int(self.char_table[targets].sum()) if targets else 0
        # Not byte-level: count what the targets decode to (exact per example).
        return len(self.tokenizer.decode(targets, skip_special_tokens=True))

    def encode_all(self, examples: Sequence[dict], what: str = "data") -> list[dict]:
        """Encode every conversation; too-long or label-free ones are all reported together, before training."""
        rows, problems = [], []
        for index, example in enumerate(examples):
            row = self.encode(example["messages"])
            if len(row["input_ids"]) > self.max_length:
                problems.append(
                    f"{_describe(example, index)}: {len(row['input_ids'])} tokens, more than --max-length "
                    f"{self.max_length}"
                )
            elif self.vocab_size is not None and max(row["input_ids"], default=0) >= self.vocab_size:
                problems.append(
                    f"{_describe(example, index)}: token id {max(row['input_ids'])} is outside the model's vocabulary "
                    f"of size {self.vocab_size}; check that the tokenizer matches the model"
                )
            elif all(label == -100 for label in row["labels"]):
                problems.append(
                    f"{_describe(example, index)}: no assistant tokens to train on (the chat template must mark "
                    "replies with {% generation %})"
                )
            rows.append(row)
        if problems:
            raise ValueError(
                f"{what}: {len(problems)} conversation(s) cannot be used:\n  " + "\n  ".join(problems[:50])
            )
        return rows


class PadCollator:
    """Right-pads rows to the longest of the batch (labels -100, attention 0 on padding)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(row["input_ids"]) for row in rows)
        batch = {"input_ids": [], "labels": [], "attention_mask": []}
        for row in rows:
            pad = length - len(row["input_ids"])
            batch["input_ids"].append(list(row["input_ids"]) + [self.pad_token_id] * pad)
            batch["labels"].append(list(row["labels"]) + [-100] * pad)
            batch["attention_mask"].append([1] * len(row["input_ids"]) + [0] * pad)
        tensors = {key: torch.tensor(value, dtype=torch.long) for key, value in batch.items()}
        tensors["num_chars"] = torch.tensor([row["num_chars"] for row in rows], dtype=torch.long)
        return tensors


__all__ = [
    "ROLES",
    "ChatDataError",
    "ChatEncoder",
    "PadCollator",
    "load_chat_examples",
    "load_chat_splits",
    "message_problems",
    "read_chat_jsonl",
]
