"""`wrenlm.output_dir`: which folders a command may write into, staged writes, and atomic result files."""

import json

import pytest

from wrenlm.output_dir import (
    OutputFolderError,
    check_output_dir,
    check_output_file,
    mark_output_dir,
    read_marker,
    staged_output_dir,
    write_text_atomic,
)
from wrenlm.paths import OUTPUT_MARKER_FILE


def test_missing_and_empty_folders_are_free_and_checking_writes_nothing(tmp_path):
    assert check_output_dir(tmp_path / "new", "convert") is False
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty", "convert") is False
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_folder_someone_else_wrote_needs_force(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputFolderError, match=r"is not empty \(notes.txt\) and was not written by `wren pretrain`"):
        check_output_dir(tmp_path, "pretrain", resumable=True)
    assert check_output_dir(tmp_path, "pretrain", resumable=True, force=True) is False  # allowed, not a resume
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputFolderError, match="exists and is not a folder"):
        check_output_dir(tmp_path / "file", "convert", force=True)


def test_own_output_is_continued_only_by_the_same_resumable_command(tmp_path):
    mark_output_dir(tmp_path / "run", "pretrain")
    assert read_marker(tmp_path / "run") == {"command": "pretrain"}
    assert check_output_dir(tmp_path / "run", "pretrain", resumable=True) is True
    with pytest.raises(OutputFolderError, match=r"an earlier `wren pretrain` output\); choose another folder"):
        check_output_dir(tmp_path / "run", "finetune", resumable=True)
    mark_output_dir(tmp_path / "tok", "train-tokenizer")
    with pytest.raises(OutputFolderError, match=r"an earlier `wren train-tokenizer` output"):
        check_output_dir(tmp_path / "tok", "train-tokenizer")  # not resumable: a second run needs --force
    mark_output_dir(tmp_path / "pulled", "pull", repo="me/a")
    assert check_output_dir(tmp_path / "pulled", "pull", resumable=True, identity={"repo": "me/a"}) is True
    with pytest.raises(OutputFolderError, match="an earlier `wren pull` output, repo me/a"):
        check_output_dir(tmp_path / "pulled", "pull", resumable=True, identity={"repo": "me/b"})


def test_folders_from_before_markers_are_recognised_by_their_config_file(tmp_path):
    (tmp_path / "training_config.yaml").write_text("max_steps: 3\n")
    assert check_output_dir(tmp_path, "pretrain", resumable=True, legacy_files=("training_config.yaml",)) is True
    with pytest.raises(OutputFolderError):
        check_output_dir(tmp_path, "finetune", resumable=True, legacy_files=("finetune_config.yaml",))
    (tmp_path / OUTPUT_MARKER_FILE).write_text("not json")  # a broken marker is no marker
    assert read_marker(tmp_path) is None


def test_staged_output_replaces_a_missing_folder_in_one_rename(tmp_path):
    out = tmp_path / "out"
    (tmp_path / ".out.tmp-0badc0de").mkdir()  # left by a killed run: removed
    (tmp_path / ".out.tmp-notmine").mkdir()  # not wrenlm's naming: kept
    with staged_output_dir(out, "convert") as staging:
        assert staging.parent == tmp_path and staging.name.startswith(".out.tmp-")
        (staging / "a.json").write_text("1")
        assert not out.exists()  # nothing in place until everything is written
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER_FILE, "a.json"]
    assert read_marker(out) == {"command": "convert", "files": ["a.json"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.tmp-notmine", "out"]


def test_a_failed_staged_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), staged_output_dir(tmp_path / "out", "convert") as staging:
        (staging / "half.bin").write_bytes(b"x")
        raise RuntimeError("conversion failed")
    assert list(tmp_path.iterdir()) == []


def test_forced_staged_write_replaces_only_what_wrenlm_wrote(tmp_path):
    out = tmp_path / "out"
    with staged_output_dir(out, "import") as staging:
        (staging / "model-00001-of-00002.safetensors").write_text("old shard")
        (staging / "config.json").write_text("old")
    (out / "notes.txt").write_text("mine")
    with staged_output_dir(out, "import") as staging:  # the caller checked --force
        (staging / "model.safetensors").write_text("new")
        (staging / "config.json").write_text("new")
    files = {p.name: p.read_text() for p in out.iterdir() if p.name != OUTPUT_MARKER_FILE}
    assert files == {"config.json": "new", "model.safetensors": "new", "notes.txt": "mine"}  # old shard: wren's
    assert read_marker(out)["files"] == ["config.json", "model.safetensors"]
    # Into a folder no import wrote, nothing is removed, even a file named like one wrenlm writes.
    other = tmp_path / "other"
    other.mkdir()
    (other / "model-00001-of-00002.safetensors").write_text("theirs")
    with staged_output_dir(other, "import") as staging:
        (staging / "model.safetensors").write_text("new")
    assert (other / "model-00001-of-00002.safetensors").read_text() == "theirs"


def test_output_files_need_force_and_are_written_whole(tmp_path):
    path = tmp_path / "results.json"
    check_output_file(path)
    write_text_atomic(path, json.dumps({"a": 1}))
    with pytest.raises(OutputFolderError, match="already exists; choose another name, or pass --force"):
        check_output_file(path)
    check_output_file(path, force=True)
    with pytest.raises(OutputFolderError, match="is a folder"):
        check_output_file(tmp_path, force=True)
    write_text_atomic(path, "second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary file left
