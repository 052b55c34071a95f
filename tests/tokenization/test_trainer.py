"""The BPE trainers: Python == Rust (merges, order, ids), determinism, tie-breaking, specials, streaming, errors."""

import os
import random
import sys
from collections import Counter
from pathlib import Path

import pytest
from tokenizers import Regex, pre_tokenizers

from wrenlm.tokenization import (
    DEFAULT_SPECIAL_TOKENS,
    WREN_PRETOKENIZE_PATTERN,
    WrenTokenizer,
    count_pretokens,
    pretokenize,
    to_byte_level,
    tokenizer_from_bpe,
    train_bpe,
    train_bpe_from_counts,
    train_bpe_with_tokenizers,
    train_tokenizer,
)
from wrenlm.tokenization.pretokenization import SpecialTokenSplitter, plan_blocks, resolve_input_files
from wrenlm.tokenization.tokenization_wren import byte_level_base_vocab, bytes_to_unicode

CORPUS_NAMES = ["prose", "code", "non_english", "emoji", "whitespace", "runs"]


def _train_both(inputs, vocab_size, **kwargs):
    rust = train_bpe(inputs, vocab_size, backend="tokenizers", show_progress=False, **kwargs)
    python = train_bpe(inputs, vocab_size, backend="python", show_progress=False, **kwargs)
    return rust, python


def _assert_same(rust, python):
    assert python.vocab == rust.vocab
    assert len(python.merges) == len(rust.merges)
    for rank, (ours, theirs) in enumerate(zip(python.merges, rust.merges)):
        assert ours == theirs, f"first different merge at rank {rank}: {ours} vs {theirs}"


@pytest.mark.parametrize("name", CORPUS_NAMES)
@pytest.mark.parametrize(("vocab_size", "min_frequency"), [(600, 2), (1500, 0)])
def test_python_and_rust_learn_identical_merges_and_ids(write_file, corpora, name, vocab_size, min_frequency):
    path = write_file(corpora[name])
    rust, python = _train_both([path], vocab_size, min_frequency=min_frequency)
    _assert_same(rust, python)
    assert len(rust.merges) > 20, "the corpus should teach a real number of merges"
    # Same vocabulary and merges -> same ids on any text, through the full WrenTokenizer.
    sample = corpora[name][:3000] + "".join(corpora[other][:400] for other in CORPUS_NAMES)
    assert tokenizer_from_bpe(python).encode(sample) == tokenizer_from_bpe(rust).encode(sample)


def test_backends_identical_on_a_directory_of_mixed_corpora_with_specials(corpus_dir, write_file):
    chat = "x<|eos|>y <|im_start|>user\nhi<|im_end|>\n" * 50 + "<|tool|>call()<|tool|>" * 30
    extra = write_file(chat, "extra/chat.txt").parent
    rust, python = _train_both([corpus_dir, extra], 2500, special_tokens=["<|tool|>"])
    _assert_same(rust, python)


def test_multiprocess_counting_and_small_blocks_change_nothing(corpus_dir, corpora):
    files = resolve_input_files([corpus_dir])
    one = count_pretokens(plan_blocks(files), DEFAULT_SPECIAL_TOKENS, num_workers=1, show_progress=False)
    many = count_pretokens(plan_blocks(files, 2048), DEFAULT_SPECIAL_TOKENS, num_workers=2, show_progress=False)
    assert one == many
    # Counting in blocks gives exactly the pre-tokens of each whole file.
    whole = Counter()
    for text in corpora.values():
        whole.update(to_byte_level(token) for token in pretokenize(text))
    assert one == dict(whole)


def test_blocks_cut_only_before_newline_after_an_ascii_letter_or_digit(write_file, corpora):
    path = write_file(corpora["prose"] + corpora["whitespace"])
    blocks = plan_blocks([path], 500)
    assert len(blocks) > 10
    data = path.read_bytes()
    assert blocks[0][1] == 0 and blocks[-1][2] == len(data)
    for (_, _, end), (_, start, _) in zip(blocks, blocks[1:]):
        assert end == start and data[start : start + 1] == b"\n" and data[start - 1 : start].isalnum()


def test_python_regex_and_tokenizers_split_agree_on_corpora(corpora):
    split = pre_tokenizers.Split(Regex(WREN_PRETOKENIZE_PATTERN), behavior="isolated")
    for name, text in corpora.items():
        assert pretokenize(text) == [piece for piece, _ in split.pre_tokenize_str(text)], name


def test_pattern_pieces_cover_the_text_and_split_digits_contractions_and_line_ends():
    text = "Don't DON'T we'll 2025 12345678 x  \n\n  y"
    pieces = pretokenize(text)
    assert "".join(pieces) == text
    assert pieces[:6] == ["Don", "'t", " DON", "'T", " we", "'ll"]
    assert pieces[6:13] == [" ", "202", "5", " ", "123", "456", "78"]
    assert pieces[13:] == [" x", "  \n\n", " ", " y"]
    # Punctuation takes the line breaks after it; a word after a line break starts a piece of its own; only
    # ASCII letters make a contraction ("'ſ" stays with its word, as in llama.cpp).
    assert pretokenize("Stay!\n\nO, speak.\n(aside) x'ſy") == [
        "Stay", "!\n\n", "O", ",", " speak", ".\n", "(aside", ")", " x", "'ſy"
    ]  # fmt: skip


def test_base_vocabulary_layout():
    assert sorted(bytes_to_unicode().values()) == sorted(pre_tokenizers.ByteLevel.alphabet())
    assert bytes_to_unicode()[ord(" ")] == "Ġ"
    vocab = byte_level_base_vocab()
    assert (
        list(vocab)[:5]
        == list(DEFAULT_SPECIAL_TOKENS)
        == ["<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>"]
    )
    assert len(vocab) == 261 and list(vocab)[5:] == sorted(bytes_to_unicode().values())


def test_hand_traced_merges_tie_breaking_and_min_frequency():
    # Pair counts: (a,b) = 2 + 1 = 3, (b,a) = 1, (c,d) = 3, (d,c) = 1.
    words = {"abab": 1, "ab": 1, "cd": 3, "dc": 1}
    # (a,b) and (c,d) tie at 3: the smaller pair of ids wins ('a' < 'c'). Then (ab,ab) and (d,c) tie at 1:
    # ids of 'd','c' (< 256) are smaller than the id of 'ab' (257), so (d,c) goes first.
    model = train_bpe_from_counts(words, 257 + 3, ["<s>"], min_frequency=0, show_progress=False)
    assert model.merges == [("a", "b"), ("c", "d"), ("d", "c")]
    assert model.vocab["<s>"] == 0 and model.vocab["ab"] == 257 and model.vocab["dc"] == 259
    # min_frequency=3: pairs seen fewer than 3 times are never merged, training stops there.
    model = train_bpe_from_counts(words, 400, ["<s>"], min_frequency=3, show_progress=False)
    assert model.merges == [("a", "b"), ("c", "d")]
    # The Rust trainer agrees (each input line is one pre-token here).
    lines = [word for word, count in words.items() for _ in range(count)]
    for min_frequency, vocab_size in [(0, 260), (3, 400)]:
        rust = train_bpe_with_tokenizers(lines, vocab_size, ["<s>"], min_frequency, show_progress=False)
        ours = train_bpe_from_counts(words, vocab_size, ["<s>"], min_frequency, show_progress=False)
        assert rust.merges == ours.merges and rust.vocab == ours.vocab


def test_overlapping_runs_count_like_tokenizers():
    words = {"aaaa": 2, "aaa": 3, "baaab": 1}
    ours = train_bpe_from_counts(words, 300, [], min_frequency=0, show_progress=False)
    rust = train_bpe_with_tokenizers([w for w, c in words.items() for _ in range(c)], 300, [], 0, False)
    assert ours.merges == rust.merges and ours.vocab == rust.vocab
    assert ours.merges[0] == ("a", "a")


def test_merge_rebuilding_an_existing_token_string_matches_tokenizers():
    # "Ġxx" is a special token; merging "Ġ" + "xx" rebuilds that string, so the existing id is reused.
    rng = random.Random(3)
    text = " ".join(rng.choice(["ab", "abc", "cab", "xx", "aab"]) for _ in range(3000))
    specials = ["<s>", "Ġxx"]
    ours = train_bpe_from_counts(
        Counter(to_byte_level(t) for t in pretokenize(text)), 400, specials, min_frequency=0, show_progress=False
    )
    rust = train_bpe_with_tokenizers([text], 400, specials, min_frequency=0, show_progress=False)
    assert ("Ġ", "xx") in ours.merges
    assert ours.merges == rust.merges and ours.vocab == rust.vocab


def test_trainer_is_deterministic_and_independent_of_word_order(corpora):
    counts = Counter(to_byte_level(t) for t in pretokenize(corpora["prose"] + corpora["runs"]))
    first = train_bpe_from_counts(counts, 900, DEFAULT_SPECIAL_TOKENS, show_progress=False)
    again = train_bpe_from_counts(counts, 900, DEFAULT_SPECIAL_TOKENS, show_progress=False)
    items = list(counts.items())
    random.Random(1).shuffle(items)
    shuffled = train_bpe_from_counts(dict(items), 900, DEFAULT_SPECIAL_TOKENS, show_progress=False)
    assert first == again == shuffled


def test_special_tokens_are_reserved_first_and_never_split_or_merged(write_file):
    text = "alpha<|eos|>beta <|im_start|>user\nhello<|im_end|>\n" * 200 + "<|tool|>" * 500
    path = write_file(text)
    for backend in ("python", "tokenizers"):
        tok = train_tokenizer([path], 400, special_tokens=["<|tool|>"], backend=backend, show_progress=False)
        vocab = tok.get_vocab()
        assert [vocab[t] for t in [*DEFAULT_SPECIAL_TOKENS, "<|tool|>"]] == [0, 1, 2, 3, 4, 5]
        merged = [token for token in vocab if vocab[token] >= 6 + 256]
        assert merged, "the corpus should teach some merges"
        # No learned token contains a piece of a special token's markup (they were cut out before counting).
        assert not [token for token in merged if "<|" in token or "|>" in token]
        ids = tok.encode("alpha<|eos|>beta<|tool|><|im_start|>", add_special_tokens=False)
        alpha, beta = tok.encode("alpha"), tok.encode("beta")
        assert ids == [*alpha, 2, *beta, 5, 3]
        assert tok.decode(ids) == "alpha<|eos|>beta<|tool|><|im_start|>"
        assert "<|tool|>" in tok.extra_special_tokens


def test_special_tokens_splitter_prefers_the_longest_match():
    splitter = SpecialTokenSplitter(["<|a|>", "<|a|>b", "x"])
    assert splitter.split("1<|a|>b2<|a|>3x4") == ["1", "2", "3", "4"]


def test_train_tokenizer_returns_a_wren_tokenizer_with_defaults(corpus_dir):
    tok = train_tokenizer([corpus_dir], 700, show_progress=False)
    assert isinstance(tok, WrenTokenizer) and len(tok) == 700
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<|pad|>", "<|bos|>", "<|eos|>")
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)


def test_train_shows_a_progress_bar(write_file, corpora, capsys):
    train_bpe([write_file(corpora["prose"])], 400, backend="python", show_progress=True)
    assert "Computing merges" in capsys.readouterr().err


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("backend", ["python", "tokenizers"])
def test_vocab_size_smaller_than_bytes_plus_specials_is_rejected(write_file, backend):
    path = write_file("hello world\n")
    with pytest.raises(ValueError, match=r"vocab_size=260 is too small.*256 byte tokens \+ 5 special tokens = 261"):
        train_bpe([path], 260, backend=backend, show_progress=False)
    with pytest.raises(ValueError, match="= 262"):
        train_bpe([path], 261, special_tokens=["<|x|>"], backend=backend, show_progress=False)
    assert len(train_bpe([path], 261, backend=backend, show_progress=False).vocab) == 261


@pytest.mark.parametrize("backend", ["python", "tokenizers"])
def test_empty_corpus_is_rejected(write_file, tmp_path, backend):
    empty = write_file("", "empty.txt")
    with pytest.raises(ValueError, match="corpus is empty"):
        train_bpe([empty], 300, backend=backend, show_progress=False)
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ValueError, match="corpus is empty: no text in .*folder"):
        train_bpe(folder, 300, backend=backend, show_progress=False)
    only_specials = write_file("<|eos|><|pad|>", "specials.txt")
    with pytest.raises(ValueError, match="nothing but special tokens"):
        train_bpe([only_specials], 300, backend=backend, show_progress=False)


@pytest.mark.parametrize("backend", ["python", "tokenizers"])
def test_missing_and_undecodable_inputs_are_rejected(tmp_path, backend):
    with pytest.raises(FileNotFoundError, match="input not found: .*missing.txt"):
        train_bpe([tmp_path / "missing.txt"], 300, backend=backend, show_progress=False)
    binary = tmp_path / "data.bin"
    binary.write_bytes(b"valid text\n" + bytes([0xFF, 0xFE, 0x00, 0x80]) + b"\n")
    with pytest.raises(ValueError, match=r"data.bin is not UTF-8 text \(invalid byte at offset 11\)"):
        train_bpe([binary], 300, backend=backend, show_progress=False)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_input_is_rejected(write_file):
    path = write_file("secret\n")
    path.chmod(0)
    with pytest.raises(PermissionError, match="not readable"):
        train_bpe([path], 300, show_progress=False)


def test_bad_arguments_are_rejected(write_file):
    path = write_file("hello\n")
    with pytest.raises(ValueError, match="unknown backend"):
        train_bpe([path], 300, backend="rust")
    with pytest.raises(ValueError, match="contains whitespace"):
        train_bpe([path], 300, special_tokens=["<|a b|>"])
    with pytest.raises(ValueError, match="non-empty"):
        train_bpe([path], 300, special_tokens=[""])


def test_naive_benchmark_trainer_agrees_with_ours(corpora):
    # The benchmark's baseline must learn the same merges, or its timings compare different work.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    try:
        from bench.tokenizer_naive import train_naive
    finally:
        sys.path.pop(0)
    counts = Counter(to_byte_level(t) for t in pretokenize(corpora["prose"][:20000] + corpora["runs"][:5000]))
    ours = train_bpe_from_counts(counts, 500, DEFAULT_SPECIAL_TOKENS, show_progress=False)
    assert train_naive(counts, 500, DEFAULT_SPECIAL_TOKENS) == ours
