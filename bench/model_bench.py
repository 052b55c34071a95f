"""Wren vs the Hugging Face reference models, side by side in one run.

Same config and converted weights on both sides: HF Llama for the dense model, HF Qwen3-MoE for the
MoE model. Measures training-step throughput and peak memory (Wren uses its chunked LM-head loss,
the reference materialises the logits), cached decode speed at batch 1 and 8 (dynamic and static
cache), and the experts implementations against each other.

    python -m bench.model_bench            # CPU, small sizes
    python -m bench.model_bench --device cuda --scale 4

Peak memory: on CUDA `torch.cuda.max_memory_allocated` around the training steps; on CPU each
measurement runs in a fresh child process and reports how far two training steps raise the
process's resident set size above where it stood with the model and optimizer state built (Linux:
freed heap pages are trimmed and the high-water mark reset first; elsewhere the number is left out).
"""

import argparse
import ctypes
import gc
import json
import multiprocessing
import platform
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

from wrenlm.conversion import convert_to_wren


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
        )


def reference_model(kind: str, sizes: Sizes, seed: int = 0):
    torch.manual_seed(seed)
    common = dict(
        vocab_size=sizes.vocab, hidden_size=sizes.hidden, num_hidden_layers=sizes.layers,
        num_attention_heads=sizes.heads, num_key_value_heads=sizes.kv_heads,
        max_position_embeddings=4 * sizes.seq, tie_word_embeddings=False, pad_token_id=0, eos_token_id=None,
    )
    if kind == "dense":
        return LlamaForCausalLM(LlamaConfig(intermediate_size=sizes.intermediate, **common))
    config = Qwen3MoeConfig(
        intermediate_size=sizes.intermediate, moe_intermediate_size=sizes.moe_intermediate,
        num_experts=sizes.experts, num_experts_per_tok=sizes.top_k, norm_topk_prob=True,
        router_aux_loss_coef=0.01, **common,
    )
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
    # Qwen3-MoE adds its load-balancing loss only when asked for router logits; Wren always does.
    extra = {"output_router_logits": True} if getattr(model.config, "num_experts", 0) else {}
    return model(input_ids=batch, labels=batch, **extra).loss


def training_tokens_per_second(model, sizes: Sizes, device: str, steps: int, warmup: int = 2) -> float:
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(1, sizes.vocab, (sizes.batch, sizes.seq), generator=generator).to(device)
    durations: list[float] = []
    for step in range(warmup + steps):
        with timed(durations, device):
            loss = training_loss(model, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return sizes.batch * sizes.seq / statistics.median(durations[warmup:])


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
    batch = torch.randint(1, sizes.vocab, (sizes.batch, sizes.seq), generator=torch.Generator().manual_seed(0))
    # Building the pair (two models plus conversion copies) may peak above training; measure from here on.
    _release_freed_memory()
    if not _reset_peak_rss():
        queue.put(None)
        return
    baseline = _rss_bytes("VmRSS")
    for _ in range(2):
        training_loss(model, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    queue.put(_rss_bytes("VmHWM") - baseline)


def training_peak_memory(kind: str, side: str, model, sizes: Sizes, device: str) -> int | None:
    if device == "cuda":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        batch = torch.randint(1, sizes.vocab, (sizes.batch, sizes.seq), device=device)
        training_loss(model, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        training_loss(model, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - baseline
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_cpu_training_peak_child, args=(kind, side, sizes, queue))
    child.start()
    peak = queue.get()
    child.join()
    return peak


def decode_tokens_per_second(model, sizes: Sizes, device: str, batch: int, cache: str, repeats: int = 3) -> float:
    model.eval()
    prompt = torch.randint(1, sizes.vocab, (batch, sizes.decode_prompt), generator=torch.Generator().manual_seed(1))
    prompt = prompt.to(device)
    kwargs = dict(
        max_new_tokens=sizes.decode_new_tokens, min_new_tokens=sizes.decode_new_tokens, do_sample=False,
        pad_token_id=0, cache_implementation=None if cache == "dynamic" else "static", disable_compile=True,
    )
    durations: list[float] = []
    with torch.no_grad():
        model.generate(prompt, **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up
        for _ in range(repeats):
            with timed(durations, device):
                model.generate(prompt, **kwargs)
    return batch * sizes.decode_new_tokens / statistics.median(durations)


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


def run(args) -> dict:
    device = args.device
    dtype = torch.bfloat16 if (device == "cuda" and args.bf16) else torch.float32
    sizes = Sizes().scaled(args.scale)
    results: dict = {"machine": machine_description(device), "sizes": sizes.__dict__, "dtype": str(dtype), "rows": []}
    for kind in ("dense", "moe"):
        pair = model_pair(kind, sizes, device, dtype)
        row: dict = {"model": kind}
        for side, model in pair.items():
            row[f"{side}_train_tok_s"] = training_tokens_per_second(model, sizes, device, args.steps)
            peak = training_peak_memory(kind, side, model, sizes, device)
            row[f"{side}_train_peak_mb"] = None if peak is None else peak / 2**20
            for batch in (1, 8):
                for cache in ("dynamic", "static"):
                    row[f"{side}_decode_b{batch}_{cache}_tok_s"] = decode_tokens_per_second(
                        model, sizes, device, batch, cache
                    )
        results["rows"].append(row)
        del pair
    results["experts_train_tok_s"] = experts_implementation_speeds(sizes, device, dtype, args.steps)
    return results


def machine_description(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.get_device_name()} (torch {torch.__version__})"
    processor = platform.processor() or platform.machine()
    return f"{processor} CPU, {torch.get_num_threads()} threads (torch {torch.__version__})"


def format_table(results: dict) -> str:
    lines = [
        f"Machine: {results['machine']}; dtype {results['dtype']}; sizes {json.dumps(results['sizes'])}",
        "",
        "| model | metric | HF reference | Wren | Wren / HF |",
        "|---|---|---:|---:|---:|",
    ]
    metrics = [("train_tok_s", "train tokens/s"), ("train_peak_mb", "train peak MiB")]
    metrics += [
        (f"decode_b{b}_{c}_tok_s", f"decode tokens/s, batch {b}, {c} cache")
        for b in (1, 8)
        for c in ("dynamic", "static")
    ]
    for row in results["rows"]:
        reference_name = "Llama" if row["model"] == "dense" else "Qwen3-MoE"
        for key, label in metrics:
            ref, ours = row[f"reference_{key}"], row[f"wren_{key}"]
            if ref is None or ours is None:
                lines.append(f"| {row['model']} vs {reference_name} | {label} | n/a | n/a | not measurable here |")
                continue
            ratio = ours / ref if ref else float("nan")
            lines.append(f"| {row['model']} vs {reference_name} | {label} | {ref:,.0f} | {ours:,.0f} | {ratio:.2f}x |")
    lines += ["", "| experts implementation | train tokens/s |", "|---|---:|"]
    for name, speed in results["experts_train_tok_s"].items():
        lines.append(f"| {name} | {'out of memory' if speed is None else f'{speed:,.0f}'} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scale", type=int, default=1, help="multiply widths and sequence length")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per measurement")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 weights on CUDA")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)
    results = run(args)
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
