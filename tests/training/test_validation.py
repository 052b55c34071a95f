"""One perplexity / bits-per-character path: its edge cases, and training validation equal to `wren eval`."""

import math

import evaluate
import pytest
import torch
from transformers import AutoModelForCausalLM

import wrenlm
from wren_testing.finetune import save_tiny_base
from wren_testing.training import make_document
from wrenlm.training import bits_per_character as public_bits_per_character
from wrenlm.training.config import TrainingConfig
from wrenlm.training.data import build_eval_blocks, load_documents
from wrenlm.training.evaluation import run_evaluation
from wrenlm.training.metrics import metric_path
from wrenlm.training.metrics.likelihood import bits_per_character, mean_nll, perplexity, perplexity_from_loss
from wrenlm.training.trainer import Trainer
from wrenlm.training.validation import per_sequence_nll, validation_metrics


def test_formulas_and_overflow():
    assert mean_nll(3.0, 2) == 1.5
    assert perplexity(6.0, 3) == math.exp(2.0)
    assert bits_per_character(math.log(2) * 10, 5) == pytest.approx(2.0, rel=1e-15)
    assert perplexity_from_loss(709.5) == math.exp(709.5)  # still a float: no early cut-off
    assert perplexity_from_loss(710.0) == math.inf
    assert public_bits_per_character is bits_per_character


def test_nothing_scored_is_the_same_error_in_every_caller(tiny_config):
    with pytest.raises(ValueError, match="at least one scored token"):
        perplexity(0.0, 0)
    with pytest.raises(ValueError, match="at least one scored character"):
        bits_per_character(1.0, 0)
    metric = evaluate.load(metric_path("perplexity"), keep_in_memory=True)
    with pytest.raises(ValueError, match="at least one scored token"):
        metric.compute(nll=[0.0, 0.0], num_tokens=[0, 0])
    metric = evaluate.load(metric_path("bits_per_character"), keep_in_memory=True)
    with pytest.raises(ValueError, match="at least one scored character"):
        metric.compute(nll=[1.5], num_chars=[0])

    model = wrenlm.WrenForCausalLM(tiny_config).eval()
    ids = torch.randint(3, 100, (2, 6), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="at least one scored token"):
        validation_metrics(model, [])  # empty input
    ignored = {"input_ids": ids, "labels": torch.full_like(ids, -100), "num_chars": torch.tensor([0, 0])}
    with pytest.raises(ValueError, match="at least one scored token"):
        validation_metrics(model, [ignored])  # every label ignored
    only_first = {"input_ids": ids, "labels": torch.cat([ids[:, :1], torch.full_like(ids[:, 1:], -100)], dim=1)}
    with pytest.raises(ValueError, match="at least one scored token"):
        validation_metrics(model, [only_first])  # labels[0] is never a target (nothing predicts it)


def test_per_sequence_nll_scores_exactly_the_unignored_next_tokens():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, 11, generator=generator)
    labels = torch.randint(0, 11, (3, 5), generator=generator)
    labels[1, 2:] = -100
    labels[2, 1:] = -100  # nothing scored in this row
    nll, count = per_sequence_nll(logits, labels)
    log_probs = torch.log_softmax(logits.double(), dim=-1)
    for row in range(3):
        targets = [(t, int(labels[row, t + 1])) for t in range(4) if labels[row, t + 1] != -100]
        assert int(count[row]) == len(targets)
        expected = -sum(float(log_probs[row, t, label]) for t, label in targets)
        assert float(nll[row]) == pytest.approx(expected, rel=1e-6, abs=1e-6)
    assert (float(nll[2]), int(count[2])) == (0.0, 0)


def test_training_validation_equals_wren_eval_and_counts_every_character(tokenizer, tmp_path):
    texts = [make_document(20, lines=10), make_document(21, lines=7) + "naïve café — ünïcödé\n"]
    docs = tmp_path / "docs"
    docs.mkdir()
    for index, text in enumerate(texts):
        (docs / f"{index}.txt").write_text(text, encoding="utf-8")
    base = save_tiny_base(tokenizer, tmp_path / "base", initializer_range=0.2)
    seq_len = 24

    by_eval = run_evaluation(
        str(base), data=str(docs), metrics=["perplexity", "bits_per_character"], seq_len=seq_len, batch_size=4
    )["metrics"]

    blocks = build_eval_blocks(load_documents([str(docs)]), tokenizer, seq_len)
    config = TrainingConfig(
        output_dir=str(tmp_path / "run"), per_device_batch_size=2, eval_batch_size=4, report_to="none"
    )
    trainer = Trainer(AutoModelForCausalLM.from_pretrained(base), config, blocks, blocks, tokenizer=tokenizer)
    by_training = trainer.evaluate(samples=False)

    assert by_training["eval_full/chars"] == by_eval["chars"] == sum(len(text) for text in texts)
    assert by_training["eval_full/tokens"] == by_eval["tokens"]
    # Same model, same blocks, same batches: only the order of one float64 sum differs.
    assert by_training["eval_full/loss"] == pytest.approx(by_eval["loss"], rel=1e-12)
    assert by_training["eval_full/perplexity"] == pytest.approx(by_eval["perplexity"], rel=1e-12)
    assert by_training["eval_full/bits_per_char"] == pytest.approx(by_eval["bits_per_character"], rel=1e-12)
    assert by_training["eval_full/bits_per_char"] == pytest.approx(
        by_training["eval_full/loss"] * by_training["eval_full/tokens"] / (math.log(2) * sum(map(len, texts))),
        rel=1e-12,
    )
