"""Never silently weaker: the engine a launch asks for (from `accelerate launch`'s environment) against the one that
would run, and a launch that cannot give it failing at start with what to run instead."""

from pathlib import Path

import pytest
import yaml

from wren_testing.training import launch_two_cpu_processes
from wrenlm.training.engine_check import EngineMismatchError, EngineRequest, check_engine, requested_engine
from wrenlm.training.pretrain_cli import accelerate_config_path

WORKER = Path(__file__).with_name("pretrain_worker.py")


@pytest.mark.parametrize(
    ("environ", "engine"),
    [
        ({"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "WORLD_SIZE": "2"}, "fsdp2"),
        ({"ACCELERATE_USE_FSDP": "true", "WORLD_SIZE": "2"}, "fsdp1"),  # Accelerate's default version
        ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3", "WORLD_SIZE": "2"}, "zero3"),
        ({"WORLD_SIZE": "4"}, "ddp"),
        ({}, "single"),
    ],
)
def test_requested_engine_is_read_from_the_launch_environment(environ, engine):
    request = requested_engine(environ)
    assert request.engine == engine
    assert request.world_size == int(environ.get("WORLD_SIZE", 1))


@pytest.mark.parametrize(
    ("asked", "world_size", "actual"),
    [("fsdp2", 2, "fsdp2"), ("fsdp2", 1, "single"), ("ddp", 2, "ddp"), ("ddp", 2, "fsdp2"), ("single", 1, "single")],
)
def test_engine_check_accepts_the_engine_asked_for_or_a_stronger_one(asked, world_size, actual):
    check_engine(EngineRequest(asked, "test", world_size), actual)


@pytest.mark.parametrize(
    ("asked", "actual", "words"),
    [
        ("fsdp2", "ddp", ["asks for FSDP2", "would run as data parallelism (DDP)", "full model", "--config_file"]),
        ("zero3", "ddp", ["asks for DeepSpeed ZeRO-3", "DDP", "deepspeed_zeroN.yaml"]),
        ("fsdp2", "independent", ["each would train alone", "make_accelerator"]),
        ("ddp", "independent", ["each would train alone", "ACCELERATE_USE_CPU=1"]),
        ("ddp", "unsynchronised", ["never exchange gradients"]),
        ("fsdp1", "ddp", ["FSDP1 is not supported", "fsdp_version: 2"]),  # CPU: Accelerate would run DDP
        ("fsdp1", "fsdp1", ["FSDP1 is not supported", "fsdp_version: 2"]),  # GPU: Accelerate's FSDP1
    ],
)
def test_fsdp_or_zero_request_that_would_run_weaker_fails_with_what_to_run_instead(asked, actual, words):
    with pytest.raises(EngineMismatchError) as raised:
        check_engine(EngineRequest(asked, "test launch", 2), actual)
    message = str(raised.value)
    assert "\n" not in message
    for word in words:
        assert word in message


@pytest.mark.timeout(120)
def test_fsdp1_launch_on_cpu_fails_at_start_in_one_line(tiny_settings, tmp_path):
    """Accelerate cannot run FSDP on a CPU process group and wren shards with FSDP2 only: an fsdp_version 1
    config stops every process before any data is read, instead of training as DDP."""
    config = yaml.safe_load(accelerate_config_path("fsdp").read_text())
    config["fsdp_config"]["fsdp_version"] = 1
    config["fsdp_config"]["fsdp_reshard_after_forward"] = "FULL_SHARD"
    config_file = tmp_path / "fsdp1.yaml"
    config_file.write_text(yaml.safe_dump(config))
    settings = tiny_settings(output_dir=tmp_path / "run")
    launched = launch_two_cpu_processes(
        ["-m", "wrenlm.training.pretrain_cli", "--output-dir", settings["output_dir"], "--data", *settings["data"]]
        + ["--tokenizer", settings["tokenizer"], "--no-progress-bar"],
        accelerate_args=("--config_file", str(config_file)),
        timeout=110,
    )
    assert launched.returncode != 0
    errors = [line for line in launched.stderr.splitlines() if line.startswith("wren pretrain: error:")]
    assert len(errors) == 2, launched.stderr[-3000:]  # one line from each process
    assert "asks for FSDP1" in errors[0] and "fsdp_version: 2" in errors[0]
    assert "Data:" not in launched.stdout and not (tmp_path / "run" / "checkpoints").exists()
