"""Does llama.cpp tokenize the whole default corpus like the tokenizer `wren pretrain` trains by default?

    python -m bench.llama_cpp_tokenizer_check       # ~20 s on 2 cores; needs llama-cpp-python (`make llama-cpp`)

Trains the tokenizer as `wren pretrain` does with default settings (Wren's trainer, vocabulary 4096, on the
training split of the default Shakespeare corpus), exports it with a tiny Wren as GGUF, then encodes every
document of both splits with llama.cpp (through llama-cpp-python, vocabulary only) and with the Wren tokenizer,
and counts the documents whose ids are identical.
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def main(argv=None) -> None:
    import llama_cpp

    from wrenlm import WrenConfig, WrenForCausalLM
    from wrenlm.conversion.gguf_export import export_gguf
    from wrenlm.tokenization import train_tokenizer
    from wrenlm.training.config import PretrainConfig
    from wrenlm.training.corpus import default_corpus_files
    from wrenlm.training.data import load_documents, split_documents

    defaults = PretrainConfig()
    files = [str(path) for path in default_corpus_files()]
    splits = split_documents(load_documents(files), val_fraction=defaults.val_fraction, mode=defaults.split_mode)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "corpus").mkdir()
        for index, text in enumerate(splits["train"]["text"]):
            (root / "corpus" / f"{index:06d}.txt").write_text(text, encoding="utf-8")
        tokenizer = train_tokenizer(
            [root / "corpus"],
            vocab_size=defaults.vocab_size,
            min_frequency=defaults.tokenizer_min_frequency,
            show_progress=False,
        )
        config = WrenConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1)
        WrenForCausalLM(config).save_pretrained(root / "wren")
        tokenizer.save_pretrained(root / "wren")
        result = export_gguf(root / "wren", root / "wren.gguf", outtype="f32")
        llm = llama_cpp.Llama(str(result.path), vocab_only=True, verbose=False)
        try:
            texts = [*splits["train"]["text"], *splits["validation"]["text"]]
            same = 0
            for text in texts:
                ours = tokenizer(text, add_special_tokens=False)["input_ids"]
                same += llm.tokenize(text.encode(), add_bos=False, special=True) == ours
        finally:
            llm.close()
    print(
        f"tokenizer.ggml.pre {result.pre_tokenizer!r}, vocabulary {len(tokenizer)}: llama.cpp gives the Wren "
        f"tokenizer's ids on {same}/{len(texts)} documents ({sum(map(len, texts))} characters)"
    )


if __name__ == "__main__":
    main()
