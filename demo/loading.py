"""Which model `wren chat` opens, and loading it (a Wren folder, a converted model, a Hub repo, or base + LoRA)."""

from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from ..conversion.packaged import SMOLLM2_OUTPUT_DIR
from ..training.defaults import DEFAULT_OUTPUT_DIR
from ..training.lora import split_model_and_adapter, tokenizer_source
from ..training.model_source import check_model_source, load_model_config


def default_model() -> str:
    """The model `wren chat` opens when none is named: SmolLM2-135M-Instruct where `wren import smollm2` put it,
    else the checkpoint the main `wren pretrain` job writes."""
    if (Path(SMOLLM2_OUTPUT_DIR) / "config.json").is_file():
        return SMOLLM2_OUTPUT_DIR
    return DEFAULT_OUTPUT_DIR


def load_chat_model(model: str | None = None, adapter: str | None = None):
    """(model, tokenizer, label) for the demo.

    `model` is a model folder or Hub repo id (default: `default_model()`), or an adapter folder, whose base model
    it names; `adapter` is a PEFT (LoRA) adapter folder or repo applied on top. The tokenizer comes from the
    adapter when it ships one (fine-tuning may add chat tokens), else from the model.
    """
    if model is None:
        model = default_model()
        if not Path(model).is_dir():
            raise FileNotFoundError(
                f"No model at {model}, the default (the checkpoint of the main training job). Create it with "
                "`wren pretrain` (a few minutes on a CPU), import a real chat model with `wren import smollm2` "
                f"(into {SMOLLM2_OUTPUT_DIR}, which `wren chat` then prefers), or name a model: "
                "`wren chat FOLDER_OR_HUB_REPO`."
            )
    if adapter is not None:
        check_model_source(adapter, "LoRA adapter")
    model, adapter = split_model_and_adapter(model, adapter)
    base = AutoModelForCausalLM.from_pretrained(model, config=load_model_config(model), dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(model, adapter))
    if adapter is None:
        return base.eval(), tokenizer, str(model)
    from peft import PeftModel

    return PeftModel.from_pretrained(base, adapter).eval(), tokenizer, f"{model} + adapter {adapter}"
