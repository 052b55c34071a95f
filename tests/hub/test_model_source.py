"""Model arguments of `wren chat`, `wren eval`, `wren finetune`: missing folders and broken configs fail at once."""

import time

import pytest

from wrenlm.cli import main as wren_main
from wrenlm.hub.loading import check_model_source, load_model_config, looks_local


@pytest.mark.parametrize(
    "spec, local",
    [
        ("./model", True),
        ("/abs/model", True),
        ("~/model", True),
        ("a/b/c", True),  # not a repo id
        ("bad name", True),
        ("HuggingFaceTB/SmolLM2-135M", False),
        ("gpt2", False),
    ],
)
def test_what_counts_as_a_local_path(spec, local):
    assert looks_local(spec) is local


def test_org_slash_name_is_local_when_org_is_a_local_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not looks_local("runs/missing")
    (tmp_path / "runs").mkdir()
    assert looks_local("runs/missing")
    with pytest.raises(FileNotFoundError, match="Model folder 'runs/missing' does not exist"):
        check_model_source("runs/missing")
    check_model_source("org/name")  # a Hub repo id: left to the Hub


@pytest.mark.parametrize(
    "config_text, message",
    [
        ("{not json", "is not a valid JSON file"),
        ('{"model_type": "wren", "hidden_size": "big"}', "Field 'hidden_size' expected int, got str"),
        ('{"hidden_size": 3}', "model_type"),
    ],
)
def test_broken_config_names_the_file(tmp_path, config_text, message):
    (tmp_path / "config.json").write_text(config_text)
    with pytest.raises(ValueError, match=f"Cannot load the model config {tmp_path / 'config.json'}: .*{message}"):
        load_model_config(str(tmp_path))


@pytest.mark.parametrize("command", ["chat", "eval", "finetune"])
def test_cli_missing_folder_and_garbage_config_are_one_line(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model_flag = [] if command == "chat" else ["--model"]
    start = time.perf_counter()
    assert wren_main([command, *model_flag, "./missing-model"]) == 1
    assert time.perf_counter() - start < 20  # no minute of Hub retries (the CPU here is shared, hence the margin)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'./missing-model' does not exist" in err, err

    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "config.json").write_text('{"model_type": "wren", "hidden_size": "big"}')
    assert wren_main([command, *model_flag, "garbage"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Cannot load the model config garbage/config.json" in err, err
    assert not (tmp_path / "runs").exists()  # finetune wrote nothing
