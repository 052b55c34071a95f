"""Atomic checkpoints, keep-last-k, and exact resume after a hard kill."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wren_testing.training import train_losses
from wrenlm.training.checkpointing import (
    CheckpointManager,
    latest_checkpoint,
    leftover_folders,
    list_checkpoints,
    read_trainer_state,
)

WORKER = Path(__file__).with_name("pretrain_worker.py")


class FakeAccelerator:
    """Enough of `Accelerator` for CheckpointManager: writes a model file, optionally dies half way."""

    is_main_process = True

    def __init__(self, crash=False):
        self.crash = crash

    def wait_for_everyone(self):
        pass

    def save_state(self, output_dir, safe_serialization=True):
        Path(output_dir, "model.safetensors").write_bytes(b"half a model")
        if self.crash:
            raise KeyboardInterrupt("killed while saving")
        Path(output_dir, "optimizer.bin").write_bytes(b"optimizer")


def test_crash_during_save_keeps_the_previous_checkpoint(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    good = manager.save(FakeAccelerator(), 10, {"state": {"global_step": 10}})
    with pytest.raises(KeyboardInterrupt):
        manager.save(FakeAccelerator(crash=True), 20, {"state": {"global_step": 20}})
    assert latest_checkpoint(tmp_path) == good
    assert (good / "optimizer.bin").read_bytes() == b"optimizer"
    assert read_trainer_state(good)["state"]["global_step"] == 10
    assert (tmp_path / ".tmp-step-00000020").exists()  # the debris is never taken as a checkpoint
    assert list_checkpoints(tmp_path) == [good]
    manager.save(FakeAccelerator(), 30, {"state": {"global_step": 30}})
    assert not list(tmp_path.glob(".tmp-*"))  # and is cleaned by the next save
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000010", "step-00000030"]


def test_keep_last_k(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    for step in (1, 2, 3, 4):
        manager.save(FakeAccelerator(), step, {"state": {"global_step": step}})
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000003", "step-00000004"]
    keep_all = CheckpointManager(tmp_path / "all", keep_last=0)
    for step in (1, 2, 3):
        keep_all.save(FakeAccelerator(), step, {"state": {"global_step": step}})
    assert len(list_checkpoints(tmp_path / "all")) == 3


def test_a_crash_while_pruning_leaves_no_half_deleted_checkpoint(tmp_path, monkeypatch):
    manager = CheckpointManager(tmp_path, keep_last=1)
    manager.save(FakeAccelerator(), 1, {"state": {"global_step": 1}})
    real_rmtree = shutil.rmtree

    def killed_mid_delete(path, *args, **kwargs):
        (Path(path) / "model.safetensors").unlink()  # part of the folder is gone when the kill lands
        raise KeyboardInterrupt("killed while pruning")

    monkeypatch.setattr(shutil, "rmtree", killed_mid_delete)
    with pytest.raises(KeyboardInterrupt):
        manager.save(FakeAccelerator(), 2, {"state": {"global_step": 2}})
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    # The pruned checkpoint had left the step-* names before its files went: no step-* folder is half deleted.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-pruned-step-00000001", "step-00000002"]
    assert manager.remove_leftovers() == [tmp_path / ".tmp-pruned-step-00000001"]
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000002"]


def test_only_what_wrenlm_wrote_counts_as_leftover(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    manager.save(FakeAccelerator(), 5, {"state": {"global_step": 5}})
    wrenlm_debris = [".tmp-step-00000007", ".tmp-old-step-00000005", ".tmp-pruned-step-00000003", "step-00000004"]
    for name in wrenlm_debris:
        (tmp_path / name).mkdir()
    (tmp_path / "step-00000002").mkdir()  # what an older version's pruning left: Accelerate's files, no state
    (tmp_path / "step-00000002" / "random_states_0.pkl").write_bytes(b"rng")
    users = ["step-00000009/my-notes.txt", ".tmp-mine/keep.txt", "notes.txt", "step-00000006/sub/model.safetensors"]
    for name in users:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("mine")
    assert leftover_folders(tmp_path) == sorted(tmp_path / name for name in [*wrenlm_debris, "step-00000002"])
    manager.remove_all()  # `resume: never`
    assert all((tmp_path / name).read_text() == "mine" for name in users)
    kept = [".tmp-mine", "notes.txt", "step-00000006", "step-00000009"]
    assert sorted(p.name for p in tmp_path.iterdir()) == kept
    alone = CheckpointManager(tmp_path / "alone")
    alone.save(FakeAccelerator(), 1, {"state": {"global_step": 1}})
    alone.remove_all()
    assert not (tmp_path / "alone").exists()  # nothing else was in it: the checkpoints folder goes too


def _run_worker(settings: dict, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(WORKER), json.dumps(settings), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


MUON_MOE = {
    "optimizer": "muon",
    "model": {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "num_shared_experts": 1},
}


@pytest.mark.parametrize("variant", [{"optimizer": "adamw"}, MUON_MOE], ids=["adamw", "muon-moe"])
def test_resume_after_sigkill_continues_exactly(tiny_settings, tmp_path, variant):
    """A run killed (SIGKILL) after step 6 and resumed from its step-4 checkpoint reproduces the
    uninterrupted run bit for bit: same losses at every step, same final weights. Dropout is on, so
    the RNG state has to be restored too; the data order crosses an epoch boundary. With Muon (on an
    MoE model, so the per-expert path too) the momentum buffers and the AdamW moments must come back."""
    common = {
        "max_steps": 10,
        "save_every": 4,
        "eval_every": 5,
        "log_every": 1,
        "per_device_batch_size": 32,
        **variant,
        "model": {"attention_dropout": 0.2, **variant.get("model", {})},
    }
    reference = tiny_settings(output_dir=tmp_path / "reference", **common)
    interrupted = tiny_settings(output_dir=tmp_path / "interrupted", **common)
    # ~300 training blocks / 32 per step: 9 steps an epoch, so the run crosses into epoch 1.

    done = _run_worker(reference)
    assert done.returncode == 0, done.stderr[-3000:]
    killed = _run_worker(interrupted, "--kill-after-step", "6")
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert latest_checkpoint(tmp_path / "interrupted" / "checkpoints").name == "step-00000004"
    assert max(train_losses(tmp_path / "interrupted")) == 6
    resumed = _run_worker(interrupted)  # resume defaults to "auto": newest complete checkpoint
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    expected, got = train_losses(tmp_path / "reference"), train_losses(tmp_path / "interrupted")
    assert list(expected) == list(range(1, 11))
    assert got == expected  # exact equality, not approximate
    record = read_trainer_state(latest_checkpoint(tmp_path / "reference" / "checkpoints"))
    assert record["state"]["epoch"] >= 1
    assert record["config"]["optimizer"] == variant["optimizer"]
    a = load_file(tmp_path / "reference" / "model.safetensors")
    b = load_file(tmp_path / "interrupted" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
