"""DeepSpeed ZeRO-2 / ZeRO-3 through `accelerate launch` on 2 CPU processes (gloo), against one plain process.

Each run uses the shipped accelerate config (`wren pretrain --accelerate-configs`) with `--mixed_precision no`.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wren_testing.training import assert_same_logged_losses, launch_two_cpu_processes, read_metrics, train_losses
from wrenlm.training.checkpointing import checkpoint_name
from wrenlm.training.config import PretrainConfig, apply_overrides
from wrenlm.training.pretrain import run_pretraining
from wrenlm.training.pretrain_cli import accelerate_config_path

WORKER = Path(__file__).with_name("pretrain_worker.py")
STAGES = [pytest.param(2, id="zero2"), pytest.param(3, id="zero3")]
MOE = {
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
    "first_k_dense_layers": 1,
    "router_bias_update_rate": 0.01,
}


def launch_zero(stage: int, settings: dict, *worker_args: str):
    return launch_two_cpu_processes(
        [str(WORKER), json.dumps(settings), "--expect-processes", "2", "--expect-engine", "DEEPSPEED", *worker_args],
        timeout=200,
        accelerate_args=("--config_file", accelerate_config_path(f"deepspeed_zero{stage}")),
    )


def assert_same_weights(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("stage", STAGES)
def test_zero_equals_one_process_shards_and_saves_the_gathered_model(stage, tiny_settings, tmp_path):
    """A dense + MoE layer model with router losses and the router-bias update. The router losses are computed per
    micro-batch of each process, so 2 processes x 2 sequences x 2 accumulation steps equal 1 process x 2 sequences
    x 4 accumulation steps (the same 8 sequences in the same 2-sequence groups): same losses, same weights. Each rank
    holds half the optimizer (and for ZeRO-3 half the parameters); the final folder is DeepSpeed's own fp32
    consolidation of the last checkpoint and loads with AutoModelForCausalLM."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoModelForCausalLM

    common = {"max_steps": 4, "eval_every": 0, "save_every": 0, "sample_prompts": [], "model": MOE}
    single = tiny_settings(
        output_dir=tmp_path / "single", per_device_batch_size=2, gradient_accumulation_steps=4, **common
    )
    zero = tiny_settings(
        output_dir=tmp_path / "zero", per_device_batch_size=2, gradient_accumulation_steps=2, **common
    )
    run_pretraining(apply_overrides(PretrainConfig(), single))

    report = tmp_path / "partitions"
    launched = launch_zero(stage, zero, "--report-partitions", str(report))
    assert launched.returncode == 0, launched.stderr[-4000:]

    results = json.loads((tmp_path / "zero" / "train_results.json").read_text())
    single_results = json.loads((tmp_path / "single" / "train_results.json").read_text())
    assert results["num_processes"] == 2
    assert results["num_parameters"] == single_results["num_parameters"]
    # The run log names the engine read from the prepared model, with each rank's parameter bytes.
    engine = results["engine"]
    assert (engine["engine"], engine["world_size"]) == (f"zero{stage}", 2)
    assert f"Engine: DeepSpeed ZeRO-{stage}, world size 2" in launched.stdout
    full_bytes = single_results["engine"]["full_param_bytes"]
    for held in engine["param_bytes_per_rank"]:
        assert held == full_bytes if stage == 2 else full_bytes / 2 <= held <= full_bytes / 2 * 1.05
    assert_same_logged_losses(tmp_path / "single", tmp_path / "zero", steps=[1, 2, 3, 4, 4])
    assert results["validation_loss"] == pytest.approx(single_results["validation_loss"], rel=1e-5)

    ranks = [json.loads(Path(f"{report}.rank{rank}.json").read_text()) for rank in (0, 1)]
    full = ranks[0]["params_full"]
    assert full == single_results["num_parameters"]
    for held in ranks:
        # fp32 master copy and AdamW's two moments: each rank holds its half (plus alignment padding).
        assert full / 2 <= held["master_local"] <= full / 2 * 1.05
        assert held["optimizer_state_local"] == 2 * held["master_local"]
        if stage == 3:
            assert full / 2 <= held["params_local"] <= full / 2 * 1.05
        else:
            assert held["params_local"] == full

    final = tmp_path / "zero" / "checkpoints" / checkpoint_name(4)
    consolidated = get_fp32_state_dict_from_zero_checkpoint(str(final), tag="pytorch_model")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "zero").state_dict()
    saved = load_file(tmp_path / "zero" / "model.safetensors")
    for key, value in consolidated.items():
        torch.testing.assert_close(loaded[key], value.float(), rtol=0, atol=0, msg=key)
    assert_same_weights(saved, load_file(tmp_path / "single" / "model.safetensors"))
    assert any(key.endswith("expert_bias") and value.abs().sum() > 0 for key, value in saved.items())


@pytest.mark.timeout(240)
@pytest.mark.parametrize("stage", STAGES)
def test_zero_resumes_exactly_after_kill_9(stage, tiny_settings, tmp_path):
    """Killed (SIGKILL, both ranks) after step 3, relaunched: it resumes from the step-2 checkpoint and ends with
    the losses and weights of an uninterrupted run."""
    common = {"max_steps": 5, "eval_every": 0, "save_every": 2, "sample_prompts": [], "final_eval": False}
    single = tiny_settings(output_dir=tmp_path / "single", per_device_batch_size=8, **common)
    zero = tiny_settings(output_dir=tmp_path / "zero", per_device_batch_size=4, **common)
    run_pretraining(apply_overrides(PretrainConfig(), single))

    killed = launch_zero(stage, zero, "--kill-after-step", "3")
    assert killed.returncode != 0
    assert [r["step"] for r in read_metrics(tmp_path / "zero")] == [1, 2, 3]
    assert (tmp_path / "zero" / "checkpoints" / checkpoint_name(2) / "pytorch_model").is_dir()
    resumed = launch_zero(stage, zero)
    assert resumed.returncode == 0, resumed.stderr[-4000:]

    a, b = train_losses(tmp_path / "single"), train_losses(tmp_path / "zero")
    assert list(a) == list(b) == [1, 2, 3, 4, 5]
    assert list(b.values()) == pytest.approx(list(a.values()), rel=1e-5)
    assert_same_weights(
        load_file(tmp_path / "zero" / "model.safetensors"), load_file(tmp_path / "single" / "model.safetensors")
    )


@pytest.mark.timeout(240)
def test_zero3_lora_adapter_equals_one_process_and_loads_with_peft(tokenizer, tmp_path):
    """`wren finetune` under ZeRO-3: the adapter gathered from the partitions equals one process' (losses too),
    loads with PeftModel, and the merged model (built from a fresh base) equals one process' merged model.
    Generation under ZeRO-3 needs both processes: the samples and exact match of the periodic evaluation (step 2)
    and the final exact match run on both."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from wren_testing.finetune import copy_digits_records, save_tiny_base, write_jsonl
    from wrenlm.cli import main as wren_main

    base = save_tiny_base(tokenizer, tmp_path / "base", initializer_range=0.2)
    train_file = write_jsonl(tmp_path / "train.jsonl", copy_digits_records(64))
    eval_file = write_jsonl(tmp_path / "eval.jsonl", copy_digits_records(8, seed=1))
    common = ["--model", str(base), "--data", str(train_file), "--eval-data", str(eval_file), "--max-steps", "3"]
    common += ["--learning-rate", "1e-2", "--warmup-steps", "1", "--eval-every", "2", "--save-every", "0"]
    common += ["--lora-r", "4", "--exact-match-examples", "2", "--max-new-tokens", "4", "--merge"]
    common += ["--no-progress-bar", "--report-to", "none", "--log-every", "1", "--eval-batch-size", "8"]
    assert wren_main(["finetune", *common, "--output-dir", str(tmp_path / "one"), "--per-device-batch-size", "8"]) == 0
    launched = launch_two_cpu_processes(
        ["-m", "wrenlm.training.finetune_cli", *common, "--output-dir", str(tmp_path / "zero3")]
        + ["--per-device-batch-size", "4"],
        timeout=200,
        accelerate_args=("--config_file", accelerate_config_path("deepspeed_zero3")),
    )
    assert launched.returncode == 0, launched.stderr[-4000:]

    one = json.loads((tmp_path / "one" / "finetune_results.json").read_text())
    two = json.loads((tmp_path / "zero3" / "finetune_results.json").read_text())
    assert (one["num_processes"], two["num_processes"]) == (1, 2)
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-5)
    assert two["eval_exact_match"] == one["eval_exact_match"]
    for run in ("one", "zero3"):
        periodic = [r for r in read_metrics(tmp_path / run) if r["step"] == 2 and "samples/0" in r]
        assert periodic and periodic[0]["samples/0"], run
    losses_one, losses_two = train_losses(tmp_path / "one"), train_losses(tmp_path / "zero3")
    assert list(losses_two.values()) == pytest.approx(list(losses_one.values()), rel=1e-5)
    assert_same_weights(
        load_file(tmp_path / "zero3" / "adapter_model.safetensors"),
        load_file(tmp_path / "one" / "adapter_model.safetensors"),
    )
    assert_same_weights(
        load_file(tmp_path / "zero3" / "merged" / "model.safetensors"),
        load_file(tmp_path / "one" / "merged" / "model.safetensors"),
    )
    ids = torch.tensor([[5, 9, 17, 33, 2, 64, 70, 11]])
    with torch.no_grad():
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), tmp_path / "zero3")
        plain = AutoModelForCausalLM.from_pretrained(base)
        expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), tmp_path / "one")
        assert (adapted(input_ids=ids).logits - plain(input_ids=ids).logits).abs().max() > 1e-3
        torch.testing.assert_close(adapted(input_ids=ids).logits, expected(input_ids=ids).logits, rtol=1e-4, atol=1e-5)


def test_zero_batch_settings_come_from_the_flags_and_conflicts_fail_at_start(monkeypatch, tmp_path):
    from wrenlm.training.accelerator import make_accelerator
    from wrenlm.training.deepspeed_engine import deepspeed_accelerator_kwargs

    config = PretrainConfig(per_device_batch_size=4, gradient_accumulation_steps=3, max_grad_norm=0.5)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    ds_config = deepspeed_accelerator_kwargs(config, has_gpu=False)["deepspeed_plugin"].deepspeed_config
    assert ds_config["train_micro_batch_size_per_gpu"] == 4
    assert ds_config["gradient_accumulation_steps"] == 3
    assert ds_config["train_batch_size"] == 24
    assert ds_config["gradient_clipping"] == 0.5
    assert ds_config["zero_optimization"]["stage"] == 3
    # DeepSpeed's 5e8-element default bucket would hold a small model's whole gradient: Accelerate sizes "auto".
    for key in ("reduce_bucket_size", "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold"):
        assert ds_config["zero_optimization"][key] == "auto"

    # An accelerate config's `gradient_accumulation_steps: 1` (the launcher passes it on in this variable).
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "1")
    with pytest.raises(ValueError, match=r"gradient_accumulation_steps=1, but the accumulation is 3 \(--gradient"):
        make_accelerator(config)
    monkeypatch.delenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS")

    # A DeepSpeed JSON config with its own micro batch.
    ds_file = tmp_path / "ds.json"
    ds_file.write_text(json.dumps({"train_micro_batch_size_per_gpu": 16, "zero_optimization": {"stage": 2}}))
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", str(ds_file))
    with pytest.raises(ValueError, match=r"train_micro_batch_size_per_gpu=16, but the per-process batch is 4"):
        deepspeed_accelerator_kwargs(config, has_gpu=False)
