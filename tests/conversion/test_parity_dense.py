"""HF dense families -> Wren: equal logits and greedy tokens, and back to the same HF family."""

import pytest
from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

from wren_testing import parity
from wrenlm import WrenForCausalLM
from wrenlm.conversion import convert_from_wren, convert_to_wren

_LONGROPE_FACTORS = [1.0, 1.5, 2.0, 3.0]  # head_dim 8 -> 4 rotary frequencies

# id -> (config class, overrides, prompt length, what the Wren config must say)
CASES = {
    "llama_mha": (LlamaConfig, dict(num_key_value_heads=4), 12, dict(num_key_value_heads=4)),
    "llama_gqa": (LlamaConfig, dict(), 12, dict(num_key_value_heads=2)),
    "llama_mqa": (LlamaConfig, dict(num_key_value_heads=1), 12, dict(num_key_value_heads=1)),
    "llama_tied": (LlamaConfig, dict(tie_word_embeddings=True), 12, dict(tie_word_embeddings=True)),
    "llama_untied": (LlamaConfig, dict(tie_word_embeddings=False), 12, dict(tie_word_embeddings=False)),
    "llama_biases": (
        LlamaConfig,
        dict(attention_bias=True, mlp_bias=True),
        12,
        dict(attention_bias=True, attention_output_bias=True, mlp_bias=True),
    ),
    "llama_head_dim": (LlamaConfig, dict(hidden_size=32, head_dim=16), 12, dict(head_dim=16)),
    "llama_rope_linear": (
        LlamaConfig,
        dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
        12,
        dict(),
    ),
    # The prompt (20) and generation (30) run past max_position_embeddings=16, where dynamic NTK rescales.
    "llama_rope_dynamic": (
        LlamaConfig,
        dict(max_position_embeddings=16, rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}),
        20,
        dict(),
    ),
    "llama_rope_yarn": (
        LlamaConfig,
        dict(
            rope_parameters={
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 16,
                "rope_theta": 10000.0,
            }
        ),
        24,
        dict(),
    ),
    "llama_rope_llama3": (
        LlamaConfig,
        dict(
            rope_parameters={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
                "rope_theta": 500000.0,
            }
        ),
        24,
        dict(),
    ),
    "llama_rope_longrope": (
        LlamaConfig,
        dict(
            rope_parameters={
                "rope_type": "longrope",
                "short_factor": _LONGROPE_FACTORS,
                "long_factor": [2 * f for f in _LONGROPE_FACTORS],
                "original_max_position_embeddings": 16,
                "rope_theta": 10000.0,
            }
        ),
        24,
        dict(),
    ),
    # A 12-token prompt (plus 10 generated) with a window of 4: the window changes every later position.
    "mistral_sliding": (MistralConfig, dict(sliding_window=4), 12, dict(sliding_window=4)),
    "qwen2": (Qwen2Config, dict(), 12, dict(attention_bias=True, attention_output_bias=False, qk_norm=False)),
    "qwen2_sliding_all_layers": (
        Qwen2Config,
        dict(use_sliding_window=True, sliding_window=5, max_window_layers=0),
        12,
        dict(sliding_window=5),
    ),
    # head_dim 16 with hidden 32 / 4 heads: explicit head_dim != hidden_size / heads.
    "qwen3": (Qwen3Config, dict(head_dim=16), 12, dict(qk_norm=True, head_dim=16, attention_bias=False)),
    "qwen3_bias_tied": (
        Qwen3Config,
        dict(head_dim=8, attention_bias=True, tie_word_embeddings=True),
        12,
        dict(qk_norm=True, attention_bias=True, attention_output_bias=True, tie_word_embeddings=True),
    ),
}


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("case", list(CASES))
def test_hf_to_wren_parity(case, attn):
    config_class, overrides, prompt_len, expected_fields = CASES[case]
    hf = parity.build_hf(config_class, attn=attn, **overrides)

    wren = convert_to_wren(hf)

    assert isinstance(wren, WrenForCausalLM)
    assert wren.config._attn_implementation == attn
    for name, value in expected_fields.items():
        assert getattr(wren.config, name) == value, name
    assert wren.config.rope_parameters == hf.config.rope_parameters
    parity.assert_same_logits(hf, wren, seq_len=prompt_len)
    parity.assert_same_greedy(hf, wren, seq_len=prompt_len)


@pytest.mark.parametrize("case", list(CASES))
def test_wren_back_to_same_family(case):
    config_class, overrides, prompt_len, _ = CASES[case]
    hf = parity.build_hf(config_class, **overrides)

    back = convert_from_wren(convert_to_wren(hf))

    # Llama with head_dim / Mistral / Qwen: the default target is the family it came from.
    assert type(back) is type(hf)
    parity.assert_same_weights(hf, back)
    parity.assert_same_logits(hf, back, seq_len=prompt_len)


def test_source_model_is_left_untouched():
    hf = parity.build_hf(LlamaConfig, tie_word_embeddings=True)
    before = {name: tensor.clone() for name, tensor in hf.state_dict().items()}

    wren = convert_to_wren(hf)
    for param in wren.parameters():
        param.data.add_(1.0)

    for name, tensor in hf.state_dict().items():
        assert tensor.equal(before[name]), name
    # Tied embeddings stay tied in the converted model.
    assert wren.lm_head.weight.data_ptr() == wren.model.embed_tokens.weight.data_ptr()
