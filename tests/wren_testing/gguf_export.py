"""Tiny seeded Wren checkpoints (with byte-level BPE tokenizers llama.cpp implements) for the GGUF export tests.

Each layout is one llama.cpp architecture: `dense` (llama), `qkv_bias` (qwen2), `qk_norm` (qwen3), `qwen3_moe`
(qwen3moe) and `mixtral` (llama with experts). Some sizes follow what transformers' GGUF reader assumes
because it does not read them from the file: Qwen3's head_dim (128) and Qwen3-MoE's expert size (768).
"""

import tempfile
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

from wren_testing import tiny_config_kwargs
from wren_testing.parity import randomize_
from wrenlm import WrenConfig, WrenForCausalLM
from wrenlm.tokenization import DEFAULT_CHAT_TEMPLATE, DEFAULT_SPECIAL_TOKENS, WrenTokenizer, train_tokenizer
from wrenlm.tokenization.tokenization_wren import WREN_V1_PRETOKENIZE_PATTERN, wren_pre_tokenizer

CORPUS = [
    "The quick brown fox jumps over the lazy dog. What is the capital of France? Paris is the capital.",
    "def add(a, b):\n    return a + b  # numbers 12345 and 678, year 2025\n",
    "Hello there! How are you today? I'm fine, thank you very much. DON'T SHOUT, we'll see.",
    "Ünïcödé café — naïve résumé, 日本語, emoji 🙂 and    spaces\ttabs\n\nnew lines.",
] * 10
SAMPLE_TEXTS = [
    "Hello world! It's 12345 + 678 = 13023, isn't it? DON'T, WE'LL",
    "  leading spaces, trailing  \n\nnew lines\ttabs 🙂 naïve 日本語",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "def f(x):\n    return x ** 2  # code",
]
CHATS = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Name a fox."},
    ],
]
TOKENIZER_SIZE = 330
# Embedding rows beyond the tokenizer (a padded vocabulary), exported as unused [PAD] tokens.
VOCAB_SIZE = TOKENIZER_SIZE + 6


def tokenizer_pipeline(pre: str):
    """(pre-tokenizer, BPE ignore_merges) of a Hub tokenizer.json that llama.cpp calls `pre`; "wren" is Wren's own,
    "wren-v1" the pattern Wren's tokenizers had before (which llama.cpp lacks)."""
    if pre == "gpt-2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True), False
    if pre == "smollm":
        steps = [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        return pre_tokenizers.Sequence(steps), False
    if pre == "wren":
        return wren_pre_tokenizer(), False
    pattern = WREN_V1_PRETOKENIZE_PATTERN if pre == "wren-v1" else GGUF_PRE_TOKENIZER_SPLITS[pre]
    split = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    return pre_tokenizers.Sequence([split, byte_level]), pre == "llama-bpe"


def bpe_tokenizer(pre: str = "gpt-2", size: int = TOKENIZER_SIZE) -> WrenTokenizer:
    """A byte-level BPE trained on CORPUS with Wren's special tokens and ChatML template, split like `pre`;
    "wren": the tokenizer Wren's own trainer (`train_tokenizer`, as `wren pretrain` runs it) learns from CORPUS."""
    if pre == "wren":
        with tempfile.TemporaryDirectory() as corpus:
            (Path(corpus) / "corpus.txt").write_text("\n".join(CORPUS), encoding="utf-8")
            return train_tokenizer([corpus], vocab_size=size, show_progress=False)
    pre_tokenizer, ignore_merges = tokenizer_pipeline(pre)
    backend = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False, ignore_merges=ignore_merges))
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=size,
        special_tokens=list(DEFAULT_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    return WrenTokenizer(
        tokenizer_object=backend,
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|eos|>",
        extra_special_tokens=["<|im_start|>", "<|im_end|>"],
        chat_template=DEFAULT_CHAT_TEMPLATE,
    )


LAYOUTS = {
    "dense": {"tie_word_embeddings": False},
    "qkv_bias": {"attention_bias": True, "attention_output_bias": False},
    "qk_norm": {"qk_norm": True, "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 128},
    "qwen3_moe": {"qk_norm": True, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 768},
    "mixtral": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 96},
}
ARCHITECTURES = {
    "dense": "llama",
    "qkv_bias": "qwen2",
    "qk_norm": "qwen3",
    "qwen3_moe": "qwen3moe",
    "mixtral": "llama",
}


def tiny_wren(layout: str = "dense", seed: int = 0, **overrides) -> WrenForCausalLM:
    """A seeded Wren of `layout` with every weight random (norms near 1), so a mis-mapped tensor shows."""
    kwargs = tiny_config_kwargs(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
    )
    kwargs.update(LAYOUTS[layout])
    kwargs.update(overrides)
    return randomize_(WrenForCausalLM(WrenConfig(**kwargs)), seed, scale=0.3).eval()


def save_tiny_wren(folder: "str | Path", layout: str = "dense", pre: str = "gpt-2", **overrides) -> Path:
    """A Wren checkpoint folder (model + tokenizer) as `wren export gguf` reads it."""
    folder = Path(folder)
    tiny_wren(layout, **overrides).save_pretrained(folder)
    bpe_tokenizer(pre).save_pretrained(folder)
    return folder
