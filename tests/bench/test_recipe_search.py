"""`bench.recipe_search` runs what its table says: each candidate's command parses to that candidate's settings."""

import argparse
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def recipe_search(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    from bench import recipe_search

    monkeypatch.setattr(recipe_search, "tokenizer_dir", lambda vocab_size: tmp_path / f"tokenizer-{vocab_size}")
    return recipe_search


def test_each_candidate_command_gives_its_settings_and_budget(recipe_search, tmp_path):
    from wrenlm.training import pretrain_cli
    from wrenlm.training.config import PretrainConfig, config_from_args

    throughput = {recipe_search.shape_key(s): {"speed_vs_old_default": 1.5} for s in recipe_search.CANDIDATES.values()}
    for name, settings in recipe_search.CANDIDATES.items():
        steps = recipe_search.budget_steps(settings, throughput, fraction=0.5)
        tokens_per_step = settings["per_device_batch_size"] * settings["seq_len"]
        assert steps == round(0.5 * 1200 * 2048 * 1.5 / tokens_per_step)
        command = recipe_search.pretrain_command(settings, steps, tmp_path / name)
        assert command[:3] == ["nice", "-n", "10"] and command[4] == "pretrain"
        parser = argparse.ArgumentParser()
        pretrain_cli.add_arguments(parser)
        config = config_from_args(parser.parse_args(command[5:]), PretrainConfig)
        assert config.max_steps == steps and config.cpu_threads == 1 and config.resume == "never"
        assert config.tokenizer == str(tmp_path / f"tokenizer-{settings['vocab_size']}")
        for key, value in settings.items():
            if key != "vocab_size":
                assert getattr(config, key) == value, (name, key)
