"""Wren vs the Hugging Face reference models, side by side in one run.

Same config and converted weights on both sides: HF Llama for the dense model, HF Qwen3-MoE for the
MoE model. Measures training-step throughput, peak memory, profiled op count and MFU (Wren uses its
chunked LM-head loss, the reference materialises the logits), with and without `torch.compile`;
for the small config also cached decode speed at batch 1 and 8 (dynamic and static cache) and the
experts implementations against each other.

    python -m bench.model_bench                                # CPU: the small config
    python -m bench.model_bench --compile --only-train         # + per-block torch.compile on both sides
    python -m bench.model_bench --device cuda --bf16 --compile --only-train \\
        --train-configs dense-125m,dense-350m,moe-350m         # the GPU table

Training speed: every variant (HF, Wren, and with `--compile` HF+compile, Wren+compile) runs one
optimizer step in turn, the order reversed every round, so load that comes and goes hits all sides
alike; `--warmup` rounds are dropped, then `--steps` rounds are timed. Reported: the median tokens/s
and its spread (25th-75th percentile), and the first step's seconds (the compile warm-up).

Peak memory: on CUDA `torch.cuda.max_memory_allocated` over one training step above the memory held
before it; on CPU each (eager) measurement runs in a fresh child process and reports how far two
training steps raise the process's resident set above where it stood with the model and optimizer
state built (Linux: freed heap pages are trimmed and the high-water mark reset first; elsewhere the
number is left out). Compiled variants on CPU are not measured (the child would spend its time compiling).

Op count: one forward + backward under `torch.profiler` (CPU activity): dispatched `aten::` ops, nested
ones included, plus Inductor's generated CPU kernels (`cpp.enable_kernel_profile`); on CUDA also the
GPU kernels launched.

MFU: model FLOPs per token (PaLM's 6 N + 12 L d T, with N the parameters without the input embedding,
routed experts counted at top_k / experts, d the attention width and T the sequence length) times
tokens/s over the device's peak dense FLOP/s (`--peak-tflops`; known GPUs in bf16 by default; none on CPU).
"""

import argparse
import copy
import ctypes
import gc
import json
import multiprocessing
import os
import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

from wrenlm.conversion import convert_to_wren
from wrenlm.training.compile import compile_for_training

SIDES = ("HF", "Wren")
# Dense bf16 tensor-core peak (NVIDIA datasheets, SXM parts, without sparsity), matched in this order.
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0), ("L40S", 362.0))


@dataclass
class Sizes:
    vocab: int = 32000
    hidden: int = 256
    intermediate: int = 768
    layers: int = 4
    heads: int = 8
    kv_heads: int = 4
    experts: int = 8
    top_k: int = 2
    moe_intermediate: int = 256
    batch: int = 8
    seq: int = 256
    decode_prompt: int = 32
    decode_new_tokens: int = 64

    def scaled(self, factor: int) -> "Sizes":
        return Sizes(
            vocab=self.vocab, hidden=self.hidden * factor, intermediate=self.intermediate * factor,
            layers=self.layers, heads=self.heads * factor if factor > 1 else self.heads,
            kv_heads=self.kv_heads * factor if factor > 1 else self.kv_heads, experts=self.experts,
            top_k=self.top_k, moe_intermediate=self.moe_intermediate * factor, batch=self.batch,
            seq=self.seq * factor, decode_prompt=self.decode_prompt, decode_new_tokens=self.decode_new_tokens * 2,
        )  # fmt: skip


# name -> [(kind, sizes)]. "small" is the CPU config (and, with --scale, the old GPU one); the others
# are realistic sizes for a GPU: ~125M and ~350M dense (Llama-like) and a ~350M-total MoE (8 experts, top-2).
TRAIN_CONFIGS: dict[str, list[tuple[str, Sizes]]] = {
    "small": [("dense", Sizes()), ("moe", Sizes())],
    "dense-125m": [("dense", Sizes(hidden=768, intermediate=2048, layers=12, heads=12, kv_heads=4, seq=1024))],
    "dense-350m": [("dense", Sizes(hidden=1024, intermediate=2816, layers=24, heads=16, kv_heads=8, seq=2048))],
    "moe-350m": [
        ("moe", Sizes(hidden=1024, intermediate=2816, layers=12, heads=16, kv_heads=8, moe_intermediate=768, seq=2048))
    ],
}


def reference_model(kind: str, sizes: Sizes, seed: int = 0):
    torch.manual_seed(seed)
    common = {
        "vocab_size": sizes.vocab, "hidden_size": sizes.hidden, "num_hidden_layers": sizes.layers,
        "num_attention_heads": sizes.heads, "num_key_value_heads": sizes.kv_heads,
        "max_position_embeddings": 4 * sizes.seq, "tie_word_embeddings": False, "pad_token_id": 0,
        "eos_token_id": None,
    }  # fmt: skip
    if kind == "dense":
        return LlamaForCausalLM(LlamaConfig(intermediate_size=sizes.intermediate, **common))
    config = Qwen3MoeConfig(
        intermediate_size=sizes.intermediate, moe_intermediate_size=sizes.moe_intermediate,
        num_experts=sizes.experts, num_experts_per_tok=sizes.top_k, norm_topk_prob=True,
        router_aux_loss_coef=0.01, **common,
    )  # fmt: skip
    return Qwen3MoeForCausalLM(config)


def model_pair(kind: str, sizes: Sizes, device: str, dtype: torch.dtype):
    reference = reference_model(kind, sizes)
    wren = convert_to_wren(reference)
    return {"reference": reference.to(device, dtype), "wren": wren.to(device, dtype)}


@contextmanager
def timed(results: list[float], device: str):
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    yield
    if device == "cuda":
        torch.cuda.synchronize()
    results.append(time.perf_counter() - start)


def training_loss(model, batch):
    # Qwen3-MoE adds its load-balancing loss only when asked for router logits; Wren always does. No cache:
    # a training step has no use for one (HF would build one, and a compiled block would guard on it).
    extra = {"output_router_logits": True} if getattr(model.config, "num_experts", 0) else {}
    return model(input_ids=batch, labels=batch, use_cache=False, **extra).loss


def training_batch(sizes: Sizes, device: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(1, sizes.vocab, (sizes.batch, sizes.seq), generator=generator).to(device)


def train_step(model, optimizer, batch) -> None:
    training_loss(model, batch).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def training_tokens_per_second(model, sizes: Sizes, device: str, steps: int, warmup: int = 2) -> float:
    """One model on its own (the experts-implementation comparison); the sides are compared by `alternating_steps`."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = training_batch(sizes, device)
    durations: list[float] = []
    for _ in range(warmup + steps):
        with timed(durations, device):
            train_step(model, optimizer, batch)
    return sizes.batch * sizes.seq / statistics.median(durations[warmup:])


def alternating_steps(variants: dict, sizes: Sizes, device: str, steps: int, warmup: int):
    """Seconds per training step of each variant, the variants taking turns (order reversed every round).

    Returns `(timed durations per variant, first-step seconds per variant)`; warm-up rounds are not timed.
    """
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-4) for name, model in variants.items()}
    for model in variants.values():
        model.train()
    batch = training_batch(sizes, device)
    names = list(variants)
    durations = {name: [] for name in names}
    first_step = {}
    for round_index in range(warmup + steps):
        for name in names if round_index % 2 == 0 else names[::-1]:
            seconds: list[float] = []
            with timed(seconds, device):
                train_step(variants[name], optimizers[name], batch)
            if round_index == 0:
                first_step[name] = seconds[0]
            if round_index >= warmup:
                durations[name].append(seconds[0])
    return durations, first_step


def _release_freed_memory() -> None:
    """Give freed heap pages back to the OS, so that reusing them shows up in the resident set again."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the baseline may then hide some reuse
        pass


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux `clear_refs` 5); False where that is unavailable.

    `getrusage`'s peak cannot be used: a spawned child's starts at its parent's resident set (kept across
    fork + exec), which holds the benchmarked models and is far above the child's training peak.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_bytes(field: str) -> int:
    """`VmRSS` (now) or `VmHWM` (peak since the last reset) from /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def _cpu_training_peak_child(kind: str, side: str, sizes: Sizes, queue) -> None:
    model = model_pair(kind, sizes, "cpu", torch.float32)[side].train()  # the other side is freed here
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for param in model.parameters():  # materialise the optimizer state before the baseline
        param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    batch = training_batch(sizes, "cpu")
    # Building the pair (two models plus conversion copies) may peak above training; measure from here on.
    _release_freed_memory()
    if not _reset_peak_rss():
        queue.put(None)
        return
    baseline = _rss_bytes("VmRSS")
    for _ in range(2):
        train_step(model, optimizer, batch)
    queue.put(_rss_bytes("VmHWM") - baseline)


def training_peak_memory(kind: str, side: str, model, sizes: Sizes, device: str) -> int | None:
    """Bytes a training step adds at its peak; `side` is "reference" or "wren" (CPU: rebuilt in a child)."""
    if device == "cuda":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch = training_batch(sizes, device)
        train_step(model, optimizer, batch)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        train_step(model, optimizer, batch)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - baseline
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_cpu_training_peak_child, args=(kind, side, sizes, queue))
    child.start()
    peak = queue.get()
    child.join()
    return peak


def profiled_op_counts(model, sizes: Sizes, device: str) -> dict[str, int]:
    """`ops`: aten ops dispatched (nested included) plus Inductor CPU kernels in one forward + backward;
    on CUDA also `kernels`, the GPU kernels it launches."""
    from torch.profiler import ProfilerActivity, profile

    model.train()
    batch = training_batch(sizes, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        training_loss(model, batch).backward()
        if device == "cuda":
            torch.cuda.synchronize()
    model.zero_grad(set_to_none=True)
    events = prof.events()
    counts = {"ops": sum(1 for e in events if e.name.startswith("aten::") or "cpp_fused" in e.name)}
    if device == "cuda":
        counts["kernels"] = sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    return counts


def flops_per_token(model, sizes: Sizes) -> float:
    """PaLM's training FLOPs per token: 6 N (N without the input embedding, experts at top_k / experts)
    plus 12 L d T for the attention scores and their use (d = heads x head_dim)."""
    config = model.config
    active = 0.0
    for name, param in model.named_parameters():
        if "embed_tokens" in name:
            continue
        share = config.num_experts_per_tok / config.num_experts if ".mlp.experts." in name else 1.0
        active += param.numel() * share
    attention_width = config.num_attention_heads * config.head_dim
    return 6 * active + 12 * config.num_hidden_layers * attention_width * sizes.seq


def peak_flops(device: str, dtype: torch.dtype, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if device != "cuda" or dtype != torch.bfloat16:
        return None
    name = torch.cuda.get_device_name()
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS if key in name), None)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def training_comparison(kind: str, sizes: Sizes, device: str, dtype: torch.dtype, args) -> dict:
    """HF vs Wren (and compiled variants) on one model: speed, spread, first step, peak memory, ops, MFU."""
    pair = model_pair(kind, sizes, device, dtype)
    variants = {"HF": pair["reference"], "Wren": pair["wren"]}
    if args.compile:
        for side in SIDES:
            variants[f"{side}+compile"] = compile_for_training(copy.deepcopy(variants[side]))
    flops = flops_per_token(pair["wren"], sizes)
    peak = peak_flops(device, dtype, args.peak_tflops)
    durations, first_step = alternating_steps(variants, sizes, device, args.steps, args.warmup)
    tokens = sizes.batch * sizes.seq
    row = {"model": kind, "sizes": asdict(sizes), "flops_per_token": flops, "variants": {}}
    for name, model in variants.items():
        speeds = [tokens / seconds for seconds in durations[name]]
        median = statistics.median(speeds)
        side = "reference" if name.startswith("HF") else "wren"
        compiled = name.endswith("+compile")
        memory = None if compiled and device != "cuda" else training_peak_memory(kind, side, model, sizes, device)
        row["variants"][name] = {
            "tok_s": median,
            "tok_s_p25": _percentile(speeds, 0.25),
            "tok_s_p75": _percentile(speeds, 0.75),
            "first_step_s": first_step[name],
            "peak_mb": None if memory is None else memory / 2**20,
            **profiled_op_counts(model, sizes, device),
            "mfu": None if peak is None else flops * median / peak,
        }
    del pair, variants
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


def decode_tokens_per_second(model, sizes: Sizes, device: str, batch: int, cache: str, repeats: int = 3) -> float:
    model.eval()
    prompt = torch.randint(1, sizes.vocab, (batch, sizes.decode_prompt), generator=torch.Generator().manual_seed(1))
    prompt = prompt.to(device)
    kwargs = {
        "max_new_tokens": sizes.decode_new_tokens, "min_new_tokens": sizes.decode_new_tokens, "do_sample": False,
        "pad_token_id": 0, "cache_implementation": None if cache == "dynamic" else "static", "disable_compile": True,
    }  # fmt: skip
    durations: list[float] = []
    with torch.no_grad():
        model.generate(prompt, **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up
        for _ in range(repeats):
            with timed(durations, device):
                model.generate(prompt, **kwargs)
    return batch * sizes.decode_new_tokens / statistics.median(durations)


def decode_comparison(kind: str, sizes: Sizes, device: str, dtype: torch.dtype) -> dict:
    pair = model_pair(kind, sizes, device, dtype)
    row: dict = {"model": kind}
    for side, model in pair.items():
        for batch in (1, 8):
            for cache in ("dynamic", "static"):
                row[f"{side}_decode_b{batch}_{cache}_tok_s"] = decode_tokens_per_second(
                    model, sizes, device, batch, cache
                )
    return row


def experts_implementation_speeds(sizes: Sizes, device: str, dtype: torch.dtype, steps: int) -> dict[str, float]:
    wren = model_pair("moe", sizes, device, dtype)["wren"]
    speeds: dict[str, float | None] = {}
    for implementation in ("eager", "batched_mm", "grouped_mm"):
        wren.set_experts_implementation(implementation)
        try:
            speeds[implementation] = training_tokens_per_second(wren, sizes, device, steps)
        except torch.OutOfMemoryError:
            # batched_mm gathers a weight copy per (token, expert) pair: it does not fit at large batch sizes.
            speeds[implementation] = None
            torch.cuda.empty_cache()
    return speeds


def train_cases(args) -> list[tuple[str, str, Sizes]]:
    cases = []
    for name in args.train_configs.split(","):
        if name not in TRAIN_CONFIGS:
            raise SystemExit(f"Unknown --train-configs entry {name!r}; choose from {', '.join(TRAIN_CONFIGS)}.")
        for kind, sizes in TRAIN_CONFIGS[name]:
            cases.append((name, kind, sizes.scaled(args.scale) if name == "small" else sizes))
    return cases


def run(args) -> dict:
    device = args.device
    dtype = torch.bfloat16 if (device == "cuda" and args.bf16) else torch.float32
    if device == "cpu" and args.compile:
        import torch._inductor.config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True  # Inductor's CPU kernels show up in the op count
    results: dict = {
        "machine": machine_description(device),
        "load_before": load_description(),
        "dtype": str(dtype),
        "steps": args.steps,
        "warmup": args.warmup,
        "train": [],
        "rows": [],
    }
    for config_name, kind, sizes in train_cases(args):
        row = training_comparison(kind, sizes, device, dtype, args)
        results["train"].append({"config": config_name, **row})
        # What is done survives a run cut short (a time limit on a borrowed GPU): printed and saved as it comes.
        print(format_train_table({"train": results["train"][-1:]}), flush=True)
        if getattr(args, "json", None):
            Path(args.json).write_text(json.dumps(results, indent=2))
    if not args.only_train:
        sizes = Sizes().scaled(args.scale)
        results["decode_sizes"] = asdict(sizes)
        results["rows"] = [decode_comparison(kind, sizes, device, dtype) for kind in ("dense", "moe")]
        results["experts_train_tok_s"] = experts_implementation_speeds(sizes, device, dtype, args.steps)
    results["load_after"] = load_description()
    return results


def machine_description(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    processor = platform.processor() or platform.machine()
    return f"{processor} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} threads (torch {torch.__version__})"


def load_description() -> str:
    try:
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
    except OSError:
        return "load average unavailable"


def _format_count(value) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def format_train_table(results: dict) -> str:
    lines = [
        (
            "| config | model | variant | train tokens/s (p25-p75) | vs HF | first step s | peak MiB | vs HF "
            "| ops (fwd+bwd) | vs HF | MFU |"
        ),
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["train"]:
        variants = row["variants"]
        for name, value in variants.items():
            reference = variants["HF+compile" if name.endswith("+compile") else "HF"]
            speed_ratio = value["tok_s"] / reference["tok_s"]
            memory = value["peak_mb"]
            memory_ratio = (
                f"{memory / reference['peak_mb']:.2f}x" if memory is not None and reference["peak_mb"] else "n/a"
            )
            ops = f"{value['ops']:,}" + (f" / {value['kernels']:,} kernels" if "kernels" in value else "")
            mfu = "n/a" if value["mfu"] is None else f"{100 * value['mfu']:.1f}%"
            lines.append(
                f"| {row['config']} | {row['model']} | {name} | {value['tok_s']:,.0f} "
                f"({value['tok_s_p25']:,.0f}-{value['tok_s_p75']:,.0f}) | {speed_ratio:.2f}x | "
                f"{value['first_step_s']:.1f} | {_format_count(memory)} | {memory_ratio} | {ops} | "
                f"{value['ops'] / reference['ops']:.2f}x | {mfu} |"
            )
    return "\n".join(lines)


def format_table(results: dict) -> str:
    lines = [
        (
            f"Machine: {results['machine']}; dtype {results['dtype']}; {results['steps']} timed steps per variant "
            f"after {results['warmup']} warm-up rounds; "
            f"{results['load_before']} before, {results['load_after']} after."
        ),
        "",
        format_train_table(results),
    ]
    if results["rows"]:
        lines += [
            "",
            f"Decoding, sizes {json.dumps(results['decode_sizes'])}:",
            "",
            "| model | metric | HF reference | Wren | Wren / HF |",
            "|---|---|---:|---:|---:|",
        ]
        metrics = [
            (f"decode_b{b}_{c}_tok_s", f"decode tokens/s, batch {b}, {c} cache")
            for b in (1, 8)
            for c in ("dynamic", "static")
        ]
        for row in results["rows"]:
            reference_name = "Llama" if row["model"] == "dense" else "Qwen3-MoE"
            for key, label in metrics:
                ref, ours = row[f"reference_{key}"], row[f"wren_{key}"]
                lines.append(
                    f"| {row['model']} vs {reference_name} | {label} | {ref:,.0f} | {ours:,.0f} | {ours / ref:.2f}x |"
                )
        lines += ["", "| experts implementation | train tokens/s |", "|---|---:|"]
        for name, speed in results["experts_train_tok_s"].items():
            lines.append(f"| {name} | {'out of memory' if speed is None else f'{speed:,.0f}'} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--train-configs", default="small", help=f"comma-separated, from {', '.join(TRAIN_CONFIGS)} (default: small)"
    )
    parser.add_argument("--scale", type=int, default=1, help="multiply the small config's widths and sequence length")
    parser.add_argument(
        "--steps", type=int, default=20, help="timed training rounds (every variant steps once a round)"
    )
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed rounds first (compilation happens in the first)"
    )
    parser.add_argument("--compile", action="store_true", help="also time both sides with per-block torch.compile")
    parser.add_argument("--only-train", action="store_true", help="skip the decoding and experts comparisons")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 weights on CUDA")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak dense TFLOP/s for MFU (GPUs: known ones)")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)
    results = run(args)
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
