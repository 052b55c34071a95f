"""Helpers for the Hub and demo tests (`wren_testing.hub`)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

import wrenlm
from wren_testing import tiny_config_kwargs, tiny_moe_config_kwargs

SITE_PACKAGES = str(Path(torch.__file__).parents[1])


def build_model(kind: str, tokenizer, seed: int = 0) -> wrenlm.WrenForCausalLM:
    kwargs = tiny_config_kwargs if kind == "dense" else tiny_moe_config_kwargs
    torch.manual_seed(seed)
    model = wrenlm.WrenForCausalLM(wrenlm.WrenConfig(**kwargs(vocab_size=len(tokenizer))))
    return model.eval()


def chat_prompt(tokenizer) -> list[int]:
    messages = [{"role": "user", "content": "shall we walk the garden"}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]


def greedy_tokens(model, prompt_ids: list[int], new_tokens: int = 12) -> list[int]:
    with torch.no_grad():
        output = model.generate(torch.tensor([prompt_ids]), max_new_tokens=new_tokens, do_sample=False)
    return output[0, len(prompt_ids) :].tolist()


def subprocess_env(tmp_path: Path, **extra) -> dict:
    """A clean environment for a child process: its own HF_HOME and module cache, online unless told otherwise."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_MODULES_CACHE": str(tmp_path / "hf-modules"),
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    env.update({key: str(value) for key, value in extra.items()})
    return env


def run_python(script: str, env: dict, *, cwd, hide_wrenlm: bool = False, timeout: int = 240, python=None):
    """Run `script` in a fresh interpreter (`python`, default this one); its last stdout line is JSON, decoded.

    hide_wrenlm: `python -S` skips site-packages' .pth files, so the editable wrenlm install is not importable
    while torch/transformers (on PYTHONPATH) are: a machine where wrenlm was never installed. `cwd` must not be
    the repository root, whose wrenlm/ folder would be importable from there.
    """
    command = [str(python or sys.executable), "-c", textwrap.dedent(script)]
    if hide_wrenlm:
        command.insert(1, "-S")
        env = {**env, "PYTHONPATH": SITE_PACKAGES}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)
    assert result.returncode == 0, f"child failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])
