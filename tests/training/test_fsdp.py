"""FSDP2 on CPU: `accelerate launch --config_file fsdp.yaml` with 2 gloo processes really shards (each rank holds
half of every parameter and of the optimizer state, read from the DTensors), equals one process with the same
global batch, resumes exactly after kill -9, and ends in a normal `save_pretrained` folder / PEFT adapter
(`wren pretrain` and `wren finetune` with LoRA)."""

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from wren_testing.finetune import copy_digits_records, save_tiny_base, write_jsonl
from wren_testing.training import (
    assert_same_logged_losses,
    launch_two_cpu_processes,
    read_metrics,
    tiny_pretrain_settings,
    train_losses,
)
from wrenlm.cli import main as wren_main
from wrenlm.training.config import PretrainConfig, apply_overrides
from wrenlm.training.pretrain import run_pretraining
from wrenlm.training.pretrain_cli import accelerate_config_path

WORKER = Path(__file__).with_name("pretrain_worker.py")
FSDP_LAUNCH = ("--config_file", str(accelerate_config_path("fsdp")))
# Steps 1-8, checkpoints at 4 and 8; the kill lands after step 6, between two checkpoints.
# Muon (the pretraining default) is refused under FSDP: it orthogonalises whole matrices.
COMMON = {"max_steps": 8, "save_every": 4, "eval_every": 4, "keep_last": 3, "optimizer": "adamw"}


@pytest.fixture(scope="module")
def single_run(corpus_dir, tokenizer_dir, tmp_path_factory) -> Path:
    """The 1-process reference with the FSDP runs' global batch (8 = 2 processes x 4)."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    output_dir = tmp_path_factory.mktemp("single")
    settings = tiny_pretrain_settings(corpus_dir, tokenizer_dir, output_dir, per_device_batch_size=8, **COMMON)
    run_pretraining(apply_overrides(PretrainConfig(), settings))
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
    return output_dir


def _fsdp_run(settings: dict, *extra: str):
    launched = launch_two_cpu_processes(
        [str(WORKER), json.dumps(settings), "--expect-processes", "2", *extra], accelerate_args=FSDP_LAUNCH
    )
    return launched


def _assert_same_weights(a: dict, b: dict, **tolerance) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        torch.testing.assert_close(b[key], value, **tolerance)


@pytest.mark.timeout(240)
def test_fsdp_shards_and_matches_one_process(tiny_settings, single_run, tmp_path):
    # `auto` (wren pretrain's default) trains with AdamW under FSDP2, as the one-process run below does explicitly.
    fsdp = tiny_settings(output_dir=tmp_path / "fsdp", per_device_batch_size=4, **{**COMMON, "optimizer": "auto"})
    launched = _fsdp_run(fsdp, "--dump-shards", str(tmp_path / "shards"))
    assert launched.returncode == 0, launched.stderr[-4000:]
    assert "with AdamW (peak LR 0.003)" in launched.stdout

    # Same losses, validation and final weights as one process with the same global batch.
    one, two = train_losses(single_run), train_losses(tmp_path / "fsdp")
    assert list(two) == list(range(1, 9))
    assert [two[s] for s in two] == pytest.approx([one[s] for s in one], rel=1e-5)
    results = json.loads((tmp_path / "fsdp" / "train_results.json").read_text())
    single_results = json.loads((single_run / "train_results.json").read_text())
    assert results["validation_loss"] == pytest.approx(single_results["validation_loss"], rel=1e-5)
    single_weights = load_file(single_run / "model.safetensors")
    _assert_same_weights(single_weights, load_file(tmp_path / "fsdp" / "model.safetensors"), rtol=1e-4, atol=1e-5)

    # Each rank holds half of every parameter and of its optimizer state (DTensor local shards, dim 0).
    ranks = [json.loads((tmp_path / "shards" / f"shards_rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys() and len(ranks[0]) > 10
    for name, entry in ranks[0].items():
        local_rows = [rank[name]["local"][0] for rank in ranks]
        assert entry["placements"] == ["Shard(0)"], name
        assert sum(local_rows) == entry["global"][0] and max(local_rows) == -(-entry["global"][0] // 2), name
        for rank in ranks:
            assert rank[name]["local"][1:] == entry["global"][1:]
            assert rank[name]["optimizer_local"] == {"exp_avg": rank[name]["local"], "exp_avg_sq": rank[name]["local"]}

    # The run log's figures, from the same engine objects: half the bytes per rank of what one process holds.
    engine, alone = results["engine"], single_results["engine"]
    assert (engine["engine"], engine["world_size"], alone["engine"]) == ("fsdp2", 2, "single")
    assert engine["full_param_bytes"] == alone["full_param_bytes"]
    for held, whole in (("param_bytes_per_rank", "full_param_bytes"), ("optimizer_bytes_per_rank", None)):
        total = alone[whole] if whole else alone["optimizer_bytes_per_rank"][0]
        assert sum(engine[held]) == total and all(abs(b - total / 2) <= 0.02 * total for b in engine[held])

    # Sharded checkpoints (torch.distributed.checkpoint), and a final folder that loads with AutoModelForCausalLM
    # and holds exactly the gathered parameters.
    checkpoint = tmp_path / "fsdp" / "checkpoints" / "step-00000008"
    assert (checkpoint / "pytorch_model_fsdp_0" / ".metadata").is_file()
    assert (checkpoint / "optimizer_0" / ".metadata").is_file()
    gathered = load_file(tmp_path / "shards" / "gathered.safetensors")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp").state_dict()
    for name, value in gathered.items():
        torch.testing.assert_close(loaded[name], value, rtol=0, atol=0)
    assert "Engine: FSDP2 (fully_shard), world size 2" in launched.stdout


@pytest.mark.timeout(240)
def test_fsdp_moe_router_losses_equal_one_process(tiny_settings, tmp_path):
    """A dense + MoE layer model with router losses and the router-bias update under FSDP2. The router losses are
    per micro-batch of each process (the per-rank form; not global across ranks), so 2 processes x 2 sequences x
    2 accumulation steps equal 1 process x 2 sequences x 4 accumulation steps: the same 8 sequences in the same
    2-sequence groups give the same losses, router losses and weights."""
    moe = {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "first_k_dense_layers": 1}
    common = {"max_steps": 4, "eval_every": 0, "save_every": 0, "sample_prompts": []}
    common["model"] = {**moe, "router_bias_update_rate": 0.01}
    single = tiny_settings(output_dir=tmp_path / "single", per_device_batch_size=2, gradient_accumulation_steps=4)
    run_pretraining(apply_overrides(PretrainConfig(), {**single, **common}))
    fsdp = tiny_settings(output_dir=tmp_path / "fsdp", per_device_batch_size=2, gradient_accumulation_steps=2)
    launched = _fsdp_run({**fsdp, **common})
    assert launched.returncode == 0, launched.stderr[-4000:]

    assert_same_logged_losses(tmp_path / "single", tmp_path / "fsdp", steps=[1, 2, 3, 4, 4])
    saved = load_file(tmp_path / "fsdp" / "model.safetensors")
    _assert_same_weights(load_file(tmp_path / "single" / "model.safetensors"), saved, rtol=1e-4, atol=1e-5)
    assert any(key.endswith("expert_bias") and value.abs().sum() > 0 for key, value in saved.items())
    assert json.loads((tmp_path / "fsdp" / "train_results.json").read_text())["engine"]["engine"] == "fsdp2"


@pytest.mark.timeout(240)
def test_fsdp_kill_and_rerun_gives_the_uninterrupted_run(tiny_settings, single_run, tmp_path):
    fsdp = tiny_settings(output_dir=tmp_path / "fsdp", per_device_batch_size=4, **COMMON)

    killed = _fsdp_run(fsdp, "--kill-after-step", "6")
    assert killed.returncode != 0
    assert [r["step"] for r in read_metrics(tmp_path / "fsdp") if "train/loss" in r] == list(range(1, 7))
    checkpoints = tmp_path / "fsdp" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000004"]

    rerun = _fsdp_run(fsdp)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    one, two = train_losses(single_run), train_losses(tmp_path / "fsdp")
    assert list(two) == list(range(1, 9))
    assert [two[s] for s in two] == pytest.approx([one[s] for s in one], rel=1e-5)
    _assert_same_weights(
        load_file(single_run / "model.safetensors"),
        load_file(tmp_path / "fsdp" / "model.safetensors"),
        rtol=1e-4,
        atol=1e-5,
    )


@pytest.mark.timeout(240)
def test_fsdp_lora_finetune_matches_one_process_and_loads_with_peft(tokenizer, tmp_path):
    base = save_tiny_base(tokenizer, tmp_path / "base", initializer_range=0.2)
    train_file = write_jsonl(tmp_path / "train.jsonl", copy_digits_records(96))
    eval_file = write_jsonl(tmp_path / "eval.jsonl", copy_digits_records(16, seed=1))
    # Copy-digit conversations all have the same length, so a per-process mean loss equals the global one.
    common = ["--model", str(base), "--data", str(train_file), "--eval-data", str(eval_file), "--max-steps", "4"]
    common += ["--learning-rate", "1e-2", "--warmup-steps", "1", "--eval-every", "2", "--save-every", "2"]
    common += ["--lora-r", "4", "--exact-match-examples", "4", "--max-new-tokens", "4", "--merge"]
    common += ["--log-every", "1", "--eval-batch-size", "8", "--no-progress-bar", "--report-to", "none"]
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    assert wren_main(["finetune", *common, "--output-dir", str(one_dir), "--per-device-batch-size", "8"]) == 0
    launched = launch_two_cpu_processes(
        ["-m", "wrenlm.training.finetune_cli", *common, "--output-dir", str(two_dir), "--per-device-batch-size", "4"],
        accelerate_args=FSDP_LAUNCH,
    )
    assert launched.returncode == 0, launched.stderr[-4000:]

    one = json.loads((one_dir / "finetune_results.json").read_text())
    two = json.loads((two_dir / "finetune_results.json").read_text())
    assert (one["engine"]["engine"], two["engine"]["engine"]) == ("single", "fsdp2")
    # Only the adapter trains: its optimizer state is split in two as well.
    assert sum(two["engine"]["optimizer_bytes_per_rank"]) == one["engine"]["optimizer_bytes_per_rank"][0]
    assert max(two["engine"]["optimizer_bytes_per_rank"]) < 0.55 * one["engine"]["optimizer_bytes_per_rank"][0]
    losses_one, losses_two = train_losses(one_dir), train_losses(two_dir)
    assert list(losses_two) == [1, 2, 3, 4]
    assert [losses_two[s] for s in losses_two] == pytest.approx([losses_one[s] for s in losses_one], rel=1e-5)
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-5)
    # Greedy answers generated by both ranks together (each forward gathers the shards) score like one process.
    assert two["eval_exact_match"] == one["eval_exact_match"]
    _assert_same_weights(
        load_file(one_dir / "adapter_model.safetensors"),
        load_file(two_dir / "adapter_model.safetensors"),
        rtol=1e-4,
        atol=1e-5,
    )

    ids = torch.tensor([tokenizer("Copy: 4 7 1")["input_ids"]])
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), two_dir).eval()
    merged = AutoModelForCausalLM.from_pretrained(two_dir / "merged").eval()
    with torch.no_grad():
        adapted_logits, merged_logits = adapted(input_ids=ids).logits, merged(input_ids=ids).logits
    torch.testing.assert_close(merged_logits, adapted_logits, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(adapted_logits, AutoModelForCausalLM.from_pretrained(base).eval()(input_ids=ids).logits)


@pytest.mark.timeout(120)
def test_fsdp_generation_with_lora_gathers_the_root_unit():
    """PEFT's `generate` calls the base model past the FSDP root's hooks; right after a backward pass the root's
    embeddings / LM head are sharded, so generation must gather them (`gathered_root`) and then equals the
    unsharded model's."""
    launched = launch_two_cpu_processes(
        [str(Path(__file__).with_name("fsdp_generate_worker.py"))], accelerate_args=FSDP_LAUNCH, timeout=110
    )
    assert launched.returncode == 0, launched.stderr[-4000:]
    assert launched.stdout.count("GENERATION_EQUAL=True") == 2, launched.stdout[-2000:]
