"""Data pipeline: loading, deterministic split, tokenizing, packing with EOS, exact character counts."""

import json

import numpy as np
import pytest
import torch

from wrenlm.training.data import (
    EpochSampler,
    build_lm_datasets,
    collate_blocks,
    load_documents,
    split_documents,
    token_char_table,
)


def test_load_folder_of_text_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("first document\nline two\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("second document")
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "third"}) + "\n" + json.dumps({"body": "fourth"}) + "\n")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.txt").write_text("never read")
    docs = load_documents([str(tmp_path)], text_field="body", cache_dir=str(tmp_path / "cache"))
    assert sorted(docs["text"]) == sorted(["first document\nline two\n", "second document", "third", "fourth"])


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_documents([str(tmp_path / "missing.txt")])
    (tmp_path / "d.jsonl").write_text(json.dumps({"content": "x"}) + "\n")
    with pytest.raises(ValueError, match="no 'text' field"):
        load_documents([str(tmp_path / "d.jsonl")], cache_dir=str(tmp_path / "cache"))


@pytest.mark.parametrize("name", ["latin1.txt", "latin1.jsonl"])
def test_non_utf8_data_names_the_file_and_offset(tmp_path, name):
    (tmp_path / "fine.txt").write_text("all good\n")
    body = b'{"text": "caf\xe9"}\n' if name.endswith(".jsonl") else b"line one\ncaf\xe9\n"
    (tmp_path / name).write_bytes(body)
    offset = body.index(b"\xe9")
    with pytest.raises(ValueError, match=rf"{name} is not UTF-8 text \(invalid byte at offset {offset}\)"):
        load_documents([str(tmp_path)], cache_dir=str(tmp_path / "cache"))


def test_hub_dataset_name_goes_through_datasets_load_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, split=None, cache_dir=None, **kwargs):
        calls.append((name, config, split))
        return datasets.Dataset.from_dict({"content": ["hub doc one", "hub doc two"], "id": [1, 2]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    docs = load_documents(["someone/tiny_corpus"], text_field="content", hf_config="plain", hf_split="train[:10]")
    assert calls == [("someone/tiny_corpus", "plain", "train[:10]")]
    assert docs.column_names == ["text"] and docs["text"] == ["hub doc one", "hub doc two"]


def test_default_corpus_is_used_without_inputs(monkeypatch, tmp_path):
    (tmp_path / "hamlet_gut.txt").write_text("To be, or not to be")
    monkeypatch.setattr("wrenlm.training.corpus.default_corpus_files", lambda: [tmp_path / "hamlet_gut.txt"])
    docs = load_documents([], cache_dir=str(tmp_path / "cache"))
    assert docs["text"] == ["To be, or not to be"]


def test_tail_split_is_deterministic_and_lossless(corpus_dir):
    docs = load_documents([str(corpus_dir)])
    first = split_documents(docs, val_fraction=0.1, mode="tail")
    second = split_documents(docs, val_fraction=0.1, mode="tail")
    assert first["train"]["text"] == second["train"]["text"]
    assert first["validation"]["text"] == second["validation"]["text"]
    for original, train, val in zip(docs["text"], first["train"]["text"], first["validation"]["text"]):
        assert train + val == original
        assert train.endswith("\n")  # cut at a line break
        assert 0.05 < len(val) / len(original) < 0.2


def test_document_split_is_seeded_and_disjoint():
    import datasets

    docs = datasets.Dataset.from_dict({"text": [f"document number {i}" for i in range(50)]})
    a = split_documents(docs, val_fraction=0.1, mode="documents", seed=3)
    b = split_documents(docs, val_fraction=0.1, mode="documents", seed=3)
    c = split_documents(docs, val_fraction=0.1, mode="documents", seed=4)
    assert a["validation"]["text"] == b["validation"]["text"] != c["validation"]["text"]
    assert len(a["validation"]) == 5
    assert not set(a["validation"]["text"]) & set(a["train"]["text"])
    assert len(a["train"]) + len(a["validation"]) == 50


def test_char_table_counts_characters_not_bytes(tokenizer):
    table = token_char_table(tokenizer)
    assert table is not None
    for text in ["naïve café — 😀 ünïcödé", "plain ascii text", "KING.\nThou art mad!"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert table[np.asarray(ids)].sum() == len(text)


def _pieces(splits, tokenizer):
    return {
        part: [tokenizer(t, add_special_tokens=False)["input_ids"] for t in splits[part]["text"]]
        for part in ("train", "validation")
    }


def test_packing_puts_eos_between_documents(corpus_dir, tokenizer):
    splits = split_documents(load_documents([str(corpus_dir)]), val_fraction=0.1, mode="tail")
    block = 32
    train, validation, stats = build_lm_datasets(splits, tokenizer, block)
    eos = tokenizer.eos_token_id
    ids = _pieces(splits, tokenizer)

    stream = [t for doc in ids["train"] for t in doc + [eos]]
    expected = [stream[i : i + block] for i in range(0, len(stream) // block * block, block)]
    assert [row.tolist() for row in train["input_ids"]] == expected
    assert stats["train_tokens"] == len(expected) * block
    assert sum(row.tolist().count(eos) for row in train["input_ids"]) >= len(ids["train"]) - 1

    # Validation: EOS doc1 EOS doc2 EOS ..., blocks overlap by one token, every later token a target once.
    val_stream = [eos] + [t for doc in ids["validation"] for t in doc + [eos]]
    targets = []
    for row_ids, row_labels, row_mask in zip(
        validation["input_ids"], validation["labels"], validation["attention_mask"]
    ):
        labels = row_labels.tolist()
        assert len(labels) == block
        n = int(row_mask.sum())
        assert labels[:n] == row_ids.tolist()[:n] and all(x == -100 for x in labels[n:])
        targets.extend(labels[1:n])
    assert targets == val_stream[1:]
    assert stats["validation_chars"] == sum(len(t) for t in splits["validation"]["text"])
    assert sum(int(n) for n in validation["num_chars"]) == stats["validation_chars"]


def test_collate_adds_labels():
    batch = collate_blocks([{"input_ids": torch.tensor([1, 2, 3])}, {"input_ids": torch.tensor([4, 5, 6])}])
    assert batch["input_ids"].shape == (2, 3) and torch.equal(batch["labels"], batch["input_ids"])


def test_epoch_sampler_order_is_a_function_of_seed_and_epoch():
    a, b = EpochSampler(100, seed=1), EpochSampler(100, seed=1)
    first = list(a)
    assert first == list(b) and sorted(first) == list(range(100))
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(EpochSampler(100, seed=2)) != first
