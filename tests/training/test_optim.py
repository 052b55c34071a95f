"""Weight-decay groups and the warmup + cosine schedule."""

import itertools
import math

import pytest
import torch
from wren_testing import tiny_config_kwargs, tiny_moe_config_kwargs
from wrenlm.training.config import TrainingConfig
from wrenlm.training.optim import build_optimizer, build_scheduler, weight_decay_groups

import wrenlm


@pytest.mark.parametrize(
    "kwargs",
    [
        tiny_config_kwargs(),
        tiny_config_kwargs(tie_word_embeddings=False, attention_bias=True),
        tiny_moe_config_kwargs(),
    ],
)
def test_weight_decay_groups(kwargs):
    model = wrenlm.WrenForCausalLM(wrenlm.WrenConfig(**kwargs))
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
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]


def test_frozen_parameters_are_left_out():
    model = wrenlm.WrenForCausalLM(wrenlm.WrenConfig(**tiny_config_kwargs()))
    for param in model.model.layers[0].parameters():
        param.requires_grad_(False)
    names = [n for g in weight_decay_groups(model, 0.1) for n in g["names"]]
    assert not any(n.startswith("model.layers.0.") for n in names)


def test_warmup_then_cosine_to_min_ratio():
    config = TrainingConfig(learning_rate=1e-3, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=config.learning_rate)
    scheduler = build_scheduler(optimizer, config)
    lrs = []
    for _ in range(config.max_steps + 1):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0.0
    assert lrs[5] == pytest.approx(0.5e-3)
    assert lrs[10] == pytest.approx(1e-3)  # peak at the end of warmup
    assert all(a < b for a, b in itertools.pairwise(lrs[:11]))  # linear rise
    assert all(a >= b for a, b in itertools.pairwise(lrs[10:]))  # then monotone decay
    mid = 10 + 50
    expected_mid = 1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[mid] == pytest.approx(expected_mid)
    assert lrs[110] == pytest.approx(1e-4)  # floor = min_lr_ratio * peak
