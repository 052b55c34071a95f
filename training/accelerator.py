"""The `Accelerator` behind `wren pretrain` / `wren finetune`, and its clean shutdown.

accelerator = make_accelerator(config)     # mixed precision, gradient accumulation, trackers, DDP options
...
finish(accelerator, prepared_model)        # end trackers and the process group, free the DDP reducer safely
"""

import os

import torch

from .config import TrainingConfig
from .deepspeed_engine import deepspeed_accelerator_kwargs, deepspeed_requested
from .engine_check import check_engine, check_request, planned_engine, requested_engine


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
    """An `Accelerator` configured for the training loop (also usable on its own).

    On a machine without a GPU it passes `cpu=True`, so `accelerate launch --multi_gpu --num_processes N`
    runs N gloo data-parallel processes (MULTI_CPU) instead of N unrelated single processes.
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration

    request = requested_engine()
    check_request(request)
    if config.cpu_threads:
        torch.set_num_threads(config.cpu_threads)
    has_gpu = torch.cuda.is_available() or (hasattr(torch, "xpu") and torch.xpu.is_available())
    if not has_gpu:
        # Accelerate imports DeepSpeed (when installed) on every unwrap_model; named, its CPU accelerator is chosen
        # without the warning that guessing it prints into every CPU run's output.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    trackers = resolve_trackers(config.report_to)
    engine_kwargs = {"cpu": not has_gpu}
    if deepspeed_requested():  # ZeRO-2/3, on CPU too: see deepspeed_engine.py
        engine_kwargs = deepspeed_accelerator_kwargs(config, has_gpu)
    handlers = engine_kwargs.pop("kwargs_handlers", [])
    accelerator = Accelerator(
        **engine_kwargs,
        mixed_precision=resolve_mixed_precision(config.mixed_precision),
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=config.gradient_accumulation_steps, sync_with_dataloader=False
        ),
        # The loop steps the scheduler once per optimizer step itself (Accelerate would step it once per process).
        step_scheduler_with_optimizer=False,
        log_with=trackers or None,
        project_config=ProjectConfiguration(
            project_dir=config.output_dir, logging_dir=os.path.join(config.output_dir, "logs")
        ),
        # MoE routers keep per-rank load counters in buffers; rank 0 must not overwrite them.
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False), *handlers],
        **kwargs,
    )
    # A launch that asked for FSDP/ZeRO/DDP and would run something weaker stops here, before any work.
    check_engine(request, planned_engine(accelerator))
    return accelerator


def finish(accelerator, model) -> None:
    """Finish the trackers, destroy the process group, and free the DDP reducer of `model` safely."""
    accelerator.wait_for_everyone()  # under gloo a rank leaving early can abort the others' last collective
    accelerator.end_training()
    release_ddp_reducer(model)


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


__all__ = ["finish", "make_accelerator", "release_ddp_reducer", "resolve_mixed_precision", "resolve_trackers"]
