"""Weight mapping between loaded HF models and Wren.

Wren uses the Llama / Mixtral / Qwen3-MoE parameter names and the fused 3-D expert layout that
transformers' MoE models hold after loading (`mlp.experts.gate_up_proj` [E, 2I, H],
`mlp.experts.down_proj` [E, H, I], router `mlp.gate.weight`), so the mapping is by name. The only
differences are handled here: Wren's router `mlp.gate.expert_bias` (zeros for HF sources; must be
zero to export), and attention biases a target has but the source lacks (written as zeros).
Every key and shape is checked against the target model, so nothing is dropped or left
initialised at random silently.
"""

import re

import torch
from torch import nn

from .errors import UnsupportedConversionError

_ROUTER_BIAS = re.compile(r"^model\.layers\.(\d+)\.mlp\.gate\.expert_bias$")
# Keys a target may have that the source lacks, whose exact equivalent is a zero tensor.
_ZERO_FILLABLE = re.compile(r"(self_attn\.[qkvo]_proj\.bias|mlp\.gate\.expert_bias)$")


def expected_shapes(model_class: type[nn.Module], config) -> dict[str, torch.Size]:
    """Parameter and persistent-buffer shapes of `model_class(config)`, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = model_class(config)
    return {name: tensor.shape for name, tensor in model.state_dict().items()}


def state_dict_to_wren(state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Size]) -> dict:
    """HF (Llama/Mistral/Qwen2/Qwen3/Mixtral/Qwen3-MoE) weights -> Wren weights."""
    return _match(dict(state_dict), expected, "Wren")


def state_dict_from_wren(state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Size], target: str) -> dict:
    """Wren weights -> weights of the HF family `target`; refuses a non-zero router selection bias."""
    reject_router_bias(state_dict, target)
    mapped = {name: tensor for name, tensor in state_dict.items() if not _ROUTER_BIAS.match(name)}
    return _match(mapped, expected, target)


def reject_router_bias(state_dict: dict[str, torch.Tensor], target: str) -> None:
    """Refuse Wren weights whose routers carry a selection bias, which `target`'s routers do not have."""
    for name, tensor in state_dict.items():
        match = _ROUTER_BIAS.match(name)
        if match is not None and torch.count_nonzero(tensor).item():
            raise UnsupportedConversionError(
                f"Cannot convert to {target}: layer {match.group(1)}'s router has a non-zero `expert_bias` "
                f"(aux-loss-free balancing, router_bias_update_rate); {target}'s router has no selection bias, "
                "so tokens would be routed to different experts."
            )


def _match(state_dict: dict, expected: dict[str, torch.Size], target: str) -> dict:
    on_meta = [name for name, tensor in state_dict.items() if tensor.device.type == "meta"]
    if on_meta:
        raise UnsupportedConversionError(
            f"{len(on_meta)} source weight(s) have no data (meta device), e.g. {on_meta[:3]}: the model was "
            "offloaded by a device_map (to 'cpu' or 'disk'); load it fully onto devices or the CPU to convert it."
        )
    unexpected = sorted(set(state_dict) - set(expected))
    if unexpected:
        raise UnsupportedConversionError(
            f"{target} has no place for {len(unexpected)} source weight(s), e.g. {unexpected[:4]}; "
            "the source has a feature the target lacks (or is not a *ForCausalLM model)."
        )
    reference = next(iter(state_dict.values()))
    missing = []
    for name, shape in expected.items():
        if name in state_dict:
            continue
        if _ZERO_FILLABLE.search(name):
            state_dict[name] = torch.zeros(shape, dtype=reference.dtype, device=reference.device)
        else:
            missing.append(name)
    if missing:
        raise UnsupportedConversionError(
            f"The source lacks {len(missing)} weight(s) that {target} needs, e.g. {missing[:4]}."
        )
    wrong = [
        f"{name}: source {tuple(state_dict[name].shape)} vs {target} {tuple(shape)}"
        for name, shape in expected.items()
        if state_dict[name].shape != shape
    ]
    if wrong:
        raise UnsupportedConversionError(f"Weight shapes do not match {target}: {'; '.join(wrong[:4])}.")
    not_float = [name for name, tensor in state_dict.items() if not tensor.is_floating_point()]
    if not_float:
        raise UnsupportedConversionError(
            f"Weights {not_float[:4]} are not floating point (a quantized checkpoint?); dequantize before converting."
        )
    return {name: state_dict[name] for name in expected}


__all__ = ["expected_shapes", "reject_router_bias", "state_dict_from_wren", "state_dict_to_wren"]
