"""`wren pretrain` arguments: defaults < config file (YAML/TOML) < flags < --set; shipped accelerate configs."""

import argparse

import pytest
import yaml

from wrenlm.cli import main as wren_main
from wrenlm.training import pretrain_cli
from wrenlm.training.config import PretrainConfig, config_from_args, parse_set_pairs
from wrenlm.training.defaults import DEFAULT_OUTPUT_DIR


def parse(argv):
    parser = argparse.ArgumentParser()
    pretrain_cli.add_arguments(parser)
    return config_from_args(parser.parse_args(argv), PretrainConfig)


def test_no_arguments_is_the_main_job():
    config = parse([])
    assert config == PretrainConfig()
    assert config.output_dir == DEFAULT_OUTPUT_DIR == "runs/wren-nano-shakespeare"
    assert config.preset == "wren-nano" and config.data == [] and config.resume == "auto"
    # the recipe search's winner (docs/recipe-search.md)
    assert (config.optimizer, config.lr_schedule, config.vocab_size) == ("auto", "wsd", 2048)


def test_flags_file_and_set_precedence(tmp_path):
    (tmp_path / "run.yaml").write_text(
        yaml.safe_dump(
            {
                "max_steps": 50,
                "learning_rate": 1e-3,
                "seq_len": 64,
                "data": ["a.txt"],
                "model": {"num_hidden_layers": 2},
            }
        )
    )
    config = parse(
        ["--config", str(tmp_path / "run.yaml"), "--max-steps", "70", "--no-progress-bar", "--set", "seq_len=128",
         "--set", "model.hidden_size=64", "--data", "x.txt", "y/", "--gradient-checkpointing"]
    )  # fmt: skip
    assert config.max_steps == 70  # flag beats file
    assert config.learning_rate == 1e-3  # file beats default
    assert config.seq_len == 128  # --set beats file
    assert config.data == ["x.txt", "y/"]
    assert config.model == {"num_hidden_layers": 2, "hidden_size": 64}  # merged
    assert config.progress_bar is False and config.gradient_checkpointing is True


def test_toml_config(tmp_path):
    (tmp_path / "run.toml").write_text("max_steps = 12\nlearning_rate = 5e-4\n[model]\nnum_experts = 4\n")
    config = parse(["--config", str(tmp_path / "run.toml")])
    assert config.max_steps == 12 and config.learning_rate == 5e-4 and config.model == {"num_experts": 4}


def test_set_values_are_typed():
    assert parse_set_pairs(
        ["learning_rate=3e-4", "progress_bar=false", "sample_prompts=[a, b]", "model.qk_norm=true"]
    ) == {
        "learning_rate": 3e-4,
        "progress_bar": False,
        "sample_prompts": ["a", "b"],
        "model": {"qk_norm": True},
    }
    assert parse(["--set", "learning_rate=3e-4"]).learning_rate == 3e-4


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "max_stepz=3"], "Unknown setting 'max_stepz'"),
        (["--set", "max_steps=lots"], "must be an integer"),
        (["--set", "noequals"], "KEY=VALUE"),
        (["--max-steps", "0"], "must be a positive integer"),
        (["--mixed-precision", "fp8"], "mixed_precision"),
        (["--config", "/nonexistent/run.yaml"], "does not exist"),
    ],
)
def test_bad_settings_are_clear_errors(argv, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        parse(argv)


def test_cli_reports_errors_in_one_line(capsys, tmp_path):
    assert wren_main(["pretrain", "--set", "warmup_steps=-1", "--output-dir", str(tmp_path)]) == 1
    assert "warmup_steps" in capsys.readouterr().err


def test_help_and_accelerate_configs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        wren_main(["pretrain", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--max-steps" in help_text and "--set KEY=VALUE" in help_text
    assert wren_main(["pretrain", "--accelerate-configs"]) == 0
    listed = capsys.readouterr().out
    for name in ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3", "multi_cpu"):
        assert name in listed


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3", "multi_cpu"])
def test_shipped_accelerate_configs_are_valid(name):
    from accelerate.commands.config.config_args import load_config_from_file

    path = pretrain_cli.accelerate_config_path(name)
    config = load_config_from_file(str(path))  # accelerate's own parser: unknown keys raise
    assert config.compute_environment.value == "LOCAL_MACHINE"
    raw = yaml.safe_load(path.read_text())
    if name == "fsdp":
        assert raw["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"] == "WrenDecoderLayer"
        assert raw["fsdp_config"]["fsdp_version"] == 2
    if name.startswith("deepspeed"):
        assert raw["deepspeed_config"]["zero_stage"] == int(name[-1])
    if name == "multi_cpu":
        # MULTI_GPU + the CPU switch is what starts N gloo processes (use_cpu would start one).
        assert raw["use_cpu"] is False and raw["distributed_type"] == "MULTI_GPU" and raw["num_processes"] == 2


def test_accelerate_config_path_error():
    with pytest.raises(FileNotFoundError, match="shipped configs"):
        pretrain_cli.accelerate_config_path("tpu-pod")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--set", "model.num_hiden_layers=3"], "'model.num_hiden_layers' in --set; did you mean 'model.num_hidden_"),
        (["--set", "max_stepz=3"], "'max_stepz' in --set; did you mean 'max_steps'"),
        (["--set", "mdel.hidden_size=64"], "'mdel.hidden_size' in --set; did you mean 'model.hidden_size'"),
        (["--preset", "wren-tinny"], "Unknown preset 'wren-tinny'; did you mean 'wren-tiny'"),
    ],
)
def test_typos_are_refused_with_a_suggestion(argv, message):
    with pytest.raises(ValueError, match=message.replace("?", r"\?")):
        parse(argv)


def test_typo_in_a_run_file_names_the_file(tmp_path):
    (tmp_path / "run.yaml").write_text("model:\n  num_hiden_layers: 3\n")
    with pytest.raises(ValueError, match=r"'model.num_hiden_layers' in .*run.yaml; did you mean 'model.num_hidden_"):
        parse(["--config", str(tmp_path / "run.yaml")])


def test_typo_in_code_is_refused_too():
    with pytest.raises(ValueError, match="did you mean 'model.num_experts'"):
        PretrainConfig(model={"num_expert": 4}).validate()


def test_legacy_model_keys_are_accepted():
    assert parse(["--set", "model.rope_theta=5e5"]).model == {"rope_theta": 5e5}


def test_cli_typo_is_one_line_and_exit_1(capsys, tmp_path):
    assert wren_main(["pretrain", "--set", "model.num_hiden_layers=3", "--output-dir", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "did you mean 'model.num_hidden_layers'" in err
    assert not (tmp_path / "o").exists()
    assert wren_main(["finetune", "--set", "lora_rr=3", "--output-dir", str(tmp_path / "f")]) == 1
    assert "did you mean 'lora_r'" in capsys.readouterr().err
