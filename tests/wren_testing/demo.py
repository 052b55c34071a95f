"""Helpers for the demo tests (`wren_testing.demo`): scripted tiny Wren models, thread checks.

A scripted model is a real WrenForCausalLM whose weights make greedy and sampled decoding follow a fixed chain of
tokens: every layer's output projections are zero (the residual stream stays the token embedding), each chain
token's embedding is its own one-hot "slot", and the LM head maps slot i to the next token with a large logit.
Any other input token maps to the first piece. So the reply is known in advance and streams token by token.
"""

import threading
import time

import torch
from transformers import TextIteratorStreamer

import wrenlm
from wren_testing import tiny_config_kwargs
from wrenlm.demo.generation import GENERATION_THREAD_NAME
from wrenlm.demo.rendering import reply_html

# Added tokens, so each piece is exactly one token (the chain needs distinct tokens).
REPLY_PIECES = [
    "Good",
    " morrow",
    ",",
    " gentle",
    " friend",
    "!",
    " <img src=x onerror=alert(1)>",
    " Shall",
    " we",
    " walk",
    " the",
    " garden",
    "?",
]
REPLY = "".join(REPLY_PIECES)
# A Markdown reply with raw HTML that would run script if it were rendered as HTML (pieces distinct: each is
# one link of the scripted chain).
MARKDOWN_PIECES = [
    "## Plan\n\n",
    "**Bold**",
    " move:\n\n",
    "- one\n",
    "- two\n\n",
    "```python\n",
    "def f(x):\n",
    "    return x < 2\n",
    "```\n\n",
    "| a | b |\n",
    "|---|---|\n",
    "| 1 | 2 |\n\n",
    'Raw: <img src=x onerror="window.__pwned=1">',
    " <script>window.__pwned=2</script>",
]
MARKDOWN_REPLY = "".join(MARKDOWN_PIECES)
SHOWN_REPLY = reply_html(REPLY)  # what the chat callback returns: HTML for the chatbot, the <img> as characters


def scripted_model(tokenizer, pieces: list[str], *, loop: bool = False, context: int = 256):
    """A Wren model that answers any prompt with `pieces`, then <|im_end|> (or, with `loop`, again and again)."""
    ids = tokenizer.convert_tokens_to_ids(pieces)
    chain = ids + [ids[0] if loop else tokenizer.convert_tokens_to_ids("<|im_end|>")]
    hidden = 64
    assert len(ids) < hidden
    config = wrenlm.WrenConfig(
        **tiny_config_kwargs(
            vocab_size=len(tokenizer), hidden_size=hidden, max_position_embeddings=context, tie_word_embeddings=False
        )
    )
    torch.manual_seed(0)
    model = wrenlm.WrenForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight
        embed.zero_()
        head.zero_()
        embed[:, 0] = 1.0
        head[chain[0], 0] = 10.0
        for slot, (token, following) in enumerate(zip(chain[:-1], chain[1:], strict=True), start=1):
            embed[token].zero_()
            embed[token, slot] = 1.0
            head[following, slot] = 10.0
    return model


def generation_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == GENERATION_THREAD_NAME]


def wait_until(condition, timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


class CountingStreamer(TextIteratorStreamer):
    """A TextIteratorStreamer that counts the tokens generate hands it (the prompt excluded)."""

    instances: list["CountingStreamer"] = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generated, self.prompt_seen = 0, False
        CountingStreamer.instances.append(self)

    def put(self, value):
        if self.prompt_seen:
            self.generated += value.numel()
        self.prompt_seen = True
        super().put(value)
