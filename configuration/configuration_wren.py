"""Configuration of the Wren decoder family (dense and Mixture-of-Experts).

This file is also exported verbatim next to the model code in saved checkpoints, so it may only
import torch/transformers/huggingface_hub and its flat siblings.
"""

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig
from transformers.modeling_rope_utils import RopeParameters

# Rope types the Wren rotary embedding accepts; "default" is computed by the model itself, the
# others come from transformers' ROPE_INIT_FUNCTIONS.
SUPPORTED_ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3", "longrope")


@strict
class WrenConfig(PreTrainedConfig):
    r"""
    Configuration for Wren models. One class covers dense models (`num_experts=0`) and routed
    Mixture-of-Experts models (`num_experts>0`).

    Architecture:
        vocab_size, hidden_size, intermediate_size, num_hidden_layers: the usual sizes.
        num_attention_heads / num_key_value_heads: MHA when equal, GQA when kv heads divide the
            heads, MQA with one kv head. `num_key_value_heads=None` means MHA.
        head_dim: per-head size; defaults to hidden_size // num_attention_heads.
        hidden_act: activation of the gated (SwiGLU-style) feed-forward.
        rope_parameters: transformers' rope dict (`rope_type` one of default, linear, dynamic,
            yarn, llama3, longrope, plus `rope_theta` and the type's own keys).
        qk_norm: RMSNorm on each query/key head before rotary (as in Qwen3, OLMo-2).
        attention_bias: bias on the q/k/v projections. attention_output_bias: bias on o_proj
            (defaults to `attention_bias`; Qwen2 uses qkv bias without an output bias).
        sliding_window: optional attention window applied in every layer (Mistral style).

    Mixture of Experts (ignored when `num_experts=0`):
        num_experts, num_experts_per_tok (top-k), moe_intermediate_size (per expert; defaults to
        intermediate_size), num_shared_experts (always-on experts, DeepSeek style) with
        shared_expert_intermediate_size (defaults to moe_intermediate_size * num_shared_experts).
        Layer `i` is MoE when `i >= first_k_dense_layers` and
        `(i - first_k_dense_layers) % moe_layer_interval == 0`.
        norm_topk_prob: renormalise the top-k routing probabilities to sum to one.
        router_aux_loss_coef: Switch-style load-balancing loss weight (always 0 for dense models).
        router_z_loss_coef: ST-MoE router z-loss weight.
        router_bias_update_rate: aux-loss-free balancing (DeepSeek-V3): a per-expert bias, used
            only for expert selection, moved by this rate towards balanced load after each
            optimizer step (`model.update_router_bias()`); 0 disables it.
        router_jitter_noise: multiplicative uniform noise on router inputs while training.

    Training:
        loss_chunk_size: tokens per chunk of the memory-lean LM head + cross-entropy used when
            training with labels (the full `[tokens, vocab]` logits are never materialised);
            None sizes chunks from a 64 MiB budget of fp32 logits in multiples of 256 tokens (512
            at vocab 32k), 0 disables it. How chunks run is `model.loss_implementation`.
    """

    model_type = "wren"
    keys_to_ignore_at_inference = ["cache"]
    default_theta = 10000.0

    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        # Per-head norms see only this rank's heads: full weights, gradients summed over the ranks (as Qwen3).
        "layers.*.self_attn.q_norm": "replicated_with_grad_allreduce",
        "layers.*.self_attn.k_norm": "replicated_with_grad_allreduce",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
        "layers.*.mlp.experts.gate_up_proj": "packed_colwise",
        "layers.*.mlp.experts.down_proj": "rowwise",
        "layers.*.mlp.experts": "moe_tp_experts",
        "layers.*.mlp.shared_experts.gate_proj": "colwise",
        "layers.*.mlp.shared_experts.up_proj": "colwise",
        "layers.*.mlp.shared_experts.down_proj": "rowwise",
    }
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    vocab_size: int = 32000
    hidden_size: int = 2048
    intermediate_size: int = 5632
    num_hidden_layers: int = 16
    num_attention_heads: int = 16
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    hidden_act: str = "silu"
    max_position_embeddings: int = 4096
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    tie_word_embeddings: bool = True
    rope_parameters: RopeParameters | dict | None = None
    qk_norm: bool = False
    attention_bias: bool = False
    attention_output_bias: bool | None = None
    attention_dropout: float | int = 0.0
    mlp_bias: bool = False
    sliding_window: int | None = None

    num_experts: int = 0
    num_experts_per_tok: int = 2
    moe_intermediate_size: int | None = None
    num_shared_experts: int = 0
    shared_expert_intermediate_size: int | None = None
    first_k_dense_layers: int = 0
    moe_layer_interval: int = 1
    norm_topk_prob: bool = True
    router_aux_loss_coef: float = 0.01
    router_z_loss_coef: float = 0.001
    router_bias_update_rate: float = 0.0
    router_jitter_noise: float = 0.0
    output_router_logits: bool = False

    loss_chunk_size: int | None = None

    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None and self.num_attention_heads and self.hidden_size % self.num_attention_heads == 0:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.attention_output_bias is None:
            self.attention_output_bias = self.attention_bias
        if self.moe_intermediate_size is None:
            self.moe_intermediate_size = self.intermediate_size
        if self.shared_expert_intermediate_size is None:
            self.shared_expert_intermediate_size = self.moe_intermediate_size * self.num_shared_experts
        if self.num_experts == 0:
            # A dense model has no load-balancing loss. Tools read a non-zero coefficient next to
            # `output_router_logits` as "MoE" (TRL's SFTTrainer then asks for router logits there are none of).
            self.router_aux_loss_coef = 0.0
        super().__post_init__(**kwargs)

    # ----------------------------------------------------------------------------------------
    # Derived layout
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def is_moe_layer(self, layer_idx: int) -> bool:
        """Whether decoder layer `layer_idx` uses the routed MoE feed-forward."""
        if self.num_experts == 0 or layer_idx < self.first_k_dense_layers:
            return False
        return (layer_idx - self.first_k_dense_layers) % self.moe_layer_interval == 0

    @property
    def mlp_layer_types(self) -> list[str]:
        return ["sparse" if self.is_moe_layer(i) else "dense" for i in range(self.num_hidden_layers)]

    # ----------------------------------------------------------------------------------------
    # Validation (run by @strict at construction and again before saving)
    def validate_architecture(self):
        """Sizes and head layout, each error naming the offending field."""
        positive = (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "max_position_embeddings",
        )
        for name in positive:
            value = getattr(self, name)
            if value is None or value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value}.")
        if self.head_dim is None:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) is not divisible by `num_attention_heads` "
                f"({self.num_attention_heads}); choose sizes that divide or set `head_dim` explicitly."
            )
        if self.head_dim <= 0 or self.head_dim % 2 != 0:
            raise ValueError(f"`head_dim` must be a positive even integer (rotary pairs dims), got {self.head_dim}.")
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError(
                f"`num_key_value_heads` ({self.num_key_value_heads}) must divide `num_attention_heads` "
                f"({self.num_attention_heads})."
            )
        if self.rms_norm_eps <= 0:
            raise ValueError(f"`rms_norm_eps` must be positive, got {self.rms_norm_eps}.")
        if not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"`attention_dropout` must be in [0, 1), got {self.attention_dropout}.")
        if self.initializer_range < 0:
            raise ValueError(f"`initializer_range` must be non-negative, got {self.initializer_range}.")
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise ValueError(f"`sliding_window` must be a positive integer or None, got {self.sliding_window}.")
        if self.loss_chunk_size is not None and self.loss_chunk_size < 0:
            raise ValueError(f"`loss_chunk_size` must be >= 0 (0 disables chunking), got {self.loss_chunk_size}.")
        from transformers.activations import ACT2FN

        if self.hidden_act not in ACT2FN:
            raise ValueError(f"`hidden_act` {self.hidden_act!r} is unknown; choose one of {sorted(ACT2FN)}.")

    def validate_moe(self):
        if self.num_experts < 0:
            raise ValueError(f"`num_experts` must be >= 0 (0 means dense), got {self.num_experts}.")
        if self.num_experts == 0:
            return
        if not 1 <= self.num_experts_per_tok <= self.num_experts:
            raise ValueError(
                f"`num_experts_per_tok` ({self.num_experts_per_tok}) must be between 1 and `num_experts` "
                f"({self.num_experts})."
            )
        for name in ("moe_intermediate_size", "moe_layer_interval"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)}.")
        for name in ("num_shared_experts", "first_k_dense_layers"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if self.num_shared_experts > 0 and self.shared_expert_intermediate_size <= 0:
            raise ValueError(
                f"`shared_expert_intermediate_size` must be positive with shared experts, "
                f"got {self.shared_expert_intermediate_size}."
            )
        if self.first_k_dense_layers >= self.num_hidden_layers:
            raise ValueError(
                f"`first_k_dense_layers` ({self.first_k_dense_layers}) leaves no MoE layer among "
                f"`num_hidden_layers` ({self.num_hidden_layers}); use num_experts=0 for a dense model."
            )
        for name in ("router_aux_loss_coef", "router_z_loss_coef", "router_bias_update_rate", "router_jitter_noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")

    def validate_rope(self):
        """Unknown rope types are an error (transformers only warns), then transformers' own checks."""
        rope_parameters = self.rope_parameters or {}
        rope_type = rope_parameters.get("rope_type", rope_parameters.get("type", "default"))
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(
                f"`rope_parameters['rope_type']` {rope_type!r} is not supported; choose one of {SUPPORTED_ROPE_TYPES}."
            )
        super().validate_rope()


__all__ = ["SUPPORTED_ROPE_TYPES", "WrenConfig"]
