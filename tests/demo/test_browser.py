"""A real browser: headless Chromium (Debian's `chromium`) driven by Playwright against the launched demo.

`make test` installs chromium when it is missing; without it these tests skip and say so (fixture in conftest.py).
"""

from pathlib import Path

import pytest

from wren_testing.demo import MARKDOWN_REPLY, REPLY, generation_threads, wait_until
from wrenlm.demo import SamplingSettings

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Records every text the newest bot message shows, so fast streaming is observed even between polls.
WATCH_BOT_TEXT = """() => {
    window.__botTexts = [];
    const record = () => {
        const bots = document.querySelectorAll('[data-testid="bot"]');
        const text = bots.length ? bots[bots.length - 1].innerText : "";
        if (text && window.__botTexts[window.__botTexts.length - 1] !== text) window.__botTexts.push(text);
    };
    new MutationObserver(record).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


def _send(page, message: str) -> None:
    box = page.get_by_role("textbox").first
    box.fill(message)
    box.press("Enter")


def test_typed_message_gets_a_streamed_plain_text_answer(browser, launch, reply_model, chat_tokenizer):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(launch(reply_model, chat_tokenizer))
    page.wait_for_selector("textarea")
    page.evaluate(WATCH_BOT_TEXT)
    page.on("dialog", lambda dialog: pytest.fail(f"model output ran script: {dialog.message}"))
    _send(page, "Good morrow, Wren!")

    bot = page.locator('[data-testid="bot"]').last
    bot.wait_for()
    wait_until(lambda: bot.inner_text().strip() == REPLY, timeout=30)
    assert bot.inner_text().strip() == REPLY  # the <img ...> piece is shown as characters
    texts = page.evaluate("window.__botTexts")
    growing = [text.strip() for text in texts]
    assert len(growing) >= 3 and growing[-1] == REPLY
    assert all(REPLY.startswith(text) for text in growing)  # each intermediate text is a prefix: streamed
    assert page.locator('[data-testid="bot"] img').count() == 0  # ...and never becomes an element
    assert "Good morrow, Wren!" in page.locator('[data-testid="user"]').last.inner_text()

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat-demo.png"))
    page.close()


def test_markdown_renders_and_the_models_html_stays_inert_text(browser, launch, markdown_model, chat_tokenizer):
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(launch(markdown_model, chat_tokenizer))
    page.wait_for_selector("textarea")
    page.on("dialog", lambda dialog: pytest.fail(f"model output ran script: {dialog.message}"))
    _send(page, "Show me Markdown")

    bot = page.locator('[data-testid="bot"]').last
    bot.wait_for()
    assert wait_until(lambda: "window.__pwned=2</script>" in bot.inner_text(), timeout=30), bot.inner_text()
    assert wait_until(lambda: not generation_threads(), timeout=30)
    assert bot.locator("h2").inner_text() == "Plan"
    assert bot.locator("strong").inner_text() == "Bold"
    assert bot.locator("li").all_inner_texts() == ["one", "two"]
    code = bot.locator("pre code")
    assert code.inner_text().strip() == "def f(x):\n    return x < 2"
    assert code.locator("span[style]").count() > 3  # highlighted
    assert bot.locator("table td").all_inner_texts() == ["1", "2"]
    # The model's HTML is shown as the characters it wrote, and never becomes an element or runs.
    shown = bot.inner_text()
    assert 'Raw: <img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script>' in shown
    assert bot.locator("img").count() == 0 and bot.locator("script").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert MARKDOWN_REPLY.startswith("## Plan")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat-demo-markdown.png"))
    page.close()


def test_closing_the_tab_mid_answer_ends_the_generation(browser, launch, endless_model, chat_tokenizer, streamers):
    page = browser.new_page()
    page.goto(launch(endless_model, chat_tokenizer, defaults=SamplingSettings(0.0, max_new_tokens=4000)))
    page.wait_for_selector("textarea")
    _send(page, "Talk forever")
    assert wait_until(lambda: generation_threads() and streamers and streamers[-1].generated > 20, timeout=30)
    page.close()  # the user closes the tab mid-answer
    assert wait_until(lambda: not generation_threads(), timeout=30)
    assert streamers[-1].generated < 3000  # cut short: without the stop it runs to 4000


def test_stop_button_ends_the_generation(browser, launch, endless_model, chat_tokenizer, streamers):
    page = browser.new_page()
    page.goto(launch(endless_model, chat_tokenizer, defaults=SamplingSettings(0.0, max_new_tokens=4000)))
    page.wait_for_selector("textarea")
    _send(page, "Talk forever")
    assert wait_until(lambda: generation_threads() and streamers and streamers[-1].generated > 20, timeout=30)
    page.locator("button.stop-button").first.click()  # ChatInterface's Stop (an icon button)
    assert wait_until(lambda: not generation_threads(), timeout=30)
    assert streamers[-1].generated < 3000
    page.close()
