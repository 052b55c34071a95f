"""Distributed engines side by side: per-rank peak memory and tokens/s of the training loop, one engine per launch.

    python -m bench.distributed_bench                              # DDP vs FSDP2, 2 CPU processes, ~50M params
    python -m bench.distributed_bench --engines ddp fsdp2 zero2 zero3 --repeats 2 --layers 4 --steps 6

Each run is `accelerate launch` of this file's worker with the engine's launch arguments (`ENGINES`), so it
measures what `wren pretrain` runs: `make_accelerator` + `Trainer` on a `wren-small`-shaped model (fewer layers)
and random token blocks. Engines run in alternating order (A B, B A, ...) to spread a shared machine's load over
both sides; the load average is recorded with every run. Per rank the worker reports:

* peak memory: the resident-set high-water mark during the training steps (reset once the model is built and
  sharded), minus the resident set after the imports, before the model existed (Linux /proc). glibc's malloc
  keeps freed blocks in its heap once its mmap threshold has grown (it grows as large blocks are freed), and
  FSDP frees and re-allocates its all-gather / reduce-scatter buffers every layer: with the default allocator
  the resident set then stays near its high point whatever is live. The workers run with a fixed
  `MALLOC_MMAP_THRESHOLD_` (64 KiB, `--malloc-mmap-threshold 0` for glibc's default), so freed tensors leave
  the resident set and it tracks live memory, for every engine alike;
* model state: parameters + gradients + optimizer state held by that rank, from the engine's own tensors
  (DTensor local shards; DeepSpeed's partitions: ZeRO-3 parameter partitions, the fp32 master and AdamW state
  partitions, gradients counted as one master-sized partition; a DDP rank holds everything);
* tokens/s: all ranks' tokens over the wall time of the steps after the warm-up ones.

Another engine is one more `ENGINES` entry: its `accelerate launch` arguments and environment.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULT_PREFIX = "BENCH_RESULT "
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _config(name: str) -> str:
    from wrenlm.training.pretrain_cli import accelerate_config_path

    return str(accelerate_config_path(name))


# name -> (accelerate launch arguments, extra environment); each a function so configs resolve lazily.
ENGINES = {
    "ddp": lambda: (["--multi_gpu"], {}),
    "fsdp2": lambda: (["--config_file", _config("fsdp")], {}),
    "zero2": lambda: (["--config_file", _config("deepspeed_zero2")], {}),
    "zero3": lambda: (["--config_file", _config("deepspeed_zero3")], {}),
}


def _load_average() -> float:
    return os.getloadavg()[0]


# ----------------------------------------------------------------------------------------------
# Worker (one per rank, started by accelerate launch)
def worker(settings: dict) -> None:
    import torch

    torch.set_num_threads(settings["threads"])
    from bench.model_bench import _release_freed_memory, _reset_peak_rss, _rss_bytes
    from wrenlm import WrenForCausalLM
    from wrenlm.configuration import preset_config
    from wrenlm.training.accelerator import make_accelerator
    from wrenlm.training.callbacks import TrainerCallback
    from wrenlm.training.config import TrainingConfig
    from wrenlm.training.engine_check import local_tensor, rank_state_bytes
    from wrenlm.training.trainer import Trainer

    before_model = _rss_bytes("VmRSS")
    config = TrainingConfig(
        output_dir=settings["output_dir"],
        max_steps=settings["steps"],
        per_device_batch_size=settings["batch"],
        learning_rate=1e-4,
        warmup_steps=0,
        eval_every=0,
        save_every=0,
        log_every=0,
        keep_last=1,
        report_to="none",
        progress_bar=False,
        mixed_precision=settings["mixed_precision"],
        seed=0,
    )
    accelerator = make_accelerator(config)
    torch.manual_seed(0)
    model_config = preset_config(
        settings["preset"], num_hidden_layers=settings["layers"], max_position_embeddings=settings["seq"]
    )
    model = WrenForCausalLM(model_config)
    generator = torch.Generator().manual_seed(1)
    blocks = torch.randint(
        0, model_config.vocab_size, (settings["batch"] * 4 * 64, settings["seq"]), generator=generator
    )
    dataset = [{"input_ids": row} for row in blocks]

    class Probe(TrainerCallback):
        def on_train_begin(self, trainer):
            _release_freed_memory()  # the full model built before sharding is gone now
            self.start = _rss_bytes("VmRSS")
            self.reset = _reset_peak_rss()
            self.times = [time.perf_counter()]

        def on_optimizer_step(self, trainer):
            trainer_model = trainer.model
            self.grad_bytes = sum(
                local_tensor(p).numel() * p.element_size() for p in trainer_model.parameters() if p.requires_grad
            )  # gradients are freed right after the step; one tensor per trainable parameter

        def on_step_end(self, trainer, step, logs):
            self.times.append(time.perf_counter())
            if step == trainer.config.max_steps:
                self.peak = _rss_bytes("VmHWM") if self.reset else None

    probe = Probe()
    trainer = Trainer(model, config, dataset, accelerator=accelerator, callbacks=[probe])
    num_params = sum(p.numel() for p in model.parameters())
    trainer.train()
    state = rank_state_bytes(trainer.model, trainer.optimizer)
    if trainer.engine["engine"].startswith("zero"):
        from wrenlm.training.deepspeed_engine import partition_numels

        held = partition_numels(trainer.model)  # DeepSpeed's own partitions (fp32 here)
        state["param_bytes"] = 4 * held["params_local"]
        state["optimizer_bytes"] = 4 * (held["master_local"] + held["optimizer_state_local"])
        probe.grad_bytes = 4 * held["master_local"]  # each rank reduces into its own partition
    warm = settings["warmup"]
    seconds = probe.times[-1] - probe.times[warm]
    tokens = (settings["steps"] - warm) * settings["batch"] * settings["seq"] * accelerator.num_processes
    mine = {
        "rank": accelerator.process_index,
        "peak_mib": None if probe.peak is None else (probe.peak - before_model) / 2**20,
        "start_mib": (probe.start - before_model) / 2**20,
        "state_mib": (state["param_bytes"] + probe.grad_bytes + state["optimizer_bytes"]) / 2**20,
        "param_mib": state["param_bytes"] / 2**20,
        "optimizer_mib": state["optimizer_bytes"] / 2**20,
    }
    rows = [None] * accelerator.num_processes
    torch.distributed.all_gather_object(rows, mine)
    if accelerator.is_main_process:
        result = {
            "engine": trainer.engine["engine"],
            "world_size": accelerator.num_processes,
            "parameters": num_params,
            "tokens_per_s": tokens / seconds,
            "ranks": rows,
        }
        print(RESULT_PREFIX + json.dumps(result), flush=True)
    trainer.end()


# ----------------------------------------------------------------------------------------------
# Driver
def launch(engine: str, settings: dict, processes: int, timeout: float) -> dict:
    launch_args, engine_env = ENGINES[engine]()
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": str(settings["threads"]), "TOKENIZERS_PARALLELISM": "false", **engine_env}
    if settings["malloc_mmap_threshold"]:
        env["MALLOC_MMAP_THRESHOLD_"] = str(settings["malloc_mmap_threshold"])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    env.pop("ACCELERATE_USE_CPU", None)
    with tempfile.TemporaryDirectory(prefix="wren-dist-bench-") as tmp:
        command = [
            sys.executable, "-m", "accelerate.commands.launch", *launch_args, "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", settings["mixed_precision"], "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), __file__, "--worker",
            json.dumps({**settings, "output_dir": tmp}),
        ]  # fmt: skip
        load_before = _load_average()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{engine} run failed ({done.returncode}):\n{done.stderr[-4000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX))
    result = json.loads(line[len(RESULT_PREFIX) :])
    result["load_average"] = [round(load_before, 2), round(_load_average(), 2)]
    return result


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def summarise(runs: list[dict], engines: list[str]) -> dict:
    """Per engine: the median over runs of each figure (the worst rank for memory)."""
    table = {}
    for engine in engines:
        mine = [run for run in runs if run["requested"] == engine]

        def worst(key: str, mine=mine) -> float:
            return statistics.median(max(rank[key] or 0 for rank in run["ranks"]) for run in mine)

        table[engine] = {
            "engine": mine[0]["engine"],
            "tokens_per_s": statistics.median(run["tokens_per_s"] for run in mine),
            "peak_mib": worst("peak_mib"),
            "state_mib": worst("state_mib"),
            "param_mib": worst("param_mib"),
            "optimizer_mib": worst("optimizer_mib"),
        }
    return table


def format_table(results: dict) -> str:
    engines, table = results["engines"], results["summary"]
    reference, settings, base = table[engines[0]], results["settings"], engines[0]
    machine = (
        f"Machine: {results['machine']}; {results['processes']} processes; model {results['parameters'] / 1e6:.1f}M "
        f"parameters ({settings['preset']}, {settings['layers']} layers); per-device batch {settings['batch']} x "
        f"{settings['seq']} tokens; mixed precision {settings['mixed_precision']}; {results['date']}; load average "
        f"during the runs {min(results['load_averages']):.1f}-{max(results['load_averages']):.1f}; "
        f"MALLOC_MMAP_THRESHOLD_ {settings['malloc_mmap_threshold'] or 'glibc default'}."
    )
    header = (
        "| engine | per-rank params + grads + optimizer MiB | per-rank peak MiB | tokens/s (all ranks) "
        f"| state / {base} | peak / {base} | tokens/s / {base} |"
    )
    lines = [machine, "", header, "|---|---:|---:|---:|---:|---:|---:|"]
    for engine in engines:
        row = table[engine]
        lines.append(
            f"| {engine} ({row['engine']}) | {row['state_mib']:,.0f} | {row['peak_mib']:,.0f} | "
            f"{row['tokens_per_s']:,.0f} | {row['state_mib'] / reference['state_mib']:.2f}x | "
            f"{row['peak_mib'] / reference['peak_mib']:.2f}x | "
            f"{row['tokens_per_s'] / reference['tokens_per_s']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--engines", nargs="+", default=["ddp", "fsdp2"], choices=sorted(ENGINES))
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="runs per engine, in alternating order")
    parser.add_argument("--preset", default="wren-small")
    parser.add_argument("--layers", type=int, default=5, help="decoder layers (wren-small with 5: 56M parameters)")
    parser.add_argument("--batch", type=int, default=2, help="per-device batch")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of tokens/s")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    parser.add_argument(
        "--malloc-mmap-threshold",
        type=int,
        default=65536,
        help="glibc MALLOC_MMAP_THRESHOLD_ for the workers (0: glibc's default, a threshold that grows with use)",
    )
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--out", type=Path, help="write results JSON here (and a .md table next to it)")
    args = parser.parse_args(argv)
    if args.worker:
        worker(json.loads(args.worker))
        return
    settings = {
        key: getattr(args, key)
        for key in (
            "preset", "layers", "batch", "seq", "steps", "warmup", "threads", "mixed_precision",
            "malloc_mmap_threshold"
        )
    }  # fmt: skip
    runs = []
    for repeat in range(args.repeats):
        for engine in args.engines if repeat % 2 == 0 else list(reversed(args.engines)):
            run = launch(engine, settings, args.processes, args.timeout)
            run["requested"] = engine
            runs.append(run)
            print(f"{engine}: {run['tokens_per_s']:.0f} tokens/s, ranks {run['ranks']}, load {run['load_average']}")
    import torch

    results = {
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} threads (torch {torch.__version__})",
        "date": time.strftime("%Y-%m-%d"),
        "command": "python -m bench.distributed_bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "processes": args.processes,
        "engines": args.engines,
        "settings": settings,
        "parameters": runs[0]["parameters"],
        "load_averages": [value for run in runs for value in run["load_average"]],
        "runs": runs,
        "summary": summarise(runs, args.engines),
    }
    table = format_table(results)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
