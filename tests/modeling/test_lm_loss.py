"""The memory-lean chunked LM head + cross-entropy equals the plain logits path, value and gradients."""

import pytest
import torch
from transformers.loss.loss_utils import ForCausalLMLoss

from wren_testing import tiny_config_kwargs, tiny_moe_config_kwargs
from wrenlm import WrenConfig, WrenForCausalLM
from wrenlm.modeling.lm_loss import chunked_causal_lm_loss


def reference_and_chunked(hidden, weight, labels, chunk_size, implementation="eager", **kwargs):
    """(loss, d hidden, d weight) of transformers' loss on materialised logits, then of the chunked loss."""
    hidden_ref = hidden.clone().requires_grad_()
    weight_ref = weight.clone().requires_grad_()
    reference = ForCausalLMLoss(hidden_ref @ weight_ref.T, labels, weight.shape[0], **kwargs)
    reference.backward()
    hidden_new = hidden.clone().requires_grad_()
    weight_new = weight.clone().requires_grad_()
    chunked = chunked_causal_lm_loss(
        hidden_new, weight_new, labels, chunk_size=chunk_size, implementation=implementation, **kwargs
    )
    chunked.backward()
    return (reference, hidden_ref.grad, weight_ref.grad), (chunked, hidden_new.grad, weight_new.grad)


def assert_all_close(expected, got, tolerance=1e-6):
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 4096])
def test_chunked_loss_equals_plain_loss(chunk_size):
    torch.manual_seed(0)
    hidden, weight = torch.randn(3, 11, 16), torch.randn(50, 16)
    labels = torch.randint(0, 50, (3, 11))
    labels[0, :4] = -100  # e.g. masked prompt tokens
    expected, got = reference_and_chunked(hidden, weight, labels, chunk_size)
    assert_all_close(expected, got)


def test_compiled_chunk_equals_plain_loss():
    # 37 rows in chunks of 16: two shapes (16 and a 5-row tail) through the compiled body.
    torch.manual_seed(0)
    hidden, weight = torch.randn(1, 37, 16), torch.randn(50, 16)
    labels = torch.randint(0, 50, (1, 37))
    labels[0, :3] = -100
    expected, got = reference_and_chunked(hidden, weight, labels, 16, implementation="compile")
    assert_all_close(expected, got)


def test_num_items_in_batch_and_shift_labels_follow_transformers():
    torch.manual_seed(0)
    hidden, weight = torch.randn(2, 9, 8), torch.randn(30, 8)
    labels = torch.randint(0, 30, (2, 9))
    expected, got = reference_and_chunked(hidden, weight, labels, 5, num_items_in_batch=torch.tensor(40))
    assert_all_close(expected, got)
    shifted = torch.randint(0, 30, (2, 9))
    expected, got = reference_and_chunked(hidden, weight, None, 4, shift_labels=shifted)
    assert_all_close(expected, got)


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


def test_auto_chunk_size_is_aligned_and_sized_from_the_logits_budget():
    from wrenlm.modeling.lm_loss import auto_chunk_size

    assert auto_chunk_size(32000) == 512  # 64 MiB of fp32 logits hold 524 rows: rounded down to 2 x 256
    assert auto_chunk_size(4096) == 4096
    assert auto_chunk_size(32000, budget_bytes=2**28) == 2048
    assert auto_chunk_size(1 << 30) == 256  # never below one aligned block


def test_default_chunks_are_multiples_of_256(monkeypatch):
    from wrenlm.modeling import lm_loss

    rows = []
    run_chunk = lm_loss._run_chunk

    def recording(implementation, hidden_c, *args):
        rows.append(hidden_c.shape[0])
        return run_chunk(implementation, hidden_c, *args)

    monkeypatch.setattr(lm_loss, "_run_chunk", recording)
    # vocab 2**16: the 64 MiB budget holds 256 rows of fp32 logits.
    hidden, weight = torch.randn(1, 600, 4), torch.randn(1 << 16, 4)
    chunked_causal_lm_loss(hidden, weight, torch.randint(0, 1 << 16, (1, 600)))
    assert rows == [256, 256, 88]


def test_chunked_loss_with_bf16_weights_accumulates_the_head_gradient_in_fp32():
    """bf16 tolerance: loss to 1e-5 relative, gradients to 2**-7 of their largest magnitude (about two bf16
    roundings, what the plain bf16 path also meets). Summing 64 chunks' head gradients in bf16 misses it (~2e-2)."""
    torch.manual_seed(0)
    hidden = torch.randn(4, 64, 64, dtype=torch.bfloat16)
    weight = (torch.randn(512, 64) * 0.1).to(torch.bfloat16)
    labels = torch.randint(0, 512, (4, 64))
    expected, _ = reference_and_chunked(hidden.float(), weight.float(), labels, chunk_size=4)
    _, got = reference_and_chunked(hidden, weight, labels, chunk_size=4)
    assert got[1].dtype == got[2].dtype == torch.bfloat16
    torch.testing.assert_close(got[0].float(), expected[0], atol=0, rtol=1e-5)
    for e, g in zip(expected[1:], got[1:]):
        assert (g.float() - e).abs().max() <= 2**-7 * e.abs().max()


def test_unknown_implementation_is_refused():
    hidden, weight = torch.randn(1, 4, 8), torch.randn(10, 8)
    with pytest.raises(ValueError, match="loss_implementation` must be one of auto, eager, compile, liger"):
        chunked_causal_lm_loss(hidden, weight, torch.randint(0, 10, (1, 4)), implementation="fast")


def _broken_compiler():
    def compiled(*args):
        raise RuntimeError("no C++ compiler")

    return compiled


def test_auto_falls_back_to_eager_with_a_warning_when_compiling_fails(monkeypatch, caplog):
    from wrenlm.modeling import lm_loss

    monkeypatch.setattr(lm_loss, "COMPILE_BY_DEFAULT_DEVICE_TYPES", ("cpu",))  # as auto does on a GPU
    monkeypatch.setattr(lm_loss, "_compiled_chunk", _broken_compiler)
    monkeypatch.setattr(lm_loss, "_compile_failure", None)
    assert lm_loss.resolve_loss_implementation("auto", torch.device("cpu")) == "auto-compile"
    torch.manual_seed(0)
    hidden, weight = torch.randn(2, 9, 8), torch.randn(30, 8)
    labels = torch.randint(0, 30, (2, 9))
    with caplog.at_level("WARNING", logger=lm_loss.__name__):
        expected, got = reference_and_chunked(hidden, weight, labels, 5, implementation="auto")
    assert_all_close(expected, got)
    assert "torch.compile failed on the LM loss chunk (RuntimeError: no C++ compiler)" in caplog.text
    assert caplog.text.count("torch.compile failed") == 1  # once, then auto stays eager
    assert lm_loss.resolve_loss_implementation("auto", torch.device("cpu")) == "eager"


def test_explicit_compile_that_fails_is_an_error(monkeypatch):
    from wrenlm.modeling import lm_loss

    monkeypatch.setattr(lm_loss, "_compiled_chunk", _broken_compiler)
    hidden, weight = torch.randn(1, 6, 8), torch.randn(10, 8)
    with pytest.raises(
        RuntimeError, match="loss_implementation='compile': torch.compile failed .*no C\\+\\+ compiler"
    ):
        chunked_causal_lm_loss(hidden, weight, torch.randint(0, 10, (1, 6)), implementation="compile")


def test_liger_needs_the_package_and_a_gpu(monkeypatch):
    from wrenlm.modeling import lm_loss

    hidden, weight, labels = torch.randn(1, 6, 8), torch.randn(10, 8), torch.randint(0, 10, (1, 6))
    monkeypatch.setattr(lm_loss, "liger_available", lambda: False)
    with pytest.raises(ImportError, match="pip install liger-kernel"):
        chunked_causal_lm_loss(hidden, weight, labels, implementation="liger")
    monkeypatch.setattr(lm_loss, "liger_available", lambda: True)
    with pytest.raises(ValueError, match="runs Triton kernels on CUDA; the loss is on cpu"):
        chunked_causal_lm_loss(hidden, weight, labels, implementation="liger")


@pytest.mark.parametrize("num_items_in_batch", [None, 20])
def test_liger_backend_gets_summed_targets_and_is_normalised_here(monkeypatch, num_items_in_batch):
    """Liger's kernels need CUDA (not tested here); this checks the call and the normalisation around it."""
    import sys
    import types

    from wrenlm.modeling import lm_loss

    calls = []

    def fake_liger(hidden, weight, target, ignore_index=-100, reduction="mean"):
        calls.append((reduction, ignore_index))
        return torch.nn.functional.cross_entropy(
            hidden @ weight.T, target, ignore_index=ignore_index, reduction=reduction
        )

    functional = types.ModuleType("liger_kernel.transformers.functional")
    functional.liger_fused_linear_cross_entropy = fake_liger
    monkeypatch.setitem(sys.modules, "liger_kernel", types.ModuleType("liger_kernel"))
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers", types.ModuleType("liger_kernel.transformers"))
    monkeypatch.setitem(sys.modules, "liger_kernel.transformers.functional", functional)
    monkeypatch.setattr(lm_loss, "LIGER_DEVICE_TYPES", ("cpu",))
    monkeypatch.setattr(lm_loss, "is_liger_kernel_available", lambda: True)  # its find_spec cannot see a stub
    torch.manual_seed(0)
    hidden, weight = torch.randn(2, 9, 8), torch.randn(30, 8)
    labels = torch.randint(0, 30, (2, 9))
    labels[1, :3] = -100
    extra = {} if num_items_in_batch is None else {"num_items_in_batch": num_items_in_batch}
    expected, got = reference_and_chunked(hidden, weight, labels, None, implementation="liger", **extra)
    assert_all_close(expected, got)
    assert calls == [("sum", -100)]


def test_dense_training_step_reads_nothing_back_to_the_host():
    from wren_testing import HostSyncDetector

    torch.manual_seed(0)
    model = WrenForCausalLM(WrenConfig(**tiny_config_kwargs(loss_chunk_size=8))).train()
    ids = torch.randint(3, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    with HostSyncDetector() as detector:
        model(ids, labels=ids).loss.backward()
    assert detector.seen == []
