import json

import pytest
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig

import wrenlm
from wren_testing import tiny_config_kwargs, tiny_moe_config_kwargs
from wrenlm import PRESETS, WrenConfig, preset_config


def test_defaults_fill_derived_fields():
    config = WrenConfig(hidden_size=64, num_attention_heads=4)
    assert config.head_dim == 16
    assert config.num_key_value_heads == 4  # None means MHA
    assert config.attention_output_bias is False
    assert config.moe_intermediate_size == config.intermediate_size
    assert config.rope_parameters["rope_type"] == "default"


def test_explicit_head_dim_allows_non_dividing_hidden_size():
    config = WrenConfig(hidden_size=60, num_attention_heads=4, head_dim=16)
    assert config.head_dim == 16


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(hidden_size=100, num_attention_heads=3), "num_attention_heads"),
        (dict(num_attention_heads=4, num_key_value_heads=3), "num_key_value_heads"),
        (dict(num_experts=4, num_experts_per_tok=5), "num_experts_per_tok"),
        (dict(num_experts=4, num_experts_per_tok=0), "num_experts_per_tok"),
        (dict(intermediate_size=-1), "intermediate_size"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(num_hidden_layers=0), "num_hidden_layers"),
        (dict(num_experts=-2), "num_experts"),
        (dict(head_dim=15), "head_dim"),
        (dict(rms_norm_eps=0.0), "rms_norm_eps"),
        (dict(attention_dropout=1.5), "attention_dropout"),
        (dict(hidden_act="nonexistent"), "hidden_act"),
        (dict(rope_parameters={"rope_type": "bogus", "rope_theta": 1e4}), "rope_type"),
        (dict(num_experts=4, first_k_dense_layers=2, num_hidden_layers=2), "first_k_dense_layers"),
        (dict(num_experts=4, moe_layer_interval=0), "moe_layer_interval"),
        (dict(num_experts=4, router_aux_loss_coef=-1.0), "router_aux_loss_coef"),
        (dict(sliding_window=0), "sliding_window"),
        (dict(loss_chunk_size=-5), "loss_chunk_size"),
    ],
)
def test_invalid_values_raise_errors_naming_the_field(overrides, field):
    # transformers' @strict configs wrap validator errors in StrictDataclassError, as for Llama.
    with pytest.raises((ValueError, StrictDataclassError), match=field):
        WrenConfig(**tiny_config_kwargs(**overrides))


def test_rope_scaling_variants_validate_through_transformers():
    WrenConfig(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4})
    WrenConfig(
        rope_parameters={
            "rope_type": "yarn",
            "factor": 4.0,
            "rope_theta": 1e4,
            "original_max_position_embeddings": 1024,
        }
    )
    with pytest.raises(KeyError, match="factor"):
        WrenConfig(rope_parameters={"rope_type": "yarn", "rope_theta": 1e4})


def test_legacy_rope_scaling_keys_are_converted():
    config = WrenConfig(rope_scaling={"type": "linear", "factor": 2.0}, rope_theta=5e5)
    assert config.rope_parameters["rope_type"] == "linear"
    assert config.rope_parameters["rope_theta"] == 5e5


def test_moe_layer_layout_first_k_dense_then_every_nth():
    config = WrenConfig(**tiny_moe_config_kwargs(num_hidden_layers=7, first_k_dense_layers=2, moe_layer_interval=2))
    assert config.mlp_layer_types == ["dense", "dense", "sparse", "dense", "sparse", "dense", "sparse"]
    assert not WrenConfig(**tiny_config_kwargs()).is_moe


def test_save_load_round_trip(tmp_path):
    config = WrenConfig(**tiny_moe_config_kwargs(router_bias_update_rate=0.01, qk_norm=True))
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "wren"
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, WrenConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict()
    assert loaded.mlp_layer_types == config.mlp_layer_types


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_valid_configs(name):
    config = preset_config(name)
    assert config.is_moe == name.endswith("-moe")
    assert preset_config(name, num_hidden_layers=2).num_hidden_layers == 2


def test_unknown_preset_lists_available_ones():
    with pytest.raises(ValueError, match="wren-tiny"):
        preset_config("wren-gigantic")


def test_auto_config_knows_wren_after_import():
    assert AutoConfig.for_model("wren").__class__ is wrenlm.WrenConfig
