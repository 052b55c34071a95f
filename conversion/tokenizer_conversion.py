"""Tokenizers for converted checkpoints: the source's exact pipeline under Wren's (or a plain HF) class.

A `tokenizers`-backed source tokenizer is re-wrapped as `WrenTokenizer` (HF -> Wren) or as transformers'
plain `TokenizersBackend` (Wren -> HF, so the HF folder loads without wrenlm). The `tokenizers` pipeline,
special tokens and chat template are carried over unchanged; the result must then encode, decode and
template a set of probes exactly like the source, else the source tokenizer is kept as it is.
"""

import json
import tempfile
from pathlib import Path

from transformers.tokenization_utils_tokenizers import TokenizersBackend
from transformers.utils import logging

from ..tokenization import WrenTokenizer

logger = logging.get_logger(__name__)

_PROBE_TEXTS = (
    "Hello world! It's a test: 12345 + 678 = 13023.",
    "  leading spaces, trailing spaces  \n\nnew lines\ttabs",
    "Ünïcödé — naïve café, 日本語のテキスト, emoji 🙂👍🏽",
    "def f(x):\n    return x ** 2  # code",
    "",
)
_PROBE_CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there!"},
    {"role": "assistant", "content": "Hello."},
]
_COMPARED_ATTRIBUTES = (
    "all_special_tokens",
    "all_special_ids",
    "chat_template",
    "padding_side",
    "truncation_side",
    "model_max_length",
)


def tokenizer_to_wren(tokenizer):
    """The tokenizer to save with a Wren checkpoint: a verified `WrenTokenizer`, else `tokenizer` itself."""
    if tokenizer is None or isinstance(tokenizer, WrenTokenizer):
        return tokenizer
    return _rewrap(tokenizer, WrenTokenizer)


def tokenizer_from_wren(tokenizer):
    """The tokenizer to save with an HF checkpoint: a verified plain `TokenizersBackend` for a `WrenTokenizer`."""
    if not isinstance(tokenizer, WrenTokenizer):
        return tokenizer
    return _rewrap(tokenizer, TokenizersBackend)


def _rewrap(tokenizer, tokenizer_class):
    if not isinstance(tokenizer, TokenizersBackend):
        logger.warning(
            f"{type(tokenizer).__name__} is not backed by a `tokenizers` pipeline; saving it unchanged instead of "
            f"as {tokenizer_class.__name__}."
        )
        return tokenizer
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        _forget_class(Path(folder) / "tokenizer_config.json")
        # Class-level defaults (e.g. LlamaTokenizer pads on the left) are not saved; carry them explicitly.
        candidate = tokenizer_class.from_pretrained(
            folder, padding_side=tokenizer.padding_side, truncation_side=tokenizer.truncation_side
        )
    difference = first_difference(tokenizer, candidate)
    if difference is not None:
        logger.warning(
            f"As {tokenizer_class.__name__}, the {type(tokenizer).__name__} would differ ({difference}); "
            "saving it unchanged."
        )
        return tokenizer
    return candidate


def _forget_class(config_file: Path) -> None:
    """Drop the old class binding (and a WrenTokenizer's remote-code `auto_map`) so it is not saved again."""
    config = json.loads(config_file.read_text())
    for key in ("auto_map", "tokenizer_class"):
        config.pop(key, None)
    config_file.write_text(json.dumps(config, indent=2))


def first_difference(expected, actual) -> str | None:
    """A description of the first probe on which two tokenizers disagree, or None."""
    if len(actual) != len(expected):
        return f"vocabulary size {len(actual)} vs {len(expected)}"
    for name in _COMPARED_ATTRIBUTES:
        if getattr(actual, name, None) != getattr(expected, name, None):
            return f"`{name}`"
    if actual.get_vocab() != expected.get_vocab():
        return "vocabulary"
    texts = list(_PROBE_TEXTS) + [" ".join(expected.all_special_tokens) + " between specials"]
    for text in texts:
        for add_special_tokens in (True, False):
            ids = expected(text, add_special_tokens=add_special_tokens)["input_ids"]
            if actual(text, add_special_tokens=add_special_tokens)["input_ids"] != ids:
                return f"encoding of {text[:30]!r} (add_special_tokens={add_special_tokens})"
            for skip in (True, False):
                if actual.decode(ids, skip_special_tokens=skip) != expected.decode(ids, skip_special_tokens=skip):
                    return f"decoding of {text[:30]!r}"
    if expected.chat_template is not None:
        try:
            rendered = expected.apply_chat_template(_PROBE_CHAT, tokenize=False)
        except Exception:  # a template needing other roles or variables: compared as text above
            return None
        if actual.apply_chat_template(_PROBE_CHAT, tokenize=False) != rendered:
            return "chat template rendering"
    return None


__all__ = ["first_difference", "tokenizer_from_wren", "tokenizer_to_wren"]
