"""Chat replies as HTML: Markdown rendered, the model's own HTML escaped, the source recoverable."""

from html.parser import HTMLParser

from wrenlm.demo.rendering import reply_html, reply_text

REPLY = """## Plan
**Bold** and *soft*, ~~gone~~, `a<b`

1. one
2. two

```python
def f(x):
    return x < 2 and "<b>"
```

| a | b |
|---|---|
| <i>1</i> | 2 |

<img src=x onerror="window.__pwned=1"> <script>alert(1)</script> &amp; [js](javascript:alert(1)) ![pic](http://example.com/p.png)"""


class _Tags(HTMLParser):
    def __init__(self, html: str):
        super().__init__()
        self.tags, self.attributes = [], []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes += [name for name, _ in attrs]


def test_markdown_becomes_html_elements_and_model_html_stays_text():
    html = reply_html(REPLY)
    parsed = _Tags(html)
    for tag in ("h2", "strong", "em", "s", "code", "ol", "li", "pre", "table", "th", "td", "span"):
        assert tag in parsed.tags, tag
    assert {"img", "script", "i", "b"}.isdisjoint(parsed.tags)  # only tags the Markdown itself makes
    assert {"onerror", "src"}.isdisjoint(parsed.attributes)
    assert '&lt;img src=x onerror="window.__pwned=1"&gt;' in html or "&lt;img src=x onerror=&quot;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;i&gt;1&lt;/i&gt;" in html
    assert "&lt;/script&gt; &amp; [js]" in html  # an entity shows its character, as Markdown defines
    assert 'href="javascript' not in html and "example.com/p.png" in html  # the image is a link, never loaded
    assert '<code class="language-python"><span style=' in html  # Pygments colours, inline


def test_the_reply_source_comes_back_exactly():
    for text in (REPLY, "", "plain", "Ünïcödé 🙂 --> <!-- -->"):
        assert reply_text(reply_html(text)) == text
    assert reply_text("a notice, not a reply") == "a notice, not a reply"
