"""A tokenizer as GGUF vocabulary metadata: llama.cpp's byte-level BPE (`tokenizer.ggml.model = "gpt2"`).

A GGUF file carries no tokenizer.json. llama.cpp re-implements a fixed set of pre-tokenizers and picks one by
name (`tokenizer.ggml.pre`), then applies the file's vocabulary and merges. So a tokenizer exports only when its
whole pipeline is one llama.cpp implements: no normalizer, byte-level BPE, ByteLevel decoding, special tokens
added only as a leading bos / trailing eos, and a pre-tokenizer from `LLAMA_CPP_PRE_TOKENIZERS`. Anything else
is refused naming the part, because llama.cpp would cut some text into different tokens.
"""

import json
import re
from dataclasses import dataclass

from gguf import GGUFWriter, TokenType
from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

from ..tokenization.tokenization_wren import WREN_PRETOKENIZE_PATTERN, WREN_V1_PRETOKENIZE_PATTERN
from .errors import UnsupportedConversionError
from .gguf import chat_stop_token_ids

# (kind, add_prefix_space, use_regex): ByteLevel with GPT-2's own split regex, or only mapping bytes after a Split.
_GPT2_BYTE_LEVEL = ("ByteLevel", False, True)
_BYTES_ONLY = ("ByteLevel", False, False)


def _split(llama_cpp_name: str) -> tuple:
    # transformers' table holds the regex the Hub's tokenizer.json spells for each llama.cpp pre-tokenizer.
    return ("Split", GGUF_PRE_TOKENIZER_SPLITS[llama_cpp_name], "Isolated", False)


# (pre-tokenizer steps, BPE `ignore_merges`) -> the llama.cpp pre-tokenizer that splits text the same way
# (llama.cpp's llama-vocab.cpp fixes `ignore_merges` per name: true for the Llama-3 family).
LLAMA_CPP_PRE_TOKENIZERS: dict[tuple, str] = {
    ((_GPT2_BYTE_LEVEL,), False): "gpt-2",
    ((("Digits", True), _GPT2_BYTE_LEVEL), False): "smollm",
    ((_split("llama-bpe"), _BYTES_ONLY), True): "llama-bpe",
    ((_split("smaug-bpe"), _BYTES_ONLY), False): "smaug-bpe",
    ((_split("qwen2"), _BYTES_ONLY), False): "qwen2",
    # Wren's own: llama.cpp's Llama-3 regex string itself, which llama.cpp runs for "smaug-bpe" without
    # ignore_merges (transformers' table spells the contractions `(?i:'s|...)`, which also takes "'ſ").
    ((("Split", WREN_PRETOKENIZE_PATTERN, "Isolated", False), _BYTES_ONLY), False): "smaug-bpe",
}
# Inside a chat template `{% generation %}` only marks the assistant's tokens for training (a transformers
# extension that plain Jinja, and so llama.cpp and llama-cpp-python, reject); an always-true `if` block keeps
# the tag's whitespace control and renders the same text.
_GENERATION_TAG = re.compile(r"\{%(-?)\s*(end)?generation\s*(-?)%\}")
_PROBE_TEXT = "Hello world"


@dataclass(frozen=True)
class GGUFVocabulary:
    """Everything llama.cpp needs to tokenize and chat: tokens in id order, their types, merges, specials."""

    pre_tokenizer: str
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    special_token_ids: dict[str, int]  # bos / eos / unk / pad / eot
    add_bos: bool
    add_eos: bool
    chat_template: str | None

    def write(self, writer: GGUFWriter) -> None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(self.pre_tokenizer)
        writer.add_token_list(self.tokens)
        writer.add_token_types(self.token_types)
        writer.add_token_merges(self.merges)
        for kind, token_id in self.special_token_ids.items():
            getattr(writer, f"add_{kind}_token_id")(token_id)
        writer.add_add_bos_token(self.add_bos)
        writer.add_add_eos_token(self.add_eos)
        if self.chat_template is not None:
            writer.add_chat_template(self.chat_template)


def gguf_vocabulary(tokenizer, vocab_size: int) -> GGUFVocabulary:
    """The GGUF vocabulary of `tokenizer` for a model with `vocab_size` embedding rows, or a refusal naming why."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise UnsupportedConversionError(
            f"The tokenizer ({type(tokenizer).__name__}) has no `tokenizers` pipeline to export; GGUF export needs "
            "a byte-level BPE tokenizer (tokenizer.json)."
        )
    spec = json.loads(backend.to_str())
    model = spec["model"]
    _check_pipeline(spec, model)
    pre_tokenizer = llama_cpp_pre_tokenizer(spec.get("pre_tokenizer"), bool(model.get("ignore_merges")))
    tokens, token_types = _tokens(tokenizer, vocab_size)
    add_bos, add_eos = _added_special_tokens(tokenizer)
    return GGUFVocabulary(
        pre_tokenizer=pre_tokenizer,
        tokens=tokens,
        token_types=token_types,
        merges=_merges(model["merges"]),
        special_token_ids=_special_token_ids(tokenizer),
        add_bos=add_bos,
        add_eos=add_eos,
        chat_template=portable_chat_template(tokenizer.chat_template),
    )


def _check_pipeline(spec: dict, model: dict) -> None:
    problems = []
    if model.get("type") != "BPE":
        problems.append(f"its model is {model.get('type')}, not byte-level BPE")
    if model.get("byte_fallback"):
        problems.append("byte_fallback BPE (a sentencepiece-style vocabulary)")
    if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        problems.append("BPE subword prefixes/suffixes")
    if model.get("dropout"):
        problems.append(f"BPE dropout {model['dropout']}")
    if spec.get("normalizer") is not None:
        problems.append(f"a {spec['normalizer'].get('type')} normalizer")
    decoder = spec.get("decoder") or {}
    if decoder.get("type") != "ByteLevel":
        problems.append(f"a {decoder.get('type')} decoder (byte-level BPE decodes with ByteLevel)")
    if problems:
        raise UnsupportedConversionError(
            f"The tokenizer cannot be written as llama.cpp's byte-level BPE: it has {'; '.join(problems)}."
        )


def _pre_tokenizer_steps(spec: dict | None) -> tuple:
    if spec is None:
        return ()
    steps = spec["pretokenizers"] if spec.get("type") == "Sequence" else [spec]
    described = []
    for step in steps:
        kind = step.get("type")
        if kind == "ByteLevel":
            described.append((kind, bool(step.get("add_prefix_space")), bool(step.get("use_regex", True))))
        elif kind == "Split":
            pattern = step.get("pattern", {})
            regex = pattern.get("Regex", re.escape(pattern.get("String", "")))
            described.append((kind, regex, step.get("behavior"), bool(step.get("invert"))))
        elif kind == "Digits":
            described.append((kind, bool(step.get("individual_digits"))))
        else:
            described.append((kind, json.dumps(step, sort_keys=True)))
    return tuple(described)


def llama_cpp_pre_tokenizer(spec: dict | None, ignore_merges: bool) -> str:
    """The `tokenizer.ggml.pre` name whose splitting equals this tokenizer.json pre-tokenizer's."""
    steps = _pre_tokenizer_steps(spec)
    name = LLAMA_CPP_PRE_TOKENIZERS.get((steps, ignore_merges))
    if name is not None:
        return name
    described = " then ".join(_describe(step) for step in steps) or "none"
    why = (
        "it was trained with Wren's earlier pattern (WREN_V1_PRETOKENIZE_PATTERN: a space kept in front of digit "
        "groups, no line breaks after punctuation), which no llama.cpp pre-tokenizer implements; tokenizers Wren "
        "trains now split like llama.cpp's 'smaug-bpe', so retrain the tokenizer and the model to export"
        if any(step[0] == "Split" and step[1] == WREN_V1_PRETOKENIZE_PATTERN for step in steps)
        else "llama.cpp would split some text differently"
    )
    raise UnsupportedConversionError(
        f"The tokenizer's pre-tokenizer ({described}; BPE ignore_merges={ignore_merges}) is none of those llama.cpp "
        f"implements for byte-level BPE ({', '.join(sorted(set(LLAMA_CPP_PRE_TOKENIZERS.values())))}): {why}."
    )


def _describe(step: tuple) -> str:
    if step[0] == "Split":
        return f"Split /{step[1]}/"
    if step[0] == "ByteLevel":
        return "ByteLevel with its GPT-2 regex" if step[2] else "ByteLevel"
    if step[0] == "Digits":
        return "Digits (one by one)" if step[1] else "Digits"
    return step[0]


def _tokens(tokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    vocab = tokenizer.get_vocab()
    if vocab and max(vocab.values()) >= vocab_size:
        raise UnsupportedConversionError(
            f"The tokenizer has ids up to {max(vocab.values())} but the model's embedding has only vocab_size="
            f"{vocab_size} rows."
        )
    by_id = {index: token for token, index in vocab.items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in by_id:
            # Embedding rows no token uses (a vocabulary padded to a round size), named as llama.cpp's converter does.
            tokens.append(f"[PAD{index}]")
            types.append(TokenType.UNUSED)
            continue
        tokens.append(by_id[index])
        if index in added:
            types.append(TokenType.CONTROL if added[index].special else TokenType.USER_DEFINED)
        else:
            types.append(TokenType.NORMAL)
    return tokens, [int(kind) for kind in types]


def _merges(merges: list) -> list[str]:
    pairs = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in merges]
    spaced = [pair for pair in pairs if len(pair) != 2 or any(" " in part for part in pair)]
    if spaced:
        raise UnsupportedConversionError(
            f"The tokenizer has merges GGUF cannot store as 'left right' text, e.g. {spaced[0]!r}."
        )
    return [f"{left} {right}" for left, right in pairs]


def _special_token_ids(tokenizer) -> dict[str, int]:
    ids = {
        kind: getattr(tokenizer, f"{attribute}_token_id", None)
        for kind, attribute in (("bos", "bos"), ("eos", "eos"), ("unk", "unk"), ("pad", "pad"))
    }
    ids = {kind: index for kind, index in ids.items() if index is not None}
    # llama.cpp stops generating at end-of-generation tokens: eos, and eot (the chat template's end of turn).
    stops = [token for token in chat_stop_token_ids(tokenizer) if token != ids.get("eos")]
    if stops:
        ids["eot"] = stops[0]
    return ids


def _added_special_tokens(tokenizer) -> tuple[bool, bool]:
    """Whether encoding adds bos in front / eos at the end: all llama.cpp can express of a post-processor."""
    plain = tokenizer(_PROBE_TEXT, add_special_tokens=False)["input_ids"]
    full = tokenizer(_PROBE_TEXT)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            prefix, suffix = full[:start], full[start + len(plain) :]
            if prefix in ([], [tokenizer.bos_token_id]) and suffix in ([], [tokenizer.eos_token_id]):
                return bool(prefix), bool(suffix)
            break
    raise UnsupportedConversionError(
        f"The tokenizer's post-processor turns {plain} into {full}; llama.cpp can only add a bos token in front "
        "and an eos token at the end."
    )


def portable_chat_template(template) -> "str | list[dict] | None":
    """The chat template without transformers' `{% generation %}` markers (same rendered text)."""
    if template is None:
        return None
    if isinstance(template, dict):  # named templates: GGUF stores them as a list, "default" first
        return [{"name": name, "template": portable_chat_template(text)} for name, text in template.items()]

    def replace(match: re.Match) -> str:
        left, end, right = match.groups()
        return f"{{%{left} {'endif' if end else 'if true'} {right}%}}"

    return _GENERATION_TAG.sub(replace, template)


__all__ = [
    "LLAMA_CPP_PRE_TOKENIZERS",
    "GGUFVocabulary",
    "gguf_vocabulary",
    "llama_cpp_pre_tokenizer",
    "portable_chat_template",
]
