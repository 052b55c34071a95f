"""Converting saved folders: Wren checkpoints reload with the Auto API, shard, keep tokenizer and generation config."""

import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, MixtralConfig, Qwen3Config

from wren_testing import parity
from wrenlm import WrenForCausalLM
from wrenlm.conversion import convert_from_wren, convert_to_wren


@pytest.fixture
def llama_folder(tmp_path):
    """A saved HF Llama checkpoint with a tokenizer and a custom generation config."""
    hf = parity.build_hf(LlamaConfig, tie_word_embeddings=False)
    hf.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=[2, 5], pad_token_id=0, max_new_tokens=33)
    folder = tmp_path / "llama"
    hf.save_pretrained(folder)
    parity.word_tokenizer().save_pretrained(folder)
    return hf, folder


def test_folder_to_wren_folder_reloads_with_auto(llama_folder, tmp_path):
    hf, folder = llama_folder
    out = tmp_path / "wren"

    convert_to_wren(folder, out)

    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "wren" and config["architectures"] == ["WrenForCausalLM"]
    reloaded = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
    assert isinstance(reloaded, WrenForCausalLM)
    parity.assert_same_logits(hf, reloaded)
    parity.assert_same_greedy(hf, reloaded)
    # Generation config and tokenizer travel with the model.
    assert reloaded.generation_config.eos_token_id == [2, 5]
    assert reloaded.generation_config.max_new_tokens == 33
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer("w5 w7 w9").input_ids == parity.word_tokenizer()("w5 w7 w9").input_ids
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("w1", "w2", "w0")


def test_model_card_names_the_hub_source_as_base_model(llama_folder, tmp_path):
    hf, folder = llama_folder
    convert_to_wren(folder, tmp_path / "from-folder")
    assert "base_model" not in (tmp_path / "from-folder" / "README.md").read_text()  # a local path is no Hub link

    hf.config._name_or_path = "someone/llama-tiny"  # as `from_pretrained("someone/llama-tiny")` leaves it
    convert_to_wren(hf, tmp_path / "from-hub")
    card = (tmp_path / "from-hub" / "README.md").read_text()
    assert "base_model: someone/llama-tiny" in card
    assert "https://huggingface.co/someone/llama-tiny" in card


def test_sharded_save_reloads(tmp_path):
    hf = parity.build_hf(Qwen3Config, head_dim=16)
    out = tmp_path / "wren-sharded"

    convert_to_wren(hf, out, max_shard_size="20KB")

    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3 and all((out / shard).is_file() for shard in shards)
    assert not (out / "model.safetensors").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
    parity.assert_same_logits(hf, reloaded)


def test_legacy_per_expert_mixtral_folder(tmp_path):
    """transformers writes Mixtral experts per expert (w1/w2/w3) on disk and fuses them on load."""
    hf = parity.build_hf(MixtralConfig, num_local_experts=4, intermediate_size=48, num_experts_per_tok=2)
    folder = tmp_path / "mixtral"
    hf.save_pretrained(folder)
    with safe_open(folder / "model.safetensors", "pt") as handle:
        assert any(".experts.0.w1.weight" in name for name in handle.keys())  # noqa: SIM118 - safe_open handles are not iterable
    out = tmp_path / "wren-moe"

    convert_to_wren(folder, out)

    with safe_open(out / "model.safetensors", "pt") as handle:
        names = set(handle.keys())
        assert handle.get_tensor("model.layers.0.mlp.experts.gate_up_proj").shape == (4, 96, 32)
        assert handle.get_tensor("model.layers.0.mlp.experts.down_proj").shape == (4, 32, 48)
    assert "model.layers.0.mlp.gate.weight" in names and "model.layers.0.mlp.gate.expert_bias" in names
    reloaded = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager")
    parity.assert_same_logits(hf, reloaded)
    parity.assert_same_greedy(hf, reloaded)


def test_wren_folder_back_to_hf_folder(llama_folder, tmp_path):
    hf, folder = llama_folder
    wren_dir, back_dir = tmp_path / "wren", tmp_path / "back"
    convert_to_wren(folder, wren_dir)

    back = convert_from_wren(wren_dir, back_dir, target="llama")

    assert json.loads((back_dir / "config.json").read_text())["model_type"] == "llama"
    reloaded = AutoModelForCausalLM.from_pretrained(back_dir, attn_implementation="eager")
    assert type(reloaded) is type(hf) is type(back)
    parity.assert_same_weights(hf, reloaded)
    parity.assert_same_logits(hf, reloaded)
    assert reloaded.generation_config.max_new_tokens == 33
    assert AutoTokenizer.from_pretrained(back_dir)("w4").input_ids == [4]


def test_dtype_conversion(llama_folder, tmp_path):
    hf, folder = llama_folder
    out = tmp_path / "wren-bf16"

    wren = convert_to_wren(folder, out, dtype="bfloat16")

    assert {param.dtype for param in wren.parameters()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.dtype == torch.bfloat16
    expected = hf.model.embed_tokens.weight.to(torch.bfloat16)
    assert torch.equal(reloaded.model.embed_tokens.weight, expected)


def test_no_tokenizer_in_source_is_fine(tmp_path):
    hf = parity.build_hf(LlamaConfig)
    out = tmp_path / "wren"
    convert_to_wren(hf, out)
    assert not (out / "tokenizer_config.json").exists()
    # An explicit tokenizer object is saved alongside.
    convert_to_wren(hf, tmp_path / "wren-tok", tokenizer=parity.word_tokenizer())
    assert AutoTokenizer.from_pretrained(tmp_path / "wren-tok")("w9").input_ids == [9]


def test_missing_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        convert_to_wren(tmp_path / "empty")


def test_offloaded_source_is_refused():
    with torch.device("meta"):
        hf = AutoModelForCausalLM.from_config(LlamaConfig(**parity.TINY))
    with pytest.raises(ValueError, match="have no data \\(meta device\\).*offloaded"):
        convert_to_wren(hf)
