"""Pretraining data with `datasets`: load documents, split, tokenize (cached `map`), pack into blocks.

Layout produced by `build_lm_datasets`:

* train: the documents' tokens joined as ``doc1 EOS doc2 EOS ...`` and cut into non-overlapping
  blocks of `block_size` tokens (the incomplete tail is dropped); column `input_ids`.
* validation: the stream ``EOS doc1 EOS doc2 EOS ...`` cut into blocks of `block_size` tokens that
  overlap by one token (block k starts at k*(block_size-1)), so every token after the leading EOS is
  a prediction target exactly once, always with in-block context. The last block is right-padded
  (labels -100, attention 0). Each block carries `num_chars`: the characters of the text its target
  tokens spell, so bits per character = sum NLL / (ln 2 * sum num_chars) is exact, for the full
  split or any subset of blocks.

Characters per token come from the byte-level vocabulary (a character is counted on its UTF-8 lead
byte, so a character split across tokens counts once); every validation document is checked to
add up to `len(text)`. Tokenizers that are not byte-level fall back to the offset mapping
(exact per document, approximate per block), with a warning.

Splits are deterministic: `tail` holds out the last `val_fraction` of every document (cut at a line
break), `documents` holds out whole documents chosen by a seeded permutation; `auto` takes
`documents` when there are at least 200 documents, else `tail`.
"""

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..tokenization.special_tokens import pad_token_id

logger = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".text", ".md")
JSON_SUFFIXES = (".jsonl", ".json")
DEFAULT_CORPUS_ALIASES = ("shakespeare", "default")
_AUTO_DOCUMENT_SPLIT_MIN_DOCS = 200


# ----------------------------------------------------------------------------------------------
# Loading
def _collect_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = [p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES + JSON_SUFFIXES]
    files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(path).parts)]
    if not files:
        raise FileNotFoundError(f"No text files ({', '.join(TEXT_SUFFIXES + JSON_SUFFIXES)}) found under {path}.")
    return files


def _looks_like_path(spec: str) -> bool:
    """Hub names are `name` or `org/name`; anything else path-shaped is a missing local path."""
    return (
        spec.startswith((".", "/", "~"))
        or spec.count("/") > 1
        or "\\" in spec
        or spec.lower().endswith(TEXT_SUFFIXES + JSON_SUFFIXES)
    )


def load_documents(
    inputs: Sequence[str] | None = None,
    *,
    text_field: str = "text",
    hf_config: str | None = None,
    hf_split: str = "train",
    cache_dir: str | None = None,
):
    """One `datasets.Dataset` with a `text` column, one row per document.

    `inputs`: local files or folders (``.txt``/``.md``: one document per file; ``.jsonl``/``.json``:
    one document per record, taken from `text_field`), a Hugging Face dataset name (needs a network
    the first time), or nothing / ``"shakespeare"`` for the default corpus.
    """
    import datasets

    from wrenlm.tokenization.pretokenization import check_utf8_files

    inputs = list(inputs or [])
    if not inputs or (
        len(inputs) == 1 and inputs[0].lower() in DEFAULT_CORPUS_ALIASES and not Path(inputs[0]).exists()
    ):
        from .corpus import default_corpus_files

        inputs = [str(p) for p in default_corpus_files()]

    parts = []
    text_files: list[str] = []
    json_files: list[str] = []
    for spec in inputs:
        path = Path(spec).expanduser()
        if path.exists():
            for file in _collect_files(path):
                (json_files if file.suffix.lower() in JSON_SUFFIXES else text_files).append(str(file))
        elif _looks_like_path(spec):
            raise FileNotFoundError(f"Training data {spec!r} does not exist.")
        else:
            parts.append(_load_hub_dataset(spec, text_field, hf_config, hf_split, cache_dir))
    # Bad bytes are reported with the file and offset here, before tokenizer training or tokenizing starts.
    check_utf8_files(text_files + json_files)
    if text_files:
        text_ds = datasets.load_dataset(
            "text", data_files=text_files, sample_by="document", split="train", cache_dir=cache_dir
        )
        parts.insert(0, text_ds)
    if json_files:
        json_ds = datasets.load_dataset("json", data_files=json_files, split="train", cache_dir=cache_dir)
        if text_field not in json_ds.column_names:
            raise ValueError(
                f"JSON data {json_files[0]} has no {text_field!r} field (fields: {', '.join(json_ds.column_names)}); "
                "choose one with --text-field."
            )
        json_ds = json_ds.select_columns([text_field])
        if text_field != "text":
            json_ds = json_ds.rename_column(text_field, "text")
        parts.insert(1 if text_files else 0, json_ds)
    documents = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    documents = documents.filter(lambda text: bool(text and text.strip()), input_columns="text")
    if len(documents) == 0:
        raise ValueError(f"The training data {inputs} holds no non-empty documents.")
    return documents


def _load_hub_dataset(name: str, text_field: str, config: str | None, split: str, cache_dir: str | None):
    import datasets

    try:
        dataset = datasets.load_dataset(name, config, split=split, cache_dir=cache_dir)
    except Exception as error:
        raise ValueError(
            f"Could not load {name!r} as a local path or a Hugging Face dataset ({type(error).__name__}: {error})."
        ) from error
    if text_field not in dataset.column_names:
        raise ValueError(
            f"Dataset {name!r} has no {text_field!r} column (columns: {', '.join(dataset.column_names)}); "
            "choose one with --text-field."
        )
    dataset = dataset.select_columns([text_field])
    return dataset.rename_column(text_field, "text") if text_field != "text" else dataset


# ----------------------------------------------------------------------------------------------
# Splitting
def _tail_cut(text: str, val_fraction: float) -> int:
    """Index where the validation tail of `text` starts: at a line break near (1 - f) * len."""
    if val_fraction <= 0:
        return len(text)
    target = int(len(text) * (1.0 - val_fraction))
    newline = text.find("\n", target)
    return newline + 1 if 0 <= newline < len(text) - 1 else target


def _tail_split(batch, val_fraction: float, part: str):
    texts = []
    for text in batch["text"]:
        cut = _tail_cut(text, val_fraction)
        piece = text[:cut] if part == "train" else text[cut:]
        if piece.strip():
            texts.append(piece)
    return {"text": texts}


def split_documents(documents, val_fraction: float = 0.05, mode: str = "auto", seed: int = 0):
    """Deterministic train/validation split of a document dataset -> `DatasetDict(train, validation)`."""
    import datasets

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"`val_fraction` must be in (0, 1), got {val_fraction}.")
    if mode == "auto":
        mode = "documents" if len(documents) >= _AUTO_DOCUMENT_SPLIT_MIN_DOCS else "tail"
    if mode == "tail":
        parts = {
            part: documents.map(
                _tail_split,
                batched=True,
                fn_kwargs={"val_fraction": val_fraction, "part": part},
                desc=f"split ({part})",
            )
            for part in ("train", "validation")
        }
    elif mode == "documents":
        order = np.random.default_rng(seed).permutation(len(documents))
        num_val = max(1, math.ceil(len(documents) * val_fraction))
        parts = {
            "train": documents.select(sorted(order[num_val:].tolist())),
            "validation": documents.select(sorted(order[:num_val].tolist())),
        }
    else:
        raise ValueError(f"Unknown split mode {mode!r}; choose auto, tail or documents.")
    for part, dataset in parts.items():
        if len(dataset) == 0:
            raise ValueError(f"The {part} split is empty; use more data or another --val-fraction.")
    return datasets.DatasetDict(parts)


# ----------------------------------------------------------------------------------------------
# Characters per token
def _byte_level_decoder(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        return False
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    stack = [decoder]
    while stack:
        node = stack.pop()
        if node.get("type") == "ByteLevel":
            return True
        stack.extend(node.get("decoders") or [])
    return False


def token_char_table(tokenizer) -> np.ndarray | None:
    """Characters each token id contributes (UTF-8 lead bytes of its bytes); None if not byte-level."""
    if not _byte_level_decoder(tokenizer):
        return None
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
    vocab = tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True)
    special = set(getattr(tokenizer, "all_special_ids", []))
    added = set(tokenizer.get_added_vocab())
    table = np.zeros(max(vocab.values()) + 1, dtype=np.int64)
    for token, index in vocab.items():
        if index in special:
            continue
        if token in added:
            table[index] = len(token)
            continue
        if not all(char in byte_of for char in token):
            return None
        table[index] = sum(1 for char in token if byte_of[char] & 0xC0 != 0x80)
    return table


def _offset_char_counts(offsets, text_len: int) -> np.ndarray:
    counts = np.zeros(len(offsets), dtype=np.int64)
    covered = 0
    for i, (_, end) in enumerate(offsets):
        if end > covered:
            counts[i] = end - covered
            covered = end
    if len(counts):
        counts[-1] += text_len - counts.sum()
    return counts


# ----------------------------------------------------------------------------------------------
# Tokenizing and packing
def _tokenize_batch(batch, tokenizer, with_chars: bool, char_table):
    encoded = tokenizer(
        batch["text"], add_special_tokens=False, return_attention_mask=False, return_offsets_mapping=with_chars
    )
    result = {"input_ids": encoded["input_ids"]}
    if with_chars:
        token_chars, exact = [], []
        for text, ids, offsets in zip(batch["text"], encoded["input_ids"], encoded["offset_mapping"]):
            counts = char_table[np.asarray(ids, dtype=np.int64)] if char_table is not None and ids else None
            ok = counts is not None and int(counts.sum()) == len(text)
            if not ok:
                counts = _offset_char_counts(offsets, len(text))
            token_chars.append(counts.tolist())
            exact.append(ok)
        result["token_chars"] = token_chars
        result["exact_chars"] = exact
    return result


def _pack_train(batch, block_size: int, eos_id: int):
    stream: list[int] = []
    for ids in batch["input_ids"]:
        stream.extend(ids)
        stream.append(eos_id)
    usable = (len(stream) // block_size) * block_size
    return {"input_ids": [stream[i : i + block_size] for i in range(0, usable, block_size)]}


def _pack_validation(batch, block_size: int, eos_id: int, pad_id: int):
    stream, chars = [eos_id], [0]
    for ids, counts in zip(batch["input_ids"], batch["token_chars"]):
        stream.extend(ids)
        chars.extend(counts)
        stream.append(eos_id)
        chars.append(0)
    out = {"input_ids": [], "labels": [], "attention_mask": [], "num_chars": []}
    step = block_size - 1
    for start in range(0, len(stream) - 1, step):
        ids = stream[start : start + block_size]
        n = len(ids)
        pad = block_size - n
        out["input_ids"].append(ids + [pad_id] * pad)
        out["labels"].append(ids + [-100] * pad)
        out["attention_mask"].append([1] * n + [0] * pad)
        out["num_chars"].append(int(sum(chars[start + 1 : start + n])))
    return out


def build_eval_blocks(documents, tokenizer, block_size: int, *, desc: str = "validation"):
    """Tokenize + pack a document dataset the way validation is packed (see the module docstring).

    Returns a torch-formatted dataset of overlapping blocks with `input_ids`, `labels`,
    `attention_mask` and `num_chars`, so any subset's bits per character is exact (`wren eval` uses it too).
    """
    if block_size < 2:
        raise ValueError(f"`block_size` must be >= 2, got {block_size}.")
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("The tokenizer has no EOS token; documents are packed with EOS between them.")
    pad_id = pad_token_id(tokenizer)
    tokenized = documents.map(
        _tokenize_batch,
        batched=True,
        remove_columns=documents.column_names,
        fn_kwargs={"tokenizer": tokenizer, "with_chars": True, "char_table": token_char_table(tokenizer)},
        desc=f"tokenize ({desc})",
    )
    if not all(tokenized["exact_chars"]):
        logger.warning(
            "The tokenizer is not lossless byte-level BPE: bits per character are exact over the whole "
            f"{desc} split but approximate for a subset of its blocks."
        )
    blocks = tokenized.map(
        _pack_validation,
        batched=True,
        batch_size=None,
        remove_columns=tokenized.column_names,
        fn_kwargs={"block_size": block_size, "eos_id": eos_id, "pad_id": pad_id},
        desc=f"pack {desc} blocks of {block_size}",
    )
    return blocks.with_format("torch")


def build_lm_datasets(
    splits,
    tokenizer,
    block_size: int,
    *,
    num_proc: int | None = None,
):
    """Tokenize + pack a `DatasetDict(train, validation)` of documents; returns torch-formatted datasets.

    Returns `(train, validation, stats)` where stats has token/character totals of each split.
    """
    validation = build_eval_blocks(splits["validation"], tokenizer, block_size)
    eos_id = tokenizer.eos_token_id
    train_tok = splits["train"].map(
        _tokenize_batch,
        batched=True,
        remove_columns=splits["train"].column_names,
        fn_kwargs={"tokenizer": tokenizer, "with_chars": False, "char_table": None},
        num_proc=num_proc,
        desc="tokenize (train)",
    )
    train = train_tok.map(
        _pack_train,
        batched=True,
        batch_size=1000,
        remove_columns=train_tok.column_names,
        fn_kwargs={"block_size": block_size, "eos_id": eos_id},
        num_proc=num_proc,
        desc=f"pack train blocks of {block_size}",
    )
    if len(train) == 0:
        raise ValueError(
            f"The training split has fewer tokens than one block ({block_size}); use more data or a smaller --seq-len."
        )
    stats = {
        "train_documents": len(splits["train"]),
        "validation_documents": len(splits["validation"]),
        "train_blocks": len(train),
        "train_tokens": len(train) * block_size,
        "validation_blocks": len(validation),
        "validation_chars": int(sum(validation["num_chars"])),
    }
    return train.with_format("torch"), validation, stats


def collate_blocks(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack equal-length blocks; `labels` default to `input_ids` (the model shifts them)."""
    batch = {key: torch.stack([torch.as_tensor(ex[key]) for ex in examples]) for key in examples[0]}
    if "labels" not in batch:
        batch["labels"] = batch["input_ids"].clone()
    return batch


class EpochSampler(torch.utils.data.Sampler):
    """Shuffled order that is a pure function of (seed, epoch): resumable without saved sampler state."""

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True):
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.num_samples))
        generator = torch.Generator()
        generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())


__all__ = [
    "EpochSampler",
    "build_eval_blocks",
    "build_lm_datasets",
    "collate_blocks",
    "load_documents",
    "split_documents",
    "token_char_table",
]
