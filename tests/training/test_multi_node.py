"""Several machines: two `accelerate launch --num_machines 2 --machine_rank 0|1` launchers on this machine, each in
its own working directory (relative --output-dir, own caches), stand in for two nodes that share no filesystem."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wren_testing.training import launch_two_nodes, read_metrics, train_losses
from wrenlm.training.config import PretrainConfig, apply_overrides
from wrenlm.training.pretrain import run_pretraining
from wrenlm.training.pretrain_cli import accelerate_config_path

WORKER = Path(__file__).with_name("pretrain_worker.py")


def _node_dirs(tmp_path) -> list[Path]:
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    for node in nodes:
        node.mkdir()
    return nodes


@pytest.mark.timeout(300)
def test_multi_node_without_shared_folder_trains_checkpoints_and_resumes_after_kill(tiny_settings, tmp_path):
    nodes = _node_dirs(tmp_path)
    # No --tokenizer: the main process trains one and every node gets its own copy.
    # AdamW: the one-process run below must match the nodes' weights exactly (Muon's bf16 Newton-Schulz would not).
    settings = tiny_settings(
        output_dir="run", per_device_batch_size=4, max_steps=8, save_every=4, eval_every=4, vocab_size=384
    )
    settings["optimizer"] = "adamw"
    del settings["tokenizer"]

    killed = launch_two_nodes([str(WORKER), json.dumps(settings), "--kill-after-step", "6"], cwds=nodes)
    assert all(node.returncode != 0 for node in killed)
    runs = [node / "run" for node in nodes]
    for rank, run in enumerate(runs):
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000004"]
        checkpoint = run / "checkpoints" / "step-00000004"
        # Each node's local main process wrote its node's copy; each process its own RNG state.
        assert {"trainer_state.json", "model.safetensors", "optimizer.bin"} <= {p.name for p in checkpoint.iterdir()}
        assert [p.name for p in checkpoint.glob("random_states_*.pkl")] == [f"random_states_{rank}.pkl"]
    assert (runs[1] / "tokenizer.json").read_bytes() == (runs[0] / "tokenizer.json").read_bytes()
    assert [r["step"] for r in read_metrics(runs[0]) if "train/loss" in r] == list(range(1, 7))

    rerun = launch_two_nodes([str(WORKER), json.dumps(settings)], cwds=nodes)
    assert all(node.returncode == 0 for node in rerun), rerun[0].stderr[-3000:] + rerun[1].stderr[-3000:]
    results = json.loads((runs[0] / "train_results.json").read_text())
    assert (results["num_processes"], results["engine"]["engine"]) == (2, "ddp")
    assert (runs[1] / "checkpoints" / "step-00000008" / "trainer_state.json").is_file()

    # One process with the same global batch and the tokenizer the nodes trained: the same run.
    single = tiny_settings(output_dir=tmp_path / "single", tokenizer=str(runs[0]), per_device_batch_size=8)
    single.update({k: settings[k] for k in ("max_steps", "save_every", "eval_every", "optimizer")})
    run_pretraining(apply_overrides(PretrainConfig(), single))
    one, two = train_losses(tmp_path / "single"), train_losses(runs[0])
    assert list(two) == list(range(1, 9))
    assert [two[s] for s in two] == pytest.approx([one[s] for s in one], rel=1e-5)
    weights_one, weights_two = (
        load_file(tmp_path / "single" / "model.safetensors"),
        load_file(runs[0] / "model.safetensors"),
    )
    assert weights_one.keys() == weights_two.keys()
    for key, value in weights_one.items():
        torch.testing.assert_close(weights_two[key], value, rtol=1e-4, atol=1e-5)


@pytest.mark.timeout(300)
def test_multi_node_fsdp_needs_a_shared_output_folder(tiny_settings, tmp_path):
    """FSDP2 checkpoints are written by all ranks into one folder: without a shared one both nodes stop at start
    with the reason; with one (the same absolute path on both) they train together."""
    nodes = _node_dirs(tmp_path)
    fsdp = ("--config_file", str(accelerate_config_path("fsdp")))
    settings = tiny_settings(
        output_dir="run", per_device_batch_size=4, max_steps=4, save_every=2, eval_every=0, optimizer="adamw"
    )

    separate = launch_two_nodes([str(WORKER), json.dumps(settings)], cwds=nodes, accelerate_args=fsdp)
    for node in separate:
        assert node.returncode != 0
        assert "is not shared between the 2 nodes" in node.stderr, node.stderr[-3000:]
    assert not (nodes[0] / "run" / "checkpoints").exists()

    shared = dict(settings, output_dir=str(tmp_path / "shared"))
    together = launch_two_nodes([str(WORKER), json.dumps(shared)], cwds=nodes, accelerate_args=fsdp)
    assert all(node.returncode == 0 for node in together), together[0].stderr[-3000:]
    engine = json.loads((tmp_path / "shared" / "train_results.json").read_text())["engine"]
    assert (engine["engine"], engine["world_size"]) == ("fsdp2", 2)
    assert (tmp_path / "shared" / "checkpoints" / "step-00000004" / "pytorch_model_fsdp_0" / ".metadata").is_file()
