"""The memory-lean chunked LM head + cross-entropy equals the plain logits path, value and gradients."""

import pytest
import torch
from transformers.loss.loss_utils import ForCausalLMLoss

from wrenlm import WrenConfig, WrenForCausalLM
from wrenlm.modeling.lm_loss import chunked_causal_lm_loss
from wren_testing import tiny_config_kwargs, tiny_moe_config_kwargs


def reference_and_chunked(hidden, weight, labels, chunk_size, **kwargs):
    hidden_ref = hidden.clone().requires_grad_()
    weight_ref = weight.clone().requires_grad_()
    reference = ForCausalLMLoss(hidden_ref @ weight_ref.T, labels, weight.shape[0], **kwargs)
    reference.backward()
    hidden_new = hidden.clone().requires_grad_()
    weight_new = weight.clone().requires_grad_()
    chunked = chunked_causal_lm_loss(hidden_new, weight_new, labels, chunk_size=chunk_size, **kwargs)
    chunked.backward()
    return (reference, hidden_ref.grad, weight_ref.grad), (chunked, hidden_new.grad, weight_new.grad)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 4096])
def test_chunked_loss_equals_plain_loss(chunk_size):
    torch.manual_seed(0)
    hidden, weight = torch.randn(3, 11, 16), torch.randn(50, 16)
    labels = torch.randint(0, 50, (3, 11))
    labels[0, :4] = -100  # e.g. masked prompt tokens
    expected, got = reference_and_chunked(hidden, weight, labels, chunk_size)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_num_items_in_batch_and_shift_labels_follow_transformers():
    torch.manual_seed(0)
    hidden, weight = torch.randn(2, 9, 8), torch.randn(30, 8)
    labels = torch.randint(0, 30, (2, 9))
    expected, got = reference_and_chunked(hidden, weight, labels, 5, num_items_in_batch=torch.tensor(40))
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
    shifted = torch.randint(0, 30, (2, 9))
    expected, got = reference_and_chunked(hidden, weight, None, 4, shift_labels=shifted)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)


def test_all_ignored_targets_give_zero_not_nan():
    hidden, weight = torch.randn(1, 4, 8, requires_grad=True), torch.randn(10, 8)
    loss = chunked_causal_lm_loss(hidden, weight, torch.full((1, 4), -100), chunk_size=2)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(hidden.grad == 0)


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_model_training_loss_uses_lean_path_and_matches_plain(kind):
    kwargs = tiny_config_kwargs() if kind == "dense" else tiny_moe_config_kwargs()
    ids = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    results = []
    for chunk in (5, 0):
        torch.manual_seed(0)
        model = WrenForCausalLM(WrenConfig(**kwargs, loss_chunk_size=chunk)).train()
        out = model(ids, labels=ids)
        out.loss.backward()
        assert (out.logits is None) == (chunk > 0)  # the lean path never builds [tokens, vocab]
        results.append((out.loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (lean_loss, lean_grads), (plain_loss, plain_grads) = results
    torch.testing.assert_close(lean_loss, plain_loss, atol=1e-6, rtol=1e-6)
    assert lean_grads.keys() == plain_grads.keys()
    for name in plain_grads:
        torch.testing.assert_close(lean_grads[name], plain_grads[name], atol=1e-6, rtol=1e-5, msg=name)


def test_eval_mode_returns_logits_and_same_loss():
    ids = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = WrenForCausalLM(WrenConfig(**tiny_config_kwargs(loss_chunk_size=4)))
    train_loss = model.train()(ids, labels=ids).loss
    out = model.eval()(ids, labels=ids)
    assert out.logits is not None
    torch.testing.assert_close(out.loss, train_loss)


def test_chunked_loss_under_bf16_autocast_is_close():
    torch.manual_seed(0)
    hidden, weight = torch.randn(2, 16, 32), torch.randn(64, 32)
    labels = torch.randint(0, 64, (2, 16))
    plain = ForCausalLMLoss(hidden @ weight.T, labels, 64)
    weight.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lean = chunked_causal_lm_loss(hidden, weight, labels, chunk_size=8)
    lean.backward()
    assert weight.grad.dtype == torch.float32
    torch.testing.assert_close(lean, plain, atol=0.05, rtol=0.02)


def test_second_backward_through_chunked_loss_is_refused():
    hidden, weight = torch.randn(1, 6, 8, requires_grad=True), torch.randn(10, 8, requires_grad=True)
    loss = chunked_causal_lm_loss(hidden, weight, torch.randint(0, 10, (1, 6)), chunk_size=4)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward pass"):
        loss.backward()


def test_auto_chunk_size_bounds_the_logits_per_chunk():
    from wrenlm.modeling.lm_loss import auto_chunk_size

    assert auto_chunk_size(32000) == 524
    assert auto_chunk_size(4096) == 4096
    assert auto_chunk_size(1 << 30) == 1


def test_chunked_loss_with_bf16_weights_accumulates_in_bf16():
    torch.manual_seed(0)
    hidden = torch.randn(2, 16, 32, dtype=torch.bfloat16)
    weight = torch.randn(64, 32, dtype=torch.bfloat16)
    labels = torch.randint(0, 64, (2, 16))
    expected, got = reference_and_chunked(hidden, weight, labels, chunk_size=8)
    assert got[2].dtype == torch.bfloat16
    for e, g in zip(expected, got):
        torch.testing.assert_close(g.float(), e.float(), atol=0.05, rtol=0.05)
