"""Tensor parallelism (`tp_plan="auto"`, DTensor shards) on 2 CPU processes under torchrun, against one process."""

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wren_testing.training import launch_two_cpu_processes, read_metrics, train_losses
from wrenlm.training.config import PretrainConfig, apply_overrides
from wrenlm.training.pretrain import run_pretraining

WORKER = Path(__file__).with_name("tensor_parallel_worker.py")
# Kept whole on every process, each for a reason: RMSNorms and the router see the full hidden state (so their
# gradients are complete on every process); q_norm/k_norm see only this process' heads and have their gradients
# summed by the plan's `replicated_with_grad_allreduce`.
WHOLE = re.compile(r"(input_layernorm|post_attention_layernorm|model\.norm|self_attn\.[qk]_norm|mlp\.gate)\.weight$")


@pytest.mark.timeout(180)
def test_tensor_parallel_gradients_equal_one_process_and_every_weight_is_planned(tmp_path):
    launched = launch_two_cpu_processes([str(WORKER), str(tmp_path)], torchrun=True)
    assert launched.returncode == 0, launched.stderr[-4000:]

    for rank in (0, 1):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert set(report) == {"dense", "dense_qk_norm", "moe_shared", "moe_qk_norm_shared"}
        for case, result in report.items():
            tp_loss, one_loss = result["losses"]
            assert tp_loss == pytest.approx(one_loss, rel=1e-6), case
            worst = max(result["grad_diff"].items(), key=lambda item: item[1])
            assert worst[1] < 1e-6, (case, worst)
            for name, shape in result["shapes"].items():
                if WHOLE.search(name):
                    assert not shape["sharded"], (case, name)
                    continue
                # Every other weight is a DTensor holding half of one dimension on each process.
                assert shape["sharded"], (case, name)
                halved = [i for i, (a, b) in enumerate(zip(shape["local"], shape["full"])) if a != b]
                assert len(halved) == 1 and shape["local"][halved[0]] * 2 == shape["full"][halved[0]], (case, name)
            names = result["shapes"]
            if "qk_norm" in case:
                assert any("q_norm" in name for name in names) and any("k_norm" in name for name in names)
            if case.startswith("moe"):
                for part in ("experts.gate_up_proj", "experts.down_proj", "shared_experts.up_proj", "mlp.gate.weight"):
                    assert any(part in name for name in names), part


@pytest.mark.timeout(180)
def test_tensor_parallel_training_equals_one_process(tiny_settings, tmp_path):
    """The torchrun entry, 2 processes on a qk_norm MoE model: the losses, the validation loss and the final
    (gathered) weights of one `wren pretrain` process with the same batches; the folder loads with AutoModel."""
    from transformers import AutoModelForCausalLM

    model = {"qk_norm": True, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}
    model["num_shared_experts"] = 1
    common = {"max_steps": 4, "eval_every": 0, "save_every": 0, "sample_prompts": [], "model": model}
    common["gradient_accumulation_steps"] = 2
    single = tiny_settings(output_dir=tmp_path / "single", per_device_batch_size=4, **common)
    tp = tiny_settings(output_dir=tmp_path / "tp", per_device_batch_size=4, **common)
    run_pretraining(apply_overrides(PretrainConfig(), single))

    args = [f"--set={key}={json.dumps(value)}" for key, value in tp.items() if key not in ("model", "data")]
    args += ["--data", *tp["data"], *[f"--set=model.{key}={value}" for key, value in model.items()]]
    args += [f"--set=model.{key}={value}" for key, value in tp["model"].items() if key not in model]
    launched = launch_two_cpu_processes(["-m", "wrenlm.training.tensor_parallel_cli", *args], torchrun=True)
    assert launched.returncode == 0, launched.stderr[-4000:]

    results = json.loads((tmp_path / "tp" / "train_results.json").read_text())
    single_results = json.loads((tmp_path / "single" / "train_results.json").read_text())
    assert results["tensor_parallel_size"] == 2
    assert results["params_full"] == single_results["num_parameters"]
    assert results["params_local"] < 0.6 * results["params_full"]
    a, b = train_losses(tmp_path / "single"), train_losses(tmp_path / "tp")
    assert list(a) == list(b) == [1, 2, 3, 4]
    assert list(b.values()) == pytest.approx(list(a.values()), rel=1e-5)
    assert results["validation_loss"] == pytest.approx(single_results["validation_loss"], rel=1e-5)
    assert [r["step"] for r in read_metrics(tmp_path / "tp")][-1] == 4

    expected = load_file(tmp_path / "single" / "model.safetensors")
    saved = load_file(tmp_path / "tp" / "model.safetensors")
    assert saved.keys() == expected.keys()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "tp").state_dict()
    for key, value in expected.items():
        torch.testing.assert_close(saved[key], value, rtol=1e-4, atol=1e-5, msg=key)
        torch.testing.assert_close(loaded[key], saved[key], rtol=0, atol=0, msg=key)
