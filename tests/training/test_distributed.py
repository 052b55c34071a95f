"""Data parallelism on CPU: `accelerate launch --multi_gpu --num_processes 2` (gloo) equals one process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_testing import train_losses
from wrenlm.training.config import PretrainConfig, apply_overrides
from wrenlm.training.pretrain import run_pretraining

WORKER = Path(__file__).with_name("pretrain_worker.py")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.timeout(180)
def test_two_processes_match_one_process_with_the_same_global_batch(tiny_settings, tmp_path):
    single = tiny_settings(output_dir=tmp_path / "single", per_device_batch_size=8, max_steps=6, eval_every=3)
    double = tiny_settings(output_dir=tmp_path / "double", per_device_batch_size=4, max_steps=6, eval_every=3)
    run_pretraining(apply_overrides(PretrainConfig(), single))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env.pop("ACCELERATE_USE_CPU", None)  # make_accelerator passes cpu=True itself when there is no GPU
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
        str(WORKER), json.dumps(double), "--expect-processes", "2",
    ]  # fmt: skip
    launched = subprocess.run(command, env=env, capture_output=True, text=True, timeout=170, check=False)
    assert launched.returncode == 0, launched.stderr[-4000:]

    results = json.loads((tmp_path / "double" / "train_results.json").read_text())
    assert results["num_processes"] == 2
    a, b = train_losses(tmp_path / "single"), train_losses(tmp_path / "double")
    assert list(a) == list(b) == [1, 2, 3, 4, 5, 6]
    assert [b[s] for s in b] == pytest.approx([a[s] for s in a], rel=1e-5)
    single_results = json.loads((tmp_path / "single" / "train_results.json").read_text())
    assert results["validation_loss"] == pytest.approx(single_results["validation_loss"], rel=1e-5)
    wa, wb = load_file(tmp_path / "single" / "model.safetensors"), load_file(tmp_path / "double" / "model.safetensors")
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], rtol=1e-4, atol=1e-5)
