"""Wren model classes."""

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
