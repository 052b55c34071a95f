"""Checks that need a GPU (skipped elsewhere): real grouped_mm / flash-capable kernels and bf16 paths."""

import pytest
import torch

from wren_testing import tiny_config_kwargs, tiny_moe_config_kwargs
from wrenlm import WrenConfig, WrenForCausalLM
from wrenlm.modeling.lm_loss import chunked_causal_lm_loss

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def make_model(kwargs, dtype=torch.float32):
    torch.manual_seed(0)
    return WrenForCausalLM(WrenConfig(**kwargs)).to("cuda", dtype)


def test_experts_implementations_agree_on_gpu_in_bf16():
    ids = torch.randint(3, 128, (4, 64), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    model = make_model(tiny_moe_config_kwargs(hidden_size=64, moe_intermediate_size=128), torch.bfloat16).eval()
    outputs = {}
    for implementation in ("eager", "batched_mm", "grouped_mm"):
        model.set_experts_implementation(implementation)
        with torch.no_grad():
            outputs[implementation] = model(ids).logits.float()
    for implementation in ("batched_mm", "grouped_mm"):
        torch.testing.assert_close(outputs[implementation], outputs["eager"], atol=3e-2, rtol=3e-2)


def test_sdpa_matches_eager_on_gpu():
    ids = torch.randint(3, 128, (2, 32), device="cuda")
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    model = make_model(tiny_config_kwargs()).eval()
    with torch.no_grad():
        sdpa = model(ids, attention_mask=mask).logits
        model.set_attn_implementation("eager")
        eager = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(sdpa[:, 5:], eager[:, 5:], atol=1e-4, rtol=1e-4)


def test_chunked_loss_under_cuda_autocast_matches_plain():
    torch.manual_seed(0)
    hidden = torch.randn(4, 128, 64, device="cuda", requires_grad=True)
    weight = torch.randn(1000, 64, device="cuda", requires_grad=True)
    labels = torch.randint(0, 1000, (4, 128), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = hidden @ weight.T
        plain = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, 1000), labels[:, 1:].reshape(-1))
        lean = chunked_causal_lm_loss(hidden, weight, labels, chunk_size=100)
    torch.testing.assert_close(lean, plain, atol=2e-2, rtol=2e-2)
    lean.backward()
    assert weight.grad.dtype == torch.float32 and torch.isfinite(weight.grad).all()


def test_static_cache_generation_auto_compiles_on_gpu():
    model = make_model(tiny_config_kwargs()).eval()
    prompt = torch.randint(3, 128, (2, 6), device="cuda")
    expected = model.generate(prompt, max_new_tokens=8, do_sample=False, eos_token_id=None)
    compiled = model.generate(
        prompt, max_new_tokens=8, do_sample=False, eos_token_id=None, cache_implementation="static"
    )
    assert hasattr(model, "_compiled_call")
    assert torch.equal(compiled, expected)


def test_training_loss_compiles_on_gpu_by_default_and_matches_plain():
    from transformers.loss.loss_utils import ForCausalLMLoss

    from wrenlm.modeling import lm_loss

    assert lm_loss.resolve_loss_implementation("auto", torch.device("cuda")) == "auto-compile"
    torch.manual_seed(0)
    hidden = torch.randn(2, 300, 64, device="cuda")
    weight = torch.randn(1000, 64, device="cuda")
    labels = torch.randint(0, 1000, (2, 300), device="cuda")
    grads = []
    for lean in (True, False):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        if lean:
            loss = chunked_causal_lm_loss(h, w, labels, chunk_size=256)
        else:
            loss = ForCausalLMLoss(h @ w.T, labels, 1000)
        loss.backward()
        grads.append((loss.detach(), h.grad, w.grad))
    assert lm_loss._compile_failure is None  # it compiled rather than falling back
    for lean, plain in zip(*grads):
        torch.testing.assert_close(lean, plain, atol=1e-5, rtol=1e-5)


def test_bf16_head_gradient_accumulates_in_fp32_on_gpu():
    torch.manual_seed(0)
    hidden = torch.randn(4, 64, 64, device="cuda")
    weight = torch.randn(512, 64, device="cuda") * 0.1
    labels = torch.randint(0, 512, (4, 64), device="cuda")
    results = []
    for dtype in (torch.float32, torch.bfloat16):
        # The same bf16 values both times; fp32 is the reference.
        h = hidden.to(torch.bfloat16).to(dtype).requires_grad_()
        w = weight.to(torch.bfloat16).to(dtype).requires_grad_()
        chunked_causal_lm_loss(h, w, labels, chunk_size=4).backward()  # 64 chunks
        results.append(w.grad.float())
    expected, got = results
    assert (got - expected).abs().max() <= 2**-7 * expected.abs().max()


def test_training_step_never_synchronises_with_the_host():
    ids = torch.randint(3, 128, (2, 64), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    for kwargs in (tiny_config_kwargs(), tiny_moe_config_kwargs(router_bias_update_rate=0.01)):
        model = make_model(kwargs).train()
        if model.config.is_moe:
            model.set_experts_implementation("grouped_mm")
        model(ids, labels=ids).loss.backward()  # warm-up: compiles the loss chunk
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            model(ids, labels=ids).loss.backward()
            model.update_router_bias()
        finally:
            torch.cuda.set_sync_debug_mode("default")
