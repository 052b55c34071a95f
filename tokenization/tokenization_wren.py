"""`WrenTokenizer`: Wren's byte-level BPE tokenizer on the transformers 5.x `TokenizersBackend`.

This module must stay importable on its own (it is copied next to a saved tokenizer for
`trust_remote_code=True` loading), so it imports only the standard library, `tokenizers` and
`transformers`. The trainer in this package imports its constants from here.

Pipeline built for a freshly trained vocabulary (no normalizer, so every string round-trips):

1. special tokens are matched first and never split (`tokenizers` added tokens);
2. `Split(WREN_PRETOKENIZE_PATTERN, behavior="isolated")` cuts the text into pre-tokens;
3. `ByteLevel(use_regex=False)` maps each pre-token's UTF-8 bytes to the 256 printable characters
   of GPT-2's byte-to-unicode table, so every byte sequence encodes and there is no unk token;
4. BPE merges; decoding maps the byte characters back to bytes.

A tokenizer loaded from a folder (or given `tokenizer_file`/`tokenizer_object`) keeps the pipeline
it was saved with, so a converted Llama-3/Qwen/SmolLM2 `tokenizer.json` loads faithfully.
"""

from __future__ import annotations

import os

from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE
from transformers.tokenization_utils_tokenizers import TokenizersBackend

# Llama-3's pre-tokenizer pattern, spelled exactly as llama.cpp spells it (so a Wren tokenizer exports to GGUF as
# llama.cpp's "smaug-bpe": the same regex without Llama-3's ignore_merges). Alternatives, in order: an apostrophe
# contraction in any case ("DON'T" splits like "don't"; written as character classes, not `(?i:...)`, so that "'ſ"
# is no contraction here or in llama.cpp); letters, with at most one leading character that is no letter, digit or
# line break (" word", "(word", "'Twas"); a group of at most three digits ("2025" -> "202", "5"); an optional space
# plus other symbols, with the line breaks right after them ("!\n"); whitespace up to its last line break; a
# whitespace run that leaves its last character to the next word; any remaining whitespace run. Every character
# matches some alternative, so nothing is dropped. No alternative lets a match run from a letter or digit into
# following whitespace and there is no look-behind, which is what lets the trainer cut files into blocks at
# "<ASCII letter or digit>\n" without changing the pre-tokens (punctuation may carry the line breaks after it).
WREN_PRETOKENIZE_PATTERN = (
    r"""(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
# The pattern of tokenizers Wren trained before it switched to the one above (GPT-2's with contractions in any
# case and digit groups of at most three, a space kept in front of them). Their tokenizer.json carries it, so they
# load and tokenize unchanged; no llama.cpp pre-tokenizer splits text this way, so they do not export to GGUF.
WREN_V1_PRETOKENIZE_PATTERN = r"""'(?i:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}{1,3}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|eos|>"
IM_START_TOKEN = "<|im_start|>"
IM_END_TOKEN = "<|im_end|>"
# Reserved first, in this order, in every vocabulary Wren trains: pad=0, bos=1, eos=2, <|im_start|>=3, <|im_end|>=4.
DEFAULT_SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, IM_START_TOKEN, IM_END_TOKEN)
CHAT_TOKENS: tuple[str, ...] = (IM_START_TOKEN, IM_END_TOKEN)

# ChatML. The assistant's content and its closing <|im_end|> sit inside {% generation %} so that
# `apply_chat_template(..., return_assistant_tokens_mask=True)` marks exactly the tokens to train on
# (the model learns to close its turn); the role header and the newline after <|im_end|> are context.
# Content may be a string, None, or a list of {"type": "text", "text": ...} parts. Generation stops at the
# token after a reply (`special_tokens.stop_token_ids` finds it by rendering the template).
DEFAULT_CHAT_TEMPLATE = (
    "{%- for message in messages -%}\n"
    "{%- if message['content'] is string -%}{%- set content = message['content'] -%}\n"
    "{%- elif message['content'] is none -%}{%- set content = '' -%}\n"
    "{%- else -%}{%- set content = message['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('') -%}\n"
    "{%- endif -%}\n"
    "{%- if message['role'] == 'assistant' -%}\n"
    "{{- '<|im_start|>assistant\\n' -}}\n"
    "{%- generation -%}{{- content + '<|im_end|>' -}}{%- endgeneration -%}\n"
    "{{- '\\n' -}}\n"
    "{%- else -%}\n"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' -}}\n"
    "{%- endif -%}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}\n"
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (the alphabet of `ByteLevel`).

    Printable Latin-1 bytes map to themselves; the other 68 bytes (controls, space, soft hyphen...) map to
    U+0100 onwards in byte order, so "Ġ" (U+0120) is the space byte.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in table:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def byte_level_base_vocab(special_tokens=DEFAULT_SPECIAL_TOKENS) -> dict[str, int]:
    """Special tokens first (in order, duplicates dropped), then the 256 byte characters sorted by code point.

    This is the id layout the `tokenizers` BpeTrainer produces with `initial_alphabet=ByteLevel.alphabet()`.
    """
    vocab: dict[str, int] = {}
    for token in [*special_tokens, *sorted(bytes_to_unicode().values())]:
        vocab.setdefault(token, len(vocab))
    return vocab


def wren_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """`Split(WREN_PRETOKENIZE_PATTERN)` then `ByteLevel` byte mapping (the regex step is ours, not ByteLevel's)."""
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(WREN_PRETOKENIZE_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )


def build_wren_backend(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    """A `tokenizers.Tokenizer` with Wren's pipeline around the given BPE vocabulary and merges."""
    tokenizer = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            dropout=None,
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tokenizer.normalizer = None
    tokenizer.pre_tokenizer = wren_pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


_LOADED_BACKEND_KWARGS = ("tokenizer_file", "tokenizer_object", "gguf_file")


class WrenTokenizer(TokenizersBackend):
    """Byte-level BPE tokenizer for Wren models.

    `WrenTokenizer(vocab, merges)` builds Wren's pipeline (see the module docstring) around a vocabulary, e.g.
    one from `wrenlm.tokenization.train_tokenizer`; with no arguments it is the untrained byte-level tokenizer
    (specials + 256 bytes). `WrenTokenizer.from_pretrained(folder)` and `WrenTokenizer(tokenizer_file=...)` or
    `WrenTokenizer(tokenizer_object=...)` keep the given `tokenizers` pipeline unchanged (pre-tokenizer,
    normalizer, decoder, post-processor), so tokenizers converted from other model families stay exact.

    Defaults when building from a vocabulary: pad `<|pad|>`, bos `<|bos|>`, eos `<|eos|>`, chat markers
    `<|im_start|>`/`<|im_end|>` as extra special tokens, no bos/eos added by `encode` (documents are packed as
    `text + eos` by the training code), and the ChatML `DEFAULT_CHAT_TEMPLATE`.
    """

    vocab_files_names = {"tokenizer_file": "tokenizer.json"}
    model_input_names = ["input_ids", "attention_mask"]
    model = BPE

    def __init__(
        self,
        vocab: dict[str, int] | None = None,
        merges: list[tuple[str, str]] | list[str] | None = None,
        **kwargs,
    ):
        loading = any(kwargs.get(name) is not None for name in _LOADED_BACKEND_KWARGS)
        if not loading:
            # Only a vocabulary we build ourselves gets Wren's defaults; a loaded one keeps its own settings
            # (injecting a pad token a foreign vocabulary lacks would silently grow it by one).
            kwargs.setdefault("pad_token", PAD_TOKEN)
            kwargs.setdefault("bos_token", BOS_TOKEN)
            kwargs.setdefault("eos_token", EOS_TOKEN)
            kwargs.setdefault("extra_special_tokens", list(CHAT_TOKENS))
            kwargs.setdefault("chat_template", DEFAULT_CHAT_TEMPLATE)
            if vocab is None:
                if merges:
                    raise ValueError("WrenTokenizer: `merges` given without the `vocab` they refer to.")
                if kwargs.get("name_or_path"):
                    # from_pretrained found no tokenizer.json: never fall back silently to an untrained vocabulary.
                    raise ValueError(f"WrenTokenizer: no tokenizer.json in {kwargs['name_or_path']!r}")
                vocab = byte_level_base_vocab()
            merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges or []]
            self._tokenizer = build_wren_backend(vocab, merges)
        elif vocab is not None or merges is not None:
            raise ValueError("WrenTokenizer: pass either `vocab`/`merges` or a serialized tokenizer, not both.")
        super().__init__(**kwargs)

    @classmethod
    def convert_to_native_format(cls, trust_remote_code=False, **kwargs):
        # The base class would pull vocab/merges out of tokenizer.json and let __init__ rebuild the pipeline with
        # Wren's regex; handing the file itself to __init__ keeps the saved pipeline exactly.
        tokenizer_file = kwargs.get("tokenizer_file")
        if tokenizer_file is not None and os.path.isfile(tokenizer_file):
            return dict(kwargs)
        return super().convert_to_native_format(trust_remote_code=trust_remote_code, **kwargs)


WrenTokenizer.register_for_auto_class("AutoTokenizer")

__all__ = [
    "BOS_TOKEN",
    "CHAT_TOKENS",
    "DEFAULT_CHAT_TEMPLATE",
    "DEFAULT_SPECIAL_TOKENS",
    "EOS_TOKEN",
    "IM_END_TOKEN",
    "IM_START_TOKEN",
    "PAD_TOKEN",
    "WREN_PRETOKENIZE_PATTERN",
    "WREN_V1_PRETOKENIZE_PATTERN",
    "WrenTokenizer",
    "build_wren_backend",
    "byte_level_base_vocab",
    "bytes_to_unicode",
    "wren_pre_tokenizer",
]
