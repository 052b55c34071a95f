"""CPU threads for training and evaluation on a CPU that other processes may also use.

Measured with `python -m bench.cpu_threads_bench` on a 2-core VM shared with other jobs (wren-tiny, batch 8 x 256):
with OpenMP's default wait policy, 2 PyTorch threads trained at 0.20-0.25x the speed of 1 thread (threads spin
at every barrier for a partner that another process holds off its core); with OMP_WAIT_POLICY=PASSIVE
(waiting threads sleep), 2 threads ran at 1.0-1.3x of 1 thread. So:

* the `wren` commands start with OMP_WAIT_POLICY=PASSIVE unless it is set (`prefer_sleeping_openmp_threads`,
  called by `import wrenlm` before torch loads, since OpenMP reads it only then);
* `cpu_threads=0` (the default) means, for `wren pretrain`, `finetune` and `eval`, every usable core for each
  local process when waiting threads sleep; when they may spin, the cores that the 1-minute load average shows
  busy with other work are left out. The Python API (`run_pretraining`, ...) leaves the process's threads alone
  unless `cpu_threads` is set.
"""

import itertools
import os
import sys

WAIT_POLICY_VAR = "OMP_WAIT_POLICY"


def _is_wren_command(argv: list[str]) -> bool:
    """`wren ...`, `python -m wrenlm...` (what `accelerate launch -m wrenlm.training.pretrain_cli` runs)."""
    if len(argv) > 1 and os.path.basename(argv[1]) == "wren":
        return True
    return any(flag == "-m" and module.startswith("wrenlm.") for flag, module in itertools.pairwise(argv))


def prefer_sleeping_openmp_threads() -> None:
    """Set OMP_WAIT_POLICY=PASSIVE for wrenlm's own commands, if nothing set it and torch has not loaded yet.

    Library users keep OpenMP's default: importing wrenlm changes nothing for them.
    """
    if "torch" in sys.modules or WAIT_POLICY_VAR in os.environ:
        return
    if _is_wren_command(list(getattr(sys, "orig_argv", sys.argv))):
        os.environ[WAIT_POLICY_VAR] = "PASSIVE"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_cpu_threads() -> int:
    """Threads for one process: its share of the usable cores, minus busy ones when OpenMP threads may spin."""
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    cores = usable_cores()
    threads = max(1, cores // local_processes)
    if os.environ.get(WAIT_POLICY_VAR, "").upper() != "PASSIVE" and hasattr(os, "getloadavg"):
        busy = round(os.getloadavg()[0])
        threads = min(threads, max(1, (cores - busy) // local_processes))
    return threads


def apply_cpu_threads(setting: int = 0) -> int:
    """`torch.set_num_threads(setting)`, or for 0 the default above (OMP_NUM_THREADS, when set, wins); returns it."""
    import torch

    if setting:
        torch.set_num_threads(setting)
    elif not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(default_cpu_threads())
    return torch.get_num_threads()


__all__ = ["apply_cpu_threads", "default_cpu_threads", "prefer_sleeping_openmp_threads", "usable_cores"]
