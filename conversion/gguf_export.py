"""Wren checkpoints -> GGUF files that llama.cpp runs, written with the `gguf` package (`wren export gguf`).

A Wren model is written as the llama.cpp architecture of the Hugging Face family that expresses it exactly
(`config_mapping.target_obstacles`): Llama-style dense models as `llama`, q/k/v-bias-only models as `qwen2`,
qk_norm models as `qwen3`, MoE models as `llama` with experts (Mixtral layout) or `qwen3moe` (with qk_norm).
Features llama.cpp's graph for that architecture does not compute (sliding windows, dense layers between MoE
layers, unnormalised top-k, a router selection bias, other activations or rope types) are refused with an
error naming them, as is a tokenizer llama.cpp would split differently (see `gguf_vocab`).

    from wrenlm.conversion.gguf_export import export_gguf
    export_gguf("runs/my-wren", "my-wren.Q8_0.gguf", outtype="q8_0")
"""

import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import ModelCard
from transformers import PreTrainedModel

from .checkpoint_io import find_tokenizer, load_causal_lm, load_config
from .config_mapping import target_obstacles
from .errors import UnsupportedConversionError
from .gguf import HUB_URL, require_gguf
from .state_dict_mapping import reject_router_bias

# Wren's Hugging Face family (config_mapping) -> llama.cpp architecture (`general.architecture`).
GGUF_ARCHITECTURES = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "mixtral": "llama",
    "qwen3_moe": "qwen3moe",
}
# llama.cpp runs `llama` with interleaved rotary pairs; HF rotates halves, so q/k rows are permuted on export
# (transformers' GGUF reader permutes them back).
_INTERLEAVED_ROPE = ("llama",)
OUTPUT_TYPES = ("f32", "f16", "bf16", "q8_0")
_ROPE_TYPES = ("default", "linear")


@dataclass(frozen=True)
class GGUFExport:
    """What `export_gguf` wrote."""

    path: Path
    architecture: str
    outtype: str
    tensor_count: int
    pre_tokenizer: str
    # Tensors whose rows Q8_0 cannot hold (length not a multiple of its 32-value block), written as F16 instead.
    f16_fallbacks: tuple[str, ...] = field(default=())


def gguf_family(config) -> str:
    """The HF family whose llama.cpp architecture computes this Wren model exactly; refuses naming each obstacle."""
    if config.is_moe:
        family = "qwen3_moe" if config.qk_norm else "mixtral"
    elif config.qk_norm:
        family = "qwen3"
    elif config.attention_bias and not config.attention_output_bias:
        family = "qwen2"
    else:
        family = "llama"
    obstacles = target_obstacles(config, family) + llama_cpp_obstacles(config, family)
    if obstacles:
        raise UnsupportedConversionError(
            f"This Wren model cannot be exported to GGUF (llama.cpp architecture {GGUF_ARCHITECTURES[family]!r}, "
            f"{family} layout): {'; '.join(obstacles)}."
        )
    return family


def llama_cpp_obstacles(config, family: str) -> list[str]:
    """What llama.cpp's graph for `family`'s architecture does not compute, beyond the HF family's own limits."""
    arch = GGUF_ARCHITECTURES[family]
    found = []
    if config.sliding_window is not None and family != "llama":  # target_obstacles names it for llama
        found.append(f"sliding_window={config.sliding_window} and llama.cpp's {arch} has no sliding-window attention")
    if config.hidden_act != "silu":
        found.append(f"hidden_act={config.hidden_act!r} and llama.cpp's {arch} gates its MLP with SiLU")
    rope_type = (config.rope_parameters or {}).get("rope_type", "default")
    if rope_type not in _ROPE_TYPES:
        found.append(f"rope_type={rope_type!r} is not exported (supported: {', '.join(_ROPE_TYPES)})")
    if arch in ("qwen3", "qwen3moe") and config.attention_output_bias:
        found.append(f"attention_output_bias=True and llama.cpp's {arch} has no o_proj bias")
    if arch == "qwen2" and config.head_dim * config.num_attention_heads != config.hidden_size:
        found.append(
            f"head_dim*num_attention_heads={config.head_dim * config.num_attention_heads} differs from hidden_size="
            f"{config.hidden_size}, which llama.cpp's qwen2 assumes"
        )
    if arch == "qwen3moe":
        if config.first_k_dense_layers or config.moe_layer_interval != 1:
            found.append(
                f"dense layers (first_k_dense_layers={config.first_k_dense_layers}, moe_layer_interval="
                f"{config.moe_layer_interval}) and every layer of llama.cpp's qwen3moe is MoE"
            )
        if not config.norm_topk_prob:
            found.append("norm_topk_prob=False and llama.cpp's qwen3moe always renormalises the top-k probabilities")
    return found


def export_gguf(
    model_or_path: "PreTrainedModel | str | Path",
    output_path: "str | Path",
    *,
    outtype: str = "auto",
    tokenizer=None,
    overwrite: bool = False,
) -> GGUFExport:
    """Write a Wren model and its tokenizer as one self-contained GGUF file llama.cpp runs.

    `outtype`: f32, f16, bf16 or q8_0 for the matrices (norms, biases and MoE routers stay F32, as llama.cpp's
    own converter keeps them); "auto" is bf16 for a bfloat16 checkpoint and f16 otherwise. `tokenizer`: object or
    folder, default the checkpoint's own. The file appears only when complete; an existing one is replaced only
    with `overwrite=True`.
    """
    require_gguf()
    from gguf import GGUFWriter

    if outtype not in ("auto",) + OUTPUT_TYPES:
        raise ValueError(f"Unknown GGUF output type {outtype!r}; choose one of auto, {', '.join(OUTPUT_TYPES)}.")
    output_path = Path(output_path)
    if output_path.is_dir():
        raise ValueError(f"{output_path} is a folder; give the .gguf file to write.")
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"{output_path} already exists; pass --force (overwrite=True) to replace it.")
    config = load_config(model_or_path)
    if config.model_type != "wren":
        raise UnsupportedConversionError(
            f"GGUF export needs a Wren checkpoint, got model_type {config.model_type!r}; convert it to Wren first "
            "(`wren convert --from ...`)."
        )
    family = gguf_family(config)  # refuse before loading any weight
    arch = GGUF_ARCHITECTURES[family]
    tokenizer = find_tokenizer(model_or_path, tokenizer)
    if tokenizer is None:
        raise FileNotFoundError(f"{model_or_path} has no tokenizer; a GGUF file must carry one for llama.cpp.")
    from .gguf_vocab import gguf_vocabulary  # imports `gguf`, whose presence require_gguf checked

    vocabulary = gguf_vocabulary(tokenizer, config.vocab_size)
    model = load_causal_lm(model_or_path)
    state_dict = model.state_dict()
    reject_router_bias(state_dict, f"GGUF ({arch})")
    outtype = _resolve_outtype(outtype, state_dict)

    output_path.parent.mkdir(parents=True, exist_ok=True)
    _remove_killed_partials(output_path)
    # Written next to the target under a fresh name (created with the usual permissions), renamed when complete.
    partial = output_path.with_name(f".{output_path.name}.{secrets.token_hex(6)}.partial")
    try:
        writer = GGUFWriter(partial, arch)
        _write_metadata(writer, model.config, family, outtype, _card_metadata(model_or_path), _name(model_or_path))
        vocabulary.write(writer)
        fallbacks, count = _write_tensors(writer, state_dict, model.config, family, outtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, output_path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return GGUFExport(output_path, arch, outtype, count, vocabulary.pre_tokenizer, tuple(fallbacks))


def _remove_killed_partials(output_path: Path) -> None:
    """Delete what an export to the same file left when it was killed mid-write (only this exporter's naming)."""
    pattern = re.compile(rf"\.{re.escape(output_path.name)}\.[0-9a-f]{{12}}\.partial")
    for path in output_path.parent.iterdir():
        if pattern.fullmatch(path.name) and path.is_file():
            path.unlink()


def _resolve_outtype(outtype: str, state_dict: dict) -> str:
    if outtype != "auto":
        return outtype
    floating = [tensor.dtype for tensor in state_dict.values() if tensor.is_floating_point()]
    return "bf16" if floating and floating[0] == torch.bfloat16 else "f16"


def _name(model_or_path) -> str:
    if isinstance(model_or_path, PreTrainedModel):
        return Path(model_or_path.name_or_path or "wren").name or "wren"
    return Path(str(model_or_path)).name or "wren"


def _card_metadata(model_or_path) -> dict:
    """license / base_model from the checkpoint's model card (what `gguf.gguf_card_metadata` reads back)."""
    if isinstance(model_or_path, PreTrainedModel):
        return dict(getattr(model_or_path, "card_metadata", None) or {})
    readme = Path(str(model_or_path)) / "README.md"
    if not readme.is_file():
        return {}
    return ModelCard.load(readme).data.to_dict()


def _write_metadata(writer, config, family: str, outtype: str, card: dict, name: str) -> None:
    from gguf import GGML_QUANT_VERSION, GGUFType, LlamaFileType, RopeScalingType

    file_types = {
        "f32": LlamaFileType.ALL_F32,
        "f16": LlamaFileType.MOSTLY_F16,
        "bf16": LlamaFileType.MOSTLY_BF16,
        "q8_0": LlamaFileType.MOSTLY_Q8_0,
    }
    writer.add_type(GGUFType.MODEL)
    writer.add_name(name)
    writer.add_file_type(file_types[outtype])
    writer.add_quantization_version(GGML_QUANT_VERSION)
    if card.get("license"):
        writer.add_license(str(card["license"]))
    base_models = card.get("base_model") or []
    base_models = [base_models] if isinstance(base_models, str) else list(base_models)
    if base_models:
        writer.add_base_model_count(len(base_models))
        for index, repo in enumerate(base_models):
            writer.add_base_model_name(index, repo.split("/")[-1])
            writer.add_base_model_repo_url(index, HUB_URL + repo)

    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    # llama.cpp's `llama` sizes its experts by feed_forward_length; qwen3moe has its own key for them.
    mixtral_layout = family == "mixtral"
    writer.add_feed_forward_length(config.moe_intermediate_size if mixtral_layout else config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_dimension_count(config.head_dim)
    rope = config.rope_parameters or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.default_theta)))
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    if config.is_moe:
        writer.add_expert_count(config.num_experts)
        writer.add_expert_used_count(config.num_experts_per_tok)
        if not mixtral_layout:
            writer.add_expert_feed_forward_length(config.moe_intermediate_size)


def _write_tensors(writer, state_dict: dict, config, family: str, outtype: str) -> tuple[list[str], int]:
    from gguf import GGMLQuantizationType, quants

    kinds = {
        "f32": GGMLQuantizationType.F32,
        "f16": GGMLQuantizationType.F16,
        "bf16": GGMLQuantizationType.BF16,
        "q8_0": GGMLQuantizationType.Q8_0,
    }
    requested = kinds[outtype]
    fallbacks, count = [], 0
    for name, array in gguf_tensors(state_dict, config, family):
        kind = requested
        if array.ndim == 1 or name.endswith("ffn_gate_inp.weight"):
            kind = GGMLQuantizationType.F32  # norms, biases and routers: tiny, and routing decides on exact values
        elif kind == GGMLQuantizationType.Q8_0 and array.shape[-1] % quants.GGML_QUANT_SIZES[kind][0]:
            kind = GGMLQuantizationType.F16
            fallbacks.append(name)
        if kind == GGMLQuantizationType.F32:
            writer.add_tensor(name, array)
        elif kind == GGMLQuantizationType.F16:
            writer.add_tensor(name, array.astype(np.float16))
        else:
            writer.add_tensor(name, quants.quantize(array, kind), raw_dtype=kind)
        count += 1
    return fallbacks, count


def gguf_tensors(state_dict: dict, config, family: str):
    """(llama.cpp tensor name, float32 array in GGUF's layout) for every weight of a Wren model."""
    from gguf import MODEL_ARCH_NAMES, MODEL_TENSOR, TENSOR_NAMES, get_tensor_name_map

    arch = next(key for key, value in MODEL_ARCH_NAMES.items() if value == GGUF_ARCHITECTURES[family])
    names = get_tensor_name_map(arch, config.num_hidden_layers)
    interleave = GGUF_ARCHITECTURES[family] in _INTERLEAVED_ROPE
    for name, tensor in state_dict.items():
        if name.endswith("mlp.gate.expert_bias"):
            continue  # checked to be zero (reject_router_bias): llama.cpp's softmax router has no selection bias
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # llama.cpp reuses token_embd when the file has no `output` tensor
        array = tensor.detach().to(device="cpu", dtype=torch.float32).numpy()
        stem, _, suffix = name.rpartition(".")
        if suffix not in ("weight", "bias"):
            stem, suffix = name, "weight"  # fused expert tensors are bare parameters
        if stem.endswith("mlp.experts.gate_up_proj"):
            # Wren fuses [gate; up] per expert ([E, 2I, H]); llama.cpp keeps them as two [E, I, H] tensors.
            block = int(stem.split(".")[2])
            gate, up = np.split(array, 2, axis=1)
            yield TENSOR_NAMES[MODEL_TENSOR.FFN_GATE_EXP].format(bid=block) + ".weight", gate
            yield TENSOR_NAMES[MODEL_TENSOR.FFN_UP_EXP].format(bid=block) + ".weight", up
            continue
        gguf_name = names.get_name(stem)
        if gguf_name is None:
            raise UnsupportedConversionError(f"llama.cpp's {GGUF_ARCHITECTURES[family]} has no tensor for {name}.")
        if interleave and stem.endswith(("self_attn.q_proj", "self_attn.k_proj")):
            heads = config.num_attention_heads if stem.endswith("q_proj") else config.num_key_value_heads
            array = interleave_rotary_rows(array, heads)
        yield f"{gguf_name}.{suffix}", np.ascontiguousarray(array)


def interleave_rotary_rows(array: np.ndarray, heads: int) -> np.ndarray:
    """q/k projection rows (or biases) from HF's rotate-half order to llama.cpp's interleaved pairs, per head.

    Within each head HF rotates dimension i with i + d/2; llama.cpp rotates 2i with 2i + 1.
    """
    half = array.shape[0] // heads // 2
    return array.reshape(heads, 2, half, *array.shape[1:]).swapaxes(1, 2).reshape(array.shape)


__all__ = [
    "GGUF_ARCHITECTURES",
    "OUTPUT_TYPES",
    "GGUFExport",
    "export_gguf",
    "gguf_family",
    "gguf_tensors",
    "interleave_rotary_rows",
    "llama_cpp_obstacles",
]
