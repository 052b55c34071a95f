"""`bench.model_bench` keeps working (it is not part of the timed suite, so nothing else would notice it rot)."""

import functools
import math
from argparse import Namespace
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
# Big enough that a training step allocates measurably; small enough for a second of work.
TINY = dict(
    vocab=2048, hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, experts=4, top_k=2,
    moe_intermediate=64, batch=4, seq=64, decode_prompt=4, decode_new_tokens=4,
)  # fmt: skip


@pytest.fixture
def model_bench(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO_ROOT))  # spawned children inherit sys.path, so they find `bench` too
    from bench import model_bench

    return model_bench


def test_cpu_peak_memory_is_measured_from_the_training_steps(model_bench):
    # A spawned child's getrusage peak starts at its parent's resident set (Linux keeps it across fork + exec):
    # read that way, a parent holding the benchmarked models made every training peak 0. The child must
    # measure its own steps, which allocate at least fresh gradients the size of the weights.
    sizes = model_bench.Sizes(**TINY)
    model = model_bench.model_pair("dense", sizes, "cpu", torch.float32)["wren"]
    weight_bytes = sum(param.numel() * param.element_size() for param in model.parameters())
    parent_ballast = torch.ones(64 * 2**20)  # 256 MiB resident here, far above the child's training peak
    peak = model_bench.training_peak_memory("dense", "wren", model, sizes, "cpu")
    del parent_ballast
    assert peak is not None and peak >= weight_bytes


def options(**overrides) -> Namespace:
    values = dict(
        device="cpu", train_configs="small", scale=1, steps=2, warmup=1, compile=False, only_train=False,
        bf16=False, peak_tflops=None,
    )  # fmt: skip
    values.update(overrides)
    return Namespace(**values)


def test_run_and_table_cover_both_models_every_metric_and_every_experts_implementation(model_bench, monkeypatch):
    tiny = model_bench.Sizes(**TINY)
    monkeypatch.setattr(model_bench, "TRAIN_CONFIGS", {"small": [("dense", tiny), ("moe", tiny)]})
    monkeypatch.setattr(model_bench, "Sizes", functools.partial(model_bench.Sizes, **TINY))
    peaks = {"reference": 2 * 2**20, "wren": 2**20}
    monkeypatch.setattr(model_bench, "training_peak_memory", lambda kind, side, *args: peaks[side])

    results = model_bench.run(options(peak_tflops=1.0))

    assert [row["model"] for row in results["train"]] == ["dense", "moe"]
    for row in results["train"]:
        assert list(row["variants"]) == ["HF", "Wren"]
        for side, value in zip(("reference", "wren"), row["variants"].values()):
            assert value["peak_mb"] == peaks[side] / 2**20
            assert value["tok_s_p25"] <= value["tok_s"] <= value["tok_s_p75"] and math.isfinite(value["tok_s"])
            assert value["ops"] > 100 and value["mfu"] == pytest.approx(row["flops_per_token"] * value["tok_s"] / 1e12)
    assert [row["model"] for row in results["rows"]] == ["dense", "moe"]
    for row in results["rows"]:
        speeds = {key: value for key, value in row.items() if key.endswith("tok_s")}
        assert len(speeds) == 2 * 4 and all(value > 0 and math.isfinite(value) for value in speeds.values())
    assert set(results["experts_train_tok_s"]) == {"eager", "batched_mm", "grouped_mm"}
    table = model_bench.format_table(results)
    assert table.count("| small | dense | ") == 2 and table.count("| small | moe | ") == 2
    assert "| small | dense | Wren |" in table and "| 1 | 0.50x |" in table
    assert table.count("| dense vs Llama |") == 4 and table.count("| moe vs Qwen3-MoE |") == 4


def test_sides_take_turns_in_alternating_order(model_bench, monkeypatch):
    order = []
    monkeypatch.setattr(model_bench, "train_step", lambda model, optimizer, batch: order.append(model.name))
    variants = {}
    for name in ("HF", "Wren", "Wren+compile"):
        variants[name] = torch.nn.Linear(1, 1)
        variants[name].name = name
    durations, first_step = model_bench.alternating_steps(
        variants, model_bench.Sizes(**TINY), "cpu", steps=3, warmup=1
    )
    forward, backward = ["HF", "Wren", "Wren+compile"], ["Wren+compile", "Wren", "HF"]
    assert order == forward + backward + forward + backward
    assert {name: len(values) for name, values in durations.items()} == dict.fromkeys(variants, 3)
    assert set(first_step) == set(variants)


def test_mfu_counts_flops_without_the_input_embedding_and_inactive_experts(model_bench):
    from wren_testing import tiny_config_kwargs, tiny_moe_config_kwargs
    from wrenlm import WrenConfig, WrenForCausalLM

    sizes = model_bench.Sizes(**TINY)
    dense = WrenForCausalLM(WrenConfig(**tiny_config_kwargs(tie_word_embeddings=False)))
    params = sum(p.numel() for p in dense.parameters()) - dense.model.embed_tokens.weight.numel()
    attention = 12 * 2 * 4 * 8 * sizes.seq  # layers x (heads x head_dim) x seq
    assert model_bench.flops_per_token(dense, sizes) == 6 * params + attention
    moe = WrenForCausalLM(WrenConfig(**tiny_moe_config_kwargs(tie_word_embeddings=False)))
    experts = sum(p.numel() for n, p in moe.named_parameters() if ".mlp.experts." in n)
    total = sum(p.numel() for n, p in moe.named_parameters() if "embed_tokens" not in n)
    active = total - experts + experts * 2 / 4  # top-2 of 4 experts
    assert model_bench.flops_per_token(moe, sizes) == pytest.approx(6 * active + 12 * 3 * 4 * 8 * sizes.seq)
    assert model_bench.peak_flops("cpu", torch.float32, None) is None
    assert model_bench.peak_flops("cpu", torch.float32, 2.5) == 2.5e12
