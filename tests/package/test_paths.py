"""`wrenlm.paths`: the one home of the cache folder, the default output folders and the names of written files."""

from pathlib import Path

from wrenlm import paths


def test_cache_folder_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(paths.CACHE_ENV_VAR, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert paths.cache_dir() == tmp_path / "home" / ".cache" / "wrenlm"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_dir() == tmp_path / "xdg" / "wrenlm"
    monkeypatch.setenv(paths.CACHE_ENV_VAR, "~/wren-cache")
    assert paths.cache_dir() == Path(tmp_path / "home" / "wren-cache")


def test_every_user_reads_the_same_names():
    import wrenlm.training
    from wrenlm.conversion import packaged
    from wrenlm.demo import chat_cli
    from wrenlm.demo import loading as chat_loading
    from wrenlm.training import corpus, defaults, eval_cli, finetune, pretrain

    # The public names of wrenlm.training keep working (re-exported, not copied).
    assert wrenlm.training.DEFAULT_OUTPUT_DIR is defaults.DEFAULT_OUTPUT_DIR is paths.DEFAULT_OUTPUT_DIR
    assert wrenlm.training.cache_dir is defaults.cache_dir is corpus.cache_dir is packaged.cache_dir is paths.cache_dir
    assert eval_cli.DEFAULT_OUTPUT_DIR is finetune.DEFAULT_OUTPUT_DIR is chat_cli.DEFAULT_OUTPUT_DIR
    assert chat_loading.SMOLLM2_OUTPUT_DIR is packaged.SMOLLM2_OUTPUT_DIR is paths.SMOLLM2_OUTPUT_DIR
    assert (pretrain.RESULTS_FILE, pretrain.CONFIG_FILE) == (paths.TRAIN_RESULTS_FILE, paths.TRAIN_CONFIG_FILE)
    assert (finetune.RESULTS_FILE, finetune.CONFIG_FILE) == (paths.FINETUNE_RESULTS_FILE, paths.FINETUNE_CONFIG_FILE)
