"""wrenlm.demo: the Gradio chat demo behind `wren chat`.

from wrenlm.demo import build_demo, load_chat_model

model, tokenizer, label = load_chat_model("runs/wren-tiny-shakespeare")   # or a Hub repo, or adapter=...
build_demo(model, tokenizer, label=label).launch()
"""

from .app import ChatApp, build_demo
from .generation import SamplingSettings, fit_to_context, stream_generate
from .loading import default_model, load_chat_model

__all__ = [
    "ChatApp",
    "SamplingSettings",
    "build_demo",
    "default_model",
    "fit_to_context",
    "load_chat_model",
    "stream_generate",
]
