"""`--compile`: per-block torch.compile (+ the compiled loss chunk) trains like eager and resumes exactly."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wren_testing import tiny_config_kwargs
from wren_testing.training import train_losses
from wrenlm.training.compile import compile_for_training, decoder_blocks
from wrenlm.training.config import PretrainConfig, apply_overrides
from wrenlm.training.pretrain import run_pretraining
from wrenlm.training.trainer import TrainerCallback


class CrashAfterStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, step, logs):
        if step == self.step:
            raise KeyboardInterrupt(f"killed after step {step}")


class RecordCompiled(TrainerCallback):
    def __init__(self):
        self.seen = None

    def on_train_begin(self, trainer):
        model = trainer.unwrapped_model
        self.seen = (len(decoder_blocks(model)), all(b._wren_compiled for b in decoder_blocks(model)))
        self.seen += (model.loss_implementation,)


def pretrain(settings: dict, **kwargs) -> dict:
    return run_pretraining(apply_overrides(PretrainConfig(), settings), **kwargs)


def test_compiled_run_killed_and_resumed_equals_the_uninterrupted_one(tiny_settings, tmp_path):
    # Dropout on: the resumed run must restore the RNG that the compiled graphs draw from, too.
    common = {
        "max_steps": 4, "save_every": 2, "eval_every": 0, "final_eval": False, "sample_prompts": [], "compile": True,
        "model": {"attention_dropout": 0.2},
    }  # fmt: skip
    recorder = RecordCompiled()
    pretrain(tiny_settings(output_dir=tmp_path / "reference", **common), callbacks=[recorder])
    assert recorder.seen == (2, True, "compile")
    interrupted = tiny_settings(output_dir=tmp_path / "interrupted", **common)
    with pytest.raises(KeyboardInterrupt):
        pretrain(interrupted, callbacks=[CrashAfterStep(3)])
    assert max(train_losses(tmp_path / "interrupted")) == 3
    pretrain(interrupted)  # resumes from the step-2 checkpoint

    expected, got = train_losses(tmp_path / "reference"), train_losses(tmp_path / "interrupted")
    assert list(expected) == [1, 2, 3, 4] and got == expected  # exact, not approximate
    a = load_file(Path(tmp_path, "reference", "model.safetensors"))
    b = load_file(Path(tmp_path, "interrupted", "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_compiling_keeps_weight_names_and_leaves_evaluation_and_generation_eager():
    from torch._dynamo.utils import counters

    from wrenlm import WrenConfig, WrenForCausalLM

    model = WrenForCausalLM(WrenConfig(**tiny_config_kwargs()))
    names = set(model.state_dict())
    compile_for_training(model)
    assert len(decoder_blocks(model)) == 2 and model.loss_implementation == "compile"
    assert set(model.state_dict()) == names  # checkpoints and resume see the same model
    # Evaluation and generation take the eager path: nothing is compiled (which would take seconds each shape).
    counters.clear()
    model.eval()
    with torch.no_grad():
        model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3, do_sample=False)
    assert counters["stats"]["unique_graphs"] == 0


def test_compile_needs_decoder_blocks():
    with pytest.raises(ValueError, match="names no decoder block class"):
        compile_for_training(torch.nn.Sequential(torch.nn.Linear(2, 2)))
