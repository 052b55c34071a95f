"""Shared fixtures: tiny, seeded Wren configs so every test builds its own model in milliseconds."""

import os

import pytest
import torch

# No test may reach the network (no Hub downloads); tests that need a Hub use a local server.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread per test process (the suite runs in parallel); OMP_NUM_THREADS also tells the in-process `wren`
# commands to leave the thread count alone, and child processes inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

import wrenlm  # noqa: E402  (registers the Auto classes for every test)
from wren_testing import tiny_config_kwargs, tiny_moe_config_kwargs  # noqa: E402


@pytest.fixture
def tiny_config():
    return wrenlm.WrenConfig(**tiny_config_kwargs())


@pytest.fixture
def tiny_moe_config():
    return wrenlm.WrenConfig(**tiny_moe_config_kwargs())


@pytest.fixture(params=["dense", "moe"])
def any_tiny_config(request):
    kwargs = tiny_config_kwargs() if request.param == "dense" else tiny_moe_config_kwargs()
    return wrenlm.WrenConfig(**kwargs)
