"""Rotary position embeddings; scaled variants come from transformers' ROPE_INIT_FUNCTIONS."""

from collections.abc import Callable

import torch
from torch import nn
from transformers.integrations import use_kernel_forward_from_hub
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update


class WrenRotaryEmbedding(nn.Module):
    # The class name and `original_inv_freq` let transformers re-create the non-persistent
    # buffers after meta-device loading (see PreTrainedModel._init_weights).
    def __init__(self, config):
        super().__init__()
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings
        self.config = config
        self.rope_type = config.rope_parameters["rope_type"]
        rope_init_fn: Callable = self.compute_default_rope_parameters
        if self.rope_type != "default":
            rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        inv_freq, self.attention_scaling = rope_init_fn(config)
        self.inv_freq = nn.Buffer(inv_freq, persistent=False)
        self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(config, device=None, **kwargs) -> tuple[torch.Tensor, float]:
        """Unscaled RoPE: inv_freq[i] = theta^(-2i/d)."""
        base = config.rope_parameters["rope_theta"]
        dim = config.head_dim
        exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim
        inv_freq = 1.0 / (base**exponents)
        return inv_freq, 1.0

    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def _swap_halves(x: torch.Tensor) -> torch.Tensor:
    """`[x2, x1]` for `x = [x1, x2]`: one flip (forward and backward) instead of slices and a concatenation."""
    return x.unflatten(-1, (2, -1)).flip(-2).flatten(-2)


@use_kernel_forward_from_hub("rotary_pos_emb")
def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim: int = 1):
    """Rotate query/key heads ([batch, heads, seq, head_dim]) by per-position angles.

    Llama's `rotate_half(x) * sin`, with `rotate_half([x1, x2]) = [-x2, x1]`, computed as
    `[x2, x1] * [-sin1, sin2]`: the same products bit for bit, with the sign applied once to `sin` for
    q and k, and fewer ops than splitting, negating and concatenating (forward and backward).
    """
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    half = sin.shape[-1] // 2
    signed_sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
    return q * cos + _swap_halves(q) * signed_sin, k * cos + _swap_halves(k) * signed_sin
