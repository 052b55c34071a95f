"""Tokenizers travel with conversions: as WrenTokenizer into Wren folders, as plain TokenizersBackend out."""

import json

import pytest
from transformers import AutoTokenizer, ByT5Tokenizer, LlamaConfig, LlamaTokenizer, Qwen2Config, Qwen2Tokenizer
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from wren_testing import parity
from wrenlm.conversion import convert_from_wren, convert_to_wren
from wrenlm.conversion.tokenizer_conversion import first_difference, tokenizer_from_wren, tokenizer_to_wren
from wrenlm.tokenization import WrenTokenizer
from wrenlm.tokenization.tokenization_wren import bytes_to_unicode

CHATML = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def qwen2_tokenizer() -> Qwen2Tokenizer:
    """Byte-level BPE with NFC normalisation and Qwen's split regex, ChatML specials and template."""
    vocab = {char: index for index, char in enumerate(bytes_to_unicode().values())}
    for token in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        vocab[token] = len(vocab)
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he")]
    vocab.update({"Ġt": len(vocab), "he": len(vocab) + 1, "Ġthe": len(vocab) + 2})
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, extra_special_tokens=["<|im_start|>", "<|im_end|>"])
    tokenizer.chat_template = CHATML
    return tokenizer


def llama_tokenizer() -> LlamaTokenizer:
    """Metaspace BPE with byte fallback; pads on the left (a class default that is not saved)."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "▁": 3, "H": 4, "▁H": 5, "i": 6}
    vocab.update({f"<0x{byte:02X}>": len(vocab) + byte for byte in range(256)})
    return LlamaTokenizer(vocab=vocab, merges=[("▁", "H")])


@pytest.mark.parametrize("make", [qwen2_tokenizer, llama_tokenizer], ids=["qwen2", "llama"])
def test_round_trip_keeps_behaviour(make):
    source = make()

    wren = tokenizer_to_wren(source)
    back = tokenizer_from_wren(wren)

    assert type(wren) is WrenTokenizer and type(back) is TokenizersBackend
    assert first_difference(source, wren) is None and first_difference(source, back) is None
    assert wren.padding_side == source.padding_side


def test_tokenizer_without_tokenizers_backend_is_kept():
    source = ByT5Tokenizer()
    assert tokenizer_to_wren(source) is source


def test_first_difference_names_what_differs():
    source = parity.word_tokenizer()
    other = parity.word_tokenizer()
    other.padding_side = "left"
    assert first_difference(source, other) == "`padding_side`"
    other = qwen2_tokenizer()
    assert first_difference(source, other).startswith("vocabulary size")


def test_folders_carry_the_tokenizer_both_ways(tmp_path):
    tokenizer = qwen2_tokenizer()
    hf = parity.build_hf(Qwen2Config, vocab_size=len(tokenizer))
    hf.save_pretrained(tmp_path / "hf")
    tokenizer.save_pretrained(tmp_path / "hf")

    convert_to_wren(tmp_path / "hf", tmp_path / "wren")

    saved = json.loads((tmp_path / "wren" / "tokenizer_config.json").read_text())
    assert saved["tokenizer_class"] == "WrenTokenizer"
    assert (tmp_path / "wren" / "chat_template.jinja").is_file()
    in_wren = AutoTokenizer.from_pretrained(tmp_path / "wren")
    assert type(in_wren) is WrenTokenizer and first_difference(tokenizer, in_wren) is None
    messages = [{"role": "user", "content": "the weather"}]
    assert in_wren.apply_chat_template(messages, tokenize=False) == tokenizer.apply_chat_template(
        messages, tokenize=False
    )

    convert_from_wren(tmp_path / "wren", tmp_path / "back")

    saved = json.loads((tmp_path / "back" / "tokenizer_config.json").read_text())
    assert saved["tokenizer_class"] == "TokenizersBackend" and "auto_map" not in saved
    in_hf = AutoTokenizer.from_pretrained(tmp_path / "back")
    assert first_difference(tokenizer, in_hf) is None


def test_left_padding_survives_the_wren_folder(tmp_path):
    hf = parity.build_hf(LlamaConfig, vocab_size=len(llama_tokenizer()))
    convert_to_wren(hf, tmp_path / "wren", tokenizer=llama_tokenizer())
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "wren")
    assert type(reloaded) is WrenTokenizer and reloaded.padding_side == "left"
    assert first_difference(llama_tokenizer(), reloaded) is None
