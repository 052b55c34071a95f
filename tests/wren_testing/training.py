"""Helpers for tests/training (`wren_testing.training`): a generated corpus, a tiny tokenizer, tiny runs, launchers."""

import json
import random
import subprocess
from pathlib import Path

import psutil
import pytest

from wren_testing import tiny_config_kwargs

WORDS = [
    "the",
    "king",
    "queen",
    "lord",
    "lady",
    "good",
    "sweet",
    "night",
    "day",
    "love",
    "death",
    "sword",
    "crown",
    "heart",
    "eyes",
    "speak",
    "thou",
    "thee",
    "thy",
    "hath",
    "doth",
    "art",
    "wilt",
    "shall",
    "come",
    "go",
    "stay",
    "fair",
    "foul",
    "honour",
    "grace",
    "heaven",
    "earth",
    "blood",
    "fire",
    "water",
    "friend",
    "enemy",
    "father",
    "mother",
    "son",
    "daughter",
    "brother",
    "sister",
    "noble",
    "gentle",
    "villain",
    "fool",
    "mad",
    "sad",
    "merry",
]
SPEAKERS = ["KING.", "QUEEN.", "FOOL.", "HAMLET.", "ROSALIND.", "CAFÉ-KEEPER."]


def make_document(seed: int, lines: int = 120) -> str:
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        if rng.random() < 0.25:
            out.append("")
            out.append(rng.choice(SPEAKERS))
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 9))]
        line = " ".join(words).capitalize() + rng.choice([".", ",", "!", "?", ";", " — naïve."])
        out.append(line)
    return "\n".join(out) + "\n"


def build_tokenizer(files: list[Path], vocab_size: int):
    """The real Wren trainer when it is available, else an equivalent ByteLevel BPE built with `tokenizers`."""
    try:
        from wrenlm.tokenization import train_tokenizer
    except ImportError:
        train_tokenizer = None
    if train_tokenizer is not None:
        return train_tokenizer([str(f) for f in files], vocab_size=vocab_size, show_progress=False)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import TokenizersBackend

    specials = ["<|pad|>", "<|bos|>", "<|eos|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(f) for f in files], trainer)
    return TokenizersBackend(tokenizer_object=tok, pad_token=specials[0], bos_token=specials[1], eos_token=specials[2])


# The one tiny config's shape; vocabulary and special ids come from the run's tokenizer.
TINY_MODEL = {
    key: tiny_config_kwargs()[key]
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads")
}


def tiny_pretrain_settings(corpus_dir, tokenizer_dir, output_dir, **overrides) -> dict:
    """Settings for a seconds-long `run_pretraining` on the generated corpus (JSON-serialisable)."""
    settings = {
        "output_dir": str(output_dir),
        "data": [str(corpus_dir)],
        "tokenizer": str(tokenizer_dir),
        "seq_len": 32,
        "val_fraction": 0.1,
        "per_device_batch_size": 8,
        "eval_batch_size": 8,
        "max_steps": 8,
        "warmup_steps": 2,
        "learning_rate": 3e-3,
        # The engines under test are compared with one process, where `auto` would pick Muon (AdamW when sharded).
        "optimizer": "adamw",
        "eval_every": 4,
        "save_every": 4,
        "log_every": 1,
        "keep_last": 3,
        "sample_prompts": ["KING."],
        "sample_max_new_tokens": 8,
        "progress_bar": False,
        "report_to": "none",
        "seed": 7,
        "model": dict(TINY_MODEL),
    }
    model = overrides.pop("model", None)
    settings.update(overrides)
    if model:
        settings["model"] = {**settings["model"], **model}
    return settings


def read_metrics(output_dir) -> list[dict]:
    path = Path(output_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def train_losses(output_dir) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in read_metrics(output_dir) if "train/loss" in r}


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_cpu_launcher(
    script_args: list[str],
    *,
    accelerate_args: tuple[str, ...] = ("--multi_gpu",),
    num_processes: int = 2,
    port: int | None = None,
    machine: tuple[int, int] = (0, 1),
    cwd=None,
    env: dict | None = None,
    torchrun: bool = False,
) -> subprocess.Popen:
    """`accelerate launch` of `num_processes` CPU processes in all (gloo), in a process group of its own.

    `accelerate_args`: `--multi_gpu`, or `--config_file FILE` (e.g. the shipped FSDP config); `machine`:
    (machine rank, number of machines) for a launcher standing in for one node of several; `torchrun`: launch
    with `torchrun --nproc_per_node N` instead of Accelerate's launcher (one machine)."""
    import os
    import sys

    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
    }
    env.pop("ACCELERATE_USE_CPU", None)  # the scripts pass cpu=True themselves when there is no GPU
    rank, machines = machine
    port = port or free_port()
    if torchrun:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(num_processes),
            "--master_addr", "127.0.0.1", "--master_port", str(port),
        ]  # fmt: skip
    else:
        command = [
            sys.executable, "-m", "accelerate.commands.launch", *accelerate_args,
            "--num_processes", str(num_processes), "--num_machines", str(machines), "--machine_rank", str(rank),
            "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
        ]  # fmt: skip
    return subprocess.Popen(
        [*command, *script_args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _kill_launcher(process: subprocess.Popen) -> None:
    import os
    import signal

    # torch's launcher starts each worker in a session of its own, out of reach of the group kill.
    try:
        for worker in psutil.Process(process.pid).children(recursive=True):
            worker.kill()
        os.killpg(process.pid, signal.SIGKILL)
    except (psutil.NoSuchProcess, ProcessLookupError):
        pass


def wait_for_launchers(processes: list[subprocess.Popen], timeout: float) -> list[subprocess.CompletedProcess]:
    """Wait for every launcher; past `timeout` all of them and their workers are killed and the test fails.

    Killing only a launcher would leave its workers orphaned, one of them blocked forever in a collective
    (and holding the output pipes open)."""
    import threading
    import time

    outputs: dict[int, tuple[str, str]] = {}

    def drain(index: int, process: subprocess.Popen) -> None:
        outputs[index] = process.communicate()

    threads = [threading.Thread(target=drain, args=(i, p), daemon=True) for i, p in enumerate(processes)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(thread.is_alive() for thread in threads):
        for process in processes:
            _kill_launcher(process)
        for thread in threads:
            thread.join()
        tails = "\n".join(f"--- launcher {i}:\n{outputs[i][1][-3000:]}" for i in sorted(outputs))
        raise AssertionError(f"multi-process run timed out after {timeout}s:\n{tails}")
    return [
        subprocess.CompletedProcess(process.args, process.returncode, *outputs[i])
        for i, process in enumerate(processes)
    ]


def launch_two_cpu_processes(
    script_args: list[str],
    timeout: float = 170,
    accelerate_args: tuple[str, ...] = ("--multi_gpu",),
    torchrun: bool = False,
) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes 2` (or another launch mode, or torchrun) on CPU (gloo); see
    `start_cpu_launcher`."""
    process = start_cpu_launcher(script_args, accelerate_args=accelerate_args, torchrun=torchrun)
    return wait_for_launchers([process], timeout)[0]


def launch_two_nodes(
    script_args: list[str], cwds: list, timeout: float = 170, accelerate_args: tuple[str, ...] = ("--multi_gpu",)
) -> list[subprocess.CompletedProcess]:
    """Two launchers of one process each, standing in for two machines (`--num_machines 2 --machine_rank 0|1`,
    rendezvous at 127.0.0.1), each in its own working directory `cwds[i]` with its own Hugging Face and wrenlm
    caches there (as on machines that share no disk)."""
    port = free_port()
    processes = [
        start_cpu_launcher(
            script_args,
            accelerate_args=accelerate_args,
            port=port,
            machine=(rank, 2),
            cwd=cwd,
            env={"HF_HOME": str(Path(cwd) / ".hf"), "WREN_CACHE": str(Path(cwd) / ".wren")},
        )
        for rank, cwd in enumerate(cwds)
    ]
    return wait_for_launchers(processes, timeout)


def assert_same_logged_losses(single_dir, other_dir, steps: list[int]) -> None:
    """Two runs logged the same steps with the same losses (router losses and final validation loss included)."""
    logs = [read_metrics(single_dir), read_metrics(other_dir)]
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == steps
    for one, two in zip(*logs):
        figures = [key for key in ("train/loss", "train/aux_loss", "train/z_loss", "eval_full/loss") if key in one]
        assert figures and all(key in two for key in figures)
        for key in figures:
            assert two[key] == pytest.approx(one[key], rel=1e-5), key
