"""Fixtures of the demo tests: a tokenizer with the scripted reply's pieces, scripted models, a launched demo, headless
Chromium."""

import os
from pathlib import Path

import pytest

from wren_testing.demo import MARKDOWN_PIECES, REPLY_PIECES, CountingStreamer, scripted_model
from wrenlm.tokenization import WrenTokenizer

CHROMIUM = os.environ.get("WREN_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (make test does it) to run browser tests"
        )
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def chat_tokenizer():
    tokenizer = WrenTokenizer()
    tokenizer.add_tokens(REPLY_PIECES + MARKDOWN_PIECES)
    return tokenizer


@pytest.fixture(scope="session")
def reply_model(chat_tokenizer):
    return scripted_model(chat_tokenizer, REPLY_PIECES)


@pytest.fixture(scope="session")
def markdown_model(chat_tokenizer):
    return scripted_model(chat_tokenizer, MARKDOWN_PIECES)


@pytest.fixture(scope="session")
def endless_model(chat_tokenizer):
    """Never ends a turn by itself: only max_new_tokens or a stop ends it (a long context leaves room)."""
    return scripted_model(chat_tokenizer, REPLY_PIECES, loop=True, context=4096)


@pytest.fixture
def launch():
    """`launch(model, tokenizer, **build_kwargs)` -> url of the demo served on 127.0.0.1 (closed after the test)."""
    from wrenlm.demo import build_demo

    demos = []

    def start(model, tokenizer, **kwargs):
        demo = build_demo(model, tokenizer, label="scripted test model", **kwargs)
        demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
        demos.append(demo)
        return demo.local_url.rstrip("/")

    yield start
    for demo in demos:
        demo.close()


@pytest.fixture
def streamers(monkeypatch):
    """The CountingStreamers of the generations started during the test."""
    from wrenlm.demo import generation

    monkeypatch.setattr(generation, "TextIteratorStreamer", CountingStreamer)
    CountingStreamer.instances = []
    return CountingStreamer.instances
