"""Named starting points (`wren-nano`, `wren-tiny`, `wren-small-moe`, ...) for `WrenConfig`.

Sizes follow common small-model practice: GQA with 2-4x fewer kv heads, SwiGLU width ~2.7x hidden,
MoE experts narrower than the dense FFN so active parameters stay close to the dense sibling.
`wren-nano` is the main job's model (`wren pretrain`): the recipe search (docs/recipe-search.md) found
that at its CPU budget a model this small, trained on more tokens, beats `wren-tiny`.
"""

from copy import deepcopy

from .configuration_wren import WrenConfig

_NANO = dict(
    vocab_size=2048,
    hidden_size=96,
    intermediate_size=256,
    num_hidden_layers=4,
    num_attention_heads=3,
    num_key_value_heads=1,
    max_position_embeddings=512,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    tie_word_embeddings=True,
)
_TINY = dict(
    vocab_size=4096,
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=4,
    num_attention_heads=8,
    num_key_value_heads=4,
    max_position_embeddings=512,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    tie_word_embeddings=True,
)
_SMALL = dict(
    vocab_size=32000,
    hidden_size=768,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_key_value_heads=4,
    max_position_embeddings=2048,
    rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    tie_word_embeddings=True,
)

# 8 routed experts (top-2) + 1 shared, each ~3/8 of the dense FFN's width, as in the tiny and small pairs.
_TINY_EXPERTS = {"num_experts": 8, "num_experts_per_tok": 2, "num_shared_experts": 1}

PRESETS: dict[str, dict] = {
    "wren-nano": _NANO,
    "wren-nano-moe": {**_NANO, **_TINY_EXPERTS, "moe_intermediate_size": 96},
    "wren-tiny": _TINY,
    "wren-tiny-moe": {**_TINY, **_TINY_EXPERTS, "moe_intermediate_size": 256},
    "wren-small": _SMALL,
    "wren-small-moe": {
        **_SMALL,
        "num_experts": 16,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 768,
        "num_shared_experts": 1,
        "first_k_dense_layers": 1,
    },
}


def preset_config(name: str, **overrides) -> WrenConfig:
    """Build a `WrenConfig` from a named preset, with keyword overrides applied on top."""
    if name not in PRESETS:
        raise ValueError(f"Unknown Wren preset {name!r}; available presets: {', '.join(sorted(PRESETS))}.")
    values = deepcopy(PRESETS[name])
    values.update(overrides)
    return WrenConfig(**values)
