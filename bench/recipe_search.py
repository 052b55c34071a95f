"""Recipe search for the main job (`wren pretrain`): every candidate trains for the default run's budget.

    python -m bench.recipe_search throughput NAME [NAME ...]   # per-token cost ratios, measured side by side
    python -m bench.recipe_search run NAME [--fraction 0.33]   # one candidate at (a fraction of) its budget
    python -m bench.recipe_search table                        # markdown table of every recorded run
    python -m bench.recipe_search list                         # the candidates and their settings

The budget is the default run's, not a wall clock (the search machine is shared, so seconds are not
comparable between runs): today's default trains 1,200 steps x 8 x 256 tokens on 2 idle cores in
about 7.3 minutes. A candidate gets `1,200 x 2,048 x r / (its tokens per step)` optimizer steps, where
`r` = the old default's CPU seconds per training token / its own, measured in one process, side by side,
in alternating rounds (`throughput`; 1 thread; forward + backward + clipping + optimizer step on random
tokens; data loading and evaluation, a few per cent of a run, are left out). CPU time of the one thread,
not wall time: on a machine shared with other jobs, wall time measures the neighbours (the wall-clock
ratio is recorded beside it). 1-thread ratios are not 2-thread ratios: small matrices use 2 cores less
well, so on 2 idle cores a smaller model gains less than its ratio says. A recipe that is slower per token
therefore trains on fewer tokens. Results go to `bench/results/recipe_throughput.json` and
`bench/results/recipe_search.jsonl` (command, steps, tokens, seconds, final exact bits per character on
the whole validation split, the periodic curve on its first 32 blocks, load average).

Runs call `wren pretrain` under `nice -n 10` with 1 CPU thread on the default corpus; each vocabulary's
tokenizer is trained once (on the training split, as `wren pretrain` does) and shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
THROUGHPUT_FILE = RESULTS / "recipe_throughput.json"
RUNS_FILE = RESULTS / "recipe_search.jsonl"
WORK_DIR = Path(os.environ.get("RECIPE_SEARCH_DIR", "/tmp/wren-recipe-search"))

BASE_STEPS = 1200
BASE_TOKENS_PER_STEP = 8 * 256
BASELINE = "old-default"

# What `wren pretrain` did before this search (learning rate 2e-3, 200 of 1,200 steps warmup, cosine to 0.05);
# the warmup is given as that fraction so that a reduced-budget screening run keeps the same shape.
_OLD = {
    "optimizer": "adamw",
    "learning_rate": 2e-3,
    "warmup_steps": None,
    "warmup_fraction": 1 / 6,
    "min_lr_ratio": 0.05,
    "lr_schedule": "cosine",
    "per_device_batch_size": 8,
    "seq_len": 256,
    "vocab_size": 4096,
    "preset": "wren-tiny",
}
_MUON = {"optimizer": "muon", "muon_learning_rate": 0.02, "warmup_fraction": 0.05}
_WSD = {"lr_schedule": "wsd", "decay_fraction": 0.3, "decay_shape": "linear"}
_SHAPES = {
    "d192": {"hidden_size": 192, "intermediate_size": 512, "num_attention_heads": 6, "num_key_value_heads": 3},
    "d128": {"hidden_size": 128, "intermediate_size": 352, "num_attention_heads": 4, "num_key_value_heads": 2},
    "L6d192": {
        "num_hidden_layers": 6,
        "hidden_size": 192,
        "intermediate_size": 512,
        "num_attention_heads": 6,
        "num_key_value_heads": 3,
    },
    "L3": {"num_hidden_layers": 3},
    "L6d128": {
        "num_hidden_layers": 6,
        "hidden_size": 128,
        "intermediate_size": 352,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    },
    "d96": {"hidden_size": 96, "intermediate_size": 256, "num_attention_heads": 3, "num_key_value_heads": 1},
}
_SHAPES["L6d96"] = {**_SHAPES["d96"], "num_hidden_layers": 6}
# MoE siblings: 8 routed experts (top-2) + 1 shared, each expert ~3/8 of the dense FFN width (as wren-tiny-moe).
_SHAPES["d96-moe"] = {**_SHAPES["d96"], "moe_intermediate_size": 96}
_SHAPES["d128-moe"] = {**_SHAPES["d128"], "moe_intermediate_size": 128}


def _candidate(*layers: dict, **changes) -> dict:
    settings = {k: v for layer in layers for k, v in layer.items()} | changes
    return {k: v for k, v in settings.items() if v is not None or k == "warmup_steps"}


CANDIDATES: dict[str, dict] = {
    BASELINE: _candidate(_OLD),
    "adamw-lr4e-3": _candidate(_OLD, learning_rate=4e-3),
    "adamw-wsd": _candidate(_OLD, lr_schedule="wsd", warmup_steps=None, warmup_fraction=0.05, decay_fraction=0.3),
    "muon-lr0.01": _candidate(_OLD, _MUON, muon_learning_rate=0.01),
    "muon-lr0.02": _candidate(_OLD, _MUON),
    "muon-lr0.04": _candidate(_OLD, _MUON, muon_learning_rate=0.04),
    "muon-adam4e-3": _candidate(_OLD, _MUON, learning_rate=4e-3),
    "muon-wsd": _candidate(_OLD, _MUON, _WSD),
    "muon-v2048": _candidate(_OLD, _MUON, vocab_size=2048),
    "muon-v1024": _candidate(_OLD, _MUON, vocab_size=1024),
    "muon-b16": _candidate(_OLD, _MUON, per_device_batch_size=16),
    "muon-b16s128": _candidate(_OLD, _MUON, per_device_batch_size=16, seq_len=128),
    "muon-d192": _candidate(_OLD, _MUON, model=_SHAPES["d192"]),
    "muon-d128": _candidate(_OLD, _MUON, model=_SHAPES["d128"]),
    "muon-L6d192": _candidate(_OLD, _MUON, model=_SHAPES["L6d192"]),
    "muon-L3": _candidate(_OLD, _MUON, model=_SHAPES["L3"]),
    "muon-L6d128": _candidate(_OLD, _MUON, model=_SHAPES["L6d128"]),
    "muon-d96": _candidate(_OLD, _MUON, model=_SHAPES["d96"]),
    "muon-d128-v2048": _candidate(_OLD, _MUON, model=_SHAPES["d128"], vocab_size=2048),
    "muon-d128-lr0.04": _candidate(_OLD, _MUON, model=_SHAPES["d128"], muon_learning_rate=0.04),
    "muon-d128-lr0.01": _candidate(_OLD, _MUON, model=_SHAPES["d128"], muon_learning_rate=0.01),
    "muon-wsd-d96": _candidate(_OLD, _MUON, _WSD, model=_SHAPES["d96"]),
    "muon-wsd-d128": _candidate(_OLD, _MUON, _WSD, model=_SHAPES["d128"]),
    "muon-wsd-d96-v2048": _candidate(_OLD, _MUON, _WSD, model=_SHAPES["d96"], vocab_size=2048),
    "muon-wsd-d128-v2048": _candidate(_OLD, _MUON, _WSD, model=_SHAPES["d128"], vocab_size=2048),
    "muon-wsd-L6d96-v2048": _candidate(_OLD, _MUON, _WSD, model=_SHAPES["L6d96"], vocab_size=2048),
    "muon-wsd-d96-v1024": _candidate(_OLD, _MUON, _WSD, model=_SHAPES["d96"], vocab_size=1024),
    "muon-wsd-d128-v1024": _candidate(_OLD, _MUON, _WSD, model=_SHAPES["d128"], vocab_size=1024),
    "moe-muon-wsd-d96": _candidate(_OLD, _MUON, _WSD, preset="wren-tiny-moe", model=_SHAPES["d96-moe"]),
    "moe-muon-wsd-d128": _candidate(_OLD, _MUON, _WSD, preset="wren-tiny-moe", model=_SHAPES["d128-moe"]),
    "moe-muon-wsd-d96-v2048": _candidate(
        _OLD, _MUON, _WSD, preset="wren-tiny-moe", model=_SHAPES["d96-moe"], vocab_size=2048
    ),
    "moe-muon-wsd-d128-v2048": _candidate(
        _OLD, _MUON, _WSD, preset="wren-tiny-moe", model=_SHAPES["d128-moe"], vocab_size=2048
    ),
    "moe-old-default": _candidate(_OLD, preset="wren-tiny-moe"),
    "moe-muon": _candidate(_OLD, _MUON, preset="wren-tiny-moe"),
}


def shape_key(settings: dict) -> str:
    """What sets the cost of a token: model, vocabulary, batch layout, optimizer (not the LR or schedule)."""
    keys = ("preset", "vocab_size", "per_device_batch_size", "seq_len", "optimizer")
    return json.dumps({**{k: settings[k] for k in keys}, "model": settings.get("model", {})}, sort_keys=True)


def _model_config(settings: dict, vocab_size: int):
    from wrenlm import preset_config

    return preset_config(
        settings["preset"],
        vocab_size=vocab_size,
        max_position_embeddings=max(512, settings["seq_len"]),
        **settings.get("model", {}),
    )


# ----------------------------------------------------------------------------------------------
def measure_throughput(names: list[str], rounds: int, steps: int, threads: int = 1) -> dict:
    """Seconds per training token of each distinct shape, timed in alternating rounds in this process.

    Besides process CPU time and wall time, the main thread's own CPU time: with several threads it is the serial
    part plus the main thread's share, i.e. the wall time the step would take on idle cores if waking the other
    threads cost nothing. On a shared machine that is the only usable estimate of the multi-thread ratio (an
    upper bound for small models, which wake threads for small pieces of work)."""
    import torch

    from wrenlm import WrenForCausalLM
    from wrenlm.training.config import PretrainConfig, apply_overrides
    from wrenlm.training.optim import build_optimizer

    torch.set_num_threads(threads)
    shapes: dict[str, dict] = {}
    for name in [BASELINE, *names]:
        shapes.setdefault(shape_key(CANDIDATES[name]), CANDIDATES[name])
    setups = []
    for key, settings in shapes.items():
        torch.manual_seed(0)
        model = WrenForCausalLM(_model_config(settings, settings["vocab_size"]))
        config = apply_overrides(PretrainConfig(), {k: v for k, v in settings.items() if k != "model"})
        optimizer = build_optimizer(model, config)
        batch = torch.randint(0, settings["vocab_size"], (settings["per_device_batch_size"], settings["seq_len"]))
        setups.append((key, model, optimizer, batch))

    def one_step(model, optimizer, batch):
        model(input_ids=batch, labels=batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _, model, optimizer, batch in setups:
        one_step(model, optimizer, batch)  # warm-up: allocations, optimizer state
    cpu: dict[str, list[float]] = {key: [] for key, *_ in setups}
    wall: dict[str, list[float]] = {key: [] for key, *_ in setups}
    main_thread: dict[str, list[float]] = {key: [] for key, *_ in setups}
    for round_index in range(rounds):
        order = setups if round_index % 2 == 0 else setups[::-1]
        for key, model, optimizer, batch in order:
            start_cpu, start_wall, start_main = time.process_time(), time.perf_counter(), time.thread_time()
            for _ in range(steps):
                one_step(model, optimizer, batch)
            main_thread[key].append((time.thread_time() - start_main) / (steps * batch.numel()))
            cpu[key].append((time.process_time() - start_cpu) / (steps * batch.numel()))
            wall[key].append((time.perf_counter() - start_wall) / (steps * batch.numel()))
    base_key = shape_key(CANDIDATES[BASELINE])
    base_cpu, base_wall = statistics.median(cpu[base_key]), statistics.median(wall[base_key])
    base_main = statistics.median(main_thread[base_key])
    return {
        key: {
            "cpu_seconds_per_token": statistics.median(cpu[key]),
            "speed_vs_old_default": base_cpu / statistics.median(cpu[key]),
            "wall_speed_vs_old_default": base_wall / statistics.median(wall[key]),
            "main_thread_speed_vs_old_default": base_main / statistics.median(main_thread[key]),
        }
        for key in cpu
    }


def record_throughput(shapes: dict, threads: int = 1) -> None:
    """Append one measurement per shape to the threads' file; a shape's ratio is the mean of its measurements.

    With 1 thread the ratio of CPU seconds sets the budgets; with more threads only the wall-clock ratio means
    anything (taken on an idle machine: it says how a 1-thread ratio shrinks on the main job's 2 cores)."""
    path = throughput_file(threads)
    known = json.loads(path.read_text())["shapes"] if path.exists() else {}
    stamp = {"date": time.strftime("%Y-%m-%d %H:%M"), "load_average": round(os.getloadavg()[0], 2)}
    for key, measured in shapes.items():
        entry = known.setdefault(key, {"measurements": []})
        entry["measurements"].append({**stamp, **measured})
        entry["speed_vs_old_default"] = statistics.mean(m["speed_vs_old_default"] for m in entry["measurements"])
        cpu, mean, wall, main = (
            measured["speed_vs_old_default"],
            entry["speed_vs_old_default"],
            measured["wall_speed_vs_old_default"],
            measured["main_thread_speed_vs_old_default"],
        )
        print(f"cpu {cpu:.3f}x (mean {mean:.3f}x) wall {wall:.3f}x main thread {main:.3f}x  {key}")
    RESULTS.mkdir(exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "method": f"median CPU seconds per training token over alternating rounds, {threads} thread(s), "
                "one process; each shape's ratio is the mean over its measurements",
                "machine": f"{platform.machine()} {os.cpu_count()} cores (shared with other jobs)",
                "shapes": known,
            },
            indent=2,
        )
    )


def throughput_file(threads: int) -> Path:
    return THROUGHPUT_FILE if threads == 1 else RESULTS / f"recipe_throughput_{threads}threads.json"


def budget_steps(settings: dict, throughput: dict, fraction: float = 1.0) -> int:
    ratio = throughput[shape_key(settings)]["speed_vs_old_default"]
    tokens_per_step = settings["per_device_batch_size"] * settings["seq_len"]
    return max(1, round(fraction * BASE_STEPS * BASE_TOKENS_PER_STEP * ratio / tokens_per_step))


# ----------------------------------------------------------------------------------------------
def tokenizer_dir(vocab_size: int) -> Path:
    """One tokenizer per vocabulary size, trained on the default corpus' training split like `wren pretrain`."""
    path = WORK_DIR / f"tokenizer-{vocab_size}"
    if not (path / "tokenizer.json").exists():
        from wrenlm.training.accelerator import make_accelerator
        from wrenlm.training.config import PretrainConfig
        from wrenlm.training.data import load_documents, split_documents
        from wrenlm.training.pretrain import prepare_tokenizer

        config = PretrainConfig(output_dir=str(path), vocab_size=vocab_size, progress_bar=False, report_to="none")
        splits = split_documents(load_documents([]), config.val_fraction, config.split_mode, seed=config.seed)
        prepare_tokenizer(config, splits["train"]["text"], make_accelerator(config))
    return path


def pretrain_command(settings: dict, steps: int, output_dir: Path) -> list[str]:
    wren = str(Path(sys.executable).with_name("wren"))
    command = ["nice", "-n", "10", wren, "pretrain", "--output-dir", str(output_dir)]
    command += ["--tokenizer", str(tokenizer_dir(settings["vocab_size"])), "--max-steps", str(steps)]
    command += ["--eval-every", str(max(1, steps // 6)), "--save-every", "0", "--cpu-threads", "1"]
    command += ["--resume", "never", "--no-progress-bar", "--report-to", "none", "--log-every", "25"]
    command += ["--set", "sample_prompts=[]"]
    for key, value in settings.items():
        if key in ("vocab_size",):
            continue
        if key == "model":
            command += [f"--set=model.{k}={v}" for k, v in value.items()]
        elif value is None:
            command += [f"--set={key}=null"]
        else:
            command += [f"--set={key}={value}"]
    return command


def run_candidate(name: str, fraction: float) -> dict:
    throughput = json.loads(THROUGHPUT_FILE.read_text())["shapes"]
    settings = CANDIDATES[name]
    steps = budget_steps(settings, throughput, fraction)
    output = WORK_DIR / "runs" / f"{name}-{fraction:g}"
    command = pretrain_command(settings, steps, output)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    log = WORK_DIR / "logs" / f"{name}-{fraction:g}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}); see {log}")
    results = json.loads((output / "train_results.json").read_text())
    curve = [
        {"step": r["step"], "bits_per_char": round(r["eval/bits_per_char"], 4)}
        for r in map(json.loads, (output / "metrics.jsonl").read_text().splitlines())
        if "eval/bits_per_char" in r
    ]
    record = {
        "name": name,
        "budget_fraction": fraction,
        "settings": settings,
        "command": " ".join(command),
        "steps": steps,
        "tokens": steps * settings["per_device_batch_size"] * settings["seq_len"],
        "speed_vs_old_default": throughput[shape_key(settings)]["speed_vs_old_default"],
        "num_parameters": results["num_parameters"],
        "epochs": round(results["epochs"], 3),
        "train_seconds": round(results["train_seconds"], 1),
        "wall_seconds": round(wall, 1),
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "validation_bits_per_char": round(results["validation_bits_per_char"], 4),
        "validation_loss": round(results["validation_loss"], 4),
        "curve_first_32_blocks": curve,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    with open(RUNS_FILE, "a") as handle:
        handle.write(json.dumps(record) + "\n")
    return record


def table() -> str:
    """Every recorded run; the full command of each is in RUNS_FILE."""
    records = [json.loads(line) for line in RUNS_FILE.read_text().splitlines() if line.strip()]
    lines = [
        "| run | budget | steps | tokens | speed vs old default | parameters | epochs | train time (1 thread) "
        "| load average | bits/char (all validation) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        load = f"{r['load_average_before']:.1f} / {r['load_average_after']:.1f}"
        lines.append(
            f"| {r['name']} | {r['budget_fraction']:g} | {r['steps']:,} | {r['tokens'] / 1e6:.2f}M | "
            f"{r['speed_vs_old_default']:.2f}x | {r['num_parameters'] / 1e6:.2f}M | {r['epochs']:.2f} | "
            f"{r['train_seconds'] / 60:.1f} min | {load} | {r['validation_bits_per_char']:.4f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    measure = sub.add_parser("throughput")
    measure.add_argument("names", nargs="*", default=list(CANDIDATES))
    measure.add_argument("--rounds", type=int, default=4)
    measure.add_argument("--steps", type=int, default=2)
    measure.add_argument("--threads", type=int, default=1, help="1 sets the budgets; 2 shows the main job's scaling")
    run = sub.add_parser("run")
    run.add_argument("name", choices=sorted(CANDIDATES))
    run.add_argument("--fraction", type=float, default=1.0, help="of the default budget (reduced-scale screening)")
    sub.add_parser("table")
    sub.add_parser("list")
    args = parser.parse_args(argv)
    if args.command == "throughput":
        if args.threads > 1:  # as the `wren` commands start PyTorch: waiting threads sleep instead of spinning
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        record_throughput(measure_throughput(args.names, args.rounds, args.steps, args.threads), args.threads)
    elif args.command == "run":
        print(json.dumps(run_candidate(args.name, args.fraction)))
    elif args.command == "table":
        print(table())
    else:
        for name, settings in CANDIDATES.items():
            print(name, json.dumps(settings))


if __name__ == "__main__":
    main()
