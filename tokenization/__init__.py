"""wrenlm.tokenization: Wren's byte-level BPE tokenizer and its trainers.

    from wrenlm.tokenization import train_tokenizer, WrenTokenizer, DEFAULT_SPECIAL_TOKENS

    tok = train_tokenizer(["corpus/"], vocab_size=8192)            # Rust backend, same result as backend="python"
    tok.save_pretrained("out/tokenizer")

`train_bpe` returns the bare `BPEModel` (vocab + merges); `train_bpe_from_counts` is the pure-Python trainer
on pre-token counts. The command line is `wren train-tokenizer` (see `cli.py`). `stop_token_ids` and
`pad_token_id` (`special_tokens.py`) are the one rule for where generation stops and what pads a batch.
"""

from .bpe_trainer import BPEModel, train_bpe_from_counts
from .pretokenization import count_pretokens, pretokenize, to_byte_level
from .special_tokens import pad_token_id, stop_token_ids
from .tokenization_wren import (
    DEFAULT_CHAT_TEMPLATE,
    DEFAULT_SPECIAL_TOKENS,
    WREN_PRETOKENIZE_PATTERN,
    WREN_V1_PRETOKENIZE_PATTERN,
    WrenTokenizer,
)
from .train import BACKENDS, tokenizer_from_bpe, train_bpe, train_bpe_with_tokenizers, train_tokenizer

__all__ = [
    "BACKENDS",
    "DEFAULT_CHAT_TEMPLATE",
    "DEFAULT_SPECIAL_TOKENS",
    "WREN_PRETOKENIZE_PATTERN",
    "WREN_V1_PRETOKENIZE_PATTERN",
    "BPEModel",
    "WrenTokenizer",
    "count_pretokens",
    "pad_token_id",
    "pretokenize",
    "stop_token_ids",
    "to_byte_level",
    "tokenizer_from_bpe",
    "train_bpe",
    "train_bpe_from_counts",
    "train_bpe_with_tokenizers",
    "train_tokenizer",
]
