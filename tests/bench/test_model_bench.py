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


def test_run_and_table_cover_both_models_every_metric_and_every_experts_implementation(model_bench, monkeypatch):
    monkeypatch.setattr(model_bench, "Sizes", functools.partial(model_bench.Sizes, **TINY))
    peaks = {"reference": 2 * 2**20, "wren": 2**20}
    monkeypatch.setattr(model_bench, "training_peak_memory", lambda kind, side, *args: peaks[side])

    results = model_bench.run(Namespace(device="cpu", scale=1, steps=1, bf16=False))

    assert [row["model"] for row in results["rows"]] == ["dense", "moe"]
    for row in results["rows"]:
        assert row["reference_train_peak_mb"] == 2 and row["wren_train_peak_mb"] == 1
        speeds = {key: value for key, value in row.items() if key.endswith("tok_s")}
        assert len(speeds) == 2 * 5 and all(value > 0 and math.isfinite(value) for value in speeds.values())
    assert set(results["experts_train_tok_s"]) == {"eager", "batched_mm", "grouped_mm"}
    table = model_bench.format_table(results)
    assert table.count("| dense vs Llama |") == 6 and table.count("| moe vs Qwen3-MoE |") == 6
    assert "| dense vs Llama | train peak MiB | 2 | 1 | 0.50x |" in table

    results["rows"][0]["wren_train_peak_mb"] = None  # where the OS cannot report a peak
    assert "| dense vs Llama | train peak MiB | n/a | n/a | not measurable here |" in model_bench.format_table(results)
