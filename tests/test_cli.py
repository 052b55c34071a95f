"""The `wren` dispatcher: version, unknown commands, a missing optional dependency named with its extra."""

import importlib.metadata
import sys

import wrenlm
from wren_testing import tiny_config_kwargs
from wrenlm.cli import main as wren_main
from wrenlm.tokenization import train_tokenizer


def test_version_is_the_installed_metadata(capsys):
    assert wren_main(["--version"]) == 0
    assert capsys.readouterr().out == f"wren {importlib.metadata.version('wrenlm')}\n"
    assert wrenlm.__version__ == importlib.metadata.version("wrenlm")


def test_unknown_command_is_one_line(capsys):
    assert wren_main(["pretrian"]) == 2
    assert capsys.readouterr().err.startswith("wren: unknown command 'pretrian'; choose one of: train-tokenizer")


def test_missing_extra_names_the_install_line(capsys, monkeypatch, tmp_path):
    # As if gradio were not installed: its import fails, and the demo module must be imported afresh.
    monkeypatch.setitem(sys.modules, "gradio", None)
    monkeypatch.delitem(sys.modules, "wrenlm.demo.app", raising=False)
    # A loadable model folder: the demo loads the model first (a bad folder fails before gradio is needed).
    text = tmp_path / "text.txt"
    text.write_text("to be or not to be, that is the question\n" * 20, encoding="utf-8")
    tokenizer = train_tokenizer([str(text)], vocab_size=300, show_progress=False)
    model_dir = tmp_path / "model"
    config = wrenlm.WrenConfig(**tiny_config_kwargs(vocab_size=len(tokenizer)))
    wrenlm.WrenForCausalLM(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    capsys.readouterr()
    assert wren_main(["chat", str(model_dir)]) == 1
    assert (
        capsys.readouterr().err.splitlines()[-1]
        == "wren chat: error: gradio is not installed: pip install 'wrenlm[demo]'"
    )
