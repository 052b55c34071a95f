"""`import wrenlm`: registers Wren with transformers and PEFT without importing the training stack."""

import json
import os
import subprocess
import sys

from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

from wrenlm.peft_defaults import WREN_LORA_TARGET_MODULES, WREN_MODEL_TYPE, register_peft_defaults

# After `import wrenlm`: which heavy packages are loaded; then PEFT's default targets on a Wren model.
CHILD = """
import json, sys
import wrenlm
from wren_testing import tiny_config_kwargs
# The model class reaches save/push/card work through wrenlm.hub.model_hooks (and the modules it imports); the rest
# of the Hub tools (push, pull, folder checks, loading) must stay unloaded.
SAVE_HOOKS = {"wrenlm.hub", "wrenlm.hub.model_hooks", "wrenlm.hub.code_export", "wrenlm.hub.model_card",
              "wrenlm.hub.checkpoint_files", "wrenlm.hub.upload"}
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("peft", "datasets", "evaluate", "gradio")
                or (name.startswith(("wrenlm.training", "wrenlm.hub", "wrenlm.demo", "wrenlm.conversion"))
                    and name not in SAVE_HOOKS))
from peft import LoraConfig, get_peft_model
base = wrenlm.WrenForCausalLM(wrenlm.WrenConfig(**tiny_config_kwargs()))
model = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM"))
wrapped = sorted({n.split(".lora_A.")[0].rsplit(".", 1)[1] for n, _ in model.named_parameters() if ".lora_A." in n})
hooks = [type(finder).__name__ for finder in sys.meta_path if "Peft" in type(finder).__name__]
print(json.dumps({"loaded": loaded, "wrapped": wrapped, "hooks": hooks}))
"""


def test_import_wrenlm_loads_no_training_stack_yet_peft_finds_wrens_targets():
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": tests, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD], check=False, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert result["wrapped"] == sorted(WREN_LORA_TARGET_MODULES)  # every linear projection, none named
    assert result["hooks"] == []  # the one-shot hook is gone once PEFT has loaded


def test_registering_after_peft_has_loaded_writes_the_table_at_once(monkeypatch):
    monkeypatch.delitem(PEFT_TARGETS, WREN_MODEL_TYPE)
    register_peft_defaults()
    assert PEFT_TARGETS[WREN_MODEL_TYPE] == list(WREN_LORA_TARGET_MODULES)
    assert not [finder for finder in sys.meta_path if "Peft" in type(finder).__name__]
