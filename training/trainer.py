"""The Accelerate training loop shared by `wren pretrain` and `wren finetune`.

    trainer = Trainer(model, config, train_dataset, eval_dataset, tokenizer=tok, callbacks=moe_callbacks(model))
    trainer.train()                       # resumes from the newest checkpoint when config.resume == "auto"
    metrics = trainer.evaluate()          # loss, perplexity (+ bits per character when batches carry num_chars)
    trainer.save_model(out_dir, tokenizer=tok, generation_config=gen)
    trainer.end()

The loop: gradient accumulation (`accelerator.accumulate`), mixed precision where the hardware has it,
gradient clipping, AdamW with weight-decay groups or Muon + AdamW (`config.optimizer`; or caller-given
groups), warmup + cosine or warmup-stable-decay (or a caller-given scheduler), optional gradient
checkpointing, periodic evaluation with sample generations,
a tqdm bar on the main process, and rotating checkpoints from which `train()` continues exactly (the
data order is a function of (seed, epoch) and the consumed batches are skipped; model/optimizer/
scheduler/RNG states come from `accelerator.save_state`). The parts live in their own modules:
accelerator.py (the `Accelerator`), engine_check.py (the engine asked for = the engine running, and what
each rank holds), fsdp.py (FSDP2, applied by wren itself on CPU), nodes.py (who writes what on several
nodes), checkpointing.py, tracking.py (trackers and `metrics.jsonl`),
validation.py (likelihood and samples), callbacks.py (the hooks), moe.py (router losses and bias update,
added by `wren pretrain` / `wren finetune` for MoE models).

Batches are dicts of tensors with `input_ids` and `labels` (and optionally `attention_mask`);
a `num_chars` entry (characters spelled by the target tokens of each row) is removed before the
forward and turns on bits-per-character in `evaluate()`.
"""

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor
from torch.utils.data import DataLoader

from .accelerator import finish, make_accelerator
from .callbacks import TrainerCallback
from .checkpointing import (
    CHECKPOINT_DIR,
    CheckpointManager,
    checkpoint_record,
    restore_checkpoint,
    save_pretrained_model,
)
from .config import TrainingConfig, config_to_dict
from .data import EpochSampler, collate_blocks
from .deepspeed_engine import check_engine_batch, is_deepspeed
from .engine_check import (
    check_engine,
    describe_report,
    engine_report,
    planned_engine,
    requested_engine,
    running_engine,
)
from .fsdp import TorchFsdp, is_fsdp2_model, mark_for_generation, rebind_parameters, wren_applies_fsdp
from .nodes import NodeLayout, check_sharded_checkpoints
from .optim import build_optimizer, build_scheduler, parameter_groups, resolve_optimizer
from .tracking import METRICS_FILE, LossWindow, MetricsLog
from .validation import sample_texts, validation_metrics

logger = logging.getLogger(__name__)


@dataclass
class TrainState:
    global_step: int = 0
    epoch: int = 0
    samples_in_epoch: int = 0  # training sequences consumed in the current epoch, all processes together
    tokens_seen: int = 0
    elapsed_s: float = 0.0

    @classmethod
    def from_dict(cls, saved: dict) -> "TrainState":
        names = {field.name for field in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})


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
        node_layout: NodeLayout | None = None,
    ):
        config.validate()
        self.config = config
        self.tokenizer = tokenizer
        self.callbacks = list(callbacks)
        self.sample_fn = sample_fn
        self.output_dir = Path(config.output_dir)
        self.state = TrainState()
        self.accelerator = acc = accelerator or make_accelerator(config)
        request, planned = requested_engine(), planned_engine(acc)
        check_engine(request, planned)
        self.nodes = node_layout or NodeLayout.detect(acc, self.output_dir)
        check_sharded_checkpoints(self.nodes, planned, self.output_dir)
        if not self.nodes.shared:  # each node's local main process writes the node's copy of Accelerate's files
            acc.project_configuration.save_on_each_node = True
        self.metrics_log = MetricsLog(
            acc, self.output_dir, run_name, tracker_config if tracker_config is not None else config_to_dict(config)
        )

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

        # FSDP2 on a CPU process group: Accelerate would wrap the model in DDP, so wren shards it itself, before the
        # optimizer is built on the (then DTensor) parameters; Accelerate prepares only the loaders and scheduler.
        self.torch_fsdp = TorchFsdp(acc) if wren_applies_fsdp(acc) else None
        if self.torch_fsdp is not None:
            names_before = {id(param): name for name, param in model.named_parameters()}
            model = self.torch_fsdp.shard(model)
            for groups in (param_groups, optimizer.param_groups if optimizer is not None else None):
                if groups is not None:
                    rebind_parameters(groups, names_before, model)
        # The optimizer `--optimizer auto` (or an explicit choice) means under this engine; the run log names it.
        self.optimizer_name = resolve_optimizer(config, planned_engine(acc)) if optimizer is None else "given"
        if optimizer is None:
            resolved = replace(config, optimizer=self.optimizer_name)
            groups = param_groups if param_groups is not None else parameter_groups(model, resolved)
            self.param_group_names = [g.get("names", []) for g in groups]
            optimizer = build_optimizer(groups, resolved)
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
        # The periodic set (a subset for `evaluate(periodic=True)`) only counts next to a full evaluation set.
        eval_sets = [eval_dataset, periodic_eval_dataset] if eval_dataset is not None else []
        eval_loaders = [self._eval_loader(dataset, collate_fn) for dataset in eval_sets if dataset is not None]
        if self.torch_fsdp is not None:
            self.model, self.optimizer = model, optimizer
            self.torch_fsdp.optimizer = optimizer
            self.train_dataloader, *eval_loaders, self.scheduler = acc.prepare(train_loader, *eval_loaders, scheduler)
        else:
            self.model, self.optimizer, self.train_dataloader, *eval_loaders, self.scheduler = acc.prepare(
                model, optimizer, train_loader, *eval_loaders, scheduler
            )
        check_engine(request, running_engine(acc, self.model))
        if is_deepspeed(acc):
            check_engine_batch(acc, self.model, config)
        if is_fsdp2_model(self.model):
            mark_for_generation(self.model)
        self.eval_dataloader = eval_loaders[0] if eval_loaders else None
        self.periodic_eval_dataloader = eval_loaders[-1] if eval_loaders else None
        self.checkpoints = CheckpointManager(
            self.output_dir / CHECKPOINT_DIR,
            keep_last=config.keep_last,
            layout=self.nodes,
            engine_state=self.torch_fsdp,
        )
        self.engine = engine_report(acc, self.model)
        if acc.is_main_process:
            logger.info(describe_report(self.engine))

        if len(self.train_dataloader) < 1:
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

    @property
    def unwrapped_model(self):
        return self.accelerator.unwrap_model(self.model)

    @property
    def global_batch_size(self) -> int:
        c = self.config
        return c.per_device_batch_size * c.gradient_accumulation_steps * self.accelerator.num_processes

    def _call(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    def is_log_step(self, step: int) -> bool:
        """Whether training step `step` (counted from 1) logs its figures: every `log_every` steps, and the last."""
        log_every = self.config.log_every
        return bool(log_every) and (step % log_every == 0 or step == self.config.max_steps)

    def _forward_kwargs(self, step: int) -> dict:
        """What the callbacks ask to pass to the model's forward during training step `step`."""
        logging = self.is_log_step(step)
        kwargs: dict = {}
        for callback in self.callbacks:
            kwargs.update(callback.forward_kwargs(self, step, logging))
        return kwargs

    def log(self, metrics: dict, step: int) -> None:
        """To the trackers and `metrics.jsonl` (main process)."""
        self.metrics_log.log(metrics, step)

    # ------------------------------------------------------------------------------------------
    def resume_from(self, checkpoint: str | os.PathLike) -> None:
        """Load model/optimizer/scheduler/RNG states and the loop position from a checkpoint folder."""
        self.state = TrainState.from_dict(restore_checkpoint(self.accelerator, checkpoint, self.torch_fsdp))
        self.metrics_log.truncate(self.state.global_step)
        self._say(f"Resuming from {checkpoint} at step {self.state.global_step} of {self.config.max_steps}.")

    def _say(self, message: str) -> None:
        if self.accelerator.is_main_process:
            from tqdm.auto import tqdm

            tqdm.write(message)

    def _maybe_resume(self) -> bool:
        """Resume per `config.resume`; True when a checkpoint was loaded."""
        if self.checkpoints._is_writer(self.accelerator):
            leftovers = self.checkpoints.remove_leftovers()
            if leftovers:
                names = ", ".join(path.name for path in leftovers)
                self._say(f"Removed unfinished checkpoints that an interrupted run left: {names}.")
        self.accelerator.wait_for_everyone()
        setting = self.config.resume
        if setting == "never":
            return False
        # On several nodes without a shared folder: the newest step that every node completed.
        checkpoint = self.checkpoints.latest_common() if setting == "auto" else Path(setting)
        if checkpoint is not None:
            self.resume_from(checkpoint)
            return True
        self.metrics_log.truncate(0)  # a run that died before its first checkpoint starts over
        return False

    def save_checkpoint(self) -> Path:
        step = self.state.global_step
        record = checkpoint_record(
            asdict(self.state), self.accelerator, self.global_batch_size, config_to_dict(self.config)
        )
        path = self.checkpoints.save(self.accelerator, step, record)
        self._call("on_save", step, path)
        return path

    # ------------------------------------------------------------------------------------------
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

    def _gradient_sync(self):
        """Under wren's own FSDP2, gradients are reduce-scattered on the last micro-batch of a step only
        (enter inside `accelerator.accumulate`, which decides `sync_gradients`)."""
        if self.torch_fsdp is None:
            return contextlib.nullcontext()
        return self.torch_fsdp.gradient_sync(self.accelerator.sync_gradients)

    def _report_engine(self) -> None:
        """The engine, world size and per-rank parameter/optimizer bytes, into the run log (every process calls)."""
        self.engine = engine_report(self.accelerator, self.model, self.optimizer)
        if self.accelerator.is_main_process:
            from tqdm.auto import tqdm

            tqdm.write(describe_report(self.engine))

    def _forward(self, batch: dict, **kwargs):
        batch = dict(batch)
        batch.pop("num_chars", None)
        return self.model(**batch, **kwargs)

    def train(self) -> TrainState:
        acc, config = self.accelerator, self.config
        resumed = self._maybe_resume()
        self.metrics_log.start()
        self._call("on_train_begin")

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
        window = LossWindow()
        run_start = time.perf_counter() - self.state.elapsed_s
        last_saved = self.state.global_step if resumed else -1
        first_step = True
        grad_norm = None
        self.model.train()
        while self.state.global_step < config.max_steps:
            step_loss = torch.zeros((), device=acc.device)
            forward_kwargs = self._forward_kwargs(self.state.global_step + 1)
            for _ in range(config.gradient_accumulation_steps):
                batch = next(batches)
                with acc.accumulate(self.model), self._gradient_sync():
                    outputs = self._forward(batch, **forward_kwargs)
                    acc.backward(outputs.loss)
                    step_loss += outputs.loss.detach().float()
                    if acc.sync_gradients:
                        if config.max_grad_norm > 0:
                            grad_norm = acc.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
                            if isinstance(grad_norm, DTensor):  # sharded gradients: the norm is a DTensor too
                                grad_norm = grad_norm.full_tensor()
                        self.optimizer.step()
                        self.scheduler.step()
                        self.optimizer.zero_grad(set_to_none=True)
                self._call("on_micro_batch_end", outputs)
                window.add_batch(batch)
            self._call("on_optimizer_step")
            if first_step:  # the optimizer state exists from the first step on
                self._report_engine()
                first_step = False
            self.state.global_step += 1
            step = self.state.global_step
            window.add_step(step_loss / config.gradient_accumulation_steps)
            logs: dict = {}
            if self.is_log_step(step):
                logs, tokens = window.logs(acc, self.scheduler.get_last_lr()[0], self.state.epoch, grad_norm)
                self._call("on_log", step, logs)
                self.state.tokens_seen += tokens
                self.state.elapsed_s = time.perf_counter() - run_start
                self.log(logs, step)
                progress.set_postfix(
                    loss=f"{logs['train/loss']:.3f}",
                    lr=f"{logs['train/lr']:.2e}",
                    tok_s=f"{logs['train/tokens_per_s']:.0f}",
                )
                window.reset()
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

    # ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, step: int | None = None, periodic: bool = False, samples: bool = True) -> dict:
        """Validation loss (mean NLL per target token), perplexity and, with `num_chars`, bits per char.

        `periodic`: the periodic evaluation set (`eval/*` keys), else the full one (`eval_full/*`)."""
        acc = self.accelerator
        loader = self.periodic_eval_dataloader if periodic else self.eval_dataloader
        if loader is None:
            raise ValueError("No evaluation dataset was given to the Trainer.")
        step = self.state.global_step if step is None else step
        self.model.eval()
        figures = validation_metrics(self.model, loader, gather=acc.gather_for_metrics)
        metrics = {f"{'eval' if periodic else 'eval_full'}/{name}": value for name, value in figures.items()}
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
        return sample_texts(
            self.accelerator,
            self.unwrapped_model,
            self.config,
            step,
            sample_fn=self.sample_fn,
            tokenizer=self.tokenizer,
        )

    # ------------------------------------------------------------------------------------------
    def save_model(self, output_dir: str | os.PathLike, tokenizer=None, generation_config=None) -> None:
        """`save_pretrained` of the unwrapped model (full state gathered under FSDP/DeepSpeed) + tokenizer."""
        save_pretrained_model(self.accelerator, self.model, output_dir, tokenizer, generation_config)

    def end(self) -> None:
        """Finish trackers, destroy the process group, and free the DDP reducer safely."""
        finish(self.accelerator, self.model)


__all__ = ["CHECKPOINT_DIR", "METRICS_FILE", "TrainState", "Trainer", "TrainerCallback"]
