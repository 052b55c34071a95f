"""Which distributed engine a launch asks for, which one actually runs, and a hard stop when they differ.

    request = requested_engine()                          # from `accelerate launch`'s environment (its config file)
    check_request(request)                                # engines wren cannot run at all (FSDP1)
    check_engine(request, planned_engine(accelerator))    # at start, before any data is read
    check_engine(request, running_engine(accelerator, prepared_model))   # after `prepare`, from the engine's objects
    report = engine_report(accelerator, model, optimizer)  # per-rank parameter / optimizer bytes, for the run log

Engines are named `single` (one process), `ddp`, `fsdp1`, `fsdp2`, `zero1`, `zero2`, `zero3`; `independent`
(N launched processes that each train alone) and `unsynchronised` (N processes, no gradient exchange) are what a
misconfigured launch silently turns into. A launch that asks for an engine and would run a weaker one (DDP instead
of FSDP/ZeRO, or N independent processes) raises `EngineMismatchError` naming why and what to run instead.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

SHARDED_ENGINES = ("fsdp1", "fsdp2", "zero1", "zero2", "zero3")
ENGINE_LABELS = {
    "single": "a single process",
    "ddp": "data parallelism (DDP)",
    "fsdp1": "FSDP1",
    "fsdp2": "FSDP2 (fully_shard)",
    "zero1": "DeepSpeed ZeRO-1",
    "zero2": "DeepSpeed ZeRO-2",
    "zero3": "DeepSpeed ZeRO-3",
    "independent": "independent processes that each train alone on all the data",
    "unsynchronised": "processes that never exchange gradients",
}
# What to run instead, per requested engine.
HOW_TO_RUN = {
    "ddp": (
        "Launch with `accelerate launch --multi_gpu --num_processes N -m wrenlm.training.pretrain_cli` and let wren "
        "build the Accelerator (`make_accelerator`; a script of your own needs `Accelerator(cpu=True)` or "
        "ACCELERATE_USE_CPU=1 on a CPU-only machine)."
    ),
    "fsdp1": (
        "wren trains with FSDP2 only: set `fsdp_version: 2` in the accelerate config (the shipped `fsdp` config does; "
        "`wren pretrain --accelerate-configs` prints its path)."
    ),
    "fsdp2": (
        "Launch with `accelerate launch --config_file <fsdp.yaml> --num_processes N -m wrenlm.training.pretrain_cli` "
        "and let wren build the Accelerator (`make_accelerator`): on GPUs Accelerate's FSDP plugin shards, on CPU "
        "wren applies torch's fully_shard itself."
    ),
    "zero": (
        "Launch with `accelerate launch --config_file <deepspeed_zeroN.yaml> --num_processes N -m "
        "wrenlm.training.pretrain_cli` and let wren build the Accelerator (`make_accelerator`)."
    ),
}


class EngineMismatchError(ValueError):
    """The launch asked for one engine and would run a weaker one (a user error: the CLI prints one line)."""


@dataclass(frozen=True)
class EngineRequest:
    engine: str  # one of the engine names above
    origin: str  # where the request came from, for messages
    world_size: int  # processes the launcher started (WORLD_SIZE)


def _flag(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "false").strip().lower() in ("1", "true", "yes")


def requested_engine(environ: Mapping[str, str] | None = None) -> EngineRequest:
    """The engine `accelerate launch` (its config file or flags) asked for, read from the environment it sets."""
    environ = os.environ if environ is None else environ
    world_size = int(environ.get("WORLD_SIZE", "1") or 1)
    if _flag(environ, "ACCELERATE_USE_FSDP"):
        version = environ.get("FSDP_VERSION", "1")
        return EngineRequest(
            "fsdp2" if version == "2" else "fsdp1",
            f"accelerate config: distributed_type FSDP, fsdp_version {version}",
            world_size,
        )
    if _flag(environ, "ACCELERATE_USE_DEEPSPEED"):
        stage = environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "")
        engine = f"zero{stage}" if stage in ("1", "2", "3") else "zero2"
        return EngineRequest(
            engine, f"accelerate config: distributed_type DEEPSPEED, zero_stage {stage or '?'}", world_size
        )
    if world_size > 1:
        return EngineRequest("ddp", f"a launch of {world_size} processes", world_size)
    return EngineRequest("single", "a plain single-process run", world_size)


def _independent(accelerator) -> bool:
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > accelerator.num_processes


def planned_engine(accelerator) -> str:
    """The engine this accelerator will run, judged before `prepare` (from Accelerate's distributed type)."""
    from accelerate.utils import DistributedType

    from .fsdp import wren_applies_fsdp

    kind = accelerator.distributed_type
    if _independent(accelerator):
        return "independent"
    if kind == DistributedType.FSDP:
        return "fsdp2" if accelerator.is_fsdp2 else "fsdp1"
    if kind == DistributedType.DEEPSPEED:
        return f"zero{accelerator.state.deepspeed_plugin.zero_stage}"
    if wren_applies_fsdp(accelerator):
        return "fsdp2"
    if kind == DistributedType.NO or accelerator.num_processes == 1:
        return "single"
    return "ddp"


def running_engine(accelerator, model) -> str:
    """The engine in use, read from the prepared model object itself (not from what was configured)."""
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP1

    if _independent(accelerator):
        return "independent"
    if isinstance(model, FSDPModule):
        return "fsdp2"
    if isinstance(model, FSDP1):
        return "fsdp1"
    if type(model).__name__ == "DeepSpeedEngine":
        return f"zero{model.zero_optimization_stage()}"
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return "ddp"
    return "single" if accelerator.num_processes == 1 else "unsynchronised"


def _reason(request: EngineRequest, actual: str) -> str:
    if actual == "independent":
        return (
            f"the launcher started {request.world_size} processes but Accelerate sees one, so each would train "
            "alone on all the data (on a CPU-only machine Accelerate needs its CPU switch to form a gloo group)"
        )
    if "fsdp1" in (request.engine, actual):
        return "wren shards with FSDP2 (per-parameter DTensor sharding); FSDP1 is not supported"
    if actual == "ddp" and request.engine in SHARDED_ENGINES:
        return (
            "Accelerate chose plain DDP for this accelerator (its FSDP/DeepSpeed plugins run only on GPU-type "
            "backends or when the Accelerator is built for them), so every rank would hold the full model"
        )
    return f"the accelerator was set up for {ENGINE_LABELS.get(actual, actual)}"


def how_to_run(engine: str) -> str:
    """What to launch to get `engine`."""
    return HOW_TO_RUN.get("zero" if engine.startswith("zero") else engine, HOW_TO_RUN["ddp"])


def check_request(request: EngineRequest) -> None:
    """Refuse a request wren cannot serve at all, before an Accelerator is built for it (FSDP1: Accelerate's FSDP1
    plugin itself fails on a machine without a GPU)."""
    if request.engine == "fsdp1":
        check_engine(request, "fsdp1")


def check_engine(request: EngineRequest, actual: str) -> None:
    """Raise `EngineMismatchError` when `actual` is weaker than what `request` asked for (or is FSDP1).

    A single process satisfies any request of a one-process launch (there is nothing to shard), and a sharded
    engine satisfies a request for plain data parallelism."""
    asked = f"This launch asks for {ENGINE_LABELS[request.engine]} ({request.origin})"
    if "fsdp1" in (request.engine, actual):
        raise EngineMismatchError(
            f"{asked}, which wren does not run: {_reason(request, actual)}. {how_to_run('fsdp1')}"
        )
    if actual == request.engine or (actual == "single" and request.world_size <= 1):
        return
    if request.engine in ("single", "ddp") and actual in ("ddp", *SHARDED_ENGINES):
        return
    raise EngineMismatchError(
        f"{asked} but would run as {ENGINE_LABELS.get(actual, actual)}: {_reason(request, actual)}. "
        + how_to_run(request.engine)
    )


# ----------------------------------------------------------------------------------------------
# What each rank holds
def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The part of `tensor` stored on this rank: a DTensor's local shard, a ZeRO-3 parameter's partition."""
    from torch.distributed.tensor import DTensor

    if isinstance(tensor, DTensor):
        return tensor.to_local()
    partition = getattr(tensor, "ds_tensor", None)
    return partition if isinstance(partition, torch.Tensor) else tensor


def _bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def parameters_are_sharded(model) -> bool:
    """True when some parameter lives partly on other ranks (FSDP2 DTensors, ZeRO-3 partitions)."""
    return any(local_tensor(p) is not p for p in model.parameters())


def generates_here(accelerator, model) -> bool:
    """Whether this process runs a generation the main process asked for: with sharded parameters every process
    takes part (each forward gathers the weights from all ranks); otherwise the main process alone."""
    return accelerator.is_main_process or parameters_are_sharded(model)


def rank_state_bytes(model, optimizer=None) -> dict[str, int]:
    """Bytes of parameters (held on this rank, and in full) and of optimizer state on this rank."""
    seen, local, full = set(), 0, 0
    for param in model.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        local += _bytes(local_tensor(param))
        full += param.numel() * param.element_size()
    state_bytes = 0
    inner = getattr(optimizer, "optimizer", optimizer)  # Accelerate's AcceleratedOptimizer wraps the torch one
    for state in getattr(inner, "state", {}).values():
        for value in state.values():
            if isinstance(value, torch.Tensor) and value.dim() > 0:  # step counters are scalars
                state_bytes += _bytes(local_tensor(value))
    return {"param_bytes": local, "full_param_bytes": full, "optimizer_bytes": state_bytes}


def engine_report(accelerator, model, optimizer=None) -> dict:
    """The engine in use, the world size and every rank's parameter / optimizer bytes (call on every process)."""
    own = rank_state_bytes(model, optimizer)
    values = torch.tensor(
        [own["param_bytes"], own["optimizer_bytes"]], dtype=torch.float64, device=accelerator.device
    ).reshape(1, 2)
    per_rank = accelerator.gather(values).reshape(-1, 2).tolist() if accelerator.num_processes > 1 else values.tolist()
    return {
        "engine": running_engine(accelerator, model),
        "world_size": accelerator.num_processes,
        "full_param_bytes": own["full_param_bytes"],
        "param_bytes_per_rank": [int(row[0]) for row in per_rank],
        "optimizer_bytes_per_rank": [int(row[1]) for row in per_rank],
    }


def describe_report(report: dict) -> str:
    """One line for the run log."""

    def mb(values) -> str:
        return "/".join(f"{v / 2**20:.2f}" for v in values)

    return (
        f"Engine: {ENGINE_LABELS.get(report['engine'], report['engine'])}, world size {report['world_size']}; "
        f"per-rank parameters {mb(report['param_bytes_per_rank'])} MiB (full model "
        f"{report['full_param_bytes'] / 2**20:.2f} MiB), optimizer state {mb(report['optimizer_bytes_per_rank'])} MiB."
    )


__all__ = [
    "ENGINE_LABELS",
    "HOW_TO_RUN",
    "SHARDED_ENGINES",
    "EngineMismatchError",
    "EngineRequest",
    "check_engine",
    "check_request",
    "describe_report",
    "engine_report",
    "generates_here",
    "how_to_run",
    "local_tensor",
    "parameters_are_sharded",
    "planned_engine",
    "rank_state_bytes",
    "requested_engine",
    "running_engine",
]
