"""Wren's PEFT defaults: the modules LoRA targets when a `LoraConfig` names none, and the MoE expert tensors.

`import wrenlm` calls `register_peft_defaults()`, so after it

    get_peft_model(model, LoraConfig(task_type="CAUSAL_LM"))

targets every linear projection of a Wren model (attention q/k/v/o, the dense SwiGLU MLPs and the shared
experts). PEFT reads default targets from one table, `TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING` in
`peft.utils.constants`, and importing that module imports all of PEFT (and Accelerate). So Wren's entry is
written when PEFT loads: at once if it already has, else right after that module runs. A program that never
uses PEFT never imports it.
"""

import importlib.abc
import sys

from .configuration.configuration_wren import WrenConfig

WREN_MODEL_TYPE = WrenConfig.model_type
# All linear projections: on small models LoRA on every projection learns much more per step than the
# q/v-only default PEFT uses for Llama (the QLoRA paper's finding for large ones too).
WREN_LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Wren's fused expert tensors: gate_up_proj [E, 2I, H] and down_proj [E, H, I] ((experts, out, in) like Mixtral's).
# They are 3-D parameters, not `nn.Linear`s; PEFT reaches them through `LoraConfig(target_parameters=...)`.
WREN_EXPERT_PARAMETERS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")

PEFT_TARGETS_MODULE = "peft.utils.constants"


def _add_wren_targets(constants) -> None:
    constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[WREN_MODEL_TYPE] = list(WREN_LORA_TARGET_MODULES)


class _AfterLoad(importlib.abc.Loader):
    """Runs the real loader, then hands the module to `callback` (and the module its real loader back)."""

    def __init__(self, loader, callback):
        self.loader, self.callback = loader, callback

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        self.loader.exec_module(module)
        module.__loader__ = module.__spec__.loader = self.loader
        self.callback(module)

    def __getattr__(self, name):  # get_source, get_filename, ... of the real loader
        return getattr(self.loader, name)


class _RegisterWhenPeftLoads(importlib.abc.MetaPathFinder):
    """A post-import hook for PEFT's constants module: finds nothing itself, wraps the loader the others find."""

    def find_spec(self, fullname, path, target=None):
        if fullname != PEFT_TARGETS_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _AfterLoad(spec.loader, self._registered)
                return spec
        return None

    def _registered(self, constants) -> None:
        _add_wren_targets(constants)
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def register_peft_defaults() -> None:
    """Teach PEFT Wren's default LoRA target modules, now if PEFT is loaded, else as soon as it is."""
    if PEFT_TARGETS_MODULE in sys.modules:
        _add_wren_targets(sys.modules[PEFT_TARGETS_MODULE])
    elif not any(isinstance(finder, _RegisterWhenPeftLoads) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterWhenPeftLoads())


__all__ = ["WREN_EXPERT_PARAMETERS", "WREN_LORA_TARGET_MODULES", "WREN_MODEL_TYPE", "register_peft_defaults"]
