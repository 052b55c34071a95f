"""Field-by-field mapping between Hugging Face decoder configs and `WrenConfig`.

Every field that changes the computation is mapped explicitly; a source feature Wren cannot
reproduce (or a Wren feature the chosen HF family cannot) raises `UnsupportedConversionError`
naming it, so a conversion is either exact or refused.
"""

from copy import deepcopy

from huggingface_hub.errors import StrictDataclassError
from transformers import (
    LlamaConfig,
    MistralConfig,
    MixtralConfig,
    PreTrainedConfig,
    Qwen2Config,
    Qwen3Config,
    Qwen3MoeConfig,
)
from transformers.utils import logging

from ..configuration import WrenConfig
from .errors import UnsupportedConversionError

logger = logging.get_logger(__name__)

DENSE_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
MOE_MODEL_TYPES = ("mixtral", "qwen3_moe")
# Families that convert to Wren, and the ones Wren converts back to.
SOURCE_MODEL_TYPES = DENSE_MODEL_TYPES + MOE_MODEL_TYPES
TARGET_MODEL_TYPES = SOURCE_MODEL_TYPES

HF_CONFIG_CLASSES: dict[str, type[PreTrainedConfig]] = {
    "llama": LlamaConfig,
    "mistral": MistralConfig,
    "qwen2": Qwen2Config,
    "qwen3": Qwen3Config,
    "mixtral": MixtralConfig,
    "qwen3_moe": Qwen3MoeConfig,
}

# Rope types computed identically on both sides (transformers' ROPE_INIT_FUNCTIONS / the default).
CONVERTIBLE_ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3", "longrope")

# Architectures people try that Wren cannot reproduce, with the reason.
_UNSUPPORTED_MODEL_TYPES = {
    "qwen2_moe": "its shared expert is scaled by a learned sigmoid gate (`shared_expert_gate`), which Wren's "
    "shared experts do not have",
    "gemma": "its RMSNorm scales by (1 + weight) and the embeddings are multiplied by sqrt(hidden_size)",
    "gemma2": "attention logit softcapping, final logit softcapping and sandwich (post-block) norms",
    "gemma3_text": "sandwich (post-block) norms and per-layer-type rope",
    "deepseek_v3": "multi-head latent attention and group-limited sigmoid routing",
    "olmo2": "post-block norms (norm after attention and MLP instead of before)",
    "phi3": "fused qkv / gate_up projections and partial rotary embeddings",
}

# Config attributes that change the computation and that Wren has no counterpart for, with the
# values that mean "feature off".
_OFF = (None, 0, 0.0, False)
_IDENTITY = (None, 1, 1.0)
_UNSUPPORTED_ATTRIBUTES = {
    "attn_logit_softcapping": ("attention logit softcapping", _OFF),
    "final_logit_softcapping": ("final logit softcapping", _OFF),
    "shared_expert_intermediate_size": ("a gated shared expert (Qwen2-MoE style)", _OFF),
    "logits_scaling": ("scaled output logits", _IDENTITY),
    "embedding_multiplier": ("scaled input embeddings", _IDENTITY),
    "residual_multiplier": ("scaled residual branches", _IDENTITY),
    "attention_multiplier": ("a custom attention scale", (None,)),
}

# Wren MoE fields used only while training that no HF family stores (dropped on export, with a warning).
_TRAINING_ONLY_FIELDS = ("router_z_loss_coef", "router_bias_update_rate")


# ------------------------------------------------------------------------------------------------
# HF -> Wren
def config_to_wren(hf_config: PreTrainedConfig) -> WrenConfig:
    """Map a Llama / Mistral / Qwen2 / Qwen3 / Mixtral / Qwen3-MoE config to an equivalent `WrenConfig`."""
    model_type = getattr(hf_config, "model_type", None)
    if model_type == WrenConfig.model_type:
        raise UnsupportedConversionError("The source is already a Wren config; use config_from_wren to go back to HF.")
    if model_type not in SOURCE_MODEL_TYPES:
        reason = _UNSUPPORTED_MODEL_TYPES.get(model_type, "this architecture is not one Wren reproduces")
        raise UnsupportedConversionError(
            f"Cannot convert model_type {model_type!r} to Wren: {reason}. "
            f"Supported source families: {', '.join(SOURCE_MODEL_TYPES)}."
        )
    _reject_unsupported_attributes(hf_config, model_type)

    fields = _common_fields_to_wren(hf_config)
    fields.update(_attention_fields_to_wren(hf_config, model_type))
    fields["sliding_window"] = _sliding_window_to_wren(hf_config, model_type)
    if model_type in MOE_MODEL_TYPES:
        fields.update(_moe_fields_to_wren(hf_config, model_type))
    try:
        return WrenConfig(**fields)
    except (ValueError, TypeError, StrictDataclassError) as error:
        raise UnsupportedConversionError(f"This {model_type} config is not a valid Wren config: {error}") from error


def _reject_unsupported_attributes(hf_config, model_type: str) -> None:
    for name, (feature, neutral) in _UNSUPPORTED_ATTRIBUTES.items():
        value = getattr(hf_config, name, None)
        if value not in neutral:
            raise UnsupportedConversionError(
                f"Cannot convert this {model_type} config to Wren: it uses {feature} (`{name}={value!r}`), "
                "which Wren does not implement."
            )


def _common_fields_to_wren(hf_config) -> dict:
    heads = hf_config.num_attention_heads
    fields = dict(
        vocab_size=hf_config.vocab_size,
        hidden_size=hf_config.hidden_size,
        intermediate_size=hf_config.intermediate_size,
        num_hidden_layers=hf_config.num_hidden_layers,
        num_attention_heads=heads,
        num_key_value_heads=getattr(hf_config, "num_key_value_heads", None) or heads,
        # Every family reads `getattr(config, "head_dim", None) or hidden // heads`; make it explicit.
        head_dim=getattr(hf_config, "head_dim", None) or hf_config.hidden_size // heads,
        hidden_act=hf_config.hidden_act,
        max_position_embeddings=hf_config.max_position_embeddings,
        initializer_range=hf_config.initializer_range,
        rms_norm_eps=hf_config.rms_norm_eps,
        use_cache=hf_config.use_cache,
        tie_word_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
        rope_parameters=_rope_to_wren(hf_config),
        attention_dropout=hf_config.attention_dropout or 0.0,
        mlp_bias=bool(getattr(hf_config, "mlp_bias", False)),
        pad_token_id=hf_config.pad_token_id,
        bos_token_id=hf_config.bos_token_id,
        eos_token_id=hf_config.eos_token_id,
        output_router_logits=bool(getattr(hf_config, "output_router_logits", False)),
    )
    dtype = getattr(hf_config, "dtype", None)
    if dtype is not None:
        fields["dtype"] = dtype
    return fields


def _rope_to_wren(hf_config) -> dict:
    model_type = hf_config.model_type
    rope = getattr(hf_config, "rope_parameters", None)
    if rope is None:
        return {"rope_type": "default", "rope_theta": float(getattr(hf_config, "default_theta", 10000.0))}
    if any(isinstance(value, dict) for value in rope.values()):
        raise UnsupportedConversionError(
            f"Cannot convert this {model_type} config to Wren: it has per-layer-type rope parameters "
            f"({sorted(rope)}); Wren uses one rope for every layer."
        )
    rope = deepcopy(dict(rope))
    rope_type = rope.pop("type", None) or rope.get("rope_type", "default")
    rope["rope_type"] = rope_type
    if rope_type not in CONVERTIBLE_ROPE_TYPES:
        raise UnsupportedConversionError(
            f"Cannot convert this {model_type} config to Wren: rope type {rope_type!r} is not supported "
            f"(supported: {', '.join(CONVERTIBLE_ROPE_TYPES)})."
        )
    partial = rope.get("partial_rotary_factor", getattr(hf_config, "partial_rotary_factor", None))
    if partial is not None and partial != 1.0:
        raise UnsupportedConversionError(
            f"Cannot convert this {model_type} config to Wren: partial rotary embeddings "
            f"(`partial_rotary_factor={partial}`); Wren rotates the whole head."
        )
    rope.pop("partial_rotary_factor", None)
    return rope


def _attention_fields_to_wren(hf_config, model_type: str) -> dict:
    if model_type == "qwen2":
        # Qwen2 always has q/k/v biases and never an o_proj bias.
        return dict(attention_bias=True, attention_output_bias=False, qk_norm=False)
    if model_type in ("mistral", "mixtral"):
        return dict(attention_bias=False, attention_output_bias=False, qk_norm=False)
    bias = bool(getattr(hf_config, "attention_bias", False))  # llama, qwen3, qwen3_moe: q/k/v and o_proj
    return dict(attention_bias=bias, attention_output_bias=bias, qk_norm=model_type in ("qwen3", "qwen3_moe"))


def _sliding_window_to_wren(hf_config, model_type: str) -> int | None:
    window = getattr(hf_config, "sliding_window", None)
    layer_types = getattr(hf_config, "layer_types", None)
    if layer_types is None:
        # Mistral / Mixtral / Qwen3-MoE apply their window (if any) to every layer, like Wren.
        return window
    kinds = set(layer_types)
    unknown = kinds - {"full_attention", "sliding_attention"}
    if unknown:
        raise UnsupportedConversionError(
            f"Cannot convert this {model_type} config to Wren: unknown attention layer types {sorted(unknown)} "
            "in `layer_types`."
        )
    if "sliding_attention" not in kinds:
        return None
    if "full_attention" not in kinds:
        return window
    sliding = [i for i, kind in enumerate(layer_types) if kind == "sliding_attention"]
    raise UnsupportedConversionError(
        f"Cannot convert this {model_type} config to Wren: sliding-window attention on some layers only "
        f"(layers {sliding} of {len(layer_types)} use a window of {window}, set by `use_sliding_window` / "
        "`max_window_layers` / `layer_types`); Wren applies one `sliding_window` to every layer or to none."
    )


def _moe_fields_to_wren(hf_config, model_type: str) -> dict:
    fields = dict(
        num_experts_per_tok=hf_config.num_experts_per_tok,
        router_aux_loss_coef=hf_config.router_aux_loss_coef,
        # HF families train without these; keep the converted model's training behaviour the same.
        num_shared_experts=0,
        router_z_loss_coef=0.0,
        router_bias_update_rate=0.0,
    )
    if model_type == "mixtral":
        fields.update(
            num_experts=hf_config.num_local_experts,
            moe_intermediate_size=hf_config.intermediate_size,
            norm_topk_prob=True,  # Mixtral always renormalises the top-k probabilities
            router_jitter_noise=hf_config.router_jitter_noise or 0.0,
            first_k_dense_layers=0,
            moe_layer_interval=1,
        )
        return fields
    # qwen3_moe
    num_layers = hf_config.num_hidden_layers
    step = hf_config.decoder_sparse_step
    dense_only = set(hf_config.mlp_only_layers or [])
    sparse = [i for i in range(num_layers) if i not in dense_only and (i + 1) % step == 0]
    first_k, interval = _moe_layout(
        sparse, num_layers, model_type, f"decoder_sparse_step={step}, mlp_only_layers={sorted(dense_only)}"
    )
    fields.update(
        num_experts=hf_config.num_experts,
        moe_intermediate_size=hf_config.moe_intermediate_size,
        norm_topk_prob=bool(hf_config.norm_topk_prob),
        router_jitter_noise=0.0,
        first_k_dense_layers=first_k,
        moe_layer_interval=interval,
    )
    return fields


def _moe_layout(sparse: list[int], num_layers: int, model_type: str, described: str) -> tuple[int, int]:
    """(first_k_dense_layers, moe_layer_interval) reproducing exactly the given MoE layer indices."""
    if not sparse:
        raise UnsupportedConversionError(
            f"Cannot convert this {model_type} config to Wren: no layer is a MoE layer ({described})."
        )
    first_k = sparse[0]
    interval = sparse[1] - sparse[0] if len(sparse) > 1 else max(1, num_layers - first_k)
    if list(range(first_k, num_layers, interval)) != sparse:
        raise UnsupportedConversionError(
            f"Cannot convert this {model_type} config to Wren: its MoE layers {sparse} ({described}) are not "
            "'the first k layers dense, then every n-th layer MoE' (`first_k_dense_layers`, `moe_layer_interval`)."
        )
    return first_k, interval


# ------------------------------------------------------------------------------------------------
# Wren -> HF
def default_target(wren_config: WrenConfig) -> str:
    """The HF family a Wren config converts to when none is named: the first one that expresses it exactly."""
    candidates = []
    if wren_config.is_moe:
        candidates = ["qwen3_moe", "mixtral"] if wren_config.qk_norm else ["mixtral", "qwen3_moe"]
    elif wren_config.qk_norm:
        candidates = ["qwen3"]
    elif wren_config.attention_bias and not wren_config.attention_output_bias:
        candidates = ["qwen2"]
    elif wren_config.sliding_window is not None:
        candidates = ["mistral"]
    candidates += [target for target in TARGET_MODEL_TYPES if target not in candidates]
    reasons = {}
    for target in candidates:
        reasons[target] = target_obstacles(wren_config, target)
        if not reasons[target]:
            return target
    detail = "; ".join(f"{target}: {', '.join(found)}" for target, found in reasons.items())
    raise UnsupportedConversionError(f"No Hugging Face architecture expresses this Wren model exactly ({detail}).")


def target_obstacles(wren_config: WrenConfig, target: str) -> list[str]:
    """Why `target` cannot express `wren_config` exactly (empty when it can)."""
    c = wren_config
    found = []
    if c.is_moe and target not in MOE_MODEL_TYPES:
        found.append(f"it has Mixture-of-Experts layers (num_experts={c.num_experts}) and {target} is dense")
    if not c.is_moe and target in MOE_MODEL_TYPES:
        found.append(f"it is dense (num_experts=0) and {target} is a Mixture-of-Experts family")
    has_qk_norm = target in ("qwen3", "qwen3_moe")
    if c.qk_norm and not has_qk_norm:
        found.append(f"qk_norm=True and {target} has no query/key norm")
    if not c.qk_norm and has_qk_norm:
        found.append(f"qk_norm=False and {target} always normalises queries and keys")
    # Biases a target lacks cannot be dropped; biases it has and Wren lacks are written as zeros.
    if target in ("mistral", "mixtral") and (c.attention_bias or c.attention_output_bias):
        found.append(f"attention biases and {target} has none")
    if target == "qwen2" and c.attention_output_bias:
        found.append("attention_output_bias=True and Qwen2 has no o_proj bias")
    if c.mlp_bias and target != "llama":
        found.append(f"mlp_bias=True and {target} has no MLP bias")
    if c.sliding_window is not None and target == "llama":
        found.append(f"sliding_window={c.sliding_window} and Llama has no sliding-window attention")
    if target == "llama" and c.hidden_size % c.num_attention_heads != 0:
        found.append(
            f"hidden_size={c.hidden_size} is not a multiple of num_attention_heads={c.num_attention_heads}, "
            "which LlamaConfig requires"
        )
    if c.is_moe and target in MOE_MODEL_TYPES:
        if c.num_shared_experts > 0:
            found.append(f"num_shared_experts={c.num_shared_experts} and {target} has no shared experts")
        if target == "mixtral":
            if not c.norm_topk_prob:
                found.append("norm_topk_prob=False and Mixtral always renormalises the top-k probabilities")
            if c.first_k_dense_layers or c.moe_layer_interval != 1:
                found.append(
                    f"dense layers (first_k_dense_layers={c.first_k_dense_layers}, moe_layer_interval="
                    f"{c.moe_layer_interval}) and every Mixtral layer is MoE"
                )
    return found


def config_from_wren(wren_config: WrenConfig, target: str | None = None) -> PreTrainedConfig:
    """Map a `WrenConfig` to the equivalent config of `target` (default: `default_target`)."""
    if getattr(wren_config, "model_type", None) != WrenConfig.model_type:
        raise UnsupportedConversionError(
            f"config_from_wren needs a Wren config, got model_type {getattr(wren_config, 'model_type', None)!r}."
        )
    if target is None:
        target = default_target(wren_config)
    if target not in TARGET_MODEL_TYPES:
        raise UnsupportedConversionError(f"Unknown target {target!r}; choose one of: {', '.join(TARGET_MODEL_TYPES)}.")
    obstacles = target_obstacles(wren_config, target)
    if obstacles:
        raise UnsupportedConversionError(
            f"This Wren model cannot be expressed as {target} exactly: {'; '.join(obstacles)}."
        )
    dropped = [
        f"{name}={getattr(wren_config, name)}"
        for name in _TRAINING_ONLY_FIELDS + (("router_jitter_noise",) if target == "qwen3_moe" else ())
        if wren_config.is_moe and getattr(wren_config, name)
    ]
    if dropped:
        logger.warning_once(f"{target} has no counterpart for these training-only Wren settings: {', '.join(dropped)}")

    fields = _common_fields_from_wren(wren_config)
    fields.update(_FAMILY_FIELDS[target](wren_config))
    try:
        return HF_CONFIG_CLASSES[target](**fields)
    except (ValueError, TypeError, StrictDataclassError) as error:
        raise UnsupportedConversionError(f"{target} rejects this Wren model's configuration: {error}") from error


def _common_fields_from_wren(c: WrenConfig) -> dict:
    fields = dict(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads,
        head_dim=c.head_dim,
        hidden_act=c.hidden_act,
        max_position_embeddings=c.max_position_embeddings,
        initializer_range=c.initializer_range,
        rms_norm_eps=c.rms_norm_eps,
        use_cache=c.use_cache,
        tie_word_embeddings=c.tie_word_embeddings,
        rope_parameters=deepcopy(dict(c.rope_parameters)),
        attention_dropout=c.attention_dropout,
        pad_token_id=c.pad_token_id,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
    )
    if getattr(c, "dtype", None) is not None:
        fields["dtype"] = c.dtype
    return fields


def _qwen_sliding_fields(c: WrenConfig) -> dict:
    # Qwen2/Qwen3 slide on layers >= max_window_layers: 0 puts every layer under Wren's window.
    sliding = c.sliding_window is not None
    return dict(
        use_sliding_window=sliding,
        sliding_window=c.sliding_window,
        max_window_layers=0 if sliding else c.num_hidden_layers,
        layer_types=["sliding_attention" if sliding else "full_attention"] * c.num_hidden_layers,
    )


def _llama_fields(c: WrenConfig) -> dict:
    # One flag covers q/k/v and o_proj; a bias Wren lacks is written as zeros by the state-dict mapping.
    return dict(attention_bias=c.attention_bias or c.attention_output_bias, mlp_bias=c.mlp_bias)


def _mistral_fields(c: WrenConfig) -> dict:
    return dict(sliding_window=c.sliding_window)


def _qwen2_fields(c: WrenConfig) -> dict:
    return _qwen_sliding_fields(c)


def _qwen3_fields(c: WrenConfig) -> dict:
    return dict(attention_bias=c.attention_bias or c.attention_output_bias, **_qwen_sliding_fields(c))


def _mixtral_fields(c: WrenConfig) -> dict:
    return dict(
        num_local_experts=c.num_experts,
        num_experts_per_tok=c.num_experts_per_tok,
        intermediate_size=c.moe_intermediate_size,
        router_aux_loss_coef=c.router_aux_loss_coef,
        router_jitter_noise=c.router_jitter_noise,
        output_router_logits=c.output_router_logits,
        sliding_window=c.sliding_window,
    )


def _qwen3_moe_fields(c: WrenConfig) -> dict:
    sparse = [i for i in range(c.num_hidden_layers) if c.is_moe_layer(i)]
    step = c.moe_layer_interval
    if sparse == [i for i in range(c.num_hidden_layers) if (i + 1) % step == 0]:
        layout = dict(decoder_sparse_step=step, mlp_only_layers=[])
    else:
        dense = [i for i in range(c.num_hidden_layers) if i not in sparse]
        layout = dict(decoder_sparse_step=1, mlp_only_layers=dense)
    return dict(
        num_experts=c.num_experts,
        num_experts_per_tok=c.num_experts_per_tok,
        moe_intermediate_size=c.moe_intermediate_size,
        norm_topk_prob=c.norm_topk_prob,
        router_aux_loss_coef=c.router_aux_loss_coef,
        output_router_logits=c.output_router_logits,
        attention_bias=c.attention_bias or c.attention_output_bias,
        use_sliding_window=c.sliding_window is not None,
        sliding_window=c.sliding_window,
        **layout,
    )


_FAMILY_FIELDS = {
    "llama": _llama_fields,
    "mistral": _mistral_fields,
    "qwen2": _qwen2_fields,
    "qwen3": _qwen3_fields,
    "mixtral": _mixtral_fields,
    "qwen3_moe": _qwen3_moe_fields,
}

__all__ = [
    "CONVERTIBLE_ROPE_TYPES",
    "SOURCE_MODEL_TYPES",
    "TARGET_MODEL_TYPES",
    "config_from_wren",
    "config_to_wren",
    "default_target",
    "target_obstacles",
]
