"""wrenlm.demo: the Gradio chat demo behind `wren chat`.

from wrenlm.demo import build_demo, load_chat_model

model, tokenizer, label = load_chat_model("runs/wren-nano-shakespeare")   # or a Hub repo, or adapter=...
build_demo(model, tokenizer, label=label).launch()
"""

from ..lazy_exports import lazy_getattr

# Loaded on first use: `wren chat` reports a bad model argument before gradio (seconds to import) loads.
_LAZY = {
    "ChatApp": "app",
    "build_demo": "app",
    "SamplingSettings": "generation",
    "fit_to_context": "generation",
    "stream_generate": "generation",
    "default_model": "loading",
    "load_chat_model": "loading",
}


__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = [
    "ChatApp",
    "SamplingSettings",
    "build_demo",
    "default_model",
    "fit_to_context",
    "load_chat_model",
    "stream_generate",
]
