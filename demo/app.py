"""The Gradio app: a chat tab (ChatInterface, streaming, chat template) and a raw-completion tab for base models.

Chat replies are rendered as Markdown on the server (`rendering.reply_html`: bold, lists, headings, tables,
highlighted code) and anything the model writes as HTML is shown as characters, so a model that writes
`<img src=x onerror=...>` or `<script>` shows that text and nothing runs. The chatbot gets that HTML with its own
Markdown off and Gradio's sanitizer on; the history it hands back is turned into what the model wrote
(`reply_text`). Completions go to a Textbox, which always shows text.
"""

import gradio as gr

from .generation import SamplingSettings, context_length, fit_to_context, stream_generate
from .rendering import reply_html, reply_text

DEFAULT_SYSTEM_PROMPT = ""
NOTICE_TITLE = "Prompt truncated"
DEFAULT_CONCURRENCY = 4


def _sampling_controls(defaults: SamplingSettings, context: int) -> list[gr.components.Component]:
    return [
        gr.Slider(0.0, 2.0, value=defaults.temperature, step=0.05, label="Temperature (0: greedy)", render=False),
        gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="Top-p", render=False),
        gr.Slider(0, 200, value=defaults.top_k, step=1, label="Top-k (0: off)", render=False),
        gr.Slider(
            1,
            max(1, context - 1),
            value=min(defaults.max_new_tokens, context - 1),
            step=1,
            label="Max new tokens",
            render=False,
        ),
    ]


class ChatApp:
    """The demo's callbacks, bound to one model and tokenizer (usable without a UI, e.g. in tests)."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.context = context_length(model)

    def _messages(self, message: str, history: list[dict], system_prompt: str) -> list[dict]:
        messages = [{"role": "system", "content": system_prompt}] if system_prompt.strip() else []
        for turn in history:
            if (turn.get("metadata") or {}).get("title"):
                continue  # our own notices are not part of the conversation
            content = turn["content"]
            if isinstance(content, list):  # Gradio may hand back text as a list of parts
                content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
            if turn["role"] == "assistant":
                content = reply_text(content)  # replies were rendered for display
            messages.append({"role": turn["role"], "content": content})
        return [*messages, {"role": "user", "content": message}]

    def respond(self, message, history, system_prompt, temperature, top_p, top_k, max_new_tokens):
        """ChatInterface callback: yields the growing reply as chat HTML (after a notice if the prompt was cut)."""
        if not self.tokenizer.chat_template:
            raise gr.Error("This tokenizer has no chat template: use the Raw completion tab.")
        messages = self._messages(message, history, system_prompt)
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
        ids, max_new, notice = fit_to_context(ids, self.context, int(max_new_tokens))
        settings = SamplingSettings(float(temperature), float(top_p), int(top_k), max_new)
        notice_message = gr.ChatMessage(role="assistant", content=notice or "", metadata={"title": NOTICE_TITLE})
        yielded = False
        for text in stream_generate(self.model, self.tokenizer, ids, settings):
            yielded = True
            text = reply_html(text)
            yield [notice_message, text] if notice else text
        if not yielded:
            yield [notice_message, ""] if notice else ""

    def complete(self, prompt, temperature, top_p, top_k, max_new_tokens):
        """Raw completion: yields (completion so far, notice)."""
        ids = self.tokenizer(prompt)["input_ids"] or [self.tokenizer.bos_token_id]
        ids, max_new, notice = fit_to_context(ids, self.context, int(max_new_tokens))
        settings = SamplingSettings(float(temperature), float(top_p), int(top_k), max_new)
        notice_text = f"**{NOTICE_TITLE}.** {notice}" if notice else ""
        text = ""
        for text in stream_generate(self.model, self.tokenizer, ids, settings):
            yield text, notice_text
        yield text, notice_text


def build_demo(
    model,
    tokenizer,
    *,
    label: str = "",
    concurrency: int = DEFAULT_CONCURRENCY,
    defaults: SamplingSettings = SamplingSettings(),  # noqa: B008 - a frozen dataclass, never mutated
) -> gr.Blocks:
    """The Blocks app with its queue set up to serve `concurrency` requests at once; `defaults` preset the controls."""
    app = ChatApp(model, tokenizer)
    with gr.Blocks(title="Wren chat") as demo:
        gr.Markdown(f"## Wren chat\nModel: `{label}` · context {app.context} tokens")
        with gr.Tab("Chat"):
            # Replies arrive as HTML rendered by reply_html; the browser-side sanitizer stays on as a second guard.
            chatbot = gr.Chatbot(
                render_markdown=False, sanitize_html=True, allow_tags=False, height=460, label="Conversation"
            )
            system_prompt = gr.Textbox(DEFAULT_SYSTEM_PROMPT, label="System prompt", lines=2, render=False)
            gr.ChatInterface(
                app.respond,
                chatbot=chatbot,
                additional_inputs=[system_prompt, *_sampling_controls(defaults, app.context)],
                additional_inputs_accordion=gr.Accordion("Settings", open=False, render=False),
                api_name="chat",
            )
        with gr.Tab("Raw completion"):
            prompt = gr.Textbox(label="Prompt", lines=5, placeholder="Text for the model to continue")
            controls = _sampling_controls(defaults, app.context)
            with gr.Accordion("Settings", open=False):
                for control in controls:
                    control.render()
            with gr.Row():
                run = gr.Button("Complete", variant="primary")
                stop = gr.Button("Stop")
            completion = gr.Textbox(label="Completion", lines=10, interactive=False)
            notice = gr.Markdown()
            event = run.click(app.complete, [prompt, *controls], [completion, notice], api_name="complete")
            stop.click(None, cancels=[event])
    demo.queue(default_concurrency_limit=concurrency)
    return demo
