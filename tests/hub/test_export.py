"""save_pretrained writes a complete, self-contained Hub repository; it loads where wrenlm is not installed."""

import ast
import json
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM

from wren_testing.hub import chat_prompt, greedy_tokens, run_python, subprocess_env
from wrenlm.hub import CheckpointFileError, check_folder, code_export, write_model_card
from wrenlm.hub.model_card import CARD_MARKER
from wrenlm.modeling import modeling_wren
from wrenlm.training.pretrain import RESULTS_FILE
from wrenlm.training.trainer import METRICS_FILE

MODELING_DIR = Path(modeling_wren.__file__).parent
HUB_DIR = Path(code_export.__file__).parent
# The model, its config and the tokenizer: what a saved repository ships as remote code, and nothing else.
EXPECTED_CODE = {
    "modeling_wren.py",
    "attention.py",
    "lm_loss.py",
    "mlp.py",
    "moe.py",
    "norm.py",
    "rotary.py",
    "router_losses.py",
    "configuration_wren.py",
    "tokenization_wren.py",
}
DATA_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "README.md",
}


def test_code_export_rewrites_package_imports_to_flat_siblings():
    flat = code_export.flat_source(MODELING_DIR / "modeling_wren.py")
    assert (
        "from ..configuration.configuration_wren import WrenConfig" in (MODELING_DIR / "modeling_wren.py").read_text()
    )
    assert "from .configuration_wren import WrenConfig" in flat
    names = [p.name for p in code_export.code_files(MODELING_DIR / "modeling_wren.py")]
    assert names[0] == "modeling_wren.py" and "configuration_wren.py" in names and "moe.py" in names


def test_code_export_refuses_what_a_flat_package_cannot_hold(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "main.py").write_text("from ..b.util import x\nfrom .util import y\n")
    (tmp_path / "a" / "util.py").write_text("y = 1\n")
    (tmp_path / "b" / "util.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="several code files are named util.py"):
        code_export.code_files(tmp_path / "a" / "main.py")
    (tmp_path / "a" / "main.py").write_text("from . import util\n")
    with pytest.raises(ValueError, match="name the module"):
        code_export.code_files(tmp_path / "a" / "main.py")


def _top_level_definitions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


def test_saved_code_is_the_model_alone(save_model):
    _, folder = save_model("moe")
    # modeling/ holds model code only, and all of it ships (with the config and the tokenizer).
    assert {p.name for p in MODELING_DIR.glob("*.py")} - {"__init__.py"} == EXPECTED_CODE - {
        "configuration_wren.py",
        "tokenization_wren.py",
    }
    assert {p.name for p in folder.glob("*.py")} == EXPECTED_CODE
    hub_definitions = set().union(*(_top_level_definitions(path) for path in HUB_DIR.glob("*.py")))
    assert {"check_checkpoint_files", "write_model_card", "export_code", "upload_checkpoint_folder"} <= hub_definitions
    for name in EXPECTED_CODE:
        assert not _top_level_definitions(folder / name) & hub_definitions, name


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_saved_folder_is_a_complete_repository(save_model, kind):
    model, folder = save_model(kind)
    assert {p.name for p in folder.iterdir()} == DATA_FILES | EXPECTED_CODE

    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_wren.WrenConfig",
        "AutoModel": "modeling_wren.WrenModel",
        "AutoModelForCausalLM": "modeling_wren.WrenForCausalLM",
    }
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert tokenizer_config["auto_map"]["AutoTokenizer"][0] == "tokenization_wren.WrenTokenizer"
    for name in EXPECTED_CODE:  # flat: only sibling imports, each to a file that is there
        for node in ast.walk(ast.parse((folder / name).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and (folder / f"{node.module}.py").is_file(), (name, node.module)
            if isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and not node.level):
                modules = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module]
                assert not any(m.split(".")[0] == "wrenlm" for m in modules), name

    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert card.data.license == "apache-2.0"
    assert {"wren", "custom_code"} <= set(card.data.tags) and (("moe" in card.data.tags) == (kind == "moe"))
    assert f"{model.num_parameters() / 1e6:.2f}M parameters" in card.text
    assert f"{model.config.num_hidden_layers} layers" in card.text and "trust_remote_code=True" in card.text
    check = check_folder(folder)
    assert check.kind == "model" and check.weight_files == ["model.safetensors"] and not check.warnings


def test_sharded_save_is_checked_and_reloads(save_model, hub_tokenizer):
    model, folder = save_model("moe", max_shard_size="20KB")
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert len(shards) > 2 and (folder / "model.safetensors.index.json").is_file()
    assert check_folder(folder).weight_files == shards
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    prompt = chat_prompt(hub_tokenizer)
    assert greedy_tokens(loaded, prompt) == greedy_tokens(model, prompt)


def _break(folder: Path, how: str) -> str:
    shard = sorted(folder.glob("model-*.safetensors"))[1]
    if how == "missing":
        shard.unlink()
    elif how == "truncated":
        shard.write_bytes(shard.read_bytes()[:-10])
    else:
        shard.write_bytes(b"\x00" * 7 + b"not a safetensors file at all")
    return shard.name


@pytest.mark.parametrize("how", ["missing", "truncated", "garbage"])
def test_missing_or_corrupt_shard_is_named_on_load_and_check(save_model, how):
    _, folder = save_model("dense", max_shard_size="20KB")
    name = _break(folder, how)
    with pytest.raises(CheckpointFileError, match=name):
        AutoModelForCausalLM.from_pretrained(folder)
    with pytest.raises(CheckpointFileError, match=name):
        check_folder(folder)


def test_index_pointing_at_the_wrong_shard_is_named(save_model):
    _, folder = save_model("dense", max_shard_size="20KB")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    tensor, shard = next(iter(index["weight_map"].items()))
    other = next(s for s in sorted(set(index["weight_map"].values())) if s != shard)
    index["weight_map"][tensor] = other
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointFileError, match=f"{other}.*lacks.*{tensor}"):
        check_folder(folder)


def test_model_card_reports_training_figures_and_keeps_user_metadata(save_model, hub_tokenizer):
    model, folder = save_model("dense")
    (folder / METRICS_FILE).write_text(
        json.dumps({"step": 10, "train/loss": 3.25}) + "\n" + json.dumps({"step": 20, "eval_full/loss": 2.5}) + "\n"
    )
    assert write_model_card(folder, model.config.to_dict(), metadata={"base_model": "someone/llama-tiny"})
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == "someone/llama-tiny"
    assert "| last training loss | 3.25 |" in card.text and "| validation loss (nats/token) | 2.5 |" in card.text

    results = {"global_step": 20, "validation_loss": 2.5, "validation_bits_per_char": 1.125, "data": {}}
    (folder / RESULTS_FILE).write_text(json.dumps(results))
    write_model_card(folder, model.config.to_dict(), metadata={"license": "mit"})
    model.save_pretrained(folder)  # regenerated: the metadata set earlier stays, the figures are the new ones
    card = ModelCard.load(folder / "README.md")
    assert card.data.base_model == "someone/llama-tiny" and card.data.license == "mit"
    assert "| validation bits per character | 1.125 |" in card.text and "| optimizer steps | 20 |" in card.text

    (folder / "README.md").write_text("# My own card\n")
    model.save_pretrained(folder)
    assert (folder / "README.md").read_text() == "# My own card\n"
    assert CARD_MARKER not in (folder / "README.md").read_text()


REMOTE_SCRIPT = """
import json, os, sys
import importlib.util
assert importlib.util.find_spec("wrenlm") is None, "wrenlm must not be importable here"
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

def load_and_generate(folder):
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    messages = [{{"role": "user", "content": "shall we walk the garden"}}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)
    classes = [type(x).__module__ + "." + type(x).__name__ for x in (config, tokenizer, model)]
    return model, tokenizer, ids, out[0, len(ids):].tolist(), classes

model, tokenizer, ids, tokens, classes = load_and_generate({folder!r})
model.save_pretrained({resaved!r})
tokenizer.save_pretrained({resaved!r})
_, _, _, tokens_again, _ = load_and_generate({resaved!r})
print(json.dumps({{"ids": ids, "tokens": tokens, "tokens_again": tokens_again, "classes": classes,
                  "wrenlm_loaded": any(m.startswith("wrenlm") for m in sys.modules)}}))
"""


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_loads_and_generates_where_wrenlm_is_not_installed(save_model, hub_tokenizer, tmp_path, kind):
    model, folder = save_model(kind)
    resaved = tmp_path / "resaved"
    script = REMOTE_SCRIPT.format(folder=str(folder), resaved=str(resaved))
    child = run_python(script, subprocess_env(tmp_path, HF_HUB_OFFLINE=1), cwd=tmp_path, hide_wrenlm=True)

    assert not child["wrenlm_loaded"]
    assert all(name.startswith("transformers_modules.") for name in child["classes"])
    assert child["classes"][2].endswith(".modeling_wren.WrenForCausalLM")
    prompt = chat_prompt(hub_tokenizer)
    assert child["ids"] == prompt
    assert child["tokens"] == greedy_tokens(model, prompt) == child["tokens_again"]
    # The re-saved repository (written by remote code, through transformers' own copying of the code files) is the
    # same repository, less the model card: that is wrenlm's Hub tooling, which does not ship with the model.
    assert {p.name for p in resaved.iterdir()} == {p.name for p in folder.iterdir()} - {"README.md"}
    for name in EXPECTED_CODE:
        assert (resaved / name).read_bytes() == (folder / name).read_bytes(), name


def test_sys_executable_child_really_hides_wrenlm(tmp_path):
    assert "wrenlm" in sys.modules  # the test process has it; the -S child must not
    script = "import importlib.util, json; print(json.dumps(importlib.util.find_spec('wrenlm') is None))"
    assert run_python(script, subprocess_env(tmp_path), cwd=tmp_path, hide_wrenlm=True) is True


def test_shipped_code_imports_only_what_every_environment_has(save_model):
    # transformers refuses remote code whose imports are not installed: an optional dependency imported in a
    # shipped file (outside transformers' own availability guards) would break loading where it is missing.
    from transformers.dynamic_module_utils import check_imports

    _, folder = save_model("moe")
    for code_file in sorted(folder.glob("*.py")):
        check_imports(code_file)
