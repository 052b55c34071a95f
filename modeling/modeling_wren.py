"""Wren decoder: pre-norm blocks of GQA self-attention and a SwiGLU or routed-MoE feed-forward.

Follows transformers' Llama / Qwen3-MoE conventions (module names, Cache API, attention and
experts interfaces, output capture) so generate, PEFT, Accelerate and device_map need no special
cases.
"""

import dataclasses
import functools
import sys
from dataclasses import dataclass

import torch
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import MoeCausalLMOutputWithPast, MoeModelOutputWithPast
from transformers.modeling_utils import PreTrainedModel, slice_logits_to_keep
from transformers.utils import can_return_tuple
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.import_utils import is_torchdynamo_compiling
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from ..configuration.configuration_wren import WrenConfig
from .attention import WrenAttention
from .lm_loss import chunked_causal_lm_loss
from .mlp import WrenMLP
from .moe import WrenExperts, WrenSparseMoeBlock, WrenTopKRouter
from .norm import WrenRMSNorm
from .rotary import WrenRotaryEmbedding
from .router_losses import expert_load, router_losses


def _wrenlm_hub():
    """wrenlm.hub's model hooks, or None where this file runs as remote code in a process without wrenlm.

    The hooks (checkpoint-file check, flat code export, model card, upload) load with the wrenlm package and are
    looked up here, not imported: none of that code ships with a saved model, and remote code never imports an
    installed wrenlm behind the user's back. Without them transformers' own from_pretrained, save_pretrained and
    push_to_hub apply.
    """
    return sys.modules.get("wrenlm.hub.model_hooks")


@dataclass
class WrenModelOutputWithPast(MoeModelOutputWithPast):
    """Per MoE layer, `router_indices`: the experts chosen for each token `[tokens, top_k]`;
    `router_probs`: the router's fp32 softmax `[tokens, experts]`."""

    router_indices: tuple[torch.Tensor, ...] | None = None
    router_probs: tuple[torch.Tensor, ...] | None = None


@dataclass
class WrenCausalLMOutputWithPast(MoeCausalLMOutputWithPast):
    """Adds the router z-loss and the per-layer expert load `[moe_layers, experts]` (fractions)."""

    z_loss: torch.Tensor | None = None
    expert_load: torch.Tensor | None = None


def _no_router_outputs_when_dense(forward):
    """A dense model has no router logits: None (as transformers' MoE helpers expect), not an empty tuple.

    TRL and `load_balancing_loss_func` treat None as "no auxiliary loss" but index into an empty tuple.
    """

    @functools.wraps(forward)
    def wrapper(self, *args, **kwargs):
        outputs = forward(self, *args, **kwargs)
        if not self.config.is_moe and isinstance(outputs, WrenModelOutputWithPast) and outputs.router_logits == ():
            outputs = dataclasses.replace(outputs, router_logits=None, router_indices=None)
        return outputs

    return wrapper


class WrenDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: WrenConfig, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = WrenAttention(config, layer_idx)
        self.mlp = WrenSparseMoeBlock(config) if config.is_moe_layer(layer_idx) else WrenMLP(config)
        self.input_layernorm = WrenRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = WrenRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states, _ = self.self_attn(
            hidden_states=self.input_layernorm(hidden_states),
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            position_embeddings=position_embeddings,
            **kwargs,
        )
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        return residual + hidden_states


class WrenPreTrainedModel(PreTrainedModel):
    config: WrenConfig
    config_class = WrenConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["WrenDecoderLayer"]
    _skip_keys_device_placement = ["cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _can_compile_fullgraph = True
    _supports_attention_backend = True
    _keys_to_ignore_on_load_missing = [r"mlp\.gate\.expert_bias"]
    _can_record_outputs = {
        "router_logits": OutputRecorder(WrenTopKRouter, index=0),
        "router_indices": OutputRecorder(WrenTopKRouter, index=2),
        "router_probs": OutputRecorder(WrenTopKRouter, index=3),
        "hidden_states": WrenDecoderLayer,
        "attentions": WrenAttention,
    }

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        if (hub := _wrenlm_hub()) is not None:  # names a truncated or missing weight file of a local folder
            hub.check_before_load(pretrained_model_name_or_path, kwargs.get("subfolder"))
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # wrenlm adds the flat code files, auto_map and the model card; remote code relies on transformers' copying.
        if (hub := _wrenlm_hub()) is None:
            return super().save_pretrained(save_directory, *args, **kwargs)
        return hub.save_pretrained(self, super().save_pretrained, save_directory, *args, **kwargs)

    def push_to_hub(self, *args, **kwargs):
        # wrenlm uploads in one commit with the Wren model card instead of transformers' generic one.
        if (hub := _wrenlm_hub()) is None:
            return super().push_to_hub(*args, **kwargs)
        return hub.push_to_hub(self, *args, **kwargs)

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        # Attention lives in attention.py; transformers' heuristic only reads this module's source.
        return True

    @classmethod
    def _can_set_experts_implementation(cls) -> bool:
        # WrenExperts (moe.py) is decorated with use_experts_implementation.
        return True

    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, WrenExperts):
            init.normal_(module.gate_up_proj, mean=0.0, std=std)
            init.normal_(module.down_proj, mean=0.0, std=std)
        elif isinstance(module, WrenTopKRouter):
            init.normal_(module.weight, mean=0.0, std=std)
            init.zeros_(module.expert_bias)
            init.zeros_(module.expert_load)


class WrenModel(WrenPreTrainedModel):
    def __init__(self, config: WrenConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [WrenDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = WrenRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = WrenRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    def _check_inputs(self, input_ids: torch.LongTensor | None, seq_len: int, cache: Cache | None) -> None:
        """Fail loudly on ids outside the vocabulary and on sequences past the context window."""
        if is_torchdynamo_compiling():
            return
        past = cache.get_seq_length() if cache is not None else 0
        if torch.is_tensor(past):
            # Static caches keep their length on the device; reading it would stall every decoding step.
            return
        limit = self.config.max_position_embeddings
        # Dynamic NTK rope extends the window on the fly; every other rope type is bounded by it.
        if self.config.rope_parameters.get("rope_type") != "dynamic" and past + seq_len > limit:
            raise ValueError(
                f"Sequence of {past + seq_len} tokens ({past} cached + {seq_len} new) exceeds the model's context "
                f"window max_position_embeddings={limit}. Truncate the prompt or lower max_new_tokens."
            )
        # Reading the check's result back costs a device sync on accelerators. So training steps are not
        # checked (their batches are validated where they are prepared: `wren pretrain` sizes the
        # vocabulary from its tokenizer, `wren finetune` checks the encoded conversations), nor, on
        # accelerators, decoding steps (they feed back the model's own tokens).
        if input_ids is None or input_ids.numel() == 0 or (self.training and torch.is_grad_enabled()):
            return
        if past > 0 and input_ids.device.type != "cpu":
            return
        out_of_range = (input_ids < 0) | (input_ids >= self.config.vocab_size)
        if out_of_range.any():
            bad = input_ids[out_of_range][0].item()
            raise ValueError(
                f"input_ids contains token id {bad}, outside the vocabulary of size {self.config.vocab_size} "
                "(valid ids are 0..vocab_size-1). Check that the tokenizer matches this model."
            )

    @_no_router_outputs_when_dense
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> WrenModelOutputWithPast:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        seq_len = input_ids.shape[1] if input_ids is not None else inputs_embeds.shape[1]
        self._check_inputs(input_ids, seq_len, cache)

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        # Only given positions can describe packed sequences; for the default ones transformers' check for
        # packing (a host sync when there is neither a padding mask nor a cache, as in training) is skipped.
        mask_position_ids = position_ids
        if position_ids is None:
            past_seen_tokens = cache.get_seq_length() if cache is not None else 0
            position_ids = (torch.arange(seq_len, device=inputs_embeds.device) + past_seen_tokens).unsqueeze(0)

        mask_function = create_causal_mask if self.config.sliding_window is None else create_sliding_window_causal_mask
        causal_mask = mask_function(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=mask_position_ids,
        )

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)
        for decoder_layer in self.layers[: self.config.num_hidden_layers]:
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=causal_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                position_embeddings=position_embeddings,
                **kwargs,
            )
        hidden_states = self.norm(hidden_states)
        return WrenModelOutputWithPast(last_hidden_state=hidden_states, cache=cache)


class WrenForCausalLM(WrenPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}
    _fsdp_plan = {"lm_head": "keep_full_weight"}

    def __init__(self, config: WrenConfig):
        super().__init__(config)
        self.model = WrenModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # How the chunked training loss runs: auto, eager, compile or liger (see lm_loss.py). A runtime
        # choice like the attention implementation, so it is not saved with the config.
        self.loss_implementation = "auto"
        self.post_init()

    def _prepare_generated_length(
        self,
        generation_config,
        has_default_max_length,
        has_default_min_length,
        model_input_name,
        input_ids_length,
        inputs_tensor,
    ):
        """transformers' length preparation, then one check for every cache before any token is computed.

        transformers only warns when `max_new_tokens` runs past the context; the dynamic cache then failed
        mid-way (generated tokens lost) and the static cache silently ran past it. The default `max_length`
        is already clamped to the context by transformers.
        """
        generation_config = super()._prepare_generated_length(
            generation_config,
            has_default_max_length,
            has_default_min_length,
            model_input_name,
            input_ids_length,
            inputs_tensor,
        )
        positions = generation_config.max_length
        if model_input_name == "inputs_embeds" and inputs_tensor.shape[1] != input_ids_length:
            positions += inputs_tensor.shape[1]  # as transformers sizes the cache for embeddings prompts
        prompt = positions - generation_config.max_length + input_ids_length
        limit = self.config.max_position_embeddings
        # Dynamic NTK rope extends the window on the fly (as in WrenModel._check_inputs).
        if positions > limit and self.config.rope_parameters.get("rope_type") != "dynamic":
            room = f"at most {limit - prompt} new tokens fit" if prompt < limit else "the prompt alone does not fit"
            raise ValueError(
                f"Generating up to {positions - prompt} new tokens after a {prompt}-token prompt needs {positions} "
                f"positions, more than the model's context window max_position_embeddings={limit} ({room}). "
                "Shorten the prompt or lower max_new_tokens."
            )
        return generation_config

    def routers(self) -> list[WrenTopKRouter]:
        return [module for module in self.modules() if isinstance(module, WrenTopKRouter)]

    @torch.no_grad()
    def update_router_bias(self, reduce=None) -> None:
        """Aux-loss-free balancing step: call after each optimizer step when `router_bias_update_rate > 0`.

        `reduce` (e.g. `accelerator.reduce`) sums the load counts across data-parallel ranks so every
        rank applies the same update.
        """
        for router in self.routers():
            load = router.expert_load if reduce is None else reduce(router.expert_load.clone())
            router.update_bias(load)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_router_logits: bool | None = None,
        output_expert_load: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> WrenCausalLMOutputWithPast:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Targets for next-token prediction (shifted inside); -100 is ignored. In training mode the
            loss is computed chunk-wise without materialising the logits (`logits` is then None);
            set `config.loss_chunk_size=0` to get the plain path. `model.loss_implementation` picks
            how the chunks run (see `wrenlm.modeling.lm_loss`).
        output_router_logits (`bool`, *optional*):
            Return per-layer router logits and the load-balancing and z losses.
        output_expert_load (`bool`, *optional*):
            Return the per-layer expert load. Default: with the router logits outside training; a
            training loop asks for it on logging steps only.
        """
        config = self.config
        if use_cache is None and self.training and torch.is_grad_enabled():
            use_cache = False  # a training step has no use for a cache (and a compiled block would guard on it)
        if output_router_logits is None:
            output_router_logits = config.output_router_logits
        if output_expert_load is None:
            output_expert_load = output_router_logits and not self.training
        wants_router_losses = labels is not None and (config.router_aux_loss_coef > 0 or config.router_z_loss_coef > 0)
        record_router = config.is_moe and (output_router_logits or output_expert_load or wants_router_losses)

        outputs: WrenModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_router_logits=record_router,
            output_router_indices=record_router,
            output_router_probs=record_router,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state

        loss = logits = None
        use_lean_loss = labels is not None and self.training and config.loss_chunk_size != 0
        if use_lean_loss:
            head_weight = self.lm_head.weight
            if hasattr(head_weight, "full_tensor"):  # tensor parallel: a vocab-sharded DTensor; chunk the whole head
                head_weight = head_weight.full_tensor()
            loss = chunked_causal_lm_loss(
                hidden_states,
                head_weight,
                labels,
                chunk_size=config.loss_chunk_size,
                implementation=self.loss_implementation,
                **kwargs,
            )
        else:
            logits = self.lm_head(slice_logits_to_keep(hidden_states, logits_to_keep))
            if labels is not None:
                loss = self.loss_function(logits=logits, labels=labels, vocab_size=config.vocab_size, **kwargs)

        aux_loss = z_loss = load = None
        if record_router and outputs.router_logits:
            aux_loss, z_loss = router_losses(
                outputs.router_logits, outputs.router_probs, outputs.router_indices, config.num_experts, attention_mask
            )
            if output_expert_load:
                load = expert_load(outputs.router_indices, config.num_experts, attention_mask)
            if labels is not None:
                loss = loss + config.router_aux_loss_coef * aux_loss.to(loss.device)
                loss = loss + config.router_z_loss_coef * z_loss.to(loss.device)

        return WrenCausalLMOutputWithPast(
            loss=loss,
            aux_loss=aux_loss,
            z_loss=z_loss,
            expert_load=load,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            router_logits=outputs.router_logits if output_router_logits else None,
        )


__all__ = [
    "WrenCausalLMOutputWithPast",
    "WrenDecoderLayer",
    "WrenForCausalLM",
    "WrenModel",
    "WrenModelOutputWithPast",
    "WrenPreTrainedModel",
]
