"""Router statistics and auxiliary losses for MoE training.

All functions take the per-layer router logits `[tokens, experts]` and chosen indices
`[tokens, top_k]`, plus an optional `[batch, seq]` attention mask so that padding tokens do not
count towards expert load (they would otherwise pull the balance towards whatever padding routes to).
"""

import torch
import torch.nn.functional as F


def _token_weights(attention_mask: torch.Tensor | None, num_tokens: int, device) -> torch.Tensor:
    """1.0 for real tokens, 0.0 for padding; all ones when no usable mask is given."""
    if attention_mask is None or attention_mask.numel() != num_tokens:
        # With a cache the mask also covers past tokens; the router only saw the new ones.
        return torch.ones(num_tokens, device=device, dtype=torch.float32)
    return attention_mask.reshape(-1).to(device=device, dtype=torch.float32)


def expert_load(
    router_indices: tuple[torch.Tensor, ...], num_experts: int, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Fraction of (non-padding) token->expert assignments each expert received, `[layers, experts]`."""
    loads = []
    for indices in router_indices:
        weights = _token_weights(attention_mask, indices.shape[0], indices.device)
        counts = torch.zeros(num_experts, device=indices.device, dtype=torch.float32)
        counts.scatter_add_(0, indices.reshape(-1), weights.repeat_interleave(indices.shape[-1]))
        loads.append(counts / counts.sum().clamp(min=1.0))
    return torch.stack(loads)


def load_balancing_loss(
    router_logits: tuple[torch.Tensor, ...],
    router_indices: tuple[torch.Tensor, ...],
    num_experts: int,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Switch Transformer auxiliary loss, `num_experts * sum_e f_e * P_e`, pooled over layers.

    f_e is the fraction of assignments routed to expert e (summed over the top-k slots, as in
    transformers' Mixtral/Qwen3-MoE loss) and P_e the mean router probability of e. It is 1.0 at
    perfect balance with top-1 and `top_k` with top-k routing.
    """
    device = router_logits[0].device
    assignments = torch.zeros(num_experts, device=device, dtype=torch.float32)
    prob_sum = torch.zeros(num_experts, device=device, dtype=torch.float32)
    total_tokens = torch.zeros((), device=device, dtype=torch.float32)
    for logits, indices in zip(router_logits, router_indices):
        weights = _token_weights(attention_mask, logits.shape[0], device)
        probs = F.softmax(logits.to(device), dim=-1, dtype=torch.float32)
        assignments = assignments.scatter_add(
            0, indices.to(device).reshape(-1), weights.repeat_interleave(indices.shape[-1])
        )
        prob_sum = prob_sum + (probs * weights[:, None]).sum(dim=0)
        total_tokens = total_tokens + weights.sum()
    total_tokens = total_tokens.clamp(min=1.0)
    return num_experts * torch.sum((assignments / total_tokens) * (prob_sum / total_tokens))


def router_z_loss(router_logits: tuple[torch.Tensor, ...], attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """ST-MoE z-loss: mean squared log-partition of the router logits, averaged over layers.

    Penalising large logits keeps the router's softmax numerically stable in low precision.
    """
    per_layer = []
    for logits in router_logits:
        weights = _token_weights(attention_mask, logits.shape[0], logits.device)
        z = torch.logsumexp(logits.float(), dim=-1).pow(2)
        per_layer.append((z * weights).sum() / weights.sum().clamp(min=1.0))
    return torch.stack(per_layer).mean()
