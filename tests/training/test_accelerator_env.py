"""What `make_accelerator` sets up in the process environment."""

import os

import torch

from wrenlm.training.accelerator import make_accelerator
from wrenlm.training.config import TrainingConfig


def test_cpu_runs_name_deepspeeds_cpu_accelerator(monkeypatch, tmp_path):
    # Accelerate imports an installed DeepSpeed on every unwrap_model; unnamed, DeepSpeed guesses its accelerator
    # and prints a warning into every CPU training run's output.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    make_accelerator(TrainingConfig(output_dir=str(tmp_path), report_to="none"))
    assert os.environ["DS_ACCELERATOR"] == "cpu"
    monkeypatch.setenv("DS_ACCELERATOR", "mine")
    make_accelerator(TrainingConfig(output_dir=str(tmp_path), report_to="none"))
    assert os.environ["DS_ACCELERATOR"] == "mine"  # a user's choice wins
