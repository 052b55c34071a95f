"""Which pre-tokenizer Wren's tokenizers use: tokens per character on the default corpus, one BPE per pattern.

    python -m bench.pretokenizer_choice            # ~1 minute on 2 cores; prints a markdown table

Each candidate is a byte-level BPE trained by the `tokenizers` BpeTrainer (the trainer `wren pretrain` runs) at
the same vocabulary size (default 4096, `wren pretrain`'s) and `min_frequency=2`, with Wren's special tokens, on
the training split `wren pretrain` cuts from the default corpus (Shakespeare, `val_fraction=0.02`); it then
encodes the validation split. Candidates: Wren's current pattern (llama.cpp's "smaug-bpe" regex), Wren's earlier
pattern (which llama.cpp lacks), GPT-2's ("gpt-2") and SmolLM2's ("smollm": digits one by one, then GPT-2's).
Only counts are measured, so machine load does not matter.
"""

from __future__ import annotations

import argparse

from tokenizers import Regex, Tokenizer, decoders, pre_tokenizers, trainers
from tokenizers.models import BPE

from wrenlm.tokenization import DEFAULT_SPECIAL_TOKENS, WREN_V1_PRETOKENIZE_PATTERN
from wrenlm.tokenization.tokenization_wren import wren_pre_tokenizer


def _regex_then_bytes(pattern: str) -> pre_tokenizers.PreTokenizer:
    split = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    return pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def candidates() -> dict[str, pre_tokenizers.PreTokenizer]:
    gpt2 = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    digits = pre_tokenizers.Digits(individual_digits=True)
    return {
        "Wren now = llama.cpp smaug-bpe (Llama-3 regex)": wren_pre_tokenizer(),
        "Wren before (WREN_V1_PRETOKENIZE_PATTERN, no llama.cpp name)": _regex_then_bytes(WREN_V1_PRETOKENIZE_PATTERN),
        "llama.cpp gpt-2": gpt2,
        "llama.cpp smollm (digits one by one, then GPT-2)": pre_tokenizers.Sequence([digits, gpt2]),
    }


def tokens_per_char(pre_tokenizer, train_texts: list[str], eval_texts: list[str], vocab_size: int) -> tuple:
    backend = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizer
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(DEFAULT_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(train_texts, trainer=trainer)
    tokens = sum(len(encoding.ids) for encoding in backend.encode_batch(eval_texts, add_special_tokens=False))
    return backend.get_vocab_size(), tokens


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab-size", type=int, default=4096)
    args = parser.parse_args(argv)

    from wrenlm.training.corpus import default_corpus_files
    from wrenlm.training.data import load_documents, split_documents

    files = [str(path) for path in default_corpus_files()]
    splits = split_documents(load_documents(files), val_fraction=0.02)
    train_texts, eval_texts = list(splits["train"]["text"]), list(splits["validation"]["text"])
    chars = sum(map(len, eval_texts))
    print(f"Default corpus: {len(train_texts)} training / {len(eval_texts)} validation documents ({chars} chars)\n")
    print("| pre-tokenizer | vocabulary | validation tokens | tokens per char |")
    print("|---|---|---|---|")
    for name, pre_tokenizer in candidates().items():
        vocab, tokens = tokens_per_char(pre_tokenizer, train_texts, eval_texts, args.vocab_size)
        print(f"| {name} | {vocab} | {tokens} | {tokens / chars:.4f} |")


if __name__ == "__main__":
    main()
