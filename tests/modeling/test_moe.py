"""Mixture-of-Experts: experts kernels, router losses against transformers' reference, balancing."""

import pytest
import torch
from transformers.models.qwen3_moe.modeling_qwen3_moe import load_balancing_loss_func

from wren_testing import HostSyncDetector, tiny_moe_config_kwargs
from wrenlm import WrenConfig, WrenForCausalLM
from wrenlm.modeling.moe import WrenTopKRouter
from wrenlm.modeling.router_losses import expert_load, load_balancing_loss, router_losses, router_z_loss

EXPERTS_IMPLEMENTATIONS = ["eager", "batched_mm", "grouped_mm"]


def make_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return WrenForCausalLM(WrenConfig(**tiny_moe_config_kwargs(**overrides)))


def random_ids(vocab=128, batch=2, seq=10, seed=1):
    return torch.randint(3, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_experts_implementations_agree_on_outputs_and_gradients():
    ids = random_ids()
    results = {}
    for implementation in EXPERTS_IMPLEMENTATIONS:
        model = make_model().train()
        model.set_experts_implementation(implementation)
        assert model.config._experts_implementation == implementation
        loss = model(ids, labels=ids).loss
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if "experts" in n}
        results[implementation] = (loss.detach(), grads)
    reference_loss, reference_grads = results["eager"]
    for implementation in EXPERTS_IMPLEMENTATIONS[1:]:
        loss, grads = results[implementation]
        torch.testing.assert_close(loss, reference_loss, msg=implementation)
        for name in reference_grads:
            torch.testing.assert_close(grads[name], reference_grads[name], msg=f"{implementation} {name}")


def test_experts_implementation_selectable_at_load(tmp_path):
    make_model().save_pretrained(tmp_path)
    model = WrenForCausalLM.from_pretrained(tmp_path, experts_implementation="batched_mm")
    assert model.config._experts_implementation == "batched_mm"


def test_router_outputs_and_expert_load():
    model = make_model().eval()
    out = model(random_ids(), output_router_logits=True)
    num_moe_layers = sum(model.config.is_moe_layer(i) for i in range(model.config.num_hidden_layers))
    assert len(out.router_logits) == num_moe_layers
    assert out.router_logits[0].shape == (20, model.config.num_experts)
    assert out.expert_load.shape == (num_moe_layers, model.config.num_experts)
    torch.testing.assert_close(out.expert_load.sum(-1), torch.ones(num_moe_layers))
    assert out.aux_loss is not None and out.z_loss is not None
    # Without asking, no router outputs are returned at inference.
    assert model(random_ids()).router_logits is None


def test_load_balancing_loss_matches_transformers_reference():
    torch.manual_seed(0)
    logits = tuple(torch.randn(24, 6) for _ in range(3))
    indices = tuple(torch.topk(torch.softmax(layer, -1), 2, dim=-1).indices for layer in logits)
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[0, :2] = 0
    mask[3, :4] = 0
    ours = load_balancing_loss(logits, indices, num_experts=6)
    reference = load_balancing_loss_func(logits, num_experts=6, top_k=2)
    torch.testing.assert_close(ours, reference)
    ours_masked = load_balancing_loss(logits, indices, num_experts=6, attention_mask=mask)
    reference_masked = load_balancing_loss_func(logits, num_experts=6, top_k=2, attention_mask=mask)
    torch.testing.assert_close(ours_masked, reference_masked)


def test_padding_does_not_count_towards_router_statistics():
    model = make_model().eval()
    ids = random_ids(batch=2, seq=8)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    base = model(ids, attention_mask=mask, output_router_logits=True)
    changed_ids = ids.clone()
    changed_ids[0, :3] = torch.tensor([7, 8, 9])  # different content under the padding
    changed = model(changed_ids, attention_mask=mask, output_router_logits=True)
    torch.testing.assert_close(changed.aux_loss, base.aux_loss)
    torch.testing.assert_close(changed.z_loss, base.z_loss)
    torch.testing.assert_close(changed.expert_load, base.expert_load)
    # Sanity: the unmasked statistics do depend on those tokens.
    assert not torch.allclose(
        model(changed_ids, output_router_logits=True).aux_loss, model(ids, output_router_logits=True).aux_loss
    )


def test_z_loss_and_load_formulas():
    logits = (torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]),)
    expected = (torch.logsumexp(logits[0], -1) ** 2).mean()
    torch.testing.assert_close(router_z_loss(logits), expected)
    indices = (torch.tensor([[0, 1], [0, 2]]),)
    torch.testing.assert_close(expert_load(indices, 3), torch.tensor([[0.5, 0.25, 0.25]]))


def test_training_loss_includes_weighted_router_losses():
    ids = random_ids()
    model = make_model(router_aux_loss_coef=0.5, router_z_loss_coef=0.25, loss_chunk_size=0).train()
    out = model(ids, labels=ids)
    plain = make_model(router_aux_loss_coef=0.0, router_z_loss_coef=0.0, loss_chunk_size=0).train()
    lm_only = plain(ids, labels=ids).loss
    torch.testing.assert_close(out.loss, lm_only + 0.5 * out.aux_loss + 0.25 * out.z_loss)
    assert out.aux_loss.requires_grad  # the router learns from it


def test_aux_loss_free_bias_steers_selection_but_not_weights():
    config = WrenConfig(**tiny_moe_config_kwargs(router_bias_update_rate=0.1))
    torch.manual_seed(0)
    router = WrenTopKRouter(config)
    torch.nn.init.normal_(router.weight, std=0.02)
    hidden = torch.randn(50, config.hidden_size)
    router.train()
    _, weights, indices, _ = router(hidden)
    load = torch.bincount(indices.flatten(), minlength=config.num_experts).float()
    torch.testing.assert_close(router.expert_load, load)
    router.update_bias()
    expected = 0.1 * torch.sign(load.mean() - load)
    torch.testing.assert_close(router.expert_bias, expected)
    assert router.expert_load.sum() == 0
    # A large bias forces an expert into every token's top-k, yet mixing weights stay the
    # (renormalised) router probabilities of the chosen experts.
    router.expert_bias.copy_(torch.tensor([0.0, 0.0, 0.0, 10.0]))
    logits, weights, indices, _ = router(hidden)
    assert (indices == 3).any(dim=-1).all()
    probs = torch.softmax(logits.float(), -1).gather(-1, indices)
    torch.testing.assert_close(weights, probs / probs.sum(-1, keepdim=True))


def test_update_router_bias_through_model_and_checkpoint(tmp_path):
    model = make_model(router_bias_update_rate=0.05).train()
    ids = random_ids()
    model(ids, labels=ids).loss.backward()
    reduced_calls = []

    def fake_reduce(tensor):
        reduced_calls.append(tensor.clone())
        return tensor * 2  # as if a second rank saw the same load

    model.update_router_bias(reduce=fake_reduce)
    assert len(reduced_calls) == len(model.routers())
    biases = [router.expert_bias.clone() for router in model.routers()]
    assert any(bias.abs().sum() > 0 for bias in biases)
    model.save_pretrained(tmp_path)
    reloaded = WrenForCausalLM.from_pretrained(tmp_path)
    for router, bias in zip(reloaded.routers(), biases):
        torch.testing.assert_close(router.expert_bias, bias)


def test_router_jitter_only_while_training():
    model = make_model(router_jitter_noise=0.5)
    ids = random_ids()
    model.eval()
    torch.testing.assert_close(model(ids).logits, model(ids).logits)
    model.train()
    with torch.no_grad():
        torch.manual_seed(1)
        first = model.model(ids, output_router_logits=True).router_logits[0]
        torch.manual_seed(2)
        second = model.model(ids, output_router_logits=True).router_logits[0]
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("norm_topk_prob", [True, False])
def test_norm_topk_prob(norm_topk_prob):
    config = WrenConfig(**tiny_moe_config_kwargs(norm_topk_prob=norm_topk_prob))
    torch.manual_seed(0)
    router = WrenTopKRouter(config)
    torch.nn.init.normal_(router.weight)
    _, weights, _, _ = router(torch.randn(10, config.hidden_size))
    sums = weights.sum(-1)
    if norm_topk_prob:
        torch.testing.assert_close(sums, torch.ones(10))
    else:
        assert (sums < 1).all()


def test_router_losses_reuse_the_router_softmax_with_logsumexp_gradients():
    torch.manual_seed(0)
    logits = torch.randn(3, 24, 6, requires_grad=True)
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[0, :2] = 0
    weights = mask.reshape(-1).float()
    probs = torch.softmax(logits, -1)  # what each router returns next to its logits
    indices = torch.topk(probs, 2, dim=-1).indices
    aux, z = router_losses(tuple(logits), tuple(probs), tuple(indices), 6, attention_mask=mask)
    torch.testing.assert_close(aux, load_balancing_loss(tuple(logits), tuple(indices), 6, attention_mask=mask))
    reference_logits = logits.detach().clone().requires_grad_()
    reference_z = ((torch.logsumexp(reference_logits, -1) ** 2 * weights).sum(-1) / weights.sum()).mean()
    torch.testing.assert_close(z, reference_z)
    torch.testing.assert_close(z, router_z_loss(tuple(logits), attention_mask=mask))
    z.backward()
    reference_z.backward()
    torch.testing.assert_close(logits.grad, reference_logits.grad)


def test_expert_load_is_computed_only_when_asked_for_in_training():
    model = make_model().train()
    ids = random_ids()
    out = model(ids, labels=ids)
    assert out.aux_loss is not None and out.expert_load is None
    logged = model(ids, labels=ids, output_expert_load=True)
    torch.testing.assert_close(logged.expert_load.sum(-1), torch.ones(logged.expert_load.shape[0]))
    torch.testing.assert_close(logged.loss, out.loss)
    # Outside training the router outputs come with it, as before (transformers' MoE outputs unchanged).
    assert make_model().eval()(ids, output_router_logits=True).expert_load is not None


@pytest.mark.parametrize("implementation", ["grouped_mm", "batched_mm"])
def test_training_step_reads_nothing_back_to_the_host(implementation):
    """Forward + backward with labels and router losses, and the router-bias update, on CPU tensors: no op that
    would stall a GPU (the eager experts loop is the exception by design: it asks which experts got tokens)."""
    model = make_model(router_bias_update_rate=0.01).train()
    model.set_experts_implementation(implementation)
    ids = random_ids()
    with HostSyncDetector() as detector:
        model(ids, labels=ids).loss.backward()
        model.update_router_bias()
    assert detector.seen == []


def test_host_sync_detector_sees_a_sync():
    with HostSyncDetector() as detector:
        bool(torch.ones(2).sum() > 0)
        torch.nonzero(torch.ones(2))
    assert len(detector.seen) == 2
