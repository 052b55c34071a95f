"""Subprocess entry (under `accelerate launch --config_file fsdp.yaml`): greedy generation with a LoRA model
sharded by wren's FSDP2 route, right after a backward pass (the root unit's parameters are sharded then), must
equal the unsharded model's. Prints `GENERATION_EQUAL=True|False` on every rank."""

import copy
import sys
import tempfile
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for wren_testing

# Imported after the thread count is set.
from peft import get_peft_model

from wren_testing import tiny_config_kwargs
from wrenlm import WrenConfig, WrenForCausalLM
from wrenlm.training.accelerator import make_accelerator
from wrenlm.training.config import TrainingConfig
from wrenlm.training.fsdp import TorchFsdp, gathered_root, wren_applies_fsdp
from wrenlm.training.lora import wren_lora_config


def main() -> None:
    accelerator = make_accelerator(TrainingConfig(output_dir=tempfile.mkdtemp(), report_to="none"))
    assert wren_applies_fsdp(accelerator)
    torch.manual_seed(0)
    base = WrenForCausalLM(WrenConfig(**tiny_config_kwargs()))
    model = get_peft_model(base, wren_lora_config(base.config, r=4, alpha=8))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # a non-zero adapter, so the generations depend on it
            torch.nn.init.normal_(param, std=0.1)
    reference = copy.deepcopy(model).eval()
    model = TorchFsdp(accelerator).shard(model)
    ids = torch.randint(3, 128, (2, 8), generator=torch.Generator().manual_seed(1))
    model(input_ids=ids, labels=ids).loss.backward()
    model.eval()
    settings = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": 0}
    with gathered_root(model):
        generated = model.generate(input_ids=ids, **settings)
    # One write per rank: the two processes share the launcher's stdout, and print() of several values can interleave.
    sys.stdout.write(f"GENERATION_EQUAL={torch.equal(generated, reference.generate(input_ids=ids, **settings))}\n")
    sys.stdout.flush()
    accelerator.wait_for_everyone()


if __name__ == "__main__":
    sys.exit(main())
