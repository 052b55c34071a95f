"""The Accelerate training loop shared by `wren pretrain` and `wren finetune`.

    trainer = Trainer(model, config, train_dataset, eval_dataset, tokenizer=tok)
    trainer.train()                       # resumes from the newest checkpoint when config.resume == "auto"
    metrics = trainer.evaluate()          # loss, perplexity (+ bits per character when batches carry num_chars)
    trainer.save_model(out_dir, tokenizer=tok, generation_config=gen)

What it does: gradient accumulation (`accelerator.accumulate`), mixed precision where the hardware
has it, gradient clipping, AdamW with weight-decay groups (or caller-given groups), warmup + cosine
(or a caller-given scheduler), optional gradient checkpointing, MoE router losses logged separately
and the aux-loss-free router-bias update, periodic evaluation with sample generations, a tqdm bar on
the main process, Accelerate trackers plus `metrics.jsonl`, and atomic rotating checkpoints from
which `train()` continues exactly (the data order is a function of (seed, epoch) and the consumed
batches are skipped; model/optimizer/scheduler/RNG states come from `accelerator.save_state`).

Batches are dicts of tensors with `input_ids` and `labels` (and optionally `attention_mask`);
a `num_chars` entry (characters spelled by the target tokens of each row) is removed before the
forward and turns on bits-per-character in `evaluate()`.
"""

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .checkpointing import CheckpointManager, read_trainer_state
from .config import TrainingConfig, config_to_dict
from .data import EpochSampler, bits_per_character, collate_blocks
from .optim import build_optimizer, build_scheduler, weight_decay_groups

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


class TrainerCallback:
    """Override any hook; each gets the trainer (its `state`, `accelerator`, `model`, `config`)."""

    def on_train_begin(self, trainer: "Trainer") -> None: ...

    def on_step_end(self, trainer: "Trainer", step: int, logs: dict) -> None:
        """After every optimizer step; `logs` holds this step's metrics on log steps, else is empty."""

    def on_evaluate(self, trainer: "Trainer", step: int, metrics: dict) -> None: ...

    def on_save(self, trainer: "Trainer", step: int, path: Path) -> None: ...

    def on_train_end(self, trainer: "Trainer") -> None: ...


@dataclass
class TrainState:
    global_step: int = 0
    epoch: int = 0
    samples_in_epoch: int = 0  # training sequences consumed in the current epoch, all processes together
    tokens_seen: int = 0
    elapsed_s: float = 0.0


def resolve_mixed_precision(setting: str) -> str | None:
    """`auto`: the accelerate config's choice if launched with one, else bf16 on GPUs that have it,
    fp16 on other CUDA GPUs, full fp32 on CPU."""
    if setting != "auto":
        return setting
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None  # `accelerate launch --config_file ...` / `--mixed_precision`: let Accelerate read it
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def resolve_trackers(setting: str) -> list[str]:
    """`auto`: TensorBoard when it is installed (`pip install wrenlm[track]`), else none."""
    if setting in ("none", "", None):
        return []
    if setting == "auto":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            return []
        return ["tensorboard"]
    return [name.strip() for name in setting.split(",") if name.strip()]


def make_accelerator(config: TrainingConfig, **kwargs):
    """An `Accelerator` configured for this loop (also usable on its own, e.g. by `wren finetune`).

    On a machine without a GPU it passes `cpu=True`, so `accelerate launch --multi_gpu --num_processes N`
    runs N gloo data-parallel processes (MULTI_CPU) instead of N unrelated single processes.
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration

    if config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    has_gpu = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    trackers = resolve_trackers(config.report_to)
    accelerator = Accelerator(
        cpu=not has_gpu,
        mixed_precision=resolve_mixed_precision(config.mixed_precision),
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=config.gradient_accumulation_steps, sync_with_dataloader=False
        ),
        # We step the scheduler once per optimizer step ourselves (Accelerate would step it once per process).
        step_scheduler_with_optimizer=False,
        log_with=trackers or None,
        project_config=ProjectConfiguration(
            project_dir=config.output_dir, logging_dir=os.path.join(config.output_dir, "logs")
        ),
        # MoE routers keep per-rank load counters in buffers; rank 0 must not overwrite them.
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
        **kwargs,
    )
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and accelerator.num_processes != world_size:
        raise RuntimeError(
            f"Launched as {world_size} processes but Accelerate sees {accelerator.num_processes}: each process "
            "would train alone on all the data. Launch with `accelerate launch --multi_gpu --num_processes N` "
            "(on a CPU-only machine also set ACCELERATE_USE_CPU=1)."
        )
    return accelerator


class Trainer:
    """Reusable Accelerate training loop; see the module docstring."""

    def __init__(
        self,
        model: torch.nn.Module,
        config: TrainingConfig,
        train_dataset,
        eval_dataset=None,
        *,
        tokenizer=None,
        collate_fn: Callable = collate_blocks,
        param_groups: list[dict] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler=None,
        accelerator=None,
        callbacks: Iterable[TrainerCallback] = (),
        sample_fn: Callable | None = None,
        periodic_eval_dataset=None,
        tracker_config: dict | None = None,
        run_name: str = "wren",
    ):
        config.validate()
        self.config = config
        self.tokenizer = tokenizer
        self.callbacks = list(callbacks)
        self.sample_fn = sample_fn
        self.run_name = run_name
        self.tracker_config = tracker_config if tracker_config is not None else config_to_dict(config)
        self.output_dir = Path(config.output_dir)
        self.state = TrainState()
        self.accelerator = accelerator or make_accelerator(config)
        acc = self.accelerator

        if config.gradient_checkpointing:
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if hasattr(model, "config"):
                model.config.use_cache = False
        if config.compile:
            from .compile import compile_for_training

            compile_for_training(model)

        if optimizer is None:
            groups = param_groups if param_groups is not None else weight_decay_groups(model, config.weight_decay)
            self.param_group_names = [g.get("names", []) for g in groups]
            optimizer = build_optimizer(groups, config)
        if scheduler is None:
            scheduler = build_scheduler(optimizer, config)

        self.sampler = EpochSampler(len(train_dataset), seed=config.seed)
        train_loader = DataLoader(
            train_dataset,
            batch_size=config.per_device_batch_size,
            sampler=self.sampler,
            drop_last=True,
            collate_fn=collate_fn,
            num_workers=config.dataloader_num_workers,
            generator=torch.Generator().manual_seed(config.seed),
        )
        loaders = [train_loader]
        self._eval_index = self._periodic_index = None
        if eval_dataset is not None:
            loaders.append(self._eval_loader(eval_dataset, collate_fn))
            self._eval_index = len(loaders) - 1
            if periodic_eval_dataset is not None:
                loaders.append(self._eval_loader(periodic_eval_dataset, collate_fn))
                self._periodic_index = len(loaders) - 1
        prepared = acc.prepare(model, optimizer, *loaders, scheduler)
        self.model, self.optimizer = prepared[0], prepared[1]
        self.train_dataloader = prepared[2]
        self.eval_dataloader = prepared[2 + self._eval_index] if self._eval_index is not None else None
        self.periodic_eval_dataloader = (
            prepared[2 + self._periodic_index] if self._periodic_index is not None else self.eval_dataloader
        )
        self.scheduler = prepared[-1]
        self.checkpoints = CheckpointManager(self.output_dir / CHECKPOINT_DIR, keep_last=config.keep_last)

        batches_per_epoch = len(self.train_dataloader)
        if batches_per_epoch < 1:
            raise ValueError(
                f"The training set ({len(train_dataset)} sequences) is smaller than one global batch "
                f"({config.per_device_batch_size} x {acc.num_processes} processes); use more data or a smaller batch."
            )

    def _eval_loader(self, dataset, collate_fn) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.config.eval_batch_size,
            shuffle=False,
            collate_fn=collate_fn,
            num_workers=self.config.dataloader_num_workers,
        )

    # ------------------------------------------------------------------------------------------
    @property
    def unwrapped_model(self):
        return self.accelerator.unwrap_model(self.model)

    @property
    def global_batch_size(self) -> int:
        c = self.config
        return c.per_device_batch_size * c.gradient_accumulation_steps * self.accelerator.num_processes

    def _batches(self):
        """Endless micro-batches across epochs; epoch order from (seed, epoch), resumable mid-epoch."""
        acc = self.accelerator
        per_batch = self.config.per_device_batch_size * acc.num_processes
        while True:
            loader = self.train_dataloader
            skip = self.state.samples_in_epoch // per_batch
            if self.state.samples_in_epoch % per_batch:
                logger.warning("Resuming with a different batch layout: the data position is rounded down.")
            if skip >= len(loader):
                self.state.epoch += 1
                self.state.samples_in_epoch = 0
                continue
            # Accelerate's loader re-applies its own epoch counter to the sampler on every `iter()`;
            # set it through the loader (a skipping loader copies it) so the order is (seed, epoch)'s.
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(self.state.epoch)
            self.sampler.set_epoch(self.state.epoch)
            if skip:
                loader = acc.skip_first_batches(loader, skip)
            for batch in loader:
                self.state.samples_in_epoch += per_batch
                yield batch
            self.state.epoch += 1
            self.state.samples_in_epoch = 0

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    # ------------------------------------------------------------------------------------------
    def resume_from(self, checkpoint: str | os.PathLike) -> None:
        """Load model/optimizer/scheduler/RNG states and the loop position from a checkpoint folder."""
        checkpoint = Path(checkpoint)
        try:
            self.accelerator.load_state(str(checkpoint))
        except (RuntimeError, KeyError, ValueError) as error:
            raise ValueError(
                f"Cannot resume from {checkpoint}: it does not match this model/optimizer ({str(error)[:300]}). "
                "Start over with --resume never, or use another --output-dir."
            ) from error
        saved = read_trainer_state(checkpoint)
        self.state = TrainState(**{k: v for k, v in saved["state"].items() if k in TrainState.__dataclass_fields__})
        self._truncate_metrics(self.state.global_step)
        if self.accelerator.is_main_process:
            logger.info("Resumed from %s at step %d", checkpoint, self.state.global_step)

    def _maybe_resume(self) -> None:
        setting = self.config.resume
        if setting == "never":
            return
        checkpoint = self.checkpoints.latest() if setting == "auto" else Path(setting)
        if checkpoint is not None:
            self.resume_from(checkpoint)
        else:
            self._truncate_metrics(0)  # a run that died before its first checkpoint starts over

    def save_checkpoint(self) -> Path:
        step = self.state.global_step
        trainer_state = {
            "state": asdict(self.state),
            "num_processes": self.accelerator.num_processes,
            "global_batch_size": self.global_batch_size,
            "config": config_to_dict(self.config),
        }
        path = self.checkpoints.save(self.accelerator, step, trainer_state)
        self._call("on_save", step, path)
        return path

    # ------------------------------------------------------------------------------------------
    def _write_metrics(self, record: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        with open(self.output_dir / METRICS_FILE, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def _truncate_metrics(self, step: int) -> None:
        """After resuming at `step`, forget records the interrupted run wrote past it."""
        path = self.output_dir / METRICS_FILE
        if not self.accelerator.is_main_process or not path.exists():
            return
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line).get("step", 0) <= step]
        path.write_text("".join(line + "\n" for line in kept))

    def log(self, metrics: dict, step: int) -> None:
        """To the trackers and `metrics.jsonl` (main process)."""
        self.accelerator.log(metrics, step=step)
        self._write_metrics({"step": step, **metrics})

    def _init_trackers(self) -> None:
        if not self.accelerator.trackers and self.accelerator.log_with:
            flat = {
                k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v))
                for k, v in self.tracker_config.items()
                if v is not None
            }
            self.accelerator.init_trackers(self.run_name, config=flat)

    # ------------------------------------------------------------------------------------------
    def _forward(self, batch: dict):
        batch = dict(batch)
        batch.pop("num_chars", None)
        return self.model(**batch)

    def train(self) -> TrainState:
        acc, config = self.accelerator, self.config
        self._maybe_resume()
        self._init_trackers()
        self._call("on_train_begin")
        router_bias = getattr(getattr(self.unwrapped_model, "config", None), "router_bias_update_rate", 0) > 0

        from tqdm.auto import tqdm

        progress = tqdm(
            total=config.max_steps,
            initial=self.state.global_step,
            disable=not (acc.is_main_process and config.progress_bar),
            desc="train",
            unit="step",
            dynamic_ncols=True,
        )
        batches = self._batches()
        window = {"loss": 0.0, "aux_loss": 0.0, "z_loss": 0.0, "steps": 0, "tokens": 0}
        has_router = False
        window_start = time.perf_counter()
        run_start = time.perf_counter() - self.state.elapsed_s
        last_saved = self.state.global_step if self.checkpoints.latest() is not None else -1
        grad_norm = None
        self.model.train()
        while self.state.global_step < config.max_steps:
            step_loss = torch.zeros((), device=acc.device)
            step_aux = torch.zeros((), device=acc.device)
            step_z = torch.zeros((), device=acc.device)
            for _ in range(config.gradient_accumulation_steps):
                batch = next(batches)
                with acc.accumulate(self.model):
                    outputs = self._forward(batch)
                    loss = outputs.loss
                    acc.backward(loss)
                    step_loss += loss.detach().float()
                    if getattr(outputs, "aux_loss", None) is not None:
                        has_router = True
                        step_aux += outputs.aux_loss.detach().float()
                        step_z += outputs.z_loss.detach().float()
                    if acc.sync_gradients:
                        if config.max_grad_norm > 0:
                            grad_norm = acc.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
                        self.optimizer.step()
                        self.scheduler.step()
                        self.optimizer.zero_grad(set_to_none=True)
                mask = batch.get("attention_mask")
                # Kept on the device until the log step: int() here would stall every micro-batch on a GPU.
                window["tokens"] += mask.sum() if mask is not None else batch["input_ids"].numel()
            if router_bias:
                reduce = (lambda t: acc.reduce(t, reduction="sum")) if acc.num_processes > 1 else None
                self.unwrapped_model.update_router_bias(reduce=reduce)
            self.state.global_step += 1
            step = self.state.global_step
            gas = config.gradient_accumulation_steps
            window["loss"] += step_loss / gas
            window["aux_loss"] += step_aux / gas
            window["z_loss"] += step_z / gas
            window["steps"] += 1
            logs: dict = {}
            if config.log_every and (step % config.log_every == 0 or step == config.max_steps):
                logs = self._window_logs(window, grad_norm, has_router, time.perf_counter() - window_start)
                self.state.tokens_seen += logs.pop("_tokens")
                self.state.elapsed_s = time.perf_counter() - run_start
                self.log(logs, step)
                progress.set_postfix(
                    loss=f"{logs['train/loss']:.3f}",
                    lr=f"{logs['train/lr']:.2e}",
                    tok_s=f"{logs['train/tokens_per_s']:.0f}",
                )
                window = {"loss": 0.0, "aux_loss": 0.0, "z_loss": 0.0, "steps": 0, "tokens": 0}
                window_start = time.perf_counter()
            progress.update(1)
            self._call("on_step_end", step, logs)
            if self.eval_dataloader is not None and config.eval_every and step % config.eval_every == 0:
                self.evaluate(step=step, periodic=True)
                self.model.train()
            if config.save_every and step % config.save_every == 0:
                self.state.elapsed_s = time.perf_counter() - run_start
                self.save_checkpoint()
                last_saved = step
        self.state.elapsed_s = time.perf_counter() - run_start
        if last_saved != self.state.global_step:
            self.save_checkpoint()
        progress.close()
        batches.close()
        self._call("on_train_end")
        return self.state

    def _window_logs(self, window: dict, grad_norm, has_router: bool, seconds: float) -> dict:
        acc = self.accelerator
        steps = max(window["steps"], 1)
        values = torch.stack(
            [
                torch.as_tensor(window["loss"], device=acc.device, dtype=torch.float32).reshape(()),
                torch.as_tensor(window["aux_loss"], device=acc.device, dtype=torch.float32).reshape(()),
                torch.as_tensor(window["z_loss"], device=acc.device, dtype=torch.float32).reshape(()),
            ]
        )
        values = acc.reduce(values, reduction="mean") / steps
        tokens = int(acc.reduce(torch.as_tensor(window["tokens"], device=acc.device), reduction="sum"))
        logs = {
            "train/loss": float(values[0]),
            "train/lr": float(self.scheduler.get_last_lr()[0]),
            "train/tokens_per_s": tokens / max(seconds, 1e-9),
            "train/epoch": self.state.epoch,
            "_tokens": tokens,
        }
        if grad_norm is not None:
            logs["train/grad_norm"] = float(grad_norm)
        if has_router:
            cfg = self.unwrapped_model.config
            aux, z = float(values[1]), float(values[2])
            logs["train/aux_loss"] = aux
            logs["train/z_loss"] = z
            logs["train/lm_loss"] = logs["train/loss"] - cfg.router_aux_loss_coef * aux - cfg.router_z_loss_coef * z
        return logs

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, step: int | None = None, periodic: bool = False, samples: bool = True) -> dict:
        """Validation loss (mean NLL per target token), perplexity and, with `num_chars`, bits per char."""
        acc = self.accelerator
        loader = self.periodic_eval_dataloader if periodic else self.eval_dataloader
        if loader is None:
            raise ValueError("No evaluation dataset was given to the Trainer.")
        step = self.state.global_step if step is None else step
        self.model.eval()
        total_nll = torch.zeros((), dtype=torch.float64, device=acc.device)
        total_tokens = torch.zeros((), dtype=torch.float64, device=acc.device)
        total_chars = torch.zeros((), dtype=torch.float64, device=acc.device)
        has_chars = False
        for batch in loader:
            num_chars = batch.get("num_chars")
            labels = batch["labels"]
            inputs = {k: v for k, v in batch.items() if k not in ("labels", "num_chars")}
            logits = self.model(**inputs, use_cache=False).logits
            nll, count = per_sequence_nll(logits, labels)
            if num_chars is None:
                num_chars = torch.zeros_like(count)
            else:
                has_chars = True
            nll, count, num_chars = acc.gather_for_metrics((nll, count, num_chars.to(count.dtype)))
            total_nll += nll.double().sum()
            total_tokens += count.double().sum()
            total_chars += num_chars.double().sum()
        loss = float(total_nll / total_tokens.clamp(min=1))
        metrics = {
            "eval/loss": loss,
            "eval/perplexity": math.exp(min(loss, 700.0)),
            "eval/tokens": int(total_tokens),
        }
        if has_chars:
            metrics["eval/bits_per_char"] = bits_per_character(float(total_nll), int(total_chars))
            metrics["eval/chars"] = int(total_chars)
        if not periodic:
            metrics = {k.replace("eval/", "eval_full/"): v for k, v in metrics.items()}
        texts = self.generate_samples(step) if samples else []
        self.log(metrics, step)
        if texts and acc.is_main_process:
            self.log({f"samples/{i}": text for i, text in enumerate(texts)}, step)
        if acc.is_main_process:
            from tqdm.auto import tqdm

            shown = ", ".join(f"{k.split('/')[-1]} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            tqdm.write(f"[step {step}] {shown}")
            for text in texts:
                tqdm.write(f"  sample: {text!r}")
        self._call("on_evaluate", step, metrics)
        return metrics

    def generate_samples(self, step: int) -> list[str]:
        """Short generations on the main process, with their own RNG (the training RNG is untouched)."""
        acc = self.accelerator
        from accelerate.utils import DistributedType

        if acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            return []  # sharded parameters: generation would need every rank
        texts: list[str] = []
        if acc.is_main_process:
            model = self.unwrapped_model
            was_training = model.training
            model.eval()
            devices = [acc.device] if acc.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.config.seed + step)
                if self.sample_fn is not None:
                    texts = list(self.sample_fn(model, step))
                elif self.tokenizer is not None and self.config.sample_prompts:
                    texts = generate_text(
                        model,
                        self.tokenizer,
                        self.config.sample_prompts,
                        max_new_tokens=self.config.sample_max_new_tokens,
                        temperature=self.config.sample_temperature,
                        top_k=self.config.sample_top_k,
                    )
            model.train(was_training)
        acc.wait_for_everyone()
        return texts

    # ------------------------------------------------------------------------------------------
    def save_model(self, output_dir: str | os.PathLike, tokenizer=None, generation_config=None) -> None:
        """`save_pretrained` of the unwrapped model (full state gathered under FSDP/DeepSpeed) + tokenizer."""
        acc = self.accelerator
        acc.wait_for_everyone()
        state_dict = acc.get_state_dict(self.model)
        model = self.unwrapped_model
        if generation_config is not None:
            model.generation_config = generation_config
        if acc.is_main_process:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
        model.save_pretrained(
            output_dir, is_main_process=acc.is_main_process, save_function=acc.save, state_dict=state_dict
        )
        if tokenizer is not None and acc.is_main_process:
            tokenizer.save_pretrained(output_dir)
        acc.wait_for_everyone()

    def end(self) -> None:
        """Finish trackers, destroy the process group, and free the DDP reducer safely (see below)."""
        self.accelerator.end_training()
        release_ddp_reducer(self.model)


def release_ddp_reducer(model) -> None:
    """Free a DDP wrapper's C++ reducer while the wrapper's Python `process_group` still holds the group.

    Otherwise the reducer can drop the last reference to a gloo process group when the wrapper is garbage
    collected: the group's destructor then joins gloo's worker threads with the GIL held, while a worker
    finishing the last collective waits for the GIL to free a tensor — a deadlock that hung processes at
    exit (torch 2.13, CPU). Released from Python instead, the group's destructor runs without the GIL.
    """
    if not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return
    for attribute in ("logger", "reducer"):  # the C++ logger holds the reducer too
        if attribute in model.__dict__:
            delattr(model, attribute)


def per_sequence_nll(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100):
    """Summed next-token NLL (nats) and target count per row; logits[t] predicts labels[t+1]."""
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:].to(shift_logits.device)
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=ignore_index,
        reduction="none",
    ).view(shift_labels.shape)
    valid = shift_labels != ignore_index
    return (nll * valid).sum(dim=1), valid.sum(dim=1)


def generate_text(model, tokenizer, prompts: list[str], max_new_tokens=60, temperature=0.8, top_k=40) -> list[str]:
    """Sample a continuation of each prompt (prompt included in the returned text)."""
    device = next(model.parameters()).device
    texts = []
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        if tokenizer.eos_token_id is not None:
            # Documents are packed as `EOS doc`; starting from EOS makes the prompt a document start.
            ids = torch.cat([torch.tensor([[tokenizer.eos_token_id]]), ids], dim=1)
        ids = ids.to(device)
        output = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            temperature=temperature,
            top_k=top_k,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        texts.append(tokenizer.decode(output[0, 1:], skip_special_tokens=True))
    return texts


__all__ = [
    "CHECKPOINT_DIR",
    "METRICS_FILE",
    "TrainState",
    "Trainer",
    "TrainerCallback",
    "generate_text",
    "make_accelerator",
    "per_sequence_nll",
    "resolve_mixed_precision",
    "resolve_trackers",
]
