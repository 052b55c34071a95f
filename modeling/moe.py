"""Routed Mixture-of-Experts feed-forward: top-k router, 3-D expert weights, optional shared experts.

Expert weights use transformers' fused layout (`gate_up_proj` [E, 2I, H], `down_proj` [E, H, I]),
so `@use_experts_implementation` can dispatch to its eager / batched_mm / grouped_mm kernels and
Mixtral / Qwen3-MoE checkpoints convert without reshaping.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.integrations import use_experts_implementation

from .mlp import WrenMLP


@use_experts_implementation
class WrenExperts(nn.Module):
    """All routed experts of one layer, stored as 3-D tensors."""

    def __init__(self, config):
        super().__init__()
        self.num_experts = config.num_experts
        self.hidden_dim = config.hidden_size
        self.intermediate_dim = config.moe_intermediate_size
        self.gate_up_proj = nn.Parameter(torch.empty(self.num_experts, 2 * self.intermediate_dim, self.hidden_dim))
        self.down_proj = nn.Parameter(torch.empty(self.num_experts, self.hidden_dim, self.intermediate_dim))
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
        """Eager reference: loop over the experts that received tokens."""
        final_hidden_states = torch.zeros_like(hidden_states)
        with torch.no_grad():
            expert_mask = F.one_hot(top_k_index, num_classes=self.num_experts).permute(2, 1, 0)
            experts_hit = torch.greater(expert_mask.sum(dim=(-1, -2)), 0).nonzero()
        for expert_idx in experts_hit:
            expert_idx = expert_idx[0]
            top_k_pos, token_idx = torch.where(expert_mask[expert_idx])
            gate, up = F.linear(hidden_states[token_idx], self.gate_up_proj[expert_idx]).chunk(2, dim=-1)
            expert_out = F.linear(self.act_fn(gate) * up, self.down_proj[expert_idx])
            expert_out = expert_out * top_k_weights[token_idx, top_k_pos, None]
            final_hidden_states.index_add_(0, token_idx, expert_out.to(final_hidden_states.dtype))
        return final_hidden_states


class WrenTopKRouter(nn.Module):
    """Softmax router choosing `num_experts_per_tok` experts per token.

    With `router_bias_update_rate > 0` a per-expert bias (DeepSeek-V3's aux-loss-free balancing) is
    added to the probabilities for *choosing* experts only; mixing weights stay the unbiased
    probabilities. The bias is moved by `update_bias()` from the load counted while training.
    """

    def __init__(self, config):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.num_experts = config.num_experts
        self.norm_topk_prob = config.norm_topk_prob
        self.hidden_dim = config.hidden_size
        self.bias_update_rate = config.router_bias_update_rate
        self.weight = nn.Parameter(torch.empty(self.num_experts, self.hidden_dim))
        # Persistent so a checkpoint keeps its routing even if the update rate is later set to 0.
        self.expert_bias = nn.Buffer(torch.zeros(self.num_experts), persistent=True)
        # Assignments counted since the last bias update (training only, not saved).
        self.expert_load = nn.Buffer(torch.zeros(self.num_experts), persistent=False)

    def forward(self, hidden_states: torch.Tensor):
        """`(router_logits, top_k_weights, top_k_indices, router_probs)`; the fp32 softmax `router_probs` is
        returned so that the router losses reuse it instead of computing it again."""
        hidden_states = hidden_states.reshape(-1, self.hidden_dim)
        router_logits = F.linear(hidden_states, self.weight)
        router_probs = F.softmax(router_logits, dim=-1, dtype=torch.float)
        if self.bias_update_rate > 0:
            choice_scores = router_probs + self.expert_bias.to(router_probs.dtype)
            _, router_indices = torch.topk(choice_scores, self.top_k, dim=-1)
            router_top_value = router_probs.gather(-1, router_indices)
            if self.training:
                with torch.no_grad():
                    # scatter_add_, not bincount: bincount reads its output size back from a GPU (a sync).
                    chosen = router_indices.reshape(-1)
                    self.expert_load.scatter_add_(0, chosen, torch.ones_like(chosen, dtype=self.expert_load.dtype))
        else:
            router_top_value, router_indices = torch.topk(router_probs, self.top_k, dim=-1)
        if self.norm_topk_prob:
            router_top_value = router_top_value / router_top_value.sum(dim=-1, keepdim=True)
        return router_logits, router_top_value.to(router_logits.dtype), router_indices, router_probs

    @torch.no_grad()
    def update_bias(self, load: torch.Tensor | None = None) -> None:
        """Raise the bias of under-loaded experts and lower it for over-loaded ones, then reset the count."""
        load = self.expert_load if load is None else load
        if self.bias_update_rate > 0:
            # No load counted gives sign(0) = 0, no change; testing for it on the host would be a device sync.
            self.expert_bias += self.bias_update_rate * torch.sign(load.mean() - load).to(self.expert_bias.dtype)
        self.expert_load.zero_()


class WrenSparseMoeBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.jitter_noise = config.router_jitter_noise
        self.gate = WrenTopKRouter(config)
        self.experts = WrenExperts(config)
        self.shared_experts = (
            WrenMLP(config, intermediate_size=config.shared_expert_intermediate_size)
            if config.num_shared_experts > 0
            else None
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch_size, seq_len, hidden_dim = hidden_states.shape
        flat_states = hidden_states.reshape(-1, hidden_dim)
        router_input = flat_states
        if self.training and self.jitter_noise > 0:
            # Jitter only what the router sees (Switch Transformer), not the experts' input.
            router_input = flat_states * torch.empty_like(flat_states).uniform_(
                1.0 - self.jitter_noise, 1.0 + self.jitter_noise
            )
        _, top_k_weights, top_k_index, _ = self.gate(router_input)
        output = self.experts(flat_states, top_k_index, top_k_weights)
        if self.shared_experts is not None:
            output = output + self.shared_experts(flat_states)
        return output.reshape(batch_size, seq_len, hidden_dim)
