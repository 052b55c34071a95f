"""Parameter groups, AdamW / Muon + AdamW against torch's own optimizers, and the LR schedules."""

import copy
import itertools
import math

import pytest
import torch

import wrenlm
from wren_testing import tiny_config_kwargs, tiny_moe_config_kwargs
from wrenlm.training.config import PretrainConfig, TrainingConfig
from wrenlm.training.optim import (
    MATRIX_SHARDING_ENGINES,
    ExpertMuon,
    MuonWithAdamW,
    build_optimizer,
    build_scheduler,
    muon_groups,
    resolve_optimizer,
    weight_decay_groups,
)

CONFIGS = [
    tiny_config_kwargs(),
    tiny_config_kwargs(tie_word_embeddings=False, attention_bias=True),
    tiny_moe_config_kwargs(),
]


def _model(kwargs, seed=0):
    torch.manual_seed(seed)
    return wrenlm.WrenForCausalLM(wrenlm.WrenConfig(**kwargs))


def _train_steps(model, optimizer, steps=3, scheduler=None):
    torch.manual_seed(1)
    for _ in range(steps):
        ids = torch.randint(0, model.config.vocab_size, (2, 12))
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_weight_decay_groups(kwargs):
    model = _model(kwargs)
    decay, no_decay = weight_decay_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    every = {id(p) for p in model.parameters()}
    grouped = [id(p) for g in (decay, no_decay) for p in g["params"]]
    assert sorted(grouped) == sorted(every) and len(grouped) == len(set(grouped))  # each parameter once
    for name in no_decay["names"]:
        assert "norm" in name or "bias" in name or "embed_tokens" in name, name
    assert "model.embed_tokens.weight" in no_decay["names"]
    for name in decay["names"]:
        assert name.endswith(("proj.weight", "proj", "lm_head.weight", "router.weight", "gate.weight")), name
        assert "norm" not in name and "bias" not in name
    assert any("q_proj" in n for n in decay["names"]) and any("down_proj" in n for n in decay["names"])
    if kwargs.get("num_experts"):
        assert any("experts.gate_up_proj" in n for n in decay["names"])
    if not kwargs.get("tie_word_embeddings", True):
        assert "lm_head.weight" in decay["names"]
    optimizer = build_optimizer(model, TrainingConfig(weight_decay=0.1))
    assert type(optimizer) is torch.optim.AdamW
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_muon_groups_take_the_hidden_matrices_and_leave_the_rest_to_adamw(kwargs):
    model = _model(kwargs)
    config = TrainingConfig(optimizer="muon", learning_rate=1e-3, muon_learning_rate=0.03, weight_decay=0.1)
    groups = muon_groups(model, config)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters()) and len(grouped) == len(set(grouped))
    muon = [n for g in groups if g["use_muon"] for n in g["names"]]
    adamw = {n: g["weight_decay"] for g in groups if not g["use_muon"] for n in g["names"]}
    for name in muon:
        assert name.endswith(("_proj.weight", "experts.gate_up_proj", "experts.down_proj")), name
    assert all(g["lr"] == 0.03 for g in groups if g["use_muon"])
    assert all(g["lr"] == 1e-3 for g in groups if not g["use_muon"])
    assert adamw["model.embed_tokens.weight"] == 0.0
    assert all(adamw[n] == 0.0 for n in adamw if "norm" in n or n.endswith("bias"))
    if not kwargs.get("tie_word_embeddings", True):
        assert adamw["lm_head.weight"] == 0.1  # the output layer is AdamW's, decayed like a matrix
    if kwargs.get("num_experts"):
        routers = [n for n in adamw if n.endswith("mlp.gate.weight")]
        assert routers and all(adamw[n] == 0.1 for n in routers)
        fused = [g for g in groups if g["use_muon"] and any(n.endswith("gate_up_proj") for n in g["names"])]
        assert len(fused) == 1 and fused[0]["matrix_chunks"] == 2
        assert any(n.endswith("shared_experts.up_proj.weight") for n in muon)


def test_expert_muon_equals_torch_muon_on_each_expert_matrix():
    """The reference is torch's own Muon on separate 2-D parameters: one per expert, and one per gate / up
    half of the fused tensor (its LR shape scale included: the halves are 48 x 32, so sqrt(48/32))."""
    torch.manual_seed(0)
    gate_up = torch.nn.Parameter(torch.randn(3, 2 * 48, 32))
    down = torch.nn.Parameter(torch.randn(3, 32, 48))
    dense = torch.nn.Parameter(torch.randn(40, 24))
    pieces = [torch.nn.Parameter(t.clone()) for e in range(3) for t in gate_up.detach()[e].chunk(2)]
    experts_down = [torch.nn.Parameter(down.detach()[e].clone()) for e in range(3)]
    dense_copy = torch.nn.Parameter(dense.detach().clone())
    options = {"lr": 0.05, "weight_decay": 0.1, "momentum": 0.9}
    ours = ExpertMuon([{"params": [dense, down]}, {"params": [gate_up], "matrix_chunks": 2}], **options)
    reference = torch.optim.Muon([dense_copy, *experts_down, *pieces], **options)
    for _ in range(3):
        gate_up.grad, down.grad, dense.grad = (
            torch.randn_like(gate_up),
            torch.randn_like(down),
            torch.randn_like(dense),
        )
        for e in range(3):
            pieces[2 * e].grad, pieces[2 * e + 1].grad = gate_up.grad[e].chunk(2)
            experts_down[e].grad = down.grad[e]
        dense_copy.grad = dense.grad
        ours.step()
        reference.step()
    torch.testing.assert_close(dense, dense_copy, rtol=0, atol=0)
    torch.testing.assert_close(down, torch.stack(experts_down), rtol=0, atol=0)
    expected = torch.stack([torch.cat(pieces[2 * e : 2 * e + 2]) for e in range(3)])
    torch.testing.assert_close(gate_up, expected, rtol=0, atol=0)


def test_expert_muon_rejects_what_it_cannot_orthogonalise():
    with pytest.raises(ValueError, match="shape \\(4,\\)"):
        ExpertMuon([torch.nn.Parameter(torch.zeros(4))])
    with pytest.raises(ValueError, match="matrix_chunks=2"):
        ExpertMuon([{"params": [torch.nn.Parameter(torch.zeros(2, 5, 4))], "matrix_chunks": 2}])


def test_muon_with_adamw_equals_torch_muon_plus_torch_adamw():
    kwargs = tiny_config_kwargs(tie_word_embeddings=False)
    config = TrainingConfig(optimizer="muon", learning_rate=3e-3, muon_learning_rate=0.02, muon_weight_decay=0.01)
    ours_model, ref_model = _model(kwargs), _model(kwargs)
    optimizer = build_optimizer(ours_model, config)
    assert isinstance(optimizer, MuonWithAdamW)
    ref_groups = muon_groups(ref_model, config)
    ref_muon = torch.optim.Muon(
        [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in ref_groups if g["use_muon"]],
        lr=0.02,
        momentum=config.muon_momentum,
    )
    ref_adamw = torch.optim.AdamW(
        [{"params": g["params"], "weight_decay": g["weight_decay"]} for g in ref_groups if not g["use_muon"]],
        lr=3e-3,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
    )
    _train_steps(ours_model, optimizer)
    torch.manual_seed(1)
    for _ in range(3):
        ids = torch.randint(0, ref_model.config.vocab_size, (2, 12))
        ref_model(input_ids=ids, labels=ids).loss.backward()
        ref_muon.step()
        ref_adamw.step()
        ref_model.zero_grad(set_to_none=True)
    for (name, a), b in zip(ours_model.named_parameters(), ref_model.parameters()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("kwargs", [tiny_config_kwargs(), tiny_moe_config_kwargs()], ids=["dense", "moe"])
def test_muon_state_dict_round_trip_continues_exactly(kwargs):
    """Save after 2 steps, load into a fresh optimizer on a copy of the model: the next steps are identical."""
    config = TrainingConfig(optimizer="muon", max_steps=6, warmup_steps=1)
    model = _model(kwargs)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    _train_steps(model, optimizer, steps=2, scheduler=scheduler)
    saved_model = {k: v.clone() for k, v in model.state_dict().items()}
    # deep copies: a loaded state would otherwise share tensors with the optimizer that keeps training
    saved_optimizer, saved_scheduler = copy.deepcopy(optimizer.state_dict()), scheduler.state_dict()
    assert any("momentum_buffer" in s for s in saved_optimizer["state"].values())
    assert any("exp_avg" in s for s in saved_optimizer["state"].values())

    twin = _model(kwargs, seed=5)
    twin.load_state_dict(saved_model)
    restored = build_optimizer(twin, config)
    restored_scheduler = build_scheduler(restored, config)
    restored.load_state_dict(saved_optimizer)
    restored_scheduler.load_state_dict(saved_scheduler)
    assert restored.muon.state is restored.state and restored.muon.param_groups[0] is restored.param_groups[0]
    _train_steps(model, optimizer, steps=2, scheduler=scheduler)
    _train_steps(twin, restored, steps=2, scheduler=restored_scheduler)
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), name


def test_auto_optimizer_is_muon_where_matrices_are_whole_and_explicit_muon_is_refused_elsewhere():
    for engine in ("single", "ddp"):
        assert resolve_optimizer(TrainingConfig(optimizer="auto"), engine) == "muon"
        assert resolve_optimizer(TrainingConfig(optimizer="muon"), engine) == "muon"
    for engine in MATRIX_SHARDING_ENGINES:
        assert resolve_optimizer(TrainingConfig(optimizer="auto"), engine) == "adamw"
        with pytest.raises(ValueError, match=f"not under {engine}.*--optimizer adamw"):
            resolve_optimizer(TrainingConfig(optimizer="muon"), engine)
    assert resolve_optimizer(TrainingConfig(optimizer="adamw"), "ddp") == "adamw"
    assert {"fsdp2", "zero2", "zero3"} <= set(MATRIX_SHARDING_ENGINES)


def test_frozen_parameters_are_left_out():
    model = _model(tiny_config_kwargs())
    for param in model.model.layers[0].parameters():
        param.requires_grad_(False)
    for groups in (weight_decay_groups(model, 0.1), muon_groups(model, TrainingConfig(optimizer="muon"))):
        names = [n for g in groups for n in g["names"]]
        assert not any(n.startswith("model.layers.0.") for n in names)


# ----------------------------------------------------------------------------------------------
def _lrs(config) -> list[float]:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=config.learning_rate)
    scheduler = build_scheduler(optimizer, config)
    lrs = []
    for _ in range(config.max_steps + 1):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return lrs


def test_warmup_then_cosine_to_min_ratio():
    lrs = _lrs(TrainingConfig(learning_rate=1e-3, warmup_steps=10, max_steps=110, min_lr_ratio=0.1))
    assert lrs[0] == 0.0
    assert lrs[5] == pytest.approx(0.5e-3)
    assert lrs[10] == pytest.approx(1e-3)  # peak at the end of warmup
    assert all(a < b for a, b in itertools.pairwise(lrs[:11]))  # linear rise
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))  # then monotone decay
    expected_mid = 1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[60] == pytest.approx(expected_mid)
    assert lrs[110] == pytest.approx(1e-4)  # floor = min_lr_ratio * peak


def test_warmup_fraction_scales_with_the_run_and_warmup_steps_override_it():
    short = _lrs(TrainingConfig(learning_rate=1.0, warmup_fraction=0.1, max_steps=40, min_lr_ratio=0.0))
    assert short[4] == pytest.approx(1.0) and short[3] == pytest.approx(0.75)  # 10% of 40 steps
    long = _lrs(TrainingConfig(learning_rate=1.0, warmup_fraction=0.1, max_steps=400, min_lr_ratio=0.0))
    assert long[40] == pytest.approx(1.0) and long[20] == pytest.approx(0.5)
    fixed = _lrs(TrainingConfig(learning_rate=1.0, warmup_fraction=0.1, warmup_steps=2, max_steps=400))
    assert fixed[1] == pytest.approx(0.5) and fixed[2] == pytest.approx(1.0)


@pytest.mark.parametrize("shape", ["linear", "1-sqrt"])
def test_warmup_stable_decay_is_a_trapezoid(shape):
    config = TrainingConfig(
        learning_rate=1.0,
        lr_schedule="wsd",
        warmup_fraction=0.1,
        decay_fraction=0.4,
        decay_shape=shape,
        max_steps=100,
        min_lr_ratio=0.1,
    )
    lrs = _lrs(config)
    assert lrs[0] == pytest.approx(0.1)  # transformers' WSD warms up from the floor
    assert all(a < b for a, b in itertools.pairwise(lrs[:11]))
    assert lrs[10:61] == pytest.approx([1.0] * 51)  # stable at the peak until 40% of the run is left
    assert all(a > b for a, b in itertools.pairwise(lrs[60:101]))
    progress = 0.5  # step 80: half-way through the decay
    factor = 1 - progress if shape == "linear" else 1 - math.sqrt(progress)
    assert lrs[80] == pytest.approx(0.1 + 0.9 * factor)
    assert lrs[100] == pytest.approx(0.1)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"optimizer": "sgd"}, "`optimizer` must be one of auto, adamw, muon"),
        ({"lr_schedule": "step"}, "`lr_schedule` must be one of cosine, wsd"),
        ({"decay_shape": "exp"}, "`decay_shape`"),
        ({"warmup_fraction": 1.0}, "`warmup_fraction` must be in"),
        ({"warmup_steps": -1}, "`warmup_steps` must be >= 0"),
        ({"muon_learning_rate": 0.0}, "`muon_learning_rate` must be positive"),
    ],
)
def test_bad_optimizer_settings_are_one_line_errors(settings, message):
    with pytest.raises(ValueError, match=message):
        PretrainConfig(**settings).validate()


def test_finetune_keeps_adamw_for_lora():
    from wrenlm.training.finetune import FinetuneConfig

    with pytest.raises(ValueError, match="LoRA adapters with AdamW"):
        FinetuneConfig(optimizer="muon").validate()
