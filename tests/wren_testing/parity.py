"""Exact-parity helpers for the conversion tests (`wren_testing.parity`): tiny seeded HF reference models."""

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from wren_testing import tiny_config_kwargs

# The one tiny config, in the keys every HF family understands (each family keeps its own RoPE default).
TINY = {
    key: value for key, value in tiny_config_kwargs(max_position_embeddings=64).items() if key != "rope_parameters"
}
PROMPT_LEN = 12
NEW_TOKENS = 10


def randomize_(model: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> torch.nn.Module:
    """Every parameter random: norm weights 1 + 0.1 N(0, 1), the rest `scale` N(0, 1) (HF init leaves biases at 0
    and norms at 1, which would hide mapping bugs)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            value = 1.0 + 0.1 * noise if name.endswith("norm.weight") else scale * noise
            param.copy_(value.to(param.dtype))
    return model


def build_hf(config_class, attn: str = "eager", seed: int = 0, **overrides):
    """A seeded random-weight HF model of `config_class` from the tiny sizes plus `overrides`."""
    config = config_class(**{**TINY, **overrides})
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    return randomize_(model, seed).eval()


def inputs(seq_len: int = PROMPT_LEN, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sequences; the second left-padded by 3 so masks and position handling are exercised."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, TINY["vocab_size"], (2, seq_len), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    input_ids[1, :3] = TINY["pad_token_id"]
    attention_mask[1, :3] = 0
    return input_ids, attention_mask


@torch.no_grad()
def assert_same_logits(reference, candidate, seq_len: int = PROMPT_LEN, atol: float = 1e-5) -> None:
    input_ids, attention_mask = inputs(seq_len)
    expected = reference(input_ids=input_ids, attention_mask=attention_mask).logits
    actual = candidate(input_ids=input_ids, attention_mask=attention_mask).logits
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


@torch.no_grad()
def assert_same_greedy(reference, candidate, seq_len: int = PROMPT_LEN, new_tokens: int = NEW_TOKENS) -> torch.Tensor:
    input_ids, _ = inputs(seq_len)
    prompt = input_ids[:1]
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    expected = reference.generate(prompt, **kwargs)
    actual = candidate.generate(prompt, **kwargs)
    assert expected.shape[1] == seq_len + new_tokens
    assert torch.equal(actual, expected), f"greedy tokens differ:\n{expected}\n{actual}"
    return expected


def assert_same_weights(a, b) -> None:
    sd_a, sd_b = a.state_dict(), b.state_dict()
    assert sorted(sd_a) == sorted(sd_b)
    for name in sd_a:
        assert torch.equal(sd_a[name], sd_b[name]), name


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A 128-word word-level tokenizer matching TINY's vocab and special ids."""
    vocab = {f"w{i}": i for i in range(TINY["vocab_size"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="w3"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="w3", bos_token="w1", eos_token="w2", pad_token="w0"
    )
