"""DeepSpeed ZeRO-2 / ZeRO-3 under `accelerate launch`, on GPUs and on CPU processes (gloo).

    accelerate launch --config_file deepspeed_zero3.yaml --num_processes 2 -m wrenlm.training.pretrain_cli ...

`make_accelerator` hands over to `deepspeed_accelerator_kwargs(config)` when the launcher asks for DeepSpeed
(`ACCELERATE_USE_DEEPSPEED=true`). What it settles, each point a way the plain Accelerate route goes wrong:

* CPU: Accelerate drops DeepSpeed when `cpu=True` (silent DDP) and, without a named backend, sees one
  process while DeepSpeed counts all of them. Here the Accelerator gets `cpu=False` with the gloo backend
  named, and DeepSpeed its CPU accelerator (`DS_ACCELERATOR=cpu`), so ZeRO runs on CPU processes.
* Batch sizes: the loop's flags are the truth. `train_micro_batch_size_per_gpu`, `gradient_accumulation_steps`,
  `train_batch_size` and `gradient_clipping` are written into the DeepSpeed config from them, and a value the
  user's DeepSpeed config sets differently is an error (never "DeepSpeed's value wins" in a log line).
  `check_engine_batch` compares the built engine with the loop once more.
* ZeRO-3 initial weights: Accelerate registers its config with transformers, which would then build models
  under `deepspeed.zero.Init` with another initialisation than a plain build. `model_init_context` builds
  them plainly (same seed, same weights as one process); DeepSpeed partitions them when the engine is made
  (rank 0's values, broadcast). `zero3_init_flag: true` in the accelerate config keeps `zero.Init` for
  models too big for one process' memory.
* The final model: `consolidated_state_dict` gathers the fp32 master weights from the ZeRO partitions (every
  process must call it), for a normal `save_pretrained` folder.

Checkpoints need nothing here: `accelerator.save_state` writes the engine's own sharded checkpoint
(`pytorch_model/`: per-rank model and optimizer partitions) into the loop's atomic temp folder.
"""

import contextlib
import os

import torch

INSTALL_HINT = "DeepSpeed is not installed; install it with `pip install 'wrenlm[deepspeed]'`."


def deepspeed_requested() -> bool:
    """Whether the launcher asked for DeepSpeed (`accelerate launch` with a DeepSpeed config or `--use_deepspeed`)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _settle(ds_config: dict, key: str, wanted, flag: str, what: str) -> None:
    """Write `wanted` into `ds_config[key]` (a dotted path), or fail if the config already says otherwise."""
    *parents, leaf = key.split(".")
    node = ds_config
    for parent in parents:
        node = node.setdefault(parent, {})
    current = node.get(leaf, "auto")
    if current not in ("auto", None) and float(current) != float(wanted):
        raise ValueError(
            f"The DeepSpeed config sets {key}={current}, but {what} is {wanted} ({flag}). Remove {key} from the "
            f"DeepSpeed/accelerate config (wren fills it in) or make the two agree."
        )
    node[leaf] = wanted


def settle_batch_settings(ds_config: dict, config, world_size: int) -> None:
    """Fill the DeepSpeed batch/accumulation/clipping entries from the loop's settings (see the module doc)."""
    micro, steps = config.per_device_batch_size, config.gradient_accumulation_steps
    _settle(ds_config, "train_micro_batch_size_per_gpu", micro, "--per-device-batch-size", "the per-process batch")
    _settle(ds_config, "gradient_accumulation_steps", steps, "--gradient-accumulation-steps", "the accumulation")
    _settle(
        ds_config,
        "train_batch_size",
        micro * steps * world_size,
        f"--per-device-batch-size x --gradient-accumulation-steps x {world_size} processes",
        "the global batch",
    )
    _settle(ds_config, "gradient_clipping", config.max_grad_norm, "--max-grad-norm", "the clipping norm")


def size_buckets_by_model(ds_config: dict) -> None:
    """Bucket sizes the config leaves out become "auto", which Accelerate sizes from the model's hidden size.

    DeepSpeed's own default (5e8 elements) gives ZeRO a gradient bucket as big as a whole small model: measured
    on 2 CPU processes, ZeRO-3 then held more memory than DDP (bench/distributed_bench.py)."""
    zero = ds_config.setdefault("zero_optimization", {})
    keys = ["reduce_bucket_size"]
    if int(zero.get("stage", 0)) == 3:
        keys += ["stage3_prefetch_bucket_size", "stage3_param_persistence_threshold"]
    for key in keys:
        zero.setdefault(key, "auto")


def deepspeed_accelerator_kwargs(config, has_gpu: bool) -> dict:
    """`Accelerator(...)` arguments for a DeepSpeed launch: the plugin, and on CPU the gloo backend."""
    from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

    try:  # (without a GPU, make_accelerator has named DeepSpeed's CPU accelerator before this import)
        import deepspeed  # noqa: F401
    except ImportError as error:  # a ValueError: the CLI reports it in one line, like any other bad setting
        raise ValueError(f"This launch asks for DeepSpeed (ACCELERATE_USE_DEEPSPEED=true). {INSTALL_HINT}") from error
    # An accelerate config's `gradient_accumulation_steps` / `gradient_clipping` reach the plugin through these
    # variables; read here, they are checked against the flags below like values of a DeepSpeed config file.
    plugin = DeepSpeedPlugin()
    settle_batch_settings(plugin.deepspeed_config, config, _world_size())
    size_buckets_by_model(plugin.deepspeed_config)
    plugin.gradient_accumulation_steps = config.gradient_accumulation_steps
    plugin.gradient_clipping = config.max_grad_norm
    kwargs = {"cpu": False, "deepspeed_plugin": plugin}
    if not has_gpu:
        kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
    return kwargs


def is_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def zero_stage(accelerator) -> int:
    """The ZeRO stage of a DeepSpeed run, 0 for any other engine."""
    if not is_deepspeed(accelerator):
        return 0
    return int(accelerator.state.deepspeed_plugin.deepspeed_config["zero_optimization"]["stage"])


def zero3_init_requested() -> bool:
    """`zero3_init_flag: true` said explicitly (Accelerate's own default turns it on for every ZeRO-3 run)."""
    return os.environ.get("ACCELERATE_DEEPSPEED_ZERO3_INIT", "false").lower() == "true"


@contextlib.contextmanager
def without_zero3_init(accelerator):
    """Inside, transformers builds models whole (no `deepspeed.zero.Init`) whatever the DeepSpeed config says."""
    plugin = accelerator.state.deepspeed_plugin if is_deepspeed(accelerator) else None
    if plugin is None or zero_stage(accelerator) != 3:
        yield
        return
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()


def model_init_context(accelerator):
    """Where to build the model to train: whole, with one process' weights, unless `zero3_init_flag: true`."""
    return contextlib.nullcontext() if zero3_init_requested() else without_zero3_init(accelerator)


def check_engine_batch(accelerator, engine, config) -> None:
    """Fail if the DeepSpeed engine's batch layout differs from the loop's (it would train another schedule)."""
    expected = {
        "train_micro_batch_size_per_gpu": config.per_device_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "train_batch_size": config.per_device_batch_size
        * config.gradient_accumulation_steps
        * accelerator.num_processes,
        "data-parallel world size": accelerator.num_processes,
    }
    actual = {
        "train_micro_batch_size_per_gpu": engine.train_micro_batch_size_per_gpu(),
        "gradient_accumulation_steps": engine.gradient_accumulation_steps(),
        "train_batch_size": engine.train_batch_size(),
        "data-parallel world size": engine.dp_world_size,
    }
    wrong = [
        f"{key}: DeepSpeed {actual[key]}, loop {value}" for key, value in expected.items() if actual[key] != value
    ]
    if wrong or accelerator.gradient_accumulation_steps != config.gradient_accumulation_steps:
        raise RuntimeError("DeepSpeed and the training loop disagree on the batch layout: " + "; ".join(wrong))


@torch.no_grad()
def consolidated_state_dict(engine, keep: bool = True, trainable_only: bool = False) -> dict[str, torch.Tensor]:
    """The full model state on CPU, parameters from the fp32 master copies (ZeRO-1/2/3); every process calls it
    (the gathers are collective), only those with `keep` hold the result (the others get {}).

    Frozen parameters (LoRA's base) have no master copy; they are gathered from the ZeRO-3 partitions, or left out
    with `trainable_only` (buffers too)."""
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param

    module = engine.module
    state = {}
    for name, param in module.named_parameters():
        if trainable_only and not param.requires_grad:
            continue
        full = safe_get_full_fp32_param(param) if param.requires_grad else None
        if full is None:
            with deepspeed.zero.GatheredParameters([param]):
                full = param.data.clone()
        if keep:
            state[name] = full.detach().to("cpu", copy=True)
    if not keep or trainable_only:
        return state if keep else {}
    persistent = set(module.state_dict().keys())
    for name, buffer in module.named_buffers():
        if name in persistent:
            state[name] = buffer.detach().to("cpu", copy=True)
    return state


def partition_numels(engine) -> dict[str, int]:
    """Elements this process holds, read from DeepSpeed's own partitions (for the run log and the tests).

    `params_local` / `params_full`: ZeRO-3 partitions (`ds_tensor`) vs full sizes (`ds_numel`); below ZeRO-3
    every process holds whole parameters. `master_local`: this rank's fp32 master partition;
    `optimizer_state_local`: its optimizer-state tensors (AdamW: exp_avg + exp_avg_sq)."""
    module = engine.module
    params = list({id(p): p for p in module.parameters()}.values())
    full = sum(getattr(p, "ds_numel", p.numel()) for p in params)
    local = sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in params)
    optimizer = engine.optimizer
    masters = getattr(optimizer, "fp32_partitioned_groups_flat", None) or getattr(
        optimizer, "single_partition_of_fp32_groups", []
    )
    inner = getattr(optimizer, "optimizer", optimizer)
    state_numel = sum(
        value.numel()
        for per_param in inner.state.values()
        for value in per_param.values()
        if torch.is_tensor(value) and value.ndim > 0
    )
    return {
        "params_full": full,
        "params_local": local,
        "master_local": sum(t.numel() for t in masters),
        "optimizer_state_local": state_numel,
    }


__all__ = [
    "INSTALL_HINT",
    "check_engine_batch",
    "consolidated_state_dict",
    "deepspeed_accelerator_kwargs",
    "deepspeed_requested",
    "is_deepspeed",
    "model_init_context",
    "partition_numels",
    "settle_batch_settings",
    "size_buckets_by_model",
    "without_zero3_init",
    "zero_stage",
]
