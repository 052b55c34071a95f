"""wrenlm: the Wren decoder family for the Hugging Face stack.

Importing this package registers `model_type="wren"` with transformers' Auto classes and PEFT's
default LoRA target modules (the latter when PEFT is imported, see `peft_defaults`); it does not import
the training stack (PEFT, datasets, `wrenlm.training`).
"""

from importlib.metadata import version

from .cpu_threads import prefer_sleeping_openmp_threads

# `wren` commands: OpenMP threads that wait sleep instead of spinning; OpenMP reads this once, when torch loads.
prefer_sleeping_openmp_threads()

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from .configuration import PRESETS, WrenConfig, preset_config  # noqa: E402
from .modeling import WrenForCausalLM, WrenModel, WrenPreTrainedModel  # noqa: E402
from .peft_defaults import register_peft_defaults  # noqa: E402
from .tokenization.tokenization_wren import WrenTokenizer  # noqa: E402

# One source of truth: pyproject's `version`, as installed (an editable install has the metadata too).
__version__ = version("wrenlm")


def _register() -> None:
    # exist_ok: re-importing (e.g. importlib.reload in notebooks) must not fail.
    AutoConfig.register(WrenConfig.model_type, WrenConfig, exist_ok=True)
    AutoModel.register(WrenConfig, WrenModel, exist_ok=True)
    AutoModelForCausalLM.register(WrenConfig, WrenForCausalLM, exist_ok=True)
    AutoTokenizer.register(WrenConfig, tokenizer_class=WrenTokenizer, exist_ok=True)
    # PEFT: LoraConfig(task_type="CAUSAL_LM") without target_modules works on Wren models.
    register_peft_defaults()


_register()

__all__ = [
    "PRESETS",
    "WrenConfig",
    "WrenForCausalLM",
    "WrenModel",
    "WrenPreTrainedModel",
    "WrenTokenizer",
    "preset_config",
]
