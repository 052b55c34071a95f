"""Fixtures of the Hub tests: a tiny trained tokenizer, tiny Wren models saved as Hub folders, a local Hub server."""

import random
import sys
from pathlib import Path

import pytest

from wren_testing.hub import build_model, subprocess_env
from wrenlm.tokenization import train_tokenizer

sys.path.insert(0, str(Path(__file__).parent))  # hub_server.py sits next to the tests that use it
from hub_server import HubServer

TOKEN = "hf_wren_test_token"
USER = "tester"
WORDS = [
    "thou",
    "art",
    "my",
    "lord",
    "and",
    "I",
    "thy",
    "humble",
    "servant",
    "shall",
    "we",
    "walk",
    "the",
    "garden",
    "in",
    "the",
    "morning",
    "light",
]


@pytest.fixture(scope="session")
def hub_tokenizer(tmp_path_factory):
    rng = random.Random(0)
    corpus = tmp_path_factory.mktemp("corpus") / "plays.txt"
    corpus.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(400)) + "\n")
    return train_tokenizer([corpus], vocab_size=320, show_progress=False)


@pytest.fixture
def save_model(hub_tokenizer, tmp_path):
    """`save_model(kind, name, **save_kwargs)` -> (model, folder): a tiny Wren + tokenizer, save_pretrained."""

    def save(kind: str = "dense", name: str = "wren-tiny", **save_kwargs):
        model = build_model(kind, hub_tokenizer)
        folder = tmp_path / name
        model.save_pretrained(folder, **save_kwargs)
        hub_tokenizer.save_pretrained(folder)
        return model, folder

    return save


@pytest.fixture
def hub_server(tmp_path):
    with HubServer(tmp_path / "hub-storage", token=TOKEN, user=USER) as server:
        yield server


@pytest.fixture
def hub_env(tmp_path, hub_server):
    """Environment for a child process that talks to the local Hub server (HF_HUB_OFFLINE unset)."""
    return subprocess_env(tmp_path, HF_ENDPOINT=hub_server.endpoint, HF_TOKEN=TOKEN)
