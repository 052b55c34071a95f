"""Next-token cross-entropy without materialising the `[tokens, vocab]` logits.

The LM head and the loss run chunk by chunk; each chunk's gradient (softmax minus one-hot) is
folded into d_hidden and d_weight right away, so peak memory is about one chunk of logits instead of
the whole batch's, at the same three matmuls a plain forward + backward costs.

Implementations (`loss_implementation`):
    eager    the chunk body in plain PyTorch, in place (a handful of ops per chunk).
    compile  the chunk body under `torch.compile`: Inductor fuses softmax, loss and gradient into one
             kernel after the matmul. If compiling fails, this is an error (the caller asked for it).
    liger    Liger-Kernel's fused linear cross-entropy (CUDA, `pip install wrenlm[liger]`).
    auto     `compile` on GPUs, falling back to `eager` (a logged warning, once) if compiling fails;
             `eager` on CPU, where the compile warm-up (~20 s) outweighs short runs. Never Liger,
             whose kernel reads the target count back to the host (a device sync per call).

Chunks are multiples of 256 tokens sized from a budget of fp32 logits bytes (`auto_chunk_size`).
The head-weight gradient is accumulated in fp32 and cast to the weight's dtype once.
"""

import logging

import torch
import torch.nn.functional as F
from transformers.utils.import_utils import is_liger_kernel_available

logger = logging.getLogger(__name__)

LOSS_IMPLEMENTATIONS = ("auto", "eager", "compile", "liger")
# fp32 logits of one chunk: the eager body works in that one buffer (plus a bf16/fp16 copy of the
# gradient when the matmuls run in low precision).
LOGITS_BUDGET_BYTES = 64 * 2**20
CHUNK_ALIGNMENT = 256

_ADDMM_HAS_OUT_DTYPE = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 8)
_compile_failure: str | None = None  # why `auto` stopped compiling, once it has failed in this process
_compiled_body = None


def auto_chunk_size(vocab_size: int, budget_bytes: int = LOGITS_BUDGET_BYTES) -> int:
    """Tokens per chunk: the largest multiple of 256 whose fp32 logits fit in `budget_bytes` (at least 256)."""
    rows = budget_bytes // (4 * vocab_size)
    return max(CHUNK_ALIGNMENT, rows - rows % CHUNK_ALIGNMENT)


def _eager_chunk(hidden_c, weight_t, targets_c, scale_c, grad_dtype):
    """The chunk's share of the loss and, unless `grad_dtype` is None, d(loss)/d(logits) `[chunk, vocab]`.

    `scale_c` `[chunk, 1]` is 1/normalizer for counted targets and 0 for ignored ones (whose `targets_c`
    is 0). Everything happens in the one fp32 logits buffer: log-softmax in place (the kernel reads a row
    before writing it), then the gradient `(softmax - one_hot) * scale`.
    """
    logits = torch.mm(hidden_c, weight_t)
    if logits.dtype != torch.float32:
        logits = logits.float()
    log_probs = torch._log_softmax(logits, -1, False, out=logits)
    nll = -(log_probs.gather(1, targets_c) * scale_c).sum()
    if grad_dtype is None:
        return nll, None
    grad = log_probs.exp_().mul_(scale_c).scatter_add_(1, targets_c, scale_c.neg())
    return nll, _as_dtype(grad, grad_dtype)


def _fusible_chunk(hidden_c, weight_t, targets_c, scale_c, grad_dtype):
    """`_eager_chunk` without in-place ops or scatter, so that Inductor emits one fused kernel after the matmul."""
    logits = torch.mm(hidden_c, weight_t).float()
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    log_probs = shifted - shifted.exp().sum(dim=-1, keepdim=True).log()
    nll = -(log_probs.gather(1, targets_c) * scale_c).sum()
    if grad_dtype is None:
        return nll, None
    one_hot = torch.arange(log_probs.shape[-1], device=log_probs.device) == targets_c
    grad = (log_probs.exp() - one_hot.float()) * scale_c
    return nll, grad.to(grad_dtype)


def _compiled_chunk():
    global _compiled_body
    if _compiled_body is None:
        _compiled_body = torch.compile(_fusible_chunk, fullgraph=True)
    return _compiled_body


def liger_available() -> bool:
    return is_liger_kernel_available()


LIGER_DEVICE_TYPES = ("cuda",)
COMPILE_BY_DEFAULT_DEVICE_TYPES = ("cuda", "xpu")


def resolve_loss_implementation(requested: str, device: torch.device) -> str:
    """What `requested` runs as on `device`: eager, compile, liger, or auto-compile (compile, eager if that fails).

    An explicit request that cannot run here is an error naming the reason, never a quiet substitute.
    """
    if requested not in LOSS_IMPLEMENTATIONS:
        raise ValueError(f"`loss_implementation` must be one of {', '.join(LOSS_IMPLEMENTATIONS)}, got {requested!r}.")
    if requested == "liger":
        if not liger_available():
            raise ImportError("loss_implementation='liger' needs Liger-Kernel: pip install liger-kernel")
        if device.type not in LIGER_DEVICE_TYPES:
            raise ValueError(f"loss_implementation='liger' runs Triton kernels on CUDA; the loss is on {device.type}.")
    if requested != "auto":
        return requested
    if device.type in COMPILE_BY_DEFAULT_DEVICE_TYPES and _compile_failure is None:
        return "auto-compile"
    return "eager"


def _run_chunk(implementation: str, *args):
    global _compile_failure
    if torch.compiler.is_compiling():  # inside a caller's compiled graph: traced into it
        return _fusible_chunk(*args)
    fell_back = implementation == "auto-compile" and _compile_failure is not None
    if implementation == "eager" or fell_back:
        return _eager_chunk(*args)
    try:
        return _compiled_chunk()(*args)
    except Exception as error:  # any compiler failure: an error when asked for, else fall back
        reason = f"{type(error).__name__}: {str(error)[:300]}"
        if implementation == "compile":
            raise RuntimeError(
                f"loss_implementation='compile': torch.compile failed on the loss chunk ({reason}). "
                "Use loss_implementation='eager' (or 'auto', which falls back to it)."
            ) from error
        _compile_failure = reason
        logger.warning("torch.compile failed on the LM loss chunk (%s); the loss runs eagerly from now on.", reason)
        return _eager_chunk(*args)


def _as_dtype(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # `.to` of a tensor already in `dtype` is free but still a dispatched op, once per chunk or step.
    return tensor if tensor.dtype == dtype else tensor.to(dtype)


def _accumulate_weight_grad(grad_weight: torch.Tensor, grad_logits: torch.Tensor, hidden_c: torch.Tensor) -> None:
    """grad_weight (fp32) += grad_logits.T @ hidden_c, without rounding the product to a low precision."""
    if grad_logits.dtype == torch.float32 and hidden_c.dtype == torch.float32:
        grad_weight.addmm_(grad_logits.t(), hidden_c)
    elif grad_weight.device.type == "cuda" and _ADDMM_HAS_OUT_DTYPE:
        # Tensor cores with an fp32 output: no parameter-sized low-precision temporary.
        torch.addmm(
            grad_weight, grad_logits.t(), hidden_c.to(grad_logits.dtype), out_dtype=torch.float32, out=grad_weight
        )
    else:
        grad_weight.addmm_(grad_logits.t().float(), hidden_c.float())


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, scale, chunk_size, compute_dtype, want_grads, implementation):
        num_tokens = hidden.shape[0]
        want_hidden_grad = want_grads and hidden.requires_grad
        want_weight_grad = want_grads and weight.requires_grad
        grad_hidden = torch.empty_like(hidden) if want_hidden_grad else None
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_weight_grad else None
        )
        grad_dtype = compute_dtype if want_hidden_grad or want_weight_grad else None
        # The one place the head weight is read: cast once (if at all), transposed as a view.
        weight_c = _as_dtype(weight, compute_dtype)
        weight_t = weight_c.t()
        hidden_c = _as_dtype(hidden, compute_dtype)
        targets_col = targets[:, None]
        chunk_losses = []
        for start in range(0, num_tokens, chunk_size):
            end = min(start + chunk_size, num_tokens)
            chunk_hidden = hidden_c[start:end]
            chunk_loss, grad_logits = _run_chunk(
                implementation, chunk_hidden, weight_t, targets_col[start:end], scale[start:end], grad_dtype
            )
            chunk_losses.append(chunk_loss)
            if grad_logits is None:
                continue
            if grad_hidden is not None:
                if grad_hidden.dtype == grad_logits.dtype:
                    torch.mm(grad_logits, weight_c, out=grad_hidden[start:end])
                else:
                    grad_hidden[start:end] = grad_logits @ weight_c
            if grad_weight is not None:
                _accumulate_weight_grad(grad_weight, grad_logits, chunk_hidden)
        if grad_weight is not None and grad_weight.dtype != weight.dtype:
            grad_weight = grad_weight.to(weight.dtype)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.used = False
        if not chunk_losses:
            return torch.zeros((), dtype=torch.float32, device=hidden.device)
        return chunk_losses[0] if len(chunk_losses) == 1 else torch.stack(chunk_losses).sum()

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
            grad_hidden = grad_hidden.mul_(_as_dtype(grad_output, grad_hidden.dtype))
        if grad_weight is not None:
            grad_weight = grad_weight.mul_(_as_dtype(grad_output, grad_weight.dtype))
        return grad_hidden, grad_weight, None, None, None, None, None, None


def _liger_loss_sum(hidden, weight, targets, ignore_index):
    # Guarded by transformers' own `is_liger_kernel_available()`: its remote-code import scan skips such blocks, so
    # a saved Wren folder does not require liger_kernel wherever it is loaded.
    if is_liger_kernel_available():
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

        return liger_fused_linear_cross_entropy(hidden, weight, targets, ignore_index=ignore_index, reduction="sum")
    raise ImportError("loss_implementation='liger' needs Liger-Kernel: pip install liger-kernel")


def chunked_causal_lm_loss(
    hidden_states: torch.Tensor,
    lm_head_weight: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    chunk_size: int | None = None,
    ignore_index: int = -100,
    num_items_in_batch: torch.Tensor | int | None = None,
    shift_labels: torch.Tensor | None = None,
    implementation: str = "auto",
    **kwargs,
) -> torch.Tensor:
    """Same value and gradients as `ForCausalLMLoss(hidden_states @ lm_head_weight.T, labels)`.

    Labels are shifted here (token t predicts t+1) unless `shift_labels` is given. With
    `num_items_in_batch` the summed loss is divided by it (gradient accumulation), otherwise by the
    number of non-ignored targets. A batch without any target gives 0 rather than NaN. `chunk_size`
    None sizes chunks with `auto_chunk_size`. Nothing here reads a value back to the host.
    """
    if shift_labels is None:
        shift_labels = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    targets = shift_labels.reshape(-1)
    if targets.device != hidden_states.device:
        targets = targets.to(hidden_states.device)
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1])
    valid = targets != ignore_index
    if num_items_in_batch is None:
        normalizer = valid.sum().clamp(min=1).float()
    else:
        normalizer = torch.as_tensor(num_items_in_batch, device=hidden.device, dtype=torch.float32)
    implementation = resolve_loss_implementation(implementation, hidden.device)
    if implementation == "liger":
        return _liger_loss_sum(hidden, lm_head_weight, targets, ignore_index) / normalizer
    device_type = hidden.device.type
    compute_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else hidden.dtype
    # Per-token weight of the mean: 0 for ignored targets, whose index is replaced by a valid 0.
    scale = (valid / normalizer)[:, None]
    safe_targets = targets * valid
    with torch.autocast(device_type=device_type, enabled=False):
        return _ChunkedLinearCrossEntropy.apply(
            hidden,
            lm_head_weight,
            safe_targets,
            scale,
            chunk_size or auto_chunk_size(lm_head_weight.shape[0]),
            compute_dtype,
            torch.is_grad_enabled(),
            implementation,
        )
