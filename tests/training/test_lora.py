"""PEFT LoRA on Wren: default targets from `import wrenlm`, MoE expert tensors, save/load/merge, clear errors."""

import os
import subprocess
import sys

import pytest
import torch
from peft import AutoPeftModelForCausalLM, LoraConfig, PeftModel, get_peft_model
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from transformers import AutoModelForCausalLM

import wrenlm
from wren_testing import tiny_config_kwargs, tiny_moe_config_kwargs
from wren_testing.finetune import save_tiny_base
from wrenlm.training.lora import WREN_EXPERT_PARAMETERS, WREN_LORA_TARGET_MODULES, load_adapter, wren_lora_config

MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
IDS = torch.tensor([[5, 9, 17, 33, 2, 64, 70, 11], [3, 8, 100, 7, 7, 21, 90, 4]])


def _model(moe: bool, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    kwargs = tiny_moe_config_kwargs(**overrides) if moe else tiny_config_kwargs(**overrides)
    return wrenlm.WrenForCausalLM(wrenlm.WrenConfig(**kwargs)).eval()


def _logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _randomise_lora(model, seed: int = 1):
    """LoRA B starts at zero (an adapter that does nothing); give every LoRA tensor real values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)


def _wrapped_module_names(peft_model) -> set[str]:
    return {name.rsplit(".lora_A", 1)[0] for name, _ in peft_model.named_parameters() if ".lora_A." in name}


def test_import_wrenlm_registers_every_linear_projection_as_default_target():
    assert TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING["wren"] == list(WREN_LORA_TARGET_MODULES)
    model = _model(moe=False)
    peft_model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM"))
    wrapped = _wrapped_module_names(peft_model)
    expected = {
        f"base_model.model.model.layers.{layer}.{block}.{proj}"
        for layer in range(model.config.num_hidden_layers)
        for block, projections in (("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")), ("mlp", MLP_PROJECTIONS))
        for proj in projections
    }
    assert wrapped == expected
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in name for name in trainable)


def test_moe_defaults_cover_attention_dense_and_shared_experts():
    peft_model = get_peft_model(_model(moe=True), LoraConfig(task_type="CAUSAL_LM"))
    wrapped = _wrapped_module_names(peft_model)
    assert "base_model.model.model.layers.0.mlp.down_proj" in wrapped  # first_k_dense_layers=1
    assert "base_model.model.model.layers.2.mlp.shared_experts.gate_proj" in wrapped
    assert "base_model.model.model.layers.2.self_attn.o_proj" in wrapped
    assert not any("experts.lora" in name or ".gate.lora" in name for name, _ in peft_model.named_parameters())


def test_moe_expert_tensors_get_lora_that_trains_and_merges():
    model = _model(moe=True)
    config = wren_lora_config(model.config, r=4, alpha=8)
    assert config.target_parameters == list(WREN_EXPERT_PARAMETERS)
    peft_model = get_peft_model(model, config)
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    for layer in (1, 2):  # the MoE layers; each expert tensor gets its own (nested) ParamWrapper
        assert f"base_model.model.model.layers.{layer}.mlp.experts.lora_A.default.weight" in trainable
        assert f"base_model.model.model.layers.{layer}.mlp.experts.base_layer.lora_B.default.weight" in trainable
    assert not any("layers.0.mlp.experts" in name for name in trainable)

    # The experts alone, on fixed inputs and routing: a step that only LoRA can take changes their output.
    experts = peft_model.base_model.model.model.layers[1].mlp.experts
    hidden = torch.randn(6, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    top_k_index = torch.tensor([[0, 1], [2, 3], [1, 2], [3, 0], [0, 2], [1, 3]])
    top_k_weights = torch.full((6, 2), 0.5)
    before = experts(hidden, top_k_index, top_k_weights).detach()
    base_weights = {n: p.detach().clone() for n, p in peft_model.named_parameters() if not p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    for _ in range(2):  # step 1 moves B away from 0, step 2 then also moves A's contribution
        loss = peft_model(input_ids=IDS, labels=IDS).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.eval()
    after = experts(hidden, top_k_index, top_k_weights).detach()
    assert (after - before).abs().max() > 1e-4
    for name, param in peft_model.named_parameters():
        if name in base_weights:
            torch.testing.assert_close(param, base_weights[name], rtol=0, atol=0)

    unmerged = _logits(peft_model)
    merged = peft_model.merge_and_unload()
    assert isinstance(merged, wrenlm.WrenForCausalLM)
    torch.testing.assert_close(_logits(merged), unmerged, rtol=1e-5, atol=1e-5)


def test_lora_config_errors():
    dense = wrenlm.WrenConfig(**tiny_config_kwargs())
    moe = wrenlm.WrenConfig(**tiny_moe_config_kwargs())
    assert wren_lora_config(dense).target_parameters is None
    assert wren_lora_config(moe, experts=False).target_parameters is None
    with pytest.raises(ValueError, match="no routed experts"):
        wren_lora_config(dense, experts=True)
    with pytest.raises(ValueError, match="dropout must be 0"):
        wren_lora_config(moe, dropout=0.1)


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_adapter_round_trip_with_peft_and_auto_peft(moe, tokenizer, tmp_path):
    base_dir = save_tiny_base(tokenizer, tmp_path / "base", moe=moe)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(base, wren_lora_config(base.config, r=4))
    _randomise_lora(peft_model)
    peft_model.eval()
    expected = _logits(peft_model)
    base_logits = _logits(AutoModelForCausalLM.from_pretrained(base_dir).eval())
    assert (expected - base_logits).abs().max() > 1e-3  # the adapter does something
    peft_model.save_pretrained(tmp_path / "adapter")

    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), tmp_path / "adapter").eval()
    torch.testing.assert_close(_logits(loaded), expected, rtol=1e-5, atol=1e-5)
    # The base model's path is recorded in adapter_config.json; with wrenlm imported no remote code is needed.
    auto = AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter").eval()
    torch.testing.assert_close(_logits(auto), expected, rtol=1e-5, atol=1e-5)
    ours = load_adapter(AutoModelForCausalLM.from_pretrained(base_dir), tmp_path / "adapter").eval()
    torch.testing.assert_close(_logits(ours), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_logits(ours.merge_and_unload()), expected, rtol=1e-5, atol=1e-5)


REMOTE_CODE_LOAD = """
import json, sys, torch
from peft import AutoPeftModelForCausalLM
model = AutoPeftModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
assert "wrenlm" not in sys.modules, "wrenlm was imported"
with torch.no_grad():
    logits = model(input_ids=torch.tensor(json.loads(sys.argv[2]))).logits
torch.save(logits, sys.argv[3])
"""


def test_auto_peft_loads_without_wrenlm_through_remote_code(tokenizer, tmp_path):
    """A fresh interpreter that never imports wrenlm: the base folder's own code (auto_map) serves PEFT."""
    base_dir = save_tiny_base(tokenizer, tmp_path / "base", moe=True)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(base, wren_lora_config(base.config, r=4))  # experts too
    _randomise_lora(peft_model)
    peft_model.save_pretrained(tmp_path / "adapter")
    expected = _logits(peft_model.eval())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-c",
        REMOTE_CODE_LOAD,
        str(tmp_path / "adapter"),
        str(IDS.tolist()),
        str(tmp_path / "out.pt"),
    ]
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    torch.testing.assert_close(torch.load(tmp_path / "out.pt"), expected, rtol=1e-5, atol=1e-5)


def test_load_adapter_clear_errors(tokenizer, tmp_path):
    base_dir = save_tiny_base(tokenizer, tmp_path / "base")
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_adapter(base, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"holds no LoRA adapter \(adapter_config.json is missing\)"):
        load_adapter(base, tmp_path / "empty")
    (tmp_path / "empty" / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"empty/adapter_config.json is not valid JSON"):
        load_adapter(base, tmp_path / "empty")

    get_peft_model(base, wren_lora_config(base.config, r=4)).save_pretrained(tmp_path / "adapter")
    wider = AutoModelForCausalLM.from_pretrained(save_tiny_base(tokenizer, tmp_path / "wide", hidden_size=64))
    with pytest.raises(ValueError, match=r"was trained on .*base.*layer shapes differ"):
        load_adapter(wider, tmp_path / "adapter")
    shallower = AutoModelForCausalLM.from_pretrained(save_tiny_base(tokenizer, tmp_path / "flat", num_hidden_layers=1))
    with pytest.raises(ValueError, match=r"holds 28 LoRA tensors but this base model has places for 14"):
        load_adapter(shallower, tmp_path / "adapter")
