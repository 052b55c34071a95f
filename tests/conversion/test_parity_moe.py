"""HF MoE families (Mixtral, Qwen3-MoE) -> Wren: equal logits and greedy tokens, and back."""

import pytest
from transformers import MixtralConfig, Qwen3MoeConfig

from wren_testing import parity
from wrenlm.conversion import convert_from_wren, convert_to_wren

_MOE = dict(num_experts_per_tok=2, num_hidden_layers=3)
# id -> (config class, overrides, what the Wren config must say)
CASES = {
    "mixtral": (
        MixtralConfig,
        dict(_MOE, num_local_experts=4, intermediate_size=48, router_jitter_noise=0.1, router_aux_loss_coef=0.02),
        dict(
            num_experts=4,
            moe_intermediate_size=48,
            norm_topk_prob=True,
            first_k_dense_layers=0,
            moe_layer_interval=1,
            router_jitter_noise=0.1,
            router_aux_loss_coef=0.02,
        ),
    ),
    "mixtral_sliding_tied": (
        MixtralConfig,
        dict(_MOE, num_local_experts=4, intermediate_size=48, sliding_window=5, tie_word_embeddings=True),
        dict(sliding_window=5, tie_word_embeddings=True),
    ),
    "qwen3_moe_norm_topk": (
        Qwen3MoeConfig,
        dict(_MOE, num_experts=4, moe_intermediate_size=24, norm_topk_prob=True, head_dim=16),
        dict(num_experts=4, moe_intermediate_size=24, norm_topk_prob=True, qk_norm=True, head_dim=16),
    ),
    "qwen3_moe_no_norm_topk": (
        Qwen3MoeConfig,
        dict(_MOE, num_experts=4, moe_intermediate_size=24, norm_topk_prob=False),
        dict(norm_topk_prob=False, first_k_dense_layers=0, moe_layer_interval=1),
    ),
    # decoder_sparse_step=2 over 4 layers: layers 1 and 3 are MoE, 0 and 2 dense (intermediate_size 64).
    "qwen3_moe_sparse_step": (
        Qwen3MoeConfig,
        dict(_MOE, num_hidden_layers=4, num_experts=4, moe_intermediate_size=24, decoder_sparse_step=2),
        dict(first_k_dense_layers=1, moe_layer_interval=2, intermediate_size=64),
    ),
    "qwen3_moe_mlp_only_first": (
        Qwen3MoeConfig,
        dict(_MOE, num_experts=4, moe_intermediate_size=24, mlp_only_layers=[0], attention_bias=True),
        dict(first_k_dense_layers=1, moe_layer_interval=1, attention_bias=True, attention_output_bias=True),
    ),
}


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("case", list(CASES))
def test_hf_moe_to_wren_parity(case, attn):
    config_class, overrides, expected_fields = CASES[case]
    hf = parity.build_hf(config_class, attn=attn, **overrides)

    wren = convert_to_wren(hf)

    assert wren.config.is_moe and wren.config.num_shared_experts == 0
    assert wren.config.router_z_loss_coef == 0.0  # HF MoE families train without a z-loss
    for name, value in expected_fields.items():
        assert getattr(wren.config, name) == value, name
    hf_moe_layers = [type(layer.mlp).__name__.endswith("SparseMoeBlock") for layer in hf.model.layers]
    assert hf_moe_layers == [wren.config.is_moe_layer(i) for i in range(wren.config.num_hidden_layers)]
    parity.assert_same_logits(hf, wren)
    parity.assert_same_greedy(hf, wren)


@pytest.mark.parametrize("case", list(CASES))
def test_wren_moe_back_to_same_family(case):
    config_class, overrides, _ = CASES[case]
    hf = parity.build_hf(config_class, **overrides)

    back = convert_from_wren(convert_to_wren(hf))

    assert type(back) is type(hf)
    assert [type(layer.mlp) for layer in back.model.layers] == [type(layer.mlp) for layer in hf.model.layers]
    parity.assert_same_weights(hf, back)
    parity.assert_same_logits(hf, back)
