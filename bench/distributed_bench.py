"""Data-parallel engines side by side: per-process peak memory and tokens/s of one model on 2 processes.

    python -m bench.distributed_bench                          # DDP, ZeRO-2, ZeRO-3 on 2 CPU processes (gloo)
    python -m bench.distributed_bench --engines ddp zero3 --layers 4 --steps 2

Each engine runs the same model (default about 55M parameters, fp32), the same per-process batch of random
tokens and AdamW, started with `accelerate launch` and the shipped accelerate config of that engine, through
wren's own `make_accelerator` (so DeepSpeed runs on CPU processes as `wren pretrain` runs it). Per process:

* resident set between steps (after a warm-up step that creates the optimizer state, freed heap trimmed): what
  the engine keeps from step to step (weights, optimizer state, its buffers), plus the ~350 MiB of imports;
* peak resident set (Linux VmHWM, reset there) over the timed training steps: plus gradients, activations and
  whatever the engine gathers or buckets during a step;
* the elements the engine keeps per process, read from its own objects (DeepSpeed's partitions; DDP: whole);
* tokens/s of the whole group (2 x batch x sequence per step / median step time).

Engines are added in `ENGINES` (name -> accelerate launch arguments).
"""

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENGINES = {
    "ddp": ["--multi_gpu"],
    "zero2": ["--config_file", "deepspeed_zero2"],
    "zero3": ["--config_file", "deepspeed_zero3"],
    # ZeRO-3 that frees every gathered parameter right after use (DeepSpeed keeps up to 1e9 gathered
    # parameters by default: all of a small model).
    "zero3_release": ["--use_deepspeed", "--deepspeed_config_file", "deepspeed_zero3_release.json"],
}
DEFAULT_SIZES = {"vocab": 32000, "hidden": 512, "intermediate": 1536, "layers": 12, "heads": 8, "kv_heads": 4}


def launch_arguments(engine: str) -> list[str]:
    from wrenlm.training.pretrain_cli import accelerate_config_path

    args = list(ENGINES[engine])
    if "--config_file" in args:
        index = args.index("--config_file") + 1
        args[index] = str(accelerate_config_path(args[index]))
    if "--deepspeed_config_file" in args:
        index = args.index("--deepspeed_config_file") + 1
        args[index] = str(Path(__file__).with_name(args[index]))
    return args


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_engine(engine: str, args, out_dir: Path) -> list[dict]:
    """Launch 2 processes of the worker for `engine`; their per-rank reports."""
    worker_args = ["--worker", engine, "--out", str(out_dir), "--batch", str(args.batch), "--seq", str(args.seq)]
    worker_args += ["--steps", str(args.steps), "--sizes", json.dumps(sizes_from(args))]
    command = [
        sys.executable, "-m", "accelerate.commands.launch", *launch_arguments(engine),
        "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
        "-m", "bench.distributed_bench", *worker_args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{engine} failed:\n{done.stderr[-3000:]}")
    return [json.loads((out_dir / f"{engine}.rank{rank}.json").read_text()) for rank in (0, 1)]


def sizes_from(args) -> dict:
    return {name: getattr(args, name) for name in DEFAULT_SIZES}


# ----------------------------------------------------------------------------------------------
# Worker (one process of the group)
def worker(args) -> None:
    import torch
    from wrenlm.training.accelerator import make_accelerator
    from wrenlm.training.config import TrainingConfig
    from wrenlm.training.deepspeed_engine import is_deepspeed, model_init_context, partition_numels
    from wrenlm.training.optim import build_optimizer

    from bench.model_bench import _release_freed_memory, _reset_peak_rss, _rss_bytes
    from wrenlm import WrenConfig, WrenForCausalLM

    sizes = json.loads(args.sizes)
    config = TrainingConfig(
        per_device_batch_size=args.batch, mixed_precision="no", report_to="none", max_grad_norm=1.0, seed=0
    )
    acc = make_accelerator(config)
    torch.manual_seed(0)
    model_config = WrenConfig(
        vocab_size=sizes["vocab"], hidden_size=sizes["hidden"], intermediate_size=sizes["intermediate"],
        num_hidden_layers=sizes["layers"], num_attention_heads=sizes["heads"], num_key_value_heads=sizes["kv_heads"],
        max_position_embeddings=args.seq,
    )  # fmt: skip
    with model_init_context(acc):
        model = WrenForCausalLM(model_config)
    num_params = sum(p.numel() for p in model.parameters())
    optimizer = build_optimizer(model, config)
    model, optimizer = acc.prepare(model, optimizer)
    model.train()
    batch = torch.randint(0, sizes["vocab"], (args.batch, args.seq), generator=torch.Generator().manual_seed(1))
    batch = batch.to(acc.device)

    def step() -> float:
        start = time.perf_counter()
        loss = model(input_ids=batch, labels=batch).loss
        acc.backward(loss)
        acc.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        acc.wait_for_everyone()
        return time.perf_counter() - start

    step()  # creates the optimizer state
    _release_freed_memory()
    between_steps = _rss_bytes("VmRSS")
    measured = _reset_peak_rss()
    durations = [step() for _ in range(args.steps)]
    held = (
        partition_numels(model)
        if is_deepspeed(acc)
        else {
            "params_full": num_params,
            "params_local": num_params,
            "optimizer_state_local": sum(
                v.numel() for state in optimizer.optimizer.state.values() for v in state.values() if v.ndim > 0
            ),
        }
    )
    report = {
        "engine": args.worker,
        "distributed_type": str(acc.distributed_type),
        "rank": acc.process_index,
        "num_processes": acc.num_processes,
        "parameters": num_params,
        "rss_between_steps_mib": between_steps / 2**20,
        "peak_rss_mib": _rss_bytes("VmHWM") / 2**20 if measured else None,
        "tokens_per_s": acc.num_processes * args.batch * args.seq / statistics.median(durations),
        "step_seconds": durations,
        **held,
    }
    Path(args.out, f"{args.worker}.rank{acc.process_index}.json").write_text(json.dumps(report))
    acc.end_training()


# ----------------------------------------------------------------------------------------------
def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def format_table(results: dict) -> str:
    lines = [
        f"Machine: {results['machine']}; load average before {results['load_before']}, after {results['load_after']}",
        (
            f"Model: {results['parameters'] / 1e6:.1f}M parameters, fp32; per process batch {results['batch']} x "
            f"{results['seq']} tokens; {results['steps']} timed steps; date {results['date']}"
        ),
        "",
        (
            "| engine | rank | RSS between steps MiB | vs DDP | peak RSS in steps MiB | vs DDP | parameters held "
            "| optimizer state held | tokens/s (group) | vs DDP |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ddp = {r["rank"]: r for r in results["engines"].get("ddp", [])}
    for engine, ranks in results["engines"].items():
        for r in ranks:
            base = ddp.get(r["rank"])
            mem_ratio = f"{r['peak_rss_mib'] / base['peak_rss_mib']:.2f}" if base and r["peak_rss_mib"] else "-"
            state_ratio = f"{r['rss_between_steps_mib'] / base['rss_between_steps_mib']:.2f}" if base else "-"
            speed_ratio = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}" if base else "-"
            peak = f"{r['peak_rss_mib']:,.0f}" if r["peak_rss_mib"] else "n/a"
            lines.append(
                f"| {engine} | {r['rank']} | {r['rss_between_steps_mib']:,.0f} | {state_ratio} | {peak} | {mem_ratio} "
                f"| {r['params_local'] / 1e6:.1f}M of "
                f"{r['params_full'] / 1e6:.1f}M | {r['optimizer_state_local'] / 1e6:.1f}M | "
                f"{r['tokens_per_s']:,.0f} | {speed_ratio} |"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=list(ENGINES))
    parser.add_argument("--steps", type=int, default=3, help="timed steps per engine")
    parser.add_argument("--batch", type=int, default=4, help="sequences per process and step")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    for name, value in DEFAULT_SIZES.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=value)
    parser.add_argument("--json", help="also write the raw results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return
    results = {
        "machine": f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores, 2 processes x "
        f"{args.threads} thread(s)",
        "date": time.strftime("%Y-%m-%d"),
        "load_before": load_average(),
        "batch": args.batch,
        "seq": args.seq,
        "steps": args.steps,
        "sizes": sizes_from(args),
        "engines": {},
    }
    with tempfile.TemporaryDirectory(prefix="wren-dist-bench-") as tmp:
        for engine in args.engines:
            results["engines"][engine] = run_engine(engine, args, Path(tmp))
    results["load_after"] = load_average()
    results["parameters"] = next(iter(results["engines"].values()))[0]["parameters"]
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
