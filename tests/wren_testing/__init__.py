"""The test-helper package (tests/ is on pytest's pythonpath): the one tiny Wren config, plus one module per area."""


def tiny_config_kwargs(**overrides) -> dict:
    values = dict(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    values.update(overrides)
    return values


def tiny_moe_config_kwargs(**overrides) -> dict:
    values = tiny_config_kwargs(
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=48,
        num_shared_experts=1,
        num_hidden_layers=3,
        first_k_dense_layers=1,
    )
    values.update(overrides)
    return values
