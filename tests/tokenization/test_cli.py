"""`wren train-tokenizer`: trains, saves a folder AutoTokenizer loads, reports user errors in one line."""

import json

import pytest
from transformers import AutoTokenizer

from wrenlm.cli import main
from wrenlm.tokenization import WrenTokenizer


@pytest.mark.parametrize("backend", ["python", "tokenizers"])
def test_train_tokenizer_command(corpus_dir, tmp_path, capsys, backend):
    out = tmp_path / "tok"
    code = main(
        [
            "train-tokenizer",
            "--input",
            str(corpus_dir / "prose.txt"),
            str(corpus_dir / "code.txt"),
            "--vocab-size",
            "500",
            "--special-tokens",
            "<|tool|>",
            "<|obs|>",
            "--out",
            str(out),
            "--backend",
            backend,
            "--no-progress",
        ]
    )
    assert code == 0
    assert "trained a 500-token vocabulary" in capsys.readouterr().out
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(tokenizer) is WrenTokenizer and len(tokenizer) == 500
    assert tokenizer.convert_tokens_to_ids(["<|pad|>", "<|eos|>", "<|tool|>", "<|obs|>"]) == [0, 2, 5, 6]
    assert json.loads((out / "tokenizer_config.json").read_text())["extra_special_tokens"] == [
        "<|im_start|>",
        "<|im_end|>",
        "<|tool|>",
        "<|obs|>",
    ]


def test_both_backends_write_the_same_tokenizer(corpus_dir, tmp_path):
    for backend in ("python", "tokenizers"):
        args = ["train-tokenizer", "--input", str(corpus_dir), "--vocab-size", "800", "--out", str(tmp_path / backend)]
        assert main([*args, "--backend", backend, "--no-progress"]) == 0
    assert (tmp_path / "python" / "tokenizer.json").read_text() == (
        tmp_path / "tokenizers" / "tokenizer.json"
    ).read_text()


def test_user_errors_are_one_line(tmp_path, capsys):
    assert (
        main(
            ["train-tokenizer", "--input", str(tmp_path / "nope"), "--vocab-size", "500", "--out", str(tmp_path / "o")]
        )
        == 1
    )
    assert "wren train-tokenizer: error: input not found" in capsys.readouterr().err
    (tmp_path / "a.txt").write_text("hello\n")
    assert (
        main(
            [
                "train-tokenizer",
                "--input",
                str(tmp_path / "a.txt"),
                "--vocab-size",
                "100",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 1
    )
    assert "is too small" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
