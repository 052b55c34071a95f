"""Attention backends, KV caches and padding: every path must give the same numbers."""

import pytest
import torch
from transformers import DynamicCache, StaticCache

from wren_testing import tiny_config_kwargs, tiny_moe_config_kwargs
from wrenlm import WrenConfig, WrenForCausalLM


def make_model(config, attn="sdpa", seed=0):
    torch.manual_seed(seed)
    model = WrenForCausalLM(config).eval()
    model.set_attn_implementation(attn)
    return model


def random_ids(config, batch=2, seq=10, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, config.vocab_size, (batch, seq), generator=generator)


@pytest.mark.parametrize("attn", ["eager", "sdpa", "flex_attention"])
def test_attention_backends_agree(any_tiny_config, attn):
    ids = random_ids(any_tiny_config)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding exercises the mask path of each backend
    # no_grad: flex attention has no backward on CPU.
    with torch.no_grad():
        reference = make_model(any_tiny_config, "eager")(ids, attention_mask=mask).logits
        logits = make_model(any_tiny_config, attn)(ids, attention_mask=mask).logits
    torch.testing.assert_close(logits[0, 3:], reference[0, 3:], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(logits[1], reference[1], atol=1e-5, rtol=1e-4)


def test_incremental_decoding_with_cache_matches_full_forward(any_tiny_config):
    model = make_model(any_tiny_config)
    ids = random_ids(any_tiny_config, seq=12)
    full = model(ids).logits
    cache = DynamicCache(config=any_tiny_config)
    out = model(ids[:, :7], cache=cache, use_cache=True)
    steps = [out.logits]
    for position in range(7, 12):
        out = model(ids[:, position : position + 1], cache=out.cache, use_cache=True)
        steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_generate_with_and_without_cache_agree(any_tiny_config, attn):
    model = make_model(any_tiny_config, attn)
    prompt = random_ids(any_tiny_config, batch=1, seq=6)
    with_cache = model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=True)
    without_cache = model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(with_cache, without_cache)


def test_left_padded_batch_matches_single_sequences(any_tiny_config):
    model = make_model(any_tiny_config)
    pad = any_tiny_config.pad_token_id
    prompts = [random_ids(any_tiny_config, batch=1, seq=n, seed=n)[0] for n in (4, 7, 9)]
    width = max(len(p) for p in prompts)
    batch = torch.full((len(prompts), width), pad)
    mask = torch.zeros_like(batch)
    for row, prompt in enumerate(prompts):
        batch[row, width - len(prompt) :] = prompt
        mask[row, width - len(prompt) :] = 1
    batched = model.generate(batch, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=pad)
    for row, prompt in enumerate(prompts):
        single = model.generate(prompt[None], max_new_tokens=6, do_sample=False, pad_token_id=pad)
        assert torch.equal(batched[row, width:], single[0, len(prompt) :]), f"row {row}"
    # Last-position logits agree too, not only their argmax.
    padded_last = model(batch, attention_mask=mask).logits[:, -1]
    for row, prompt in enumerate(prompts):
        torch.testing.assert_close(padded_last[row], model(prompt[None]).logits[0, -1], atol=1e-5, rtol=1e-4)


def test_static_cache_generation_matches_dynamic(any_tiny_config):
    model = make_model(any_tiny_config)
    prompt = random_ids(any_tiny_config, batch=2, seq=5)
    dynamic = model.generate(prompt, max_new_tokens=7, do_sample=False)
    static = model.generate(prompt, max_new_tokens=7, do_sample=False, cache_implementation="static")
    assert torch.equal(static, dynamic)
    cache = StaticCache(config=any_tiny_config, max_cache_len=32)
    explicit = model.generate(prompt, max_new_tokens=7, do_sample=False, cache=cache)
    assert torch.equal(explicit, dynamic)


def test_continue_generation_from_returned_cache(tiny_config):
    model = make_model(tiny_config)
    prompt = random_ids(tiny_config, batch=1, seq=5)
    reference = model.generate(prompt, max_new_tokens=10, do_sample=False)
    first = model.generate(prompt, max_new_tokens=4, do_sample=False, return_dict_in_generate=True)
    continued = model.generate(first.sequences, cache=first.cache, max_new_tokens=6, do_sample=False)
    assert torch.equal(continued, reference)


def test_sliding_window_limits_attention():
    window = 4
    config = WrenConfig(**tiny_config_kwargs(sliding_window=window))
    model = make_model(config, "eager")
    ids = random_ids(config, batch=1, seq=12)
    logits = model(ids).logits
    # With every layer windowed, 2 layers see at most 2 * (window - 1) + 1 = 7 positions back,
    # so changing token 0 cannot reach position 11.
    changed = ids.clone()
    changed[0, 0] = (ids[0, 0] + 1) % config.vocab_size
    torch.testing.assert_close(model(changed).logits[0, -1], logits[0, -1])
    # ...whereas the full-attention model sees the change.
    full = make_model(WrenConfig(**tiny_config_kwargs()), "eager")
    assert not torch.allclose(full(changed).logits[0, -1], full(ids).logits[0, -1])
    # Cached decoding with a sliding window equals the full forward.
    cached = model.generate(ids[:, :6], max_new_tokens=6, do_sample=False)
    uncached = model.generate(ids[:, :6], max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


def test_output_attentions_with_eager(tiny_config):
    model = make_model(tiny_config, "eager")
    out = model(random_ids(tiny_config), output_attentions=True)
    assert len(out.attentions) == tiny_config.num_hidden_layers
    weights = out.attentions[0]
    assert weights.shape == (2, tiny_config.num_attention_heads, 10, 10)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, tiny_config.num_attention_heads, 10))
    assert torch.all(weights.triu(1) == 0)  # causal


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_mha_gqa_mqa_head_layouts(kv_heads):
    config = WrenConfig(**tiny_config_kwargs(num_key_value_heads=kv_heads))
    model = make_model(config)
    assert model.model.layers[0].self_attn.k_proj.out_features == kv_heads * config.head_dim
    ids = random_ids(config)
    eager = make_model(config, "eager")(ids).logits
    torch.testing.assert_close(model(ids).logits, eager, atol=1e-5, rtol=1e-4)


def test_qk_norm_and_biases_are_applied():
    config = WrenConfig(**tiny_moe_config_kwargs(qk_norm=True, attention_bias=True, attention_output_bias=False))
    attention = make_model(config).model.layers[0].self_attn
    assert attention.q_norm is not None and attention.k_norm is not None
    assert attention.q_proj.bias is not None and attention.o_proj.bias is None
