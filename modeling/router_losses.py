"""Router statistics and auxiliary losses for MoE training.

The functions take the per-layer router logits `[tokens, experts]` and chosen indices `[tokens, top_k]`
(optionally the router's own softmax, `[tokens, experts]` fp32, so it is not computed again), plus an
optional `[batch, seq]` attention mask so that padding tokens do not count towards expert load (they
would otherwise pull the balance towards whatever padding routes to). All layers are stacked and
reduced together: a fixed handful of ops whatever the number of layers, and no host synchronisation.
"""

import torch
import torch.nn.functional as F


def _token_weights(attention_mask: torch.Tensor | None, num_tokens: int, device) -> torch.Tensor | None:
    """1.0 for real tokens, 0.0 for padding; None (every token counts) when no usable mask is given."""
    if attention_mask is None or attention_mask.numel() != num_tokens:
        # With a cache the mask also covers past tokens; the router only saw the new ones.
        return None
    return attention_mask.reshape(-1).to(device=device, dtype=torch.float32)


def _stack(tensors: tuple[torch.Tensor, ...]) -> torch.Tensor:
    device = tensors[0].device
    # Layers may sit on different devices (device_map); `.to` only where needed keeps the op count flat.
    return torch.stack([tensor if tensor.device == device else tensor.to(device) for tensor in tensors])


def _assignment_counts(indices: torch.Tensor, num_experts: int, weights, per_layer: bool) -> torch.Tensor:
    """(Weighted) token->expert assignments of `[layers, tokens, top_k]` indices: `[layers, experts]` or pooled."""
    layers, tokens, top_k = indices.shape
    flat = indices.reshape(layers, tokens * top_k)
    if per_layer:
        flat = flat + torch.arange(layers, device=indices.device)[:, None] * num_experts
    if weights is None:
        source = torch.ones((), device=indices.device).expand(layers * tokens * top_k)
    else:
        source = weights[None, :, None].expand(layers, tokens, top_k).reshape(-1)
    counts = torch.zeros((layers if per_layer else 1) * num_experts, device=indices.device)
    counts.scatter_add_(0, flat.reshape(-1), source)
    return counts.view(layers, num_experts) if per_layer else counts


def _weighted_mean(values: torch.Tensor, weights) -> torch.Tensor:
    """Mean of `[layers, tokens]` values over every layer and (non-padding) token."""
    if weights is None:
        return values.mean()
    return (values * weights).sum() / (values.shape[0] * weights.sum()).clamp(min=1.0)


def _balance_loss(probs: torch.Tensor, indices: torch.Tensor, num_experts: int, weights) -> torch.Tensor:
    layers, tokens, _ = probs.shape
    assignments = _assignment_counts(indices, num_experts, weights, per_layer=False)
    if weights is None:
        prob_sum, total = probs.sum(dim=(0, 1)), float(layers * tokens)
    else:
        prob_sum = torch.einsum("lte,t->e", probs, weights)
        total = (layers * weights.sum()).clamp(min=1.0)
    return num_experts * (assignments * prob_sum).sum() / (total * total)


def _z_loss(logits: torch.Tensor, probs: torch.Tensor, weights) -> torch.Tensor:
    # log Z = logit_j - log p_j for any expert j; j = the most probable keeps log p_j >= -log(experts).
    # Its gradient through the router's softmax is exactly softmax(logits), as logsumexp's would be.
    top = probs.argmax(dim=-1, keepdim=True)
    log_partition = (logits.gather(-1, top).float() - probs.gather(-1, top).log()).squeeze(-1)
    return _weighted_mean(log_partition.square(), weights)


def router_losses(
    router_logits: tuple[torch.Tensor, ...],
    router_probs: tuple[torch.Tensor, ...],
    router_indices: tuple[torch.Tensor, ...],
    num_experts: int,
    attention_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(load_balancing_loss, router_z_loss)` over all layers at once, reusing the routers' softmax."""
    logits, probs, indices = _stack(router_logits), _stack(router_probs), _stack(router_indices)
    weights = _token_weights(attention_mask, probs.shape[1], probs.device)
    return _balance_loss(probs, indices, num_experts, weights), _z_loss(logits, probs, weights)


def expert_load(
    router_indices: tuple[torch.Tensor, ...], num_experts: int, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Fraction of (non-padding) token->expert assignments each expert received, `[layers, experts]`."""
    indices = _stack(router_indices)
    weights = _token_weights(attention_mask, indices.shape[1], indices.device)
    counts = _assignment_counts(indices, num_experts, weights, per_layer=True)
    return counts / counts.sum(dim=-1, keepdim=True).clamp(min=1.0)


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
    probs = F.softmax(_stack(router_logits), dim=-1, dtype=torch.float32)
    weights = _token_weights(attention_mask, probs.shape[1], probs.device)
    return _balance_loss(probs, _stack(router_indices), num_experts, weights)


def router_z_loss(router_logits: tuple[torch.Tensor, ...], attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """ST-MoE z-loss: mean squared log-partition of the router logits, averaged over layers.

    Penalising large logits keeps the router's softmax numerically stable in low precision.
    """
    logits = _stack(router_logits)
    probs = F.softmax(logits, dim=-1, dtype=torch.float32)
    return _z_loss(logits, probs, _token_weights(attention_mask, probs.shape[1], probs.device))
