"""WrenTokenizer: round trips, TokenizerTesterMixin-style checks, Auto/remote-code loading, foreign pipelines, chat."""

import functools
import json
import pickle
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
from tokenizers.models import BPE
from transformers import AutoTokenizer, TokenizersBackend

import wrenlm
from wrenlm.tokenization import DEFAULT_CHAT_TEMPLATE, DEFAULT_SPECIAL_TOKENS, WrenTokenizer

SAMPLES = [
    "Hello world! Don't panic: 12345 apples.",
    "def f(x):\n\treturn x ** 2  # square\n",
    "Привет, мир! مرحبا بالعالم 日本語のテキスト 한국어",
    "emoji 😀👍🏽🇫🇷👨‍👩‍👧 and  spaces   \n\n\n tabs\t\t end",
    "<|im_start|>user\nhi<|im_end|>",
]


# ---------------------------------------------------------------- round trips (property-based)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_decode_encode_round_trips_arbitrary_unicode(trained_tokenizer, text):
    ids = trained_tokenizer.encode(text, add_special_tokens=False)
    assert trained_tokenizer.decode(ids) == text
    assert all(0 <= i < len(trained_tokenizer) for i in ids)


@settings(max_examples=50, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=100))
def test_untrained_byte_level_tokenizer_round_trips(text):
    tokenizer = _untrained()
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    # Without merges every byte is one token (special-token strings aside).
    if not any(special in text for special in DEFAULT_SPECIAL_TOKENS):
        assert len(ids) == len(text.encode("utf-8"))


@functools.cache
def _untrained() -> WrenTokenizer:
    return WrenTokenizer()


def test_every_byte_sequence_encodes_without_unknown_tokens(trained_tokenizer):
    assert trained_tokenizer.unk_token is None
    text = bytes(range(256)).decode("latin-1") + "\x00\x7f\ufffd\U0010ffff"
    ids = trained_tokenizer.encode(text, add_special_tokens=False)
    assert trained_tokenizer.decode(ids) == text


# ---------------------------------------------------------------- TokenizerTesterMixin-style checks


def test_internal_consistency(trained_tokenizer):
    tok = trained_tokenizer
    for text in SAMPLES:
        tokens = tok.tokenize(text)
        ids = tok.convert_tokens_to_ids(tokens)
        assert ids == tok.encode(text, add_special_tokens=False)
        assert tok.convert_ids_to_tokens(ids) == tokens
        assert tok.decode(ids) == text
        assert tok.convert_tokens_to_string(tokens) == text


def test_default_special_tokens_and_ids(trained_tokenizer):
    tok = trained_tokenizer
    assert tok.convert_tokens_to_ids(list(DEFAULT_SPECIAL_TOKENS)) == [0, 1, 2, 3, 4]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.extra_special_tokens == ["<|im_start|>", "<|im_end|>"]
    assert set(tok.all_special_tokens) == set(DEFAULT_SPECIAL_TOKENS)
    # No bos/eos added by default (documents are packed as text + eos by the training code).
    assert tok("hi")["input_ids"] == tok.encode("hi", add_special_tokens=False)


def test_special_tokens_are_never_split(trained_tokenizer):
    tok = trained_tokenizer
    for token in DEFAULT_SPECIAL_TOKENS:
        ids = tok.encode(f"ab{token}cd {token} {token}{token}", add_special_tokens=False)
        assert ids.count(tok.convert_tokens_to_ids(token)) == 4
    ids = tok.encode("<|im_start|>", add_special_tokens=False)
    assert ids == [3]
    assert tok.decode(tok.encode("x<|eos|>y"), skip_special_tokens=True) == "xy"


def test_special_tokens_mask(trained_tokenizer):
    tok = trained_tokenizer
    ids = tok.encode("<|bos|>hello world<|eos|>")
    mask = tok.get_special_tokens_mask(ids, already_has_special_tokens=True)
    assert mask == [1 if i in (1, 2) else 0 for i in ids] and mask[0] == mask[-1] == 1 and sum(mask) == 2
    # `return_special_tokens_mask` marks the tokens the tokenizer itself adds: none by default.
    encoded = tok("hello world", return_special_tokens_mask=True)
    assert encoded["special_tokens_mask"] == [0] * len(encoded["input_ids"])
    with_bos = WrenTokenizer(vocab=tok.get_vocab(), merges=_merges(tok), add_bos_token=True, add_eos_token=True)
    encoded = with_bos("hello world", return_special_tokens_mask=True)
    assert encoded["special_tokens_mask"] == [1] + [0] * (len(encoded["input_ids"]) - 2) + [1]


def test_add_bos_eos_option(trained_tokenizer, tmp_path):
    tok = WrenTokenizer(
        vocab=trained_tokenizer.get_vocab(), merges=_merges(trained_tokenizer), add_bos_token=True, add_eos_token=True
    )
    ids = tok("hello")["input_ids"]
    assert ids[0] == 1 and ids[-1] == 2 and ids[1:-1] == trained_tokenizer.encode("hello")
    tok.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path)("hello")["input_ids"] == ids


def _merges(tokenizer) -> list[tuple[str, str]]:
    return [tuple(m) for m in json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]]


def test_added_tokens(trained_tokenizer, tmp_path):
    tok = pickle.loads(pickle.dumps(trained_tokenizer))
    size = len(tok)
    assert tok.add_tokens(["brandnewword", "<|tool|>"]) == 2
    assert tok.add_special_tokens({"extra_special_tokens": ["<|ctrl|>"]}) == 1
    assert len(tok) == size + 3
    ids = tok.encode("a brandnewword<|tool|><|ctrl|>", add_special_tokens=False)
    assert ids[-3:] == [size, size + 1, size + 2]
    assert tok.decode(ids) == "a brandnewword<|tool|><|ctrl|>"
    assert tok.decode(ids, skip_special_tokens=True) == "a brandnewword<|tool|>"
    tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len(reloaded) == size + 3 and reloaded.encode("a brandnewword<|tool|><|ctrl|>") == ids
    assert "<|ctrl|>" in reloaded.all_special_tokens


def test_padding_right_and_left(trained_tokenizer):
    tok = pickle.loads(pickle.dumps(trained_tokenizer))
    short, long = tok.encode("hi"), tok.encode("hello there, how are you?")
    batch = tok(["hi", "hello there, how are you?"], padding=True)
    assert batch["input_ids"][0] == short + [0] * (len(long) - len(short))
    assert batch["attention_mask"][0] == [1] * len(short) + [0] * (len(long) - len(short))
    assert batch["input_ids"][1] == long
    tok.padding_side = "left"
    batch = tok(["hi", "hello there, how are you?"], padding="max_length", max_length=len(long) + 2)
    assert batch["input_ids"][0] == [0] * (len(long) + 2 - len(short)) + short
    assert batch["input_ids"][1] == [0, 0] + long
    assert batch["attention_mask"][1] == [0, 0] + [1] * len(long)
    batch = tok(["hi"], padding=True, padding_side="right", pad_to_multiple_of=8)
    assert len(batch["input_ids"][0]) == 8 and batch["input_ids"][0][: len(short)] == short


def test_truncation(trained_tokenizer):
    tok = pickle.loads(pickle.dumps(trained_tokenizer))
    text = "one two three four five six seven eight nine ten"
    full = tok.encode(text)
    assert tok(text, truncation=True, max_length=4)["input_ids"] == full[:4]
    tok.truncation_side = "left"
    assert tok(text, truncation=True, max_length=4)["input_ids"] == full[-4:]
    overflow = tok(text, truncation=True, max_length=4, stride=1, return_overflowing_tokens=True)
    assert len(overflow["input_ids"]) > 1


def test_batch_encode_matches_single_and_returns_tensors(trained_tokenizer):
    batch = trained_tokenizer(SAMPLES)["input_ids"]
    assert batch == [trained_tokenizer.encode(text) for text in SAMPLES]
    assert trained_tokenizer.batch_decode(batch) == SAMPLES
    tensors = trained_tokenizer(SAMPLES, padding=True, return_tensors="pt")
    assert tuple(tensors["input_ids"].shape) == (len(SAMPLES), max(len(ids) for ids in batch))


def test_offsets_map_back_to_the_text(trained_tokenizer):
    # Offsets drive `return_assistant_tokens_mask`: in order, in bounds, covering every character.
    text = SAMPLES[2] + " " + SAMPLES[0]
    offsets = trained_tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    assert offsets == sorted(offsets) and all(0 <= start < end <= len(text) for start, end in offsets)
    assert {i for start, end in offsets for i in range(start, end)} == set(range(len(text)))
    ascii_text = SAMPLES[0]
    encoded = trained_tokenizer(ascii_text, return_offsets_mapping=True)
    for token_id, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
        assert trained_tokenizer.decode([token_id]) == ascii_text[start:end]


def test_pickling_round_trip(trained_tokenizer):
    restored = pickle.loads(pickle.dumps(trained_tokenizer))
    assert isinstance(restored, WrenTokenizer)
    for text in SAMPLES:
        assert restored.encode(text) == trained_tokenizer.encode(text)
    assert restored.chat_template == trained_tokenizer.chat_template


# ---------------------------------------------------------------- saving and loading


def test_save_and_load_through_auto_tokenizer(trained_tokenizer, tmp_path):
    trained_tokenizer.save_pretrained(tmp_path)
    files = {path.name for path in tmp_path.iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "tokenization_wren.py"} <= files
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "WrenTokenizer"
    assert config["auto_map"]["AutoTokenizer"][0] == "tokenization_wren.WrenTokenizer"
    assert (tmp_path / "chat_template.jinja").read_text() == DEFAULT_CHAT_TEMPLATE

    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is WrenTokenizer
    assert loaded.get_vocab() == trained_tokenizer.get_vocab() and len(loaded) == len(trained_tokenizer)
    assert loaded.backend_tokenizer.to_str() == trained_tokenizer.backend_tokenizer.to_str()
    assert loaded.special_tokens_map == trained_tokenizer.special_tokens_map
    assert loaded.chat_template == DEFAULT_CHAT_TEMPLATE
    for text in SAMPLES:
        assert loaded.encode(text) == trained_tokenizer.encode(text)


def test_auto_tokenizer_resolves_wren_model_folders(trained_tokenizer, tmp_path, tiny_config):
    tiny_config.save_pretrained(tmp_path)
    trained_tokenizer.save_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                k: v
                for k, v in json.loads((tmp_path / "tokenizer_config.json").read_text()).items()
                if k not in ("tokenizer_class", "auto_map")
            }
        )
    )
    # Only config.json's model_type="wren" tells AutoTokenizer which class to use.
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is WrenTokenizer and loaded.encode(SAMPLES[0]) == trained_tokenizer.encode(SAMPLES[0])


def test_loads_with_trust_remote_code_where_wrenlm_is_absent(trained_tokenizer, tmp_path):
    trained_tokenizer.save_pretrained(tmp_path / "tok")
    script = textwrap.dedent(
        f"""
        import json, sys
        class BlockWrenlm:
            def find_spec(self, name, path=None, target=None):
                if name == "wrenlm" or name.startswith("wrenlm."):
                    raise ImportError("wrenlm is not installed here")
        sys.meta_path.insert(0, BlockWrenlm())
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained({str(tmp_path / "tok")!r}, trust_remote_code=True)
        assert "wrenlm" not in sys.modules
        print(json.dumps([type(tok).__name__, type(tok).__module__, tok.encode({SAMPLES[2]!r}), len(tok)]))
        """
    )
    env = {"HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    name, module, ids, size = json.loads(result.stdout.strip().splitlines()[-1])
    assert name == "WrenTokenizer" and module.startswith("transformers_modules")
    assert ids == trained_tokenizer.encode(SAMPLES[2]) and size == len(trained_tokenizer)


def test_loading_a_folder_without_tokenizer_json_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="no tokenizer.json"):
        WrenTokenizer.from_pretrained(tmp_path)


# ---------------------------------------------------------------- foreign tokenizer.json files load faithfully

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


def _foreign_llama3_style(corpus: str) -> Tokenizer:
    tokenizer = Tokenizer(BPE(unk_token=None, ignore_merges=True))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=["<|begin_of_text|>", "<|end_of_text|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([corpus], trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", tokenizer.token_to_id("<|begin_of_text|>"))],
    )
    return tokenizer


def _foreign_smollm2_style(corpus: str) -> Tokenizer:
    tokenizer = Tokenizer(BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([corpus], trainer)
    return tokenizer


@pytest.mark.parametrize("style", ["llama3", "smollm2"])
def test_foreign_tokenizer_json_keeps_its_pipeline(style, corpora, tmp_path):
    corpus = corpora["prose"] + corpora["code"] + corpora["non_english"]
    if style == "llama3":
        backend = _foreign_llama3_style(corpus)
        special = dict(bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
        template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    else:
        backend = _foreign_smollm2_style(corpus)
        special = dict(bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>")
        template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    original = TokenizersBackend(tokenizer_object=backend, chat_template=template, **special)
    original.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["tokenizer_class"] = "GPT2Tokenizer"  # what such a converted folder typically says
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))

    loaded = WrenTokenizer.from_pretrained(tmp_path)
    direct = WrenTokenizer(tokenizer_object=Tokenizer.from_file(str(tmp_path / "tokenizer.json")), **special)
    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    for tokenizer in (loaded, direct):
        state = json.loads(tokenizer.backend_tokenizer.to_str())
        for part in ("normalizer", "pre_tokenizer", "post_processor", "decoder", "added_tokens"):
            assert state[part] == saved[part], part
        assert state["model"] == saved["model"]
        assert len(tokenizer) == len(original), "no token may be added to a foreign vocabulary"
        assert tokenizer.bos_token == special["bos_token"] and tokenizer.eos_token == special["eos_token"]
        for text in [*SAMPLES, "Cafe\u0301 1234567 don't"]:
            assert tokenizer.encode(text) == original.encode(text) == backend.encode(text).ids
    assert loaded.chat_template == template
    assert loaded.pad_token == special.get("pad_token")
    # Saving it again as a WrenTokenizer keeps the pipeline too.
    loaded.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "tokenizer.json").read_text())["pre_tokenizer"] == saved["pre_tokenizer"]
    assert AutoTokenizer.from_pretrained(tmp_path / "again").encode(SAMPLES[0]) == original.encode(SAMPLES[0])


def test_vocab_and_serialized_tokenizer_are_exclusive(trained_tokenizer):
    with pytest.raises(ValueError, match="either"):
        WrenTokenizer(vocab={"a": 0}, tokenizer_object=trained_tokenizer.backend_tokenizer)
    with pytest.raises(ValueError, match="without the `vocab`"):
        WrenTokenizer(merges=[("a", "b")])


# ---------------------------------------------------------------- chat template

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! 😀"},
    {"role": "user", "content": [{"type": "text", "text": "2 + 2?"}]},
    {"role": "assistant", "content": " Four."},
]


def test_chat_template_renders_chatml_with_generation_prompt(trained_tokenizer):
    rendered = trained_tokenizer.apply_chat_template(CHAT[:4], tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi there<|im_end|>\n"
        "<|im_start|>assistant\nHello! 😀<|im_end|>\n"
        "<|im_start|>user\n2 + 2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = trained_tokenizer.apply_chat_template(CHAT[:4], add_generation_prompt=True)["input_ids"]
    assert ids == trained_tokenizer.encode(rendered)
    header = trained_tokenizer.encode("assistant\n")
    assert ids[-len(header) - 1 :] == [3, *header]
    assert trained_tokenizer.decode(ids) == rendered
    no_prompt = trained_tokenizer.apply_chat_template(CHAT[:2], tokenize=False)
    assert no_prompt.endswith("Hi there<|im_end|>\n")


def test_assistant_tokens_mask_covers_exactly_the_replies(trained_tokenizer):
    out = trained_tokenizer.apply_chat_template(CHAT, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(mask) == len(ids)
    masked = [i for i, m in zip(ids, mask) if m]
    assert trained_tokenizer.decode(masked) == "Hello! 😀<|im_end|> Four.<|im_end|>"
    # The two replies are separate runs: prompts, headers and the newline after <|im_end|> are not trained on.
    runs = [(k, v) for k, v in enumerate(mask) if v and (k == 0 or not mask[k - 1])]
    assert len(runs) == 2
    header = [3, *trained_tokenizer.encode("assistant\n")]
    for start, _ in runs:
        assert ids[start - len(header) : start] == header
    batch = trained_tokenizer.apply_chat_template(
        [CHAT, CHAT[:3]], return_dict=True, return_assistant_tokens_mask=True, padding=True, return_tensors="pt"
    )
    assert batch["assistant_masks"].shape == batch["input_ids"].shape
    assert int(batch["assistant_masks"][1].sum()) == len(trained_tokenizer.encode("Hello! 😀<|im_end|>"))


def test_wrenlm_exports_the_tokenizer():
    assert wrenlm.WrenTokenizer is WrenTokenizer


def test_a_tokenizer_saved_with_wrens_earlier_pattern_loads_and_splits_as_before(corpora, tmp_path):
    from wrenlm.tokenization.tokenization_wren import (
        WREN_V1_PRETOKENIZE_PATTERN,
        build_wren_backend,
        byte_level_base_vocab,
    )

    backend = build_wren_backend(byte_level_base_vocab(), [])
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(WREN_V1_PRETOKENIZE_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=list(DEFAULT_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([corpora["prose"] + corpora["code"]], trainer)
    specials = dict(pad_token="<|pad|>", bos_token="<|bos|>", eos_token="<|eos|>")
    WrenTokenizer(tokenizer_object=backend, **specials).save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, WrenTokenizer)
    split = json.loads(loaded.backend_tokenizer.to_str())["pre_tokenizer"]["pretokenizers"][0]
    assert split["pattern"]["Regex"] == WREN_V1_PRETOKENIZE_PATTERN
    for text in [*SAMPLES, "DON'T 2025!\n\nx"]:
        assert loaded.encode(text) == backend.encode(text).ids
    # The earlier pattern kept a space in front of digit groups; the current one does not.
    assert [piece for piece, _ in loaded.backend_tokenizer.pre_tokenizer.pre_tokenize_str(" 2025")] == ["Ġ202", "5"]
