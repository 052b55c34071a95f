"""Fixtures for the training tests: a generated corpus, a tiny byte-level BPE tokenizer, tiny configs."""

from pathlib import Path

import pytest

from wren_testing.training import build_tokenizer, make_document, tiny_pretrain_settings


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    for i in range(6):
        (root / f"work_{i}.txt").write_text(make_document(i), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, corpus_dir) -> Path:
    out = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(sorted(corpus_dir.glob("*.txt")), vocab_size=384).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


@pytest.fixture
def tiny_settings(corpus_dir, tokenizer_dir, tmp_path):
    def make(**overrides):
        overrides.setdefault("output_dir", tmp_path / "run")
        return tiny_pretrain_settings(corpus_dir, tokenizer_dir, **overrides)

    return make


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each in-process run builds its own Accelerator; drop Accelerate's process-wide singletons afterwards."""
    yield
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
