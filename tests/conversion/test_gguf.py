"""GGUF -> Wren: exact against the HF Llama transformers builds from the same file; tokenizer, stop tokens, errors."""

import json
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, GgufConfig

from wren_testing import parity
from wren_testing.gguf import EOS_ID, IM_END_ID, expected_loaded_weights, tiny_llama, write_llama_gguf
from wrenlm.cli import main
from wrenlm.conversion import UnsupportedConversionError, convert_to_wren
from wrenlm.conversion import gguf as gguf_conversion
from wrenlm.conversion.checkpoint_io import reject_quantized
from wrenlm.conversion.gguf import (
    GGUFFileError,
    GGUFPackageMissingError,
    add_chat_stop_tokens,
    chat_stop_token_ids,
    convert_gguf_to_wren,
    gguf_card_metadata,
    load_gguf,
)
from wrenlm.conversion.tokenizer_conversion import first_difference
from wrenlm.tokenization import WrenTokenizer


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    # MIT, not Wren's default license, so the model card shows it came from the file.
    return write_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.Q4_1.gguf", license="mit")


def test_transformers_reads_the_test_file_like_llama_cpp_wrote_it(tiny_gguf):
    # Guards the fixture: every weight must come back as exactly its quantize/dequantize round trip,
    # which only happens if names, q/k row permutation and block layout are llama.cpp's.
    hf, tokenizer = load_gguf(tiny_gguf)
    loaded, expected = hf.state_dict(), expected_loaded_weights(tiny_llama(len(tokenizer)))
    assert sorted(loaded) == sorted(expected)
    for name, weight in expected.items():
        assert torch.equal(loaded[name], weight), name


def test_converted_wren_matches_the_hf_llama_from_the_same_file(tiny_gguf, tmp_path):
    hf, hf_tokenizer = load_gguf(tiny_gguf)
    convert_gguf_to_wren(tiny_gguf, tmp_path / "wren")

    wren = AutoModelForCausalLM.from_pretrained(tmp_path / "wren").eval()
    assert wren.config.model_type == "wren" and wren.dtype == torch.float32
    parity.assert_same_logits(hf, wren)
    parity.assert_same_greedy(hf, wren)
    config = json.loads((tmp_path / "wren" / "config.json").read_text())
    assert "quantization_config" not in config

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "wren")
    assert isinstance(tokenizer, WrenTokenizer)
    assert first_difference(hf_tokenizer, tokenizer) is None
    assert tokenizer.chat_template == hf_tokenizer.chat_template
    generation = json.loads((tmp_path / "wren" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [EOS_ID, IM_END_ID]


def test_convert_to_wren_reads_a_gguf_through_load_kwargs(tiny_gguf, tmp_path):
    # The generic path (no stop-token or quantizer handling of its own): transformers dequantizes, conversion is exact.
    hf, _ = load_gguf(tiny_gguf)
    wren = convert_to_wren(tiny_gguf.parent, tmp_path / "wren", load_kwargs={"gguf_file": tiny_gguf.name})
    parity.assert_same_logits(hf, wren)
    assert isinstance(AutoTokenizer.from_pretrained(tmp_path / "wren"), WrenTokenizer)


def test_only_weights_left_packed_count_as_quantized():
    def model(method, **quantizer):
        config = GgufConfig() if method == "gguf" else BitsAndBytesConfig(load_in_8bit=True)
        config.dequantize = quantizer.pop("dequantize", False)
        return SimpleNamespace(hf_quantizer=SimpleNamespace(quantization_config=config, **quantizer))

    reject_quantized(model("gguf", packed_modules={}))  # the legacy loader dequantized every weight
    reject_quantized(model("gguf", packed_modules={"model.layers.0.mlp.up_proj": None}, dequantize=True))
    with pytest.raises(UnsupportedConversionError, match=r"quantized \(gguf\)"):
        reject_quantized(model("gguf", packed_modules={"model.layers.0.mlp.up_proj": None}))
    with pytest.raises(UnsupportedConversionError, match=r"quantized \(bitsandbytes\)"):
        reject_quantized(model("bitsandbytes"))


def test_chat_stop_tokens(tiny_gguf):
    _, tokenizer = load_gguf(tiny_gguf)
    assert chat_stop_token_ids(tokenizer) == [IM_END_ID]

    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] + eos_token }}{% endfor %}"
    assert chat_stop_token_ids(tokenizer) == [EOS_ID]
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"  # nothing special ends a turn
    assert chat_stop_token_ids(tokenizer) == []
    tokenizer.chat_template = None
    assert chat_stop_token_ids(tokenizer) == []

    hf, tokenizer = load_gguf(tiny_gguf)
    add_chat_stop_tokens(hf.generation_config, tokenizer)  # a second time adds nothing
    assert hf.generation_config.eos_token_id == [EOS_ID, IM_END_ID]
    hf.generation_config.eos_token_id = None
    add_chat_stop_tokens(hf.generation_config, tokenizer)
    assert hf.generation_config.eos_token_id == IM_END_ID


def test_bad_files_are_refused_clearly(tiny_gguf, tmp_path):
    with pytest.raises(FileNotFoundError, match="No GGUF file"):
        convert_gguf_to_wren(tmp_path / "missing.gguf")

    (tmp_path / "text.gguf").write_text("not a model")
    with pytest.raises(GGUFFileError, match="not a GGUF file"):
        convert_gguf_to_wren(tmp_path / "text.gguf")

    data = tiny_gguf.read_bytes()
    for cut in (len(data) // 2, len(data) - 16):
        (tmp_path / "cut.gguf").write_bytes(data[:cut])
        with pytest.raises(GGUFFileError, match="damaged or truncated"):
            convert_gguf_to_wren(tmp_path / "cut.gguf")


def test_architectures_wren_cannot_reproduce_are_refused(tmp_path):
    write_llama_gguf(tmp_path / "phi3.gguf", architecture="phi3")
    with pytest.raises(UnsupportedConversionError, match="'phi3'.*fused qkv"):
        convert_gguf_to_wren(tmp_path / "phi3.gguf")

    write_llama_gguf(tmp_path / "unknown.gguf", architecture="wrenfly")
    with pytest.raises(GGUFFileError, match="cannot read the 'wrenfly' GGUF file"):
        convert_gguf_to_wren(tmp_path / "unknown.gguf")


def test_missing_gguf_package_names_the_install_command(tiny_gguf, monkeypatch):
    monkeypatch.setattr(gguf_conversion, "is_gguf_available", lambda: False)
    with pytest.raises(GGUFPackageMissingError, match=r"pip install 'wrenlm\[gguf\]'"):
        convert_gguf_to_wren(tiny_gguf)


def test_wren_convert_gguf(tiny_gguf, tmp_path, capsys):
    assert main(["convert", "--gguf", str(tiny_gguf), "--out", str(tmp_path / "wren"), "--dtype", "bfloat16"]) == 0
    assert "Converted GGUF" in capsys.readouterr().out
    wren = AutoModelForCausalLM.from_pretrained(tmp_path / "wren")
    assert wren.dtype == torch.bfloat16
    assert "license: mit" in (tmp_path / "wren" / "README.md").read_text()  # the GGUF's general.license

    cases = [
        (["--gguf", str(tiny_gguf), "--to", "llama"], "A GGUF file converts to Wren"),
        (["--gguf", str(tmp_path / "wren" / "config.json")], "not a GGUF file"),
    ]
    for args, message in cases:
        assert main(["convert", *args, "--out", str(tmp_path / "x")]) == 1
        last_line = capsys.readouterr().err.strip().splitlines()[-1]
        assert last_line.startswith("wren convert: error:") and message in last_line, last_line
    with pytest.raises(SystemExit):  # --from and --gguf are alternatives
        main(["convert", "--from", str(tmp_path / "wren"), "--gguf", str(tiny_gguf), "--out", str(tmp_path / "x")])


def test_model_card_metadata_from_the_gguf_header():
    header = {
        "general.license": "mit",
        "general.base_model.0.repo_url": "https://huggingface.co/someone/tiny-llama",
    }
    assert gguf_card_metadata(header) == {
        "license": "mit",
        "base_model": "someone/tiny-llama",
        "base_model_relation": "quantized",
    }
    # A base model published elsewhere is no Hub id; nothing declared, nothing claimed.
    assert gguf_card_metadata({"general.base_model.0.repo_url": "https://example.com/tiny"}) == {}
