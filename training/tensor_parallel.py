"""Tensor-parallel pretraining of a Wren model on N processes started by torchrun (CPU/gloo or GPUs).

    torchrun --nproc_per_node 2 -m wrenlm.training.tensor_parallel_cli --tokenizer runs/wren-nano-shakespeare \\
        --max-steps 200 --output-dir runs/tp          # every `wren pretrain` flag/--config/--set works

The layers are split by transformers' own tensor-parallel loader (`from_pretrained(..., tp_plan="auto")`) with
the plan in `WrenConfig.base_model_tp_plan`: q/k/v and the MLP/shared-expert up/gate projections column-wise,
o/down row-wise, the routed experts' tensors along their intermediate size, the embedding and tied LM head
along the vocabulary (DTensor shards, 1/N per process); the per-head `q_norm`/`k_norm` stay whole with their
gradients summed over the processes; RMSNorms and the MoE router stay whole (they see the full hidden state).
The model is first built once with the run's seed and loaded from that state, so it starts from the weights
a one-process `wren pretrain` starts from. Every process reads the same batches (tensor parallelism splits the
layers, not the data): the global batch is `--per-device-batch-size x --gradient-accumulation-steps`.

What this entry does not do, and why it is not a `wren pretrain` option: Accelerate carries tensor parallelism
only on GPU-type backends (its `ParallelismConfig` is refused for CPU processes), and the shared `Trainer`'s
checkpoints are written through Accelerate. So this loop has the same data order, optimizer, schedule,
clipping, logging (`metrics.jsonl`) and final `save_pretrained` folder as `wren pretrain`, but no intermediate
checkpoints, no resume, no periodic evaluation and no samples; it evaluates on the whole validation set at the
end. On GPUs, Accelerate's own tensor parallelism (`ParallelismConfig(tp_size=N)`) is the route for longer runs.
"""

import json
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..paths import TRAIN_RESULTS_FILE as RESULTS_FILE
from .engine_check import local_tensor

logger = logging.getLogger(__name__)

OUTPUT_COMMAND = "pretrain-tp"  # the output-folder marker: a TP run's folder is not a `wren pretrain` run to resume


def _is_dtensor(tensor) -> bool:
    return hasattr(tensor, "full_tensor")


def tensor_parallel_model(model, work_dir: str | Path):
    """`model` (built alike on every process) split over all processes of the process group with its TP plan.

    Process 0 saves it to `work_dir`, every process loads it back with `tp_plan="auto"` (each reads its shards
    only), then the folder is removed. The processes must share `work_dir` (one machine)."""
    import torch.distributed as dist

    work_dir = Path(work_dir)
    if dist.get_rank() == 0:
        model.save_pretrained(work_dir)
    dist.barrier()
    distributed = type(model).from_pretrained(work_dir, tp_plan="auto")
    dist.barrier()
    if dist.get_rank() == 0:
        shutil.rmtree(work_dir, ignore_errors=True)
    return distributed


def shard_numels(model) -> dict[str, int]:
    """Elements of the parameters in full and on this process, from the DTensors' local shards."""
    params = {id(p): p for p in model.parameters()}.values()
    return {
        "params_full": sum(p.numel() for p in params),
        "params_local": sum(local_tensor(p).numel() for p in params),
    }


@torch.no_grad()
def clip_grad_norm_(parameters, max_norm: float) -> torch.Tensor:
    """`torch.nn.utils.clip_grad_norm_` for a mix of sharded (DTensor) and whole parameters.

    torch's one call refuses the mix; the norms of the two groups come from torch's own `get_total_norm`
    (the sharded one reduced over the processes by DTensor) and are combined before the same clipping."""
    from torch.nn.utils import clip_grads_with_norm_, get_total_norm

    parameters = [p for p in parameters if p.grad is not None]
    sharded = [p.grad for p in parameters if _is_dtensor(p.grad)]
    whole = [p.grad for p in parameters if not _is_dtensor(p.grad)]
    norms = []
    if sharded:
        norms.append(get_total_norm(sharded).full_tensor())
    if whole:
        norms.append(get_total_norm(whole))
    total = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
    for group in (
        [p for p in parameters if _is_dtensor(p.grad)],
        [p for p in parameters if not _is_dtensor(p.grad)],
    ):
        if group:
            clip_grads_with_norm_(group, max_norm, total)
    return total


def backward_accumulating(model, loss) -> None:
    """`loss.backward()` adding to the gradients already there, each micro-batch's computed on its own.

    transformers' `replicated_with_grad_allreduce` (q_norm/k_norm) sums `param.grad` over the processes after every
    backward, so a second micro-batch would sum the first one's (already summed) part again; set aside, the
    earlier micro-batches' gradients stay out of that sum and are added back after it."""
    earlier = {}
    for param in model.parameters():
        if param.grad is not None:
            earlier[param] = param.grad
            param.grad = None
    loss.backward()
    for param, grad in earlier.items():
        param.grad = grad if param.grad is None else param.grad.add_(grad)


def _batches(dataset, config, sampler):
    """Endless batches in the order a one-process `wren pretrain` reads them: (seed, epoch) shuffles."""
    from .data import collate_blocks

    loader = DataLoader(
        dataset, batch_size=config.per_device_batch_size, sampler=sampler, drop_last=True, collate_fn=collate_blocks
    )
    if len(loader) < 1:
        raise ValueError(
            f"The training set ({len(dataset)} sequences) is smaller than one batch ({config.per_device_batch_size})."
        )
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def run_tensor_parallel_pretraining(config, force: bool = False) -> dict:
    """`wren pretrain`'s data and model, trained tensor-parallel over all processes (see the module doc).

    The output folder must be new or empty, unless `force` (then only the files this run writes are replaced)."""
    from accelerate.utils import set_seed

    from ..output_dir import check_output_dir, mark_output_dir, write_text_atomic
    from .accelerator import make_accelerator
    from .checkpointing import drop_tied_copies
    from .config import config_to_dict
    from .data import EpochSampler, build_lm_datasets, collate_blocks, load_documents, split_documents
    from .fsdp import full_state_dict
    from .optim import build_optimizer, build_scheduler, resolve_optimizer
    from .pretrain import build_model, default_generation_config, model_config, prepare_tokenizer
    from .tracking import LossWindow, MetricsLog
    from .validation import validation_metrics

    config.validate()
    model_config(config)  # a bad model setting fails before any work
    # Muon needs whole matrices; `auto` means AdamW here, an explicit muon is refused.
    config = replace(config, optimizer=resolve_optimizer(config, "tensor-parallel"))
    start = time.perf_counter()
    output_dir = Path(config.output_dir)
    # No checkpoints or resume here: the folder must be new or empty (or --force).
    check_output_dir(output_dir, OUTPUT_COMMAND, force=force)
    acc = make_accelerator(config)  # the process group, the main process and the trackers; nothing is prepared
    if acc.num_processes < 2:
        raise ValueError("Tensor parallelism needs several processes: launch with `torchrun --nproc_per_node N`.")
    with acc.main_process_first():
        documents = load_documents(
            config.data, text_field=config.text_field, hf_config=config.hf_config, hf_split=config.hf_split
        )
        splits = split_documents(documents, config.val_fraction, config.split_mode, seed=config.seed)
    tokenizer = prepare_tokenizer(config, splits["train"]["text"], acc)
    with acc.main_process_first():
        train, validation, stats = build_lm_datasets(splits, tokenizer, config.seq_len)

    if acc.is_main_process:
        mark_output_dir(output_dir, OUTPUT_COMMAND)
    set_seed(config.seed)
    model = tensor_parallel_model(build_model(config, tokenizer), output_dir / ".tp-initial-weights")
    model.to(acc.device).train()
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    metrics_log = MetricsLog(acc, output_dir, "wren-tp", config_to_dict(config))
    metrics_log.start()
    update_router_bias = getattr(model.config, "router_bias_update_rate", 0) > 0

    batches = _batches(train, config, EpochSampler(len(train), seed=config.seed))
    batches_per_epoch = len(train) // config.per_device_batch_size
    window, grad_norm = LossWindow(), None
    for step in range(1, config.max_steps + 1):
        step_loss = torch.zeros((), device=acc.device)
        for _ in range(config.gradient_accumulation_steps):
            batch = {key: value.to(acc.device) for key, value in next(batches).items() if key != "num_chars"}
            loss = model(**batch).loss
            backward_accumulating(model, loss / config.gradient_accumulation_steps)
            step_loss += loss.detach().float()
            window.add_batch(batch)
        if config.max_grad_norm > 0:
            grad_norm = clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if update_router_bias:  # every process saw the same tokens: the same load, the same update
            model.update_router_bias()
        window.add_step(step_loss / config.gradient_accumulation_steps)
        if config.log_every and (step % config.log_every == 0 or step == config.max_steps):
            # Every process holds the same loss and the same tokens: one process' figures are the run's.
            epoch = step * config.gradient_accumulation_steps // batches_per_epoch
            logs, _ = window.logs(acc, scheduler.get_last_lr()[0], epoch, grad_norm)
            logs["train/tokens_per_s"] /= acc.num_processes
            metrics_log.log(logs, step)
            window.reset()

    model.eval()
    eval_loader = DataLoader(validation, batch_size=config.eval_batch_size, collate_fn=collate_blocks)
    figures = validation_metrics(model, ({k: v.to(acc.device) for k, v in b.items()} for b in eval_loader))
    metrics_log.log({f"eval_full/{name}": value for name, value in figures.items()}, config.max_steps)
    model.generation_config = default_generation_config(tokenizer)
    # torch gathers the DTensor shards (to the main process); transformers' own TP save would gather each name on
    # its own and write the tied LM head twice.
    state_dict = drop_tied_copies(model, full_state_dict(model))
    model.save_pretrained(output_dir, is_main_process=acc.is_main_process, state_dict=state_dict)
    results = {
        "output_dir": str(output_dir),
        "global_step": config.max_steps,
        "num_processes": acc.num_processes,
        "tensor_parallel_size": acc.num_processes,
        **shard_numels(model),
        **{f"validation_{name}": value for name, value in figures.items()},
        "total_seconds": time.perf_counter() - start,
        "data": stats,
    }
    if acc.is_main_process:
        tokenizer.save_pretrained(output_dir)
        write_text_atomic(output_dir / RESULTS_FILE, json.dumps(results, indent=2) + "\n")
    acc.end_training()
    return results


__all__ = [
    "clip_grad_norm_",
    "run_tensor_parallel_pretraining",
    "shard_numels",
    "tensor_parallel_model",
]
