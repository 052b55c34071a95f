"""`wrenlm.hub.loading`: what a model name and an adapter name mean, for `wren eval`, `wren chat` and Python."""

import huggingface_hub
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from wrenlm.hub.loading import load_model_and_tokenizer, resolve_model_and_adapter, tokenizer_source


@pytest.fixture
def base_and_adapter(save_model, tmp_path):
    """A saved tiny base model and a LoRA adapter for it with recognisable weights (no tokenizer of its own)."""
    _, base = save_model("dense", name="base")
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=2, target_modules=["v_proj"], task_type="CAUSAL_LM")
    )
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.25)
    peft_model.save_pretrained(tmp_path / "adapter")
    return base, tmp_path / "adapter"


def _lora_b(model) -> torch.Tensor:
    return model.get_base_model().model.layers[0].self_attn.v_proj.lora_B["default"].weight


def test_an_adapter_names_its_base_model(base_and_adapter):
    base, adapter = base_and_adapter
    expected = (str(base), str(adapter))
    assert resolve_model_and_adapter(str(base), str(adapter)) == expected
    assert resolve_model_and_adapter(str(adapter), None) == expected  # a model folder that holds an adapter
    assert resolve_model_and_adapter(None, str(adapter)) == expected
    assert resolve_model_and_adapter(str(base), None) == (str(base), None)


def test_the_tokenizer_comes_from_the_adapter_when_it_ships_one(base_and_adapter, hub_tokenizer):
    base, adapter = base_and_adapter
    assert tokenizer_source(str(base), str(adapter)) == str(base)
    hub_tokenizer.save_pretrained(adapter)
    assert tokenizer_source(str(base), str(adapter)) == str(adapter)
    assert tokenizer_source(str(base), None) == str(base)


def test_loads_base_plus_adapter_in_eval_mode_on_the_device(base_and_adapter):
    _, adapter = base_and_adapter
    model, tokenizer = load_model_and_tokenizer(None, str(adapter), device="cpu")
    assert not model.training and model.device.type == "cpu" and len(tokenizer) == model.config.vocab_size
    assert torch.equal(_lora_b(model), torch.full_like(_lora_b(model), 0.25))


def test_a_hub_adapter_is_downloaded_then_checked_like_a_local_one(base_and_adapter, monkeypatch):
    base, adapter = base_and_adapter
    downloads = []

    def snapshot_download(repo_id, **kwargs):
        downloads.append(repo_id)
        return str(adapter)  # the Hugging Face cache folder a real download would return

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert resolve_model_and_adapter(str(base), "tester/wren-lora") == (str(base), str(adapter))
    model, _ = load_model_and_tokenizer(None, "tester/wren-lora", device="cpu")
    assert downloads == ["tester/wren-lora", "tester/wren-lora"]
    assert torch.equal(_lora_b(model), torch.full_like(_lora_b(model), 0.25))


def test_missing_models_and_adapters_are_one_clear_error(base_and_adapter, tmp_path):
    base, _ = base_and_adapter
    with pytest.raises(FileNotFoundError, match=r"^LoRA adapter folder '.*nope' does not exist\.$"):
        resolve_model_and_adapter(str(base), str(tmp_path / "nope"))
    # Offline (the test suite is), a name that could be a Hub repo is looked up there and the failure said in a line.
    with pytest.raises(FileNotFoundError, match="'tester/no-such-adapter' does not exist, nor could a Hub repo"):
        resolve_model_and_adapter(str(base), "tester/no-such-adapter")
    with pytest.raises(FileNotFoundError, match=r"^Model folder '.*nope' does not exist\.$"):
        resolve_model_and_adapter(str(tmp_path / "nope"), None)
    with pytest.raises(
        FileNotFoundError, match=r"Model folder 'tester/no-such-model' does not exist, nor could a Hub"
    ):
        load_model_and_tokenizer("tester/no-such-model", device="cpu")
    with pytest.raises(ValueError, match="Name a model folder or Hub repo id"):
        resolve_model_and_adapter(None, None)
