"""Data parallelism on CPU: `accelerate launch --multi_gpu --num_processes 2` (gloo) equals one process."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wren_testing.training import launch_two_cpu_processes, read_metrics, train_losses
from wrenlm.training.config import PretrainConfig, apply_overrides
from wrenlm.training.pretrain import run_pretraining

WORKER = Path(__file__).with_name("pretrain_worker.py")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_two_processes_match_one_process_with_the_same_global_batch(tiny_settings, tmp_path, optimizer):
    """DDP averages the gradients before the step, so Muon orthogonalises the same matrices on both ranks."""
    common = {"max_steps": 6, "eval_every": 3, "optimizer": optimizer}
    single = tiny_settings(output_dir=tmp_path / "single", per_device_batch_size=8, **common)
    double = tiny_settings(output_dir=tmp_path / "double", per_device_batch_size=4, **common)
    run_pretraining(apply_overrides(PretrainConfig(), single))

    launched = launch_two_cpu_processes([str(WORKER), json.dumps(double), "--expect-processes", "2"])
    assert launched.returncode == 0, launched.stderr[-4000:]

    results = json.loads((tmp_path / "double" / "train_results.json").read_text())
    assert results["num_processes"] == 2
    a, b = train_losses(tmp_path / "single"), train_losses(tmp_path / "double")
    assert list(a) == list(b) == [1, 2, 3, 4, 5, 6]
    # torch's Muon orthogonalises in bfloat16, and Newton-Schulz magnifies the smallest singular directions. The
    # all-reduced and the one-process mean gradients differ in their last bit (gloo's summation order): measured in
    # one process, scaling the gradients by (1 + 2e-7) moves these 32-wide matrices by up to 2.5% (relative norm)
    # in 6 steps and the losses by up to 4e-6 (relative), while stepping on half the batch (ranks out of sync)
    # moves the losses by 2e-4 or more. So with Muon the losses are compared at 5e-5 and the weights are not.
    rel = 1e-5 if optimizer == "adamw" else 5e-5
    assert [b[s] for s in b] == pytest.approx([a[s] for s in a], rel=rel)
    single_results = json.loads((tmp_path / "single" / "train_results.json").read_text())
    assert results["validation_loss"] == pytest.approx(single_results["validation_loss"], rel=rel)
    if optimizer == "muon":
        return
    wa, wb = load_file(tmp_path / "single" / "model.safetensors"), load_file(tmp_path / "double" / "model.safetensors")
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-4, atol=1e-5)


@pytest.mark.timeout(180)
def test_moe_router_work_under_two_processes_matches_one_process(tiny_settings, tmp_path):
    """`MoeRouterCallback` under DDP: the logged router figures (losses and expert-load ratios) are reduced over
    both processes and the bias update uses the summed expert load, so the run equals one process with the same
    global batch. (No load-balancing term in the loss: it is not additive over the batch, so it would differ.)"""
    moe = {
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "router_bias_update_rate": 0.01,
        "router_aux_loss_coef": 0.0,
        "router_z_loss_coef": 0.01,
    }
    # AdamW: the weights are compared exactly (see above for Muon under DDP).
    common = {"max_steps": 4, "eval_every": 0, "final_eval": False, "sample_prompts": [], "model": moe}
    common["optimizer"] = "adamw"
    single = tiny_settings(output_dir=tmp_path / "single", per_device_batch_size=8, **common)
    double = tiny_settings(output_dir=tmp_path / "double", per_device_batch_size=4, **common)
    run_pretraining(apply_overrides(PretrainConfig(), single))

    launched = launch_two_cpu_processes([str(WORKER), json.dumps(double), "--expect-processes", "2"])
    assert launched.returncode == 0, launched.stderr[-4000:]

    logs = [read_metrics(tmp_path / name) for name in ("single", "double")]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == [1, 2, 3, 4]
    for one, two in zip(*logs):
        load_keys = [key for key in one if key.startswith("train/expert_load")]
        assert "train/expert_load_max" in load_keys and load_keys == [k for k in two if k.startswith("train/expert")]
        for key in ("train/loss", "train/z_loss", "train/lm_loss", *load_keys):
            assert two[key] == pytest.approx(one[key], rel=1e-5), key
    wa, wb = load_file(tmp_path / "single" / "model.safetensors"), load_file(tmp_path / "double" / "model.safetensors")
    biases = [key for key in wa if key.endswith("expert_bias")]
    # The update ran (its ±rate steps can cancel out in one layer over 4 steps, so not every layer need move).
    assert biases and any(wa[key].abs().sum() > 0 for key in biases)
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-4, atol=1e-5)
