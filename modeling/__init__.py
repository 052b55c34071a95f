"""Wren model classes."""

# What the model classes' from_pretrained / save_pretrained / push_to_hub add in the wrenlm package (see
# modeling_wren._wrenlm_hub); this file is not shipped with a saved model, so neither is the Hub code.
from ..hub import model_hooks  # noqa: F401
from .modeling_wren import (
    WrenCausalLMOutputWithPast,
    WrenDecoderLayer,
    WrenForCausalLM,
    WrenModel,
    WrenModelOutputWithPast,
    WrenPreTrainedModel,
)

__all__ = [
    "WrenCausalLMOutputWithPast",
    "WrenDecoderLayer",
    "WrenForCausalLM",
    "WrenModel",
    "WrenModelOutputWithPast",
    "WrenPreTrainedModel",
]
