"""Helpers for tests/training (`wren_testing.training`): a generated corpus, a tiny tokenizer, tiny runs, launchers."""

import json
import random
import subprocess
from pathlib import Path

import psutil

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


def launch_two_cpu_processes(
    script_args: list[str],
    timeout: float = 170,
    accelerate_config: str | Path | None = None,
    torchrun: bool = False,
) -> subprocess.CompletedProcess:
    """`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo), in its own process group.

    `accelerate_config`: launch with that config file instead of `--multi_gpu` (e.g. a DeepSpeed one);
    `torchrun`: launch with `torchrun --nproc_per_node 2` instead of Accelerate's launcher.

    On timeout the launcher and its workers are killed: killing only the launcher would leave its two
    workers orphaned, one of them blocked forever in a collective (and holding the output pipes open).
    """
    import os
    import signal
    import socket
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    env.pop("ACCELERATE_USE_CPU", None)  # the scripts pass cpu=True themselves when there is no GPU
    torchrun_command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(port), *script_args,
    ]  # fmt: skip
    command = torchrun_command if torchrun else [
        sys.executable, "-m", "accelerate.commands.launch",
        *(["--config_file", str(accelerate_config)] if accelerate_config else ["--multi_gpu"]),
        "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
        *script_args,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # torch's launcher starts each worker in a session of its own, out of reach of the group kill.
        for worker in psutil.Process(process.pid).children(recursive=True):
            worker.kill()
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(f"2-process run timed out after {timeout}s:\n{stderr[-4000:]}") from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
