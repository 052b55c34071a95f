"""The `wren` dispatcher: version, unknown commands, a missing optional dependency named with its extra."""

import importlib.metadata
import sys

import wrenlm
from wrenlm.cli import main as wren_main


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
    assert wren_main(["chat", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "wren chat: error: gradio is not installed: pip install 'wrenlm[demo]'\n"
