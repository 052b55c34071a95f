"""PyTorch CPU threads and OpenMP wait policy for training on a CPU that other processes also use.

Two worker processes, one per OpenMP wait policy (OpenMP reads OMP_WAIT_POLICY when torch loads), train the
wren-tiny preset for a few steps (batch 8 x 256 tokens, AdamW) at a given thread count and report tokens per
second. The settings run side by side, alternating within each round, in two situations: with one extra process
spinning on a core ("busy"), and without it ("as is", whatever else the machine runs). Compare ratios.

    python -m bench.cpu_threads_bench --rounds 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SETTINGS = [  # (torch threads, OMP_WAIT_POLICY or None for the OpenMP default)
    (1, None),
    (2, None),
    (2, "PASSIVE"),
    (1, "PASSIVE"),
]


def worker(steps: int, batch: int, seq: int, nice: int) -> None:
    """Answer each "THREADS" line on stdin with a JSON line: tokens/s of `steps` training steps at that many
    threads."""
    os.nice(nice)  # before torch starts its threads, which inherit it
    import torch

    from wrenlm import WrenForCausalLM, preset_config

    torch.manual_seed(0)
    model = WrenForCausalLM(preset_config("wren-tiny")).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq))
    print("ready", flush=True)
    for line in sys.stdin:
        torch.set_num_threads(int(line))
        times = []
        for _ in range(steps + 1):  # the first step warms up (new thread count, allocator)
            start = time.perf_counter()
            model(ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - start)
        print(json.dumps({"tokens_per_s": batch * seq * steps / sum(times[1:])}), flush=True)


class Worker:
    """A child process with its own OMP_WAIT_POLICY (read once, when torch loads)."""

    def __init__(self, policy: str | None, args, nice: int = 0):
        env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
        if policy:
            env["OMP_WAIT_POLICY"] = policy
        command = [sys.executable, "-m", "bench.cpu_threads_bench", "--worker"]
        command += ["--steps", str(args.steps), "--batch", str(args.batch), "--seq", str(args.seq)]
        command += ["--nice", str(nice)]
        self.process = subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "ready"

    def measure(self, threads: int) -> float:
        self.process.stdin.write(f"{threads}\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())["tokens_per_s"]

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def measure_situation(situation: str, args) -> dict:
    # "favoured": workers at nice -10 take most of both cores from the machine's other (nice 0) jobs, which
    # approximates an idle CPU on a shared box; "busy": one extra process spins on a core; "as is": neither.
    nice = -10 if situation == "favoured" else 0
    workers = {policy: Worker(policy, args, nice) for policy in {policy for _, policy in SETTINGS}}
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if situation == "busy" else None
    try:
        time.sleep(1.0)
        speeds: dict[str, list[float]] = {}
        load_before = os.getloadavg()
        for round_index in range(args.rounds):
            order = SETTINGS if round_index % 2 == 0 else SETTINGS[::-1]  # alternate who goes first
            for threads, policy in order:
                speeds.setdefault(f"threads={threads} wait={policy or 'default'}", []).append(
                    workers[policy].measure(threads)
                )
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
        for worker_process in workers.values():
            worker_process.close()
    medians = {name: statistics.median(values) for name, values in speeds.items()}
    reference = medians["threads=1 wait=default"]
    return {
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "tokens_per_s": speeds,
        "median_ratio_to_1_thread": {name: value / reference for name, value in medians.items()},
    }


def run(args) -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "rounds": args.rounds,
        "steps": args.steps,
        "tokens_per_step": args.batch * args.seq,
        "situations": {situation: measure_situation(situation, args) for situation in args.situations},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--situations", nargs="+", default=["busy", "as is"], choices=["busy", "as is", "favoured"])
    parser.add_argument("--nice", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.steps, args.batch, args.seq, args.nice)
        return
    results = run(args)
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
