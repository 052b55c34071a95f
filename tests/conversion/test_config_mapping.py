"""Config mapping in both directions, and the clear errors for what cannot convert exactly."""

import pytest
import torch
from transformers import (
    Gemma2Config,
    LlamaConfig,
    MistralConfig,
    MixtralConfig,
    Qwen2Config,
    Qwen2MoeConfig,
    Qwen3Config,
    Qwen3MoeConfig,
)

from wren_testing import parity, tiny_config_kwargs, tiny_moe_config_kwargs
from wrenlm import WrenConfig, WrenForCausalLM
from wrenlm.conversion import (
    UnsupportedConversionError,
    config_from_wren,
    config_to_wren,
    convert_from_wren,
    convert_to_wren,
    default_target,
)

SIZES = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)
MOE = dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24)


# ------------------------------------------------------------------------------------------------
# HF -> Wren field mapping
def test_every_common_field_is_carried_over():
    source = LlamaConfig(
        **SIZES,
        hidden_act="gelu",
        rms_norm_eps=1e-5,
        initializer_range=0.05,
        attention_dropout=0.1,
        tie_word_embeddings=True,
        pad_token_id=5,
        bos_token_id=6,
        eos_token_id=[7, 8],
        use_cache=False,
        rope_parameters={"rope_type": "linear", "factor": 3.0, "rope_theta": 5e5},
    )
    wren = config_to_wren(source)
    for name in (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "max_position_embeddings",
        "hidden_act",
        "rms_norm_eps",
        "initializer_range",
        "attention_dropout",
        "tie_word_embeddings",
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
        "use_cache",
        "rope_parameters",
    ):
        assert getattr(wren, name) == getattr(source, name), name
    assert (wren.qk_norm, wren.attention_bias, wren.mlp_bias, wren.sliding_window, wren.num_experts) == (
        False,
        False,
        False,
        None,
        0,
    )


def test_qwen2_bias_layout():
    wren = config_to_wren(Qwen2Config(**SIZES))
    assert (wren.attention_bias, wren.attention_output_bias, wren.qk_norm) == (True, False, False)


def test_mixtral_defaults_carry_over():
    source = MixtralConfig(**SIZES, num_local_experts=4, num_experts_per_tok=2)
    wren = config_to_wren(source)
    assert wren.rope_parameters["rope_theta"] == 1e6  # Mixtral's own default theta
    assert wren.rms_norm_eps == source.rms_norm_eps == 1e-5
    assert (wren.num_experts, wren.moe_intermediate_size, wren.norm_topk_prob) == (4, 64, True)
    assert wren.router_aux_loss_coef == source.router_aux_loss_coef


@pytest.mark.parametrize(
    "layout, expected",
    [
        (dict(decoder_sparse_step=1), (0, 1)),
        (dict(decoder_sparse_step=2, num_hidden_layers=6), (1, 2)),
        (dict(decoder_sparse_step=3, num_hidden_layers=6), (2, 3)),
        (dict(mlp_only_layers=[0, 1]), (2, 1)),
        (dict(mlp_only_layers=[1], num_hidden_layers=3), (0, 2)),
        (dict(decoder_sparse_step=2, mlp_only_layers=[1], num_hidden_layers=6), (3, 2)),
    ],
)
def test_qwen3_moe_layer_layout(layout, expected):
    source = Qwen3MoeConfig(**{**SIZES, **MOE, **layout})
    wren = config_to_wren(source)
    assert (wren.first_k_dense_layers, wren.moe_layer_interval) == expected
    hf_sparse = [
        i
        for i in range(source.num_hidden_layers)
        if i not in source.mlp_only_layers and (i + 1) % source.decoder_sparse_step == 0
    ]
    assert [i for i in range(wren.num_hidden_layers) if wren.is_moe_layer(i)] == hf_sparse
    # ...and back: the same MoE layers.
    back = config_from_wren(wren, "qwen3_moe")
    assert [
        i
        for i in range(back.num_hidden_layers)
        if i not in back.mlp_only_layers and (i + 1) % back.decoder_sparse_step == 0
    ] == hf_sparse


# ------------------------------------------------------------------------------------------------
# HF -> Wren errors
@pytest.mark.parametrize(
    "config_class, overrides, match",
    [
        (Qwen2MoeConfig, dict(num_experts=4), "qwen2_moe.*shared_expert_gate"),
        (Gemma2Config, dict(), "gemma2.*softcapping"),
        (LlamaConfig, dict(attn_logit_softcapping=1.0), "attention logit softcapping"),
        (Qwen3Config, dict(final_logit_softcapping=30.0), "final logit softcapping"),
        (
            Qwen2Config,
            dict(use_sliding_window=True, sliding_window=8, max_window_layers=1),
            r"sliding-window attention on some layers only \(layers \[1, 2\]",
        ),
        (
            Qwen3Config,
            dict(use_sliding_window=True, sliding_window=8, max_window_layers=2),
            "sliding-window attention on some layers only",
        ),
        (
            LlamaConfig,
            dict(rope_parameters={"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}),
            "partial rotary",
        ),
        (
            Qwen3MoeConfig,
            dict(**MOE, num_hidden_layers=4, mlp_only_layers=[2]),
            r"MoE layers \[0, 1, 3\].*not 'the first k layers dense",
        ),
        (Qwen3MoeConfig, dict(**MOE, decoder_sparse_step=5), "no layer is a MoE layer"),
        (
            Qwen3MoeConfig,
            dict(num_experts=4, moe_intermediate_size=24, num_experts_per_tok=8),
            "(?s)not a valid Wren config.*num_experts_per_tok",
        ),
    ],
    ids=[
        "qwen2_moe",
        "gemma2",
        "softcapping_attr",
        "final_softcapping_attr",
        "qwen2_partial_sliding",
        "qwen3_partial_sliding",
        "partial_rotary",
        "qwen3_moe_irregular_layout",
        "qwen3_moe_no_moe_layer",
        "top_k_above_experts",
    ],
)
def test_unsupported_sources_are_refused(config_class, overrides, match):
    source = config_class(**{**SIZES, **overrides})
    with pytest.raises(UnsupportedConversionError, match=match):
        config_to_wren(source)


def test_unknown_rope_type_is_refused():
    source = LlamaConfig(**SIZES)
    source.rope_parameters = {"rope_type": "mrope", "rope_theta": 1e4}
    with pytest.raises(UnsupportedConversionError, match="rope type 'mrope' is not supported"):
        config_to_wren(source)


def test_unsupported_model_object_is_refused_before_touching_weights():
    model = WrenForCausalLM(WrenConfig(**tiny_config_kwargs()))
    with pytest.raises(UnsupportedConversionError, match="already a Wren config"):
        convert_to_wren(model)


# ------------------------------------------------------------------------------------------------
# Wren -> HF
@pytest.mark.parametrize(
    "overrides, target",
    [
        (dict(), "llama"),
        (dict(qk_norm=True), "qwen3"),
        (dict(attention_bias=True, attention_output_bias=False), "qwen2"),
        (dict(sliding_window=16), "mistral"),
        (dict(sliding_window=16, attention_bias=True, attention_output_bias=False), "qwen2"),
        (dict(mlp_bias=True, attention_bias=True), "llama"),
        (dict(hidden_size=48, num_attention_heads=4, head_dim=8), "llama"),  # explicit head_dim, still divisible
        (dict(**MOE, first_k_dense_layers=0), "mixtral"),
        (dict(**MOE, qk_norm=True), "qwen3_moe"),
        (dict(**MOE, first_k_dense_layers=1, qk_norm=True), "qwen3_moe"),
    ],
)
def test_default_target(overrides, target):
    config = WrenConfig(**tiny_config_kwargs(num_hidden_layers=3, **overrides))
    assert default_target(config) == target
    hf_config = config_from_wren(config)
    assert hf_config.model_type == target
    # Converting back gives the same architecture.
    again = config_to_wren(hf_config)
    for name in (
        "hidden_size",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "qk_norm",
        "sliding_window",
        "num_experts",
        "first_k_dense_layers",
        "moe_layer_interval",
        "norm_topk_prob",
        "rope_parameters",
        "tie_word_embeddings",
        "eos_token_id",
    ):
        assert getattr(again, name) == getattr(config, name), name


@pytest.mark.parametrize(
    "overrides, target, match",
    [
        (dict(qk_norm=True), "llama", "qk_norm=True and llama has no query/key norm"),
        (dict(), "qwen3", "qk_norm=False and qwen3 always normalises"),
        (dict(attention_bias=True), "mistral", "attention biases and mistral has none"),
        (dict(attention_bias=True), "qwen2", "o_proj bias"),
        (dict(mlp_bias=True), "qwen2", "mlp_bias=True"),
        (dict(sliding_window=8), "llama", "Llama has no sliding-window attention"),
        (
            dict(hidden_size=36, num_attention_heads=8, num_key_value_heads=2, head_dim=8),
            "llama",
            "not a multiple of num_attention_heads",
        ),
        (dict(), "mixtral", "it is dense"),
        (dict(**MOE), "llama", "Mixture-of-Experts layers"),
        (dict(**MOE, norm_topk_prob=False), "mixtral", "norm_topk_prob=False"),
        (dict(**MOE, first_k_dense_layers=1), "mixtral", "every Mixtral layer is MoE"),
        (dict(**MOE, num_shared_experts=1, qk_norm=True), "qwen3_moe", "num_shared_experts=1"),
        (dict(), "gpt2", "Unknown target 'gpt2'"),
    ],
)
def test_inexpressible_targets_are_refused(overrides, target, match):
    config = WrenConfig(**tiny_config_kwargs(num_hidden_layers=3, **overrides))
    with pytest.raises(UnsupportedConversionError, match=match):
        config_from_wren(config, target)


def test_no_family_fits_lists_every_reason():
    config = WrenConfig(**tiny_moe_config_kwargs())  # shared expert, first layer dense, no qk_norm
    with pytest.raises(UnsupportedConversionError, match="No Hugging Face architecture.*mixtral: .*qwen3_moe: "):
        config_from_wren(config)


def test_nonzero_router_bias_is_refused():
    config = WrenConfig(**tiny_config_kwargs(**MOE, router_bias_update_rate=0.01, num_hidden_layers=2))
    model = WrenForCausalLM(config)
    # A zero bias (nothing learned yet) converts; a learned one would change routing.
    assert type(convert_from_wren(model)).__name__ == "MixtralForCausalLM"
    with torch.no_grad():
        model.model.layers[1].mlp.gate.expert_bias[0] = 0.5
    with pytest.raises(UnsupportedConversionError, match="layer 1's router has a non-zero `expert_bias`"):
        convert_from_wren(model)


def test_training_only_settings_are_reported_when_dropped(caplog):
    config = WrenConfig(**tiny_config_kwargs(**MOE, router_z_loss_coef=0.01, router_jitter_noise=0.1, qk_norm=True))
    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()
    try:
        with caplog.at_level("WARNING"):
            config_from_wren(config, "qwen3_moe")
    finally:
        hf_logging.disable_propagation()
    assert "router_z_loss_coef=0.01" in caplog.text and "router_jitter_noise=0.1" in caplog.text


def test_zero_filled_biases_keep_logits():
    """Qwen2-style (q/k/v bias only) Wren -> Llama (one bias flag): o_proj gets a zero bias, logits unchanged."""
    config = WrenConfig(**tiny_config_kwargs(attention_bias=True, attention_output_bias=False))
    wren = parity.randomize_(WrenForCausalLM(config)).eval()
    llama = convert_from_wren(wren, target="llama")
    assert llama.config.attention_bias is True
    assert torch.count_nonzero(llama.model.layers[0].self_attn.o_proj.bias) == 0
    parity.assert_same_logits(wren, llama)


def test_mistral_family_config_round_trip():
    source = MistralConfig(**SIZES, sliding_window=7, tie_word_embeddings=True)
    back = config_from_wren(config_to_wren(source), "mistral")
    for name in ("sliding_window", "head_dim", "rope_parameters", "tie_word_embeddings", "rms_norm_eps"):
        assert getattr(back, name) == getattr(source, name), name
