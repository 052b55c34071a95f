"""Model replies as chat HTML: Markdown rendered on the server, any HTML the model writes kept as visible text.

Gradio's own Markdown path (marked in the browser) passes raw HTML through to its sanitizer, which renders
`<img src=x onerror=...>` as an image (without the handler) and deletes `<script>` with its text, so a reply
silently loses characters. Here markdown-it-py renders CommonMark with raw HTML disabled (every `<` the model
wrote becomes `&lt;`), GitHub-style tables and strikethrough, and Pygments colours fenced code with inline
styles; images are not rendered (a reply cannot make the browser fetch a URL), and markdown-it refuses
`javascript:` links. The chatbot shows this HTML with Markdown off and Gradio's sanitizer still on.

The Markdown source rides along in an HTML comment so the next turn's prompt gets exactly what the model wrote.
"""

import base64
import re

from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

_SOURCE = re.compile(r"^<!--wren-source:([A-Za-z0-9+/=]*)-->")
_CODE_FORMATTER = HtmlFormatter(nowrap=True, noclasses=True)


def _highlight(code: str, language: str, _attributes) -> str:
    try:
        lexer = get_lexer_by_name(language) if language else None
    except ClassNotFound:
        lexer = None
    # "" lets markdown-it escape the code itself (unknown or no language: plain, no colours).
    return highlight(code, lexer, _CODE_FORMATTER) if lexer is not None else ""


# breaks: a single newline is a line break, as chat models write (and as Gradio's chatbot shows by default).
_MARKDOWN = (
    MarkdownIt("commonmark", {"html": False, "breaks": True, "highlight": _highlight})
    .enable(["table", "strikethrough"])
    .disable("image")
)


def reply_html(text: str) -> str:
    """The chat HTML of a model reply (Markdown rendered, the model's own HTML shown as characters)."""
    source = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return f"<!--wren-source:{source}-->" + _MARKDOWN.render(text)


def reply_text(content: str) -> str:
    """What the model wrote, from a `reply_html` message (other content is returned as it is)."""
    match = _SOURCE.match(content)
    return base64.b64decode(match.group(1)).decode("utf-8") if match else content


__all__ = ["reply_html", "reply_text"]
