"""Properties over random valid tiny dense and MoE configs (Hypothesis): cached decoding equals a full forward,
a left-padded batch equals each sequence alone, and save -> load gives the same logits.

The examples are derandomized, so the suite sees the same configs on every run.
"""

import tempfile

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM

from wrenlm import WrenConfig, WrenForCausalLM

PROPERTY_SETTINGS = settings(
    max_examples=10, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
ATOL = 2e-5


@st.composite
def tiny_wren(draw):
    """(model in eval mode, a token sequence) for a random valid config."""
    heads = draw(st.sampled_from([2, 4]))
    layers = draw(st.integers(1, 3))
    config = {
        "vocab_size": draw(st.integers(32, 96)),
        "hidden_size": draw(st.sampled_from([16, 32])),
        "intermediate_size": draw(st.sampled_from([24, 48])),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": draw(st.sampled_from([kv for kv in (1, 2, 4) if heads % kv == 0])),
        "head_dim": draw(st.sampled_from([8, 16])),
        "max_position_embeddings": 64,
        "qk_norm": draw(st.booleans()),
        "attention_bias": draw(st.booleans()),
        "sliding_window": draw(st.sampled_from([None, 3, 8])),
        "tie_word_embeddings": draw(st.booleans()),
        "rope_parameters": {"rope_type": "default", "rope_theta": draw(st.sampled_from([1e4, 5e5]))},
        # A wide init gives peaked, position-dependent logits, so a wrong mask or position shows.
        "initializer_range": 0.2,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
    }
    if draw(st.booleans()):
        experts = draw(st.integers(2, 4))
        config.update(
            num_experts=experts,
            num_experts_per_tok=draw(st.integers(1, experts)),
            moe_intermediate_size=draw(st.sampled_from([16, 24])),
            num_shared_experts=draw(st.integers(0, 1)),
            first_k_dense_layers=draw(st.integers(0, layers - 1)),
            moe_layer_interval=draw(st.integers(1, 2)),
            norm_topk_prob=draw(st.booleans()),
        )
    attention = draw(st.sampled_from(["eager", "sdpa"]))
    torch.manual_seed(draw(st.integers(0, 2**16)))
    model = WrenForCausalLM(WrenConfig(**config, attn_implementation=attention)).eval()
    length = draw(st.integers(4, 20))
    ids = draw(st.lists(st.integers(3, config["vocab_size"] - 1), min_size=length, max_size=length))
    return model, torch.tensor([ids])


@PROPERTY_SETTINGS
@given(tiny_wren(), st.data())
def test_cached_decoding_equals_a_full_forward(drawn, data):
    model, ids = drawn
    prefix = data.draw(st.integers(1, ids.shape[1] - 1))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        step = model(ids[:, :prefix], use_cache=True)
        cached = [step.logits]
        for position in range(prefix, ids.shape[1]):
            step = model(ids[:, position : position + 1], cache=step.cache, use_cache=True)
            cached.append(step.logits)
    torch.testing.assert_close(torch.cat(cached, dim=1), full, atol=ATOL, rtol=1e-4)


@PROPERTY_SETTINGS
@given(tiny_wren(), st.data())
def test_left_padded_batch_equals_each_sequence_alone(drawn, data):
    model, long_ids = drawn
    short = data.draw(st.integers(1, long_ids.shape[1] - 1))
    short_ids = long_ids[:, -short:].flip(-1)  # a different, shorter sequence
    pad = long_ids.shape[1] - short
    batch = torch.cat([long_ids, torch.cat([torch.zeros(1, pad, dtype=torch.long), short_ids], dim=1)])
    mask = torch.ones_like(batch)
    mask[1, :pad] = 0
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # what generate() passes for left padding
    with torch.no_grad():
        padded = model(batch, attention_mask=mask, position_ids=positions).logits
        alone_long = model(long_ids).logits
        alone_short = model(short_ids).logits
    torch.testing.assert_close(padded[:1], alone_long, atol=ATOL, rtol=1e-4)
    torch.testing.assert_close(padded[1:, pad:], alone_short, atol=ATOL, rtol=1e-4)


@PROPERTY_SETTINGS
@given(tiny_wren())
def test_save_then_load_gives_the_same_logits(drawn):
    model, ids = drawn
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        loaded = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=model.config._attn_implementation)
    saved, reloaded = model.config.to_dict(), loaded.config.to_dict()
    reloaded.pop("_name_or_path"), saved.pop("_name_or_path")
    assert type(loaded) is WrenForCausalLM and reloaded == saved
    saved_tensors, loaded_tensors = model.state_dict(), loaded.state_dict()
    assert saved_tensors.keys() == loaded_tensors.keys()
    assert all(torch.equal(saved_tensors[name], loaded_tensors[name]) for name in saved_tensors)
    with torch.no_grad():
        # Bit-equal weights; the logits may differ in the last float bit (loaded tensors can take other kernels).
        torch.testing.assert_close(loaded.eval()(ids).logits, model(ids).logits, atol=ATOL, rtol=1e-4)
