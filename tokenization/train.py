"""Training entry points: files -> `BPEModel` (`train_bpe`) -> `WrenTokenizer` (`train_tokenizer`).

Two backends give the same merges in the same order and the same ids:

* ``"tokenizers"`` (default, fast): the Rust `BpeTrainer` of the `tokenizers` library, fed the same text
  pieces, with Wren's pre-tokenizer (`Split(WREN_PRETOKENIZE_PATTERN)` + `ByteLevel(use_regex=False)`) and
  `initial_alphabet=ByteLevel.alphabet()`.
* ``"python"``: Wren's own incremental trainer (`bpe_trainer.train_bpe_from_counts`) on pre-token counts
  gathered by `pretokenization.count_pretokens`.

Known limit: Python's `regex` knows Unicode 17.0 while the Oniguruma engine inside `tokenizers` knows
Unicode 16.0, so the ~17k letters and ~340 numbers that Unicode 17.0 added (CJK Extension J, Tangut
Components Supplement, Sidetic, Tolong Siki, ...) are `\\p{L}`/`\\p{N}` to the Python trainer only; on text
containing them the two backends may cut pre-tokens differently. Encoding always uses the `tokenizers` engine.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

from tokenizers import Tokenizer, pre_tokenizers, trainers
from tokenizers.models import BPE

from .bpe_trainer import BPEModel, check_vocab_size, train_bpe_from_counts
from .pretokenization import (
    DEFAULT_BLOCK_BYTES,
    count_pretokens,
    iter_text_segments,
    plan_blocks,
    resolve_input_files,
    validate_special_tokens,
)
from .tokenization_wren import CHAT_TOKENS, DEFAULT_SPECIAL_TOKENS, WrenTokenizer, wren_pre_tokenizer

Backend = Literal["python", "tokenizers"]
BACKENDS: tuple[str, ...] = ("tokenizers", "python")
DEFAULT_MIN_FREQUENCY = 2


def resolve_special_tokens(special_tokens: Sequence[str] | None = None) -> list[str]:
    """`DEFAULT_SPECIAL_TOKENS` (pad, bos, eos, chat markers: ids 0-4), then the caller's extra tokens."""
    if isinstance(special_tokens, str):
        special_tokens = [special_tokens]
    return validate_special_tokens([*DEFAULT_SPECIAL_TOKENS, *(special_tokens or ())])


def train_bpe(
    inputs: Iterable[str | os.PathLike] | str | os.PathLike,
    vocab_size: int,
    special_tokens: Sequence[str] | None = None,
    backend: Backend = "tokenizers",
    min_frequency: int = DEFAULT_MIN_FREQUENCY,
    show_progress: bool = True,
    num_workers: int | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> BPEModel:
    """Train a byte-level BPE on text files or directories and return its vocabulary and merges.

    The vocabulary reserves `DEFAULT_SPECIAL_TOKENS` and then the extra `special_tokens` (see
    `resolve_special_tokens`). `min_frequency`: a pair seen fewer times is never merged (training stops there).
    `num_workers` (python backend): processes counting pre-tokens (default: automatic, see `count_pretokens`).
    Raises `FileNotFoundError`/`PermissionError` for missing/unreadable inputs and `ValueError` for a
    vocabulary smaller than 256 + specials, non-UTF-8 files, or a corpus without text.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    specials = resolve_special_tokens(special_tokens)
    check_vocab_size(vocab_size, specials)
    files = resolve_input_files(inputs)
    blocks = plan_blocks(files, block_bytes)
    if not blocks:
        raise ValueError(f"the training corpus is empty: no text in {', '.join(map(str, files or inputs))}")
    if backend == "python":
        word_counts = count_pretokens(blocks, specials, num_workers=num_workers, show_progress=show_progress)
        if not word_counts:
            raise ValueError("the training corpus is empty: it holds nothing but special tokens")
        return train_bpe_from_counts(word_counts, vocab_size, specials, min_frequency, show_progress)
    return train_bpe_with_tokenizers(
        iter_text_segments(blocks, specials), vocab_size, specials, min_frequency, show_progress
    )


def train_bpe_with_tokenizers(
    segments: Iterable[str],
    vocab_size: int,
    special_tokens: Sequence[str] = (),
    min_frequency: int = DEFAULT_MIN_FREQUENCY,
    show_progress: bool = True,
) -> BPEModel:
    """The Rust `BpeTrainer` on text pieces that contain no special tokens (see `iter_text_segments`)."""
    special_tokens = list(special_tokens)
    check_vocab_size(vocab_size, special_tokens)
    tokenizer = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = wren_pre_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
    )
    seen = _Counted(segments)
    tokenizer.train_from_iterator(seen, trainer=trainer)
    if not seen.count:
        raise ValueError("the training corpus is empty: it holds nothing but special tokens")
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return BPEModel(vocab=dict(model["vocab"]), merges=merges, special_tokens=special_tokens)


class _Counted:
    """Iterator wrapper that counts the non-empty pieces it yields."""

    def __init__(self, items: Iterable[str]):
        self._items = items
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        for item in self._items:
            if item:
                self.count += 1
                yield item


def tokenizer_from_bpe(model: BPEModel, **kwargs) -> WrenTokenizer:
    """A `WrenTokenizer` around a trained model: pad/bos/eos/chat roles from the defaults, other specials extra."""
    roles = set(DEFAULT_SPECIAL_TOKENS) - set(CHAT_TOKENS)
    extras = [token for token in model.special_tokens if token not in roles]
    kwargs.setdefault("extra_special_tokens", extras)
    return WrenTokenizer(vocab=model.vocab, merges=model.merges, **kwargs)


def train_tokenizer(
    inputs: Iterable[str | os.PathLike] | str | os.PathLike,
    vocab_size: int,
    special_tokens: Sequence[str] | None = None,
    backend: Backend = "tokenizers",
    min_frequency: int = DEFAULT_MIN_FREQUENCY,
    show_progress: bool = True,
    num_workers: int | None = None,
) -> WrenTokenizer:
    """Train a byte-level BPE on text files/directories and wrap it in a `WrenTokenizer`.

    The vocabulary starts with `DEFAULT_SPECIAL_TOKENS` (pad=0, bos=1, eos=2, <|im_start|>=3, <|im_end|>=4),
    then the caller's extra `special_tokens` (registered as extra special tokens, never split), then the 256
    byte tokens, then merged tokens. Save it with `tok.save_pretrained(out_dir)`.
    """
    model = train_bpe(
        inputs,
        vocab_size,
        special_tokens=special_tokens,
        backend=backend,
        min_frequency=min_frequency,
        show_progress=show_progress,
        num_workers=num_workers,
    )
    return tokenizer_from_bpe(model)
