"""Default CPU threads and OpenMP wait policy (measurements: bench/cpu_threads_bench.py, training/cpu_threads.py)."""

import subprocess
import sys

import pytest
import torch

from wrenlm import cpu_threads
from wrenlm.cpu_threads import apply_cpu_threads, default_cpu_threads, prefer_sleeping_openmp_threads


@pytest.mark.parametrize(
    "argv, wren",
    [
        (["/venv/bin/python", "/venv/bin/wren", "pretrain"], True),
        (["python", "-m", "wrenlm.training.pretrain_cli", "--max-steps", "3"], True),
        (["python", "-u", "-m", "wrenlm.cli", "eval"], True),
        (["python", "train.py"], False),
        (["python", "-m", "pytest", "tests/"], False),
        (["python", "-c", "import wrenlm"], False),
    ],
)
def test_which_processes_are_wren_commands(argv, wren):
    assert cpu_threads._is_wren_command(argv) is wren


def test_wait_policy_is_set_only_for_wren_commands_before_torch_loads(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(sys, "orig_argv", ["python", "/venv/bin/wren", "pretrain"])
    prefer_sleeping_openmp_threads()  # torch is loaded in this process: too late, nothing set
    assert "OMP_WAIT_POLICY" not in cpu_threads.os.environ
    monkeypatch.delitem(sys.modules, "torch")
    prefer_sleeping_openmp_threads()
    assert cpu_threads.os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    prefer_sleeping_openmp_threads()  # a user's choice wins
    assert cpu_threads.os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setattr(sys, "orig_argv", ["python", "my_script.py"])
    prefer_sleeping_openmp_threads()  # importing wrenlm as a library changes nothing
    assert "OMP_WAIT_POLICY" not in cpu_threads.os.environ


def test_a_wren_process_starts_torch_with_sleeping_threads(tmp_path):
    script = tmp_path / "wren"  # what the console script is called
    script.write_text(
        "import os, sys\nimport wrenlm\nprint(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)\n"
    )
    env = {key: value for key, value in cpu_threads.os.environ.items() if key != "OMP_WAIT_POLICY"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.split() == ["PASSIVE", "True"]


@pytest.mark.parametrize(
    "policy, load, local_processes, expected",
    [
        ("PASSIVE", 7.0, "1", 4),  # sleeping threads: every core, whatever the load
        ("PASSIVE", 0.0, "2", 2),  # two local processes share the cores
        ("", 0.2, "1", 4),  # spinning threads on an idle machine: every core
        ("", 2.4, "1", 2),  # two cores busy elsewhere
        ("", 9.0, "1", 1),  # at least one
        ("", 1.0, "2", 1),
    ],
)
def test_default_threads(monkeypatch, policy, load, local_processes, expected):
    monkeypatch.setenv("OMP_WAIT_POLICY", policy)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", local_processes)
    monkeypatch.setattr(cpu_threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(cpu_threads.os, "getloadavg", lambda: (load, load, load))
    assert default_cpu_threads() == expected


def test_apply_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert apply_cpu_threads(3) == 3 == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert apply_cpu_threads(0) == 3  # OMP_NUM_THREADS was read when torch loaded: left alone
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setattr(cpu_threads, "default_cpu_threads", lambda: 2)
        assert apply_cpu_threads(0) == 2 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
