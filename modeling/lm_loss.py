"""Next-token cross-entropy without materialising the `[tokens, vocab]` logits.

The LM head and the loss run chunk by chunk; each chunk's gradient (softmax minus one-hot) is
folded into d_hidden and d_weight right away, so peak memory is one chunk of logits instead of
the whole batch's, at the same three matmuls a plain forward + backward costs.
"""

import torch
import torch.nn.functional as F


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, normalizer, chunk_size, ignore_index, compute_dtype, want_grads):
        num_tokens = hidden.shape[0]
        grad_hidden = torch.empty_like(hidden) if want_grads and hidden.requires_grad else None
        # Accumulated in the weight's own dtype, as autograd would return it; in place when dtypes allow.
        grad_weight = torch.zeros_like(weight) if want_grads and weight.requires_grad else None
        weight_c = weight.to(compute_dtype)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, num_tokens, chunk_size):
            end = min(start + chunk_size, num_tokens)
            hidden_c = hidden[start:end].to(compute_dtype)
            chunk_targets = targets[start:end]
            logits = (hidden_c @ weight_c.T).float()
            valid = chunk_targets != ignore_index
            safe_targets = torch.where(valid, chunk_targets, torch.zeros_like(chunk_targets))
            target_logits = logits.gather(1, safe_targets[:, None]).squeeze(1)
            log_norm = torch.logsumexp(logits, dim=-1)
            total += ((log_norm - target_logits) * valid).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            # d(loss)/d(logits) = softmax - one_hot, zero on ignored positions, scaled by 1/normalizer;
            # built in place in the logits buffer so a chunk never holds more than one [chunk, vocab] array.
            grad_logits = logits.sub_(log_norm[:, None]).exp_()
            grad_logits.scatter_add_(1, safe_targets[:, None], -torch.ones_like(log_norm)[:, None])
            grad_logits.mul_((valid.float() / normalizer)[:, None])
            grad_logits = grad_logits.to(compute_dtype)
            if grad_hidden is not None:
                grad_hidden[start:end] = grad_logits @ weight_c
            if grad_weight is None:
                continue
            if grad_weight.dtype == compute_dtype:
                grad_weight.addmm_(grad_logits.T, hidden_c)
            else:
                grad_weight += grad_logits.T @ hidden_c
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.used = False
        return total / normalizer

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.used:
            raise RuntimeError(
                "The chunked LM loss folds its gradient in during forward and supports one backward pass; "
                "set config.loss_chunk_size=0 to backpropagate through the loss more than once."
            )
        ctx.used = True
        grad_hidden, grad_weight = ctx.saved_tensors
        # Scaled in place: a second [vocab, hidden] copy would cost as much as the weight itself.
        if grad_hidden is not None:
            grad_hidden = grad_hidden.mul_(grad_output.to(grad_hidden.dtype))
        if grad_weight is not None:
            grad_weight = grad_weight.mul_(grad_output.to(grad_weight.dtype))
        return grad_hidden, grad_weight, None, None, None, None, None, None


def auto_chunk_size(vocab_size: int) -> int:
    """Tokens per chunk so that one chunk of fp32 logits is about 64 MiB (2**24 values)."""
    return max(1, (1 << 24) // vocab_size)


def chunked_causal_lm_loss(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    chunk_size: int = 1024,
    ignore_index: int = -100,
    num_items_in_batch: torch.Tensor | int | None = None,
    shift_labels: torch.Tensor | None = None,
    **kwargs,
) -> torch.Tensor:
    """Same value and gradients as `ForCausalLMLoss(hidden_states @ lm_head_weight.T, labels)`.

    Labels are shifted here (token t predicts t+1) unless `shift_labels` is given. With
    `num_items_in_batch` the summed loss is divided by it (gradient accumulation), otherwise by the
    number of non-ignored targets. A batch without any target gives 0 rather than NaN.
    """
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    targets = shift_labels.reshape(-1).to(hidden_states.device)
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1])
    if num_items_in_batch is None:
        normalizer = (targets != ignore_index).sum().clamp(min=1).float()
    else:
        normalizer = torch.as_tensor(num_items_in_batch, device=hidden.device, dtype=torch.float32)
    device_type = hidden.device.type
    compute_dtype = (
        torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else hidden.dtype
    )
    with torch.autocast(device_type=device_type, enabled=False):
        return _ChunkedLinearCrossEntropy.apply(
            hidden,
            lm_head_weight,
            targets,
            normalizer,
            chunk_size,
            ignore_index,
            compute_dtype,
            torch.is_grad_enabled(),
        )
