"""The loop's hooks: their order, and the MoE router work done by `MoeRouterCallback` (checked against the
model's own outputs and the bias-update rule), including an exact resume."""

import json
import shutil

import pytest
import torch
from peft import get_peft_model

import wrenlm
from wren_testing import HostSyncDetector, tiny_config_kwargs, tiny_moe_config_kwargs
from wren_testing.training import read_metrics
from wrenlm.training.callbacks import TrainerCallback
from wrenlm.training.checkpointing import list_checkpoints
from wrenlm.training.config import TrainingConfig
from wrenlm.training.lora import wren_lora_config
from wrenlm.training.moe import MoeRouterCallback, moe_callbacks
from wrenlm.training.trainer import Trainer

RATE = 0.05
AUX, Z = 0.01, 0.02


def _reset_accelerate():
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def blocks(count=24, length=12, seed=0):
    ids = torch.randint(3, 128, (count, length), generator=torch.Generator().manual_seed(seed))
    return [{"input_ids": row} for row in ids]


def loop_config(tmp_path, **overrides) -> TrainingConfig:
    values = {
        "output_dir": str(tmp_path),
        "max_steps": 3,
        "per_device_batch_size": 4,
        "gradient_accumulation_steps": 2,
        "warmup_steps": 1,
        "log_every": 2,
        "eval_every": 0,
        "save_every": 0,
        "report_to": "none",
        "progress_bar": False,
        "sample_prompts": [],
        "seed": 3,
    }
    values.update(overrides)
    return TrainingConfig(**values)


def moe_model(seed=0):
    torch.manual_seed(seed)
    config = wrenlm.WrenConfig(
        **tiny_moe_config_kwargs(router_bias_update_rate=RATE, router_aux_loss_coef=AUX, router_z_loss_coef=Z)
    )
    return wrenlm.WrenForCausalLM(config)


class Recorder(TrainerCallback):
    """Notes every hook; before the MoE callback in the list, it sees the router state before each update."""

    def __init__(self):
        self.events, self.micro, self.steps = [], [], []

    def on_train_begin(self, trainer):
        self.events.append("begin")

    def on_micro_batch_end(self, trainer, outputs):
        self.events.append("micro")
        if getattr(outputs, "aux_loss", None) is not None:
            self.micro.append(tuple(float(v.detach()) for v in (outputs.loss, outputs.aux_loss, outputs.z_loss)))

    def on_optimizer_step(self, trainer):
        self.events.append("optimizer")
        routers = trainer.unwrapped_model.routers() if hasattr(trainer.unwrapped_model, "routers") else []
        self.steps.append([(r.expert_load.clone(), r.expert_bias.clone()) for r in routers])

    def on_log(self, trainer, step, logs):
        self.events.append(f"log {step}")
        logs["train/recorded"] = float(step)

    def on_step_end(self, trainer, step, logs):
        self.events.append(f"end {step}" + (" +logs" if logs else ""))

    def on_save(self, trainer, step, path):
        self.events.append(f"save {step}")

    def on_train_end(self, trainer):
        self.events.append("train end")


def test_hooks_run_in_order_and_on_log_entries_are_written(tmp_path):
    torch.manual_seed(0)
    recorder = Recorder()
    model = wrenlm.WrenForCausalLM(wrenlm.WrenConfig(**tiny_config_kwargs()))
    Trainer(model, loop_config(tmp_path), blocks(), callbacks=[recorder]).train()
    step = ["micro", "micro", "optimizer"]
    assert recorder.events == [
        "begin",
        *step,
        "end 1",
        *step,
        "log 2",
        "end 2 +logs",
        *step,
        "log 3",  # the last step is always logged
        "end 3 +logs",
        "save 3",
        "train end",
    ]
    logged = [record for record in read_metrics(tmp_path) if "train/loss" in record]
    assert [(r["step"], r["train/recorded"]) for r in logged] == [(2, 2.0), (3, 3.0)]
    assert not any("train/aux_loss" in r for r in logged)  # a dense model has no router to log


def test_moe_callbacks_only_for_moe_models():
    assert moe_callbacks(wrenlm.WrenForCausalLM(wrenlm.WrenConfig(**tiny_config_kwargs()))) == []
    model = moe_model()
    assert [type(c) for c in moe_callbacks(model)] == [MoeRouterCallback]
    peft_model = get_peft_model(model, wren_lora_config(model.config, r=2))
    assert [type(c) for c in moe_callbacks(peft_model)] == [MoeRouterCallback]


def test_moe_router_callback_logs_router_losses_and_updates_the_bias_after_each_optimizer_step(tmp_path):
    recorder = Recorder()
    trainer = Trainer(moe_model(), loop_config(tmp_path), blocks(), callbacks=[recorder, MoeRouterCallback()])
    trainer.train()

    # Log windows: steps 1-2 and step 3, each step the mean of its 2 micro-batches.
    per_step = [
        [sum(values[i] for values in recorder.micro[2 * s : 2 * s + 2]) / 2 for i in range(3)] for s in range(3)
    ]
    windows = [per_step[0:2], per_step[2:3]]
    logged = [record for record in read_metrics(tmp_path) if "train/loss" in record]
    assert [r["step"] for r in logged] == [2, 3]
    for record, window in zip(logged, windows):
        loss, aux, z = (sum(step[i] for step in window) / len(window) for i in range(3))
        assert record["train/loss"] == pytest.approx(loss, rel=1e-6)
        assert record["train/aux_loss"] == pytest.approx(aux, rel=1e-6)
        assert record["train/z_loss"] == pytest.approx(z, rel=1e-6)
        assert (
            record["train/lm_loss"]
            == record["train/loss"] - AUX * record["train/aux_loss"] - Z * record["train/z_loss"]
        )
        router_keys = [key for key in record if key.startswith(("train/aux", "train/z", "train/lm", "train/expert"))]
        assert router_keys[:3] == ["train/aux_loss", "train/z_loss", "train/lm_loss"]

    # One bias update per optimizer step, from the load counted over all its micro-batches, then the count restarts.
    finals = [r.expert_bias for r in trainer.unwrapped_model.routers()]
    tokens_per_step = 2 * 4 * 12 * trainer.unwrapped_model.config.num_experts_per_tok
    assert len(recorder.steps) == 3 and all(len(records) == len(finals) > 0 for records in recorder.steps)
    assert all(not bias.any() for _, bias in recorder.steps[0])
    for step, records in enumerate(recorder.steps):
        for router, (load, bias) in enumerate(records):
            after = recorder.steps[step + 1][router][1] if step + 1 < len(recorder.steps) else finals[router]
            assert torch.equal(after, bias + RATE * torch.sign(load.mean() - load))
            assert load.sum() == tokens_per_step
    assert all(bias.abs().sum() > 0 for bias in finals)


class LoadWitness(TrainerCallback):
    """Notes, for every forward of the model, whether the expert load was asked for and which experts each
    router chose (read from the routers themselves, not from the model's load output)."""

    def __init__(self):
        self.forwards = []  # (output_expert_load asked for, [router indices per MoE layer])

    def on_train_begin(self, trainer):
        model = trainer.unwrapped_model

        def before_forward(module, args, kwargs):
            self.forwards.append((kwargs.get("output_expert_load"), []))

        def after_router(module, args, output):
            self.forwards[-1][1].append(output[2].detach().clone())  # (logits, weights, indices, probs)

        model.register_forward_pre_hook(before_forward, with_kwargs=True)
        for router in model.routers():
            router.register_forward_hook(after_router)


def test_expert_load_is_asked_for_on_logging_steps_only_and_logged_as_load_ratios(tmp_path):
    witness = LoadWitness()
    config = loop_config(tmp_path, max_steps=5, log_every=2)  # logging steps 2, 4 and 5 (the last)
    trainer = Trainer(moe_model(), config, blocks(count=48), callbacks=[witness, MoeRouterCallback()])
    trainer.train()

    micro = config.gradient_accumulation_steps
    asked = [bool(flag) for flag, _ in witness.forwards]
    assert asked == [step in (2, 4, 5) for step in range(1, 6) for _ in range(micro)]
    assert sum(asked) == 3 * micro

    model_config = trainer.unwrapped_model.config
    experts = model_config.num_experts
    logged = [record for record in read_metrics(tmp_path) if "train/loss" in record]
    assert [r["step"] for r in logged] == [2, 4, 5]
    for record in logged:
        step_forwards = witness.forwards[(record["step"] - 1) * micro : record["step"] * micro]
        # Per MoE layer: the share of each expert in the step's assignments (equal micro-batches), over 1/experts.
        shares = torch.stack(
            [
                torch.stack([torch.bincount(i.flatten(), minlength=experts) / i.numel() for i in layers])
                for _, layers in step_forwards
            ]
        ).mean(dim=0)
        ratios = shares * experts
        moe_layers = [i for i in range(model_config.num_hidden_layers) if model_config.is_moe_layer(i)]
        assert len(moe_layers) == ratios.shape[0] == 2
        for layer, ratio in zip(moe_layers, ratios):
            assert record[f"train/expert_load_max_layer_{layer}"] == pytest.approx(float(ratio.max()), rel=1e-6)
        assert record["train/expert_load_max"] == pytest.approx(float(ratios.max()), rel=1e-6)
        assert record["train/expert_load_min"] == pytest.approx(float(ratios.min()), rel=1e-6)
        assert record["train/expert_load_max"] > 1.0  # 96 tokens x 2 choices do not split evenly by chance
    assert not any("train/expert_load_max" in r for r in read_metrics(tmp_path) if "train/loss" not in r)


class SyncsPerStep(TrainerCallback):
    def __init__(self, detector):
        self.detector, self.syncs, self.counted = detector, [], 0

    def on_step_end(self, trainer, step, logs):
        self.syncs.append(self.detector.seen[self.counted :])
        self.counted = len(self.detector.seen)


def test_moe_callback_adds_no_host_sync_on_steps_that_do_not_log(tmp_path):
    """Host reads per step (on CPU, what would stall a GPU) with and without the callback: the same on the steps
    that do not log; more on those that do (reading the figures), which shows the count can see them."""
    per_run = {}
    for name, callbacks in (("bare", []), ("moe", [MoeRouterCallback()])):
        detector = HostSyncDetector()
        counter = SyncsPerStep(detector)
        config = loop_config(tmp_path / name, max_steps=4, log_every=3)  # logging steps 3 and 4
        trainer = Trainer(moe_model(), config, blocks(), callbacks=[*callbacks, counter])
        with detector:
            trainer.train()
        per_run[name] = counter.syncs
        _reset_accelerate()
    bare, moe = per_run["bare"], per_run["moe"]
    assert moe[:2] == bare[:2]
    assert all(len(moe[step]) > len(bare[step]) for step in (2, 3))


def test_without_the_callback_the_loop_does_no_router_work(tmp_path):
    trainer = Trainer(moe_model(), loop_config(tmp_path), blocks())
    trainer.train()
    assert not any("train/aux_loss" in r for r in read_metrics(tmp_path))
    assert all(not router.expert_bias.any() for router in trainer.unwrapped_model.routers())


def test_moe_resume_is_exact(tmp_path):
    """Four steps in one go equal two steps, a checkpoint, and a resumed run: logs, weights and router biases."""
    config = {"max_steps": 4, "save_every": 2, "keep_last": 0, "log_every": 1, "gradient_accumulation_steps": 1}
    straight = Trainer(
        moe_model(), loop_config(tmp_path / "straight", **config), blocks(), callbacks=[MoeRouterCallback()]
    )
    straight.train()
    expected = {k: v.clone() for k, v in straight.unwrapped_model.state_dict().items()}
    _reset_accelerate()

    # The resumed run starts from the straight run's step-2 checkpoint and a model initialised differently.
    step_two = list_checkpoints(tmp_path / "straight" / "checkpoints")[0]
    assert step_two.name == "step-00000002"
    shutil.copytree(step_two, tmp_path / "resumed" / "checkpoints" / step_two.name)
    lines = (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    (tmp_path / "resumed" / "metrics.jsonl").write_text(
        "".join(line + "\n" for line in lines if json.loads(line)["step"] <= 2)
    )
    resumed = Trainer(
        moe_model(seed=9), loop_config(tmp_path / "resumed", **config), blocks(), callbacks=[MoeRouterCallback()]
    )
    resumed.train()

    def figures(path):
        return [{k: v for k, v in r.items() if k != "train/tokens_per_s"} for r in read_metrics(path)]

    assert figures(tmp_path / "resumed") == figures(tmp_path / "straight")
    assert any(key.endswith("expert_bias") for key in expected)
    for key, value in resumed.unwrapped_model.state_dict().items():
        assert torch.equal(value, expected[key]), key
