"""The wheel, installed on its own (not editable) in a fresh environment and run from a folder outside the checkout,
is the whole product: the Auto classes, every command, the shipped accelerate configs and metric modules, a
few-step pretraining run evaluated, saved, reloaded, and loaded as remote code where wrenlm is not installed."""

import json
import os
import tomllib
from pathlib import Path

import pytest

from wren_testing.hub import run_python, subprocess_env
from wren_testing.packaging import REPO, run_checked
from wren_testing.training import make_document
from wrenlm.cli import COMMANDS

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
TINY_MODEL = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=2"]
TINY_MODEL += ["model.num_attention_heads=4", "model.num_key_value_heads=2"]


@pytest.fixture(scope="module")
def user(installed_wheel, tmp_path_factory):
    """Runs the installed `wren` and `python` as a user would: cwd outside the checkout, offline, own HF home."""
    venv = Path(installed_wheel["venv"])
    home = tmp_path_factory.mktemp("user")
    work = home / "work"
    work.mkdir()
    env = subprocess_env(home, HF_HUB_OFFLINE=1, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")

    class User:
        site_packages = Path(installed_wheel["site_packages"])
        folder = work

        def wren(self, *args) -> str:
            return run_checked([venv / "bin" / "wren", *args], env=env, cwd=work, timeout=300)

        def python(self, script: str, **kwargs):
            return run_python(script, env, cwd=work, python=installed_wheel["python"], **kwargs)

        def bare_python(self, script: str):
            """An interpreter with the dependencies but without wrenlm."""
            return run_python(script, env, cwd=work, hide_wrenlm=True)

    return User()


# One interpreter answers the in-process questions (each start loads torch and transformers: seconds).
INSPECT_SCRIPT = """
import contextlib, importlib.metadata, io, json, math, sys, sysconfig
from packaging.requirements import Requirement
import wrenlm
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.auto.modeling_auto import MODEL_MAPPING
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING
from wrenlm.cli import COMMANDS, main
from wrenlm.training.metrics import METRIC_NAMES, load_metric, metric_path

def qualified(cls):
    return cls.__module__ + "." + cls.__name__

config = AutoConfig.for_model("wren", hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                              num_attention_heads=4, num_key_value_heads=2, vocab_size=64)
distribution = importlib.metadata.distribution("wrenlm")
unmet = []  # the wheel's own requirements against the pinned versions it runs with
for line in distribution.requires:
    requirement = Requirement(line)
    if requirement.marker is None and not requirement.specifier.contains(
        importlib.metadata.version(requirement.name), prereleases=True
    ):
        unmet.append(line)
help_pages = {}
for name in COMMANDS:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([name, "--help"])
        except SystemExit as exit:
            assert exit.code == 0, (name, exit.code)
    help_pages[name] = out.getvalue()
print(json.dumps({
    "purelib": sysconfig.get_path("purelib"), "file": wrenlm.__file__, "version": wrenlm.__version__,
    "metadata_at": str(distribution.locate_file("")), "unmet": unmet,
    "classes": [qualified(type(config)), qualified(MODEL_MAPPING[type(config)]),
                qualified(type(AutoModelForCausalLM.from_config(config))), qualified(TOKENIZER_MAPPING[type(config)])],
    "modules_elsewhere": sorted(
        name for name, module in sys.modules.items()
        if name.startswith("wrenlm")
        and not (getattr(module, "__file__", None) or "").startswith(sysconfig.get_path("purelib"))
    ),
    "help": help_pages,
    "metric_paths": {name: metric_path(name) for name in METRIC_NAMES},
    "perplexity": load_metric("perplexity").compute(nll=[2 * math.log(4)], num_tokens=[2])["perplexity"],
    "bits_per_character": load_metric("bits_per_character").compute(nll=[math.log(2) * 3], num_chars=[2]),
    "exact_match": load_metric("exact_match").compute(predictions=["a ", "b"], references=["a", "c"]),
}))
"""


@pytest.fixture(scope="module")
def inspected(user) -> dict:
    return user.python(INSPECT_SCRIPT)


def test_import_registers_the_auto_classes_from_the_installed_wheel(user, inspected):
    assert Path(inspected["purelib"]) == user.site_packages
    assert Path(inspected["file"]).is_relative_to(user.site_packages), inspected["file"]
    assert Path(inspected["metadata_at"]) == user.site_packages and inspected["modules_elsewhere"] == []
    assert inspected["version"] == VERSION and inspected["unmet"] == []
    assert inspected["classes"] == [
        "wrenlm.configuration.configuration_wren.WrenConfig",
        "wrenlm.modeling.modeling_wren.WrenModel",
        "wrenlm.modeling.modeling_wren.WrenForCausalLM",
        "wrenlm.tokenization.tokenization_wren.WrenTokenizer",
    ]
    installed = {path.name for path in user.site_packages.iterdir()}
    assert {"tests", "bench"}.isdisjoint(installed), installed


def test_wren_version_and_every_command_help(user, inspected):
    assert user.wren("--version").strip() == f"wren {VERSION}"
    assert set(inspected["help"]) == set(COMMANDS)
    for name, page in inspected["help"].items():
        assert page.startswith(f"usage: wren {name}") and "--help" in page, name


def test_shipped_accelerate_configs_exist_and_accelerate_parses_them(user):
    from accelerate.commands.config.config_args import load_config_from_file

    listed = dict(line.split(maxsplit=1) for line in user.wren("pretrain", "--accelerate-configs").splitlines())
    assert set(listed) == {path.stem for path in (REPO / "training" / "accelerate_configs").glob("*.yaml")}
    for name, path in listed.items():
        path = Path(path)
        assert path.is_relative_to(user.site_packages) and path.is_file(), name
        assert load_config_from_file(str(path)).compute_environment.value == "LOCAL_MACHINE", name


def test_metric_modules_load_from_the_installed_package(user, inspected):
    assert set(inspected["metric_paths"]) == {"perplexity", "bits_per_character", "exact_match"}
    for path in inspected["metric_paths"].values():
        assert Path(path).is_relative_to(user.site_packages) and Path(path).is_file()
    assert inspected["perplexity"] == pytest.approx(4.0)
    assert inspected["bits_per_character"]["bits_per_character"] == pytest.approx(1.5)
    assert inspected["exact_match"]["exact_match"] == 0.5


RELOAD_SCRIPT = """
import json
import torch
import wrenlm  # registers the Auto classes: the checkpoint loads with the installed code, not its own copy
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("run").eval()
tokenizer = AutoTokenizer.from_pretrained("run")
model.save_pretrained("saved")
tokenizer.save_pretrained("saved")
reloaded = AutoModelForCausalLM.from_pretrained("saved").eval()
ids = torch.tensor([tokenizer("KING. Good night, sweet lord")["input_ids"]])
with torch.no_grad():
    logits, logits_reloaded = model(ids).logits, reloaded(ids).logits
print(json.dumps({"class": type(reloaded).__module__, "ids": ids.tolist(), "logits": logits[0, -1].tolist(),
                  "reload_equal": torch.equal(logits, logits_reloaded)}))
"""

REMOTE_CODE_SCRIPT = """
import importlib.util, json
assert importlib.util.find_spec("wrenlm") is None, "wrenlm must not be importable here"
import torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained("saved", trust_remote_code=True).eval()
with torch.no_grad():
    logits = model(torch.tensor({ids})).logits
print(json.dumps({{"class": type(model).__module__, "logits": logits[0, -1].tolist()}}))
"""


def test_pretrain_eval_save_reload_and_remote_code(user):
    corpus = user.folder / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"work_{i}.txt").write_text(make_document(i), encoding="utf-8")
    settings = ["--max-steps", "4", "--warmup-steps", "1", "--eval-every", "2", "--save-every", "2"]
    settings += ["--seq-len", "32", "--vocab-size", "320", "--per-device-batch-size", "4", "--cpu-threads", "1"]
    settings += ["--sample-prompts", "KING.", "--sample-max-new-tokens", "4", "--no-progress-bar"]
    settings += ["--report-to", "none", *[arg for value in TINY_MODEL for arg in ("--set", value)]]
    user.wren("pretrain", "--data", "corpus", "--output-dir", "run", *settings)
    results = json.loads((user.folder / "run" / "train_results.json").read_text())
    assert results["global_step"] == 4

    user.wren("eval", "--model", "run", "--data", "corpus", "--metric", "perplexity", "bits_per_character",
              "--limit", "4", "--seq-len", "32", "--device", "cpu", "--cpu-threads", "1",
              "--out", "eval.json")  # fmt: skip
    metrics = json.loads((user.folder / "eval.json").read_text())["metrics"]
    assert 1 < metrics["perplexity"] < 320 and metrics["bits_per_character"] > 0 and metrics["tokens"] > 0

    reloaded = user.python(RELOAD_SCRIPT)
    assert reloaded["class"] == "wrenlm.modeling.modeling_wren" and reloaded["reload_equal"]
    remote = user.bare_python(REMOTE_CODE_SCRIPT.format(ids=reloaded["ids"]))
    assert remote["class"].startswith("transformers_modules.") and remote["class"].endswith(".modeling_wren")
    assert remote["logits"] == pytest.approx(reloaded["logits"], abs=1e-5)
