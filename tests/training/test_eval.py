"""`wren eval` and the shipped `evaluate` modules: values checked against independent loops, exact match, errors."""

import json
import math
import re

import evaluate
import pytest
import torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM, GenerationConfig

from wren_testing.finetune import chat, save_tiny_base, write_jsonl
from wren_testing.training import make_document
from wrenlm.cli import main as wren_main
from wrenlm.training import evaluation
from wrenlm.training.evaluation import generate_answers, run_evaluation, score_exact_match
from wrenlm.training.lora import wren_lora_config
from wrenlm.training.metrics import METRIC_NAMES, metric_path
from wrenlm.training.tasks import load_task


@pytest.fixture(scope="module")
def base_dir(tokenizer, tmp_path_factory):
    return save_tiny_base(tokenizer, tmp_path_factory.mktemp("base"), initializer_range=0.2)


@pytest.fixture(scope="module")
def adapter_dir(base_dir, tokenizer, tmp_path_factory):
    """A LoRA adapter with non-zero weights (a fresh one would leave the model unchanged); no tokenizer of its own."""
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(base, wren_lora_config(base.config, r=4))
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if ".lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(out)
    peft_model.merge_and_unload().save_pretrained(out / "merged")
    tokenizer.save_pretrained(out / "merged")
    return out


CONVERSATIONS = [
    chat("Copy: 1 2", "1 2"),
    chat("Say something long, please, about the king and the queen", "The king is dead; long live the queen."),
    chat("Hi", "Hello, naïve café", system="Be kind."),
    chat("Reverse the words: night day", "day night"),
    chat("x", "y"),
]


# ----------------------------------------------------------------------------------------------
def test_metric_modules_load_offline_and_pool_batches():
    generator = torch.Generator().manual_seed(0)
    nll = (torch.rand(7, generator=generator, dtype=torch.float64) * 20).tolist()
    tokens = torch.randint(1, 9, (7,), generator=generator).tolist()
    chars = torch.randint(1, 30, (7,), generator=generator).tolist()
    perplexity = evaluate.load(metric_path("perplexity"), keep_in_memory=True)
    perplexity.add_batch(nll=nll[:3], num_tokens=tokens[:3])
    perplexity.add_batch(nll=nll[3:], num_tokens=tokens[3:])
    result = perplexity.compute()
    assert result["tokens"] == sum(tokens)
    assert result["perplexity"] == pytest.approx(math.exp(sum(nll) / sum(tokens)), rel=1e-12)
    bpc = evaluate.load(metric_path("bits_per_character"), keep_in_memory=True)
    assert bpc.compute(nll=nll, num_chars=chars)["bits_per_character"] == pytest.approx(
        sum(nll) / math.log(2) / sum(chars), rel=1e-12
    )
    exact = evaluate.load(metric_path("exact_match"), keep_in_memory=True)
    scored = exact.compute(predictions=[" 85\n", "12", "Day night", "x"], references=["85", "13", "day night", " x "])
    assert scored == {"exact_match": 0.5, "matches": 2, "examples": 4}
    with pytest.raises(ValueError, match="at least one scored token"):
        perplexity.compute(nll=[0.0], num_tokens=[0])
    with pytest.raises(ValueError, match="Unknown metric 'accuracy'"):
        metric_path("accuracy")
    assert set(METRIC_NAMES) == {"perplexity", "bits_per_character", "exact_match"}


def test_text_perplexity_and_bpc_equal_an_independent_loop(base_dir, tokenizer, tmp_path):
    texts = [make_document(10, lines=12), make_document(11, lines=9)]
    for index, text in enumerate(texts):
        (tmp_path / "docs").mkdir(exist_ok=True)
        (tmp_path / "docs" / f"{index}.txt").write_text(text, encoding="utf-8")
    seq_len = 24
    results = run_evaluation(
        str(base_dir),
        data=str(tmp_path / "docs"),
        metrics=["perplexity", "bits_per_character"],
        seq_len=seq_len,
        batch_size=3,
    )
    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    eos = tokenizer.eos_token_id
    stream = [eos]
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
    total_nll, targets = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(stream) - 1, seq_len - 1):
            ids = torch.tensor([stream[start : start + seq_len]])
            log_probs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
            total_nll -= log_probs[torch.arange(ids.shape[1] - 1), ids[0, 1:]].sum().item()
            targets += ids.shape[1] - 1
    metrics = results["metrics"]
    assert targets == len(stream) - 1 == metrics["tokens"]
    assert metrics["perplexity"] == pytest.approx(math.exp(total_nll / targets), rel=1e-6)
    assert metrics["loss"] == pytest.approx(total_nll / targets, rel=1e-6)
    assert metrics["chars"] == sum(len(text) for text in texts)
    assert metrics["bits_per_character"] == pytest.approx(total_nll / math.log(2) / metrics["chars"], rel=1e-6)


def test_chat_perplexity_covers_exactly_the_assistant_tokens(base_dir, tokenizer, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", CONVERSATIONS)
    results = run_evaluation(str(base_dir), data=str(data), metrics=["perplexity", "bits_per_character"], batch_size=2)
    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    total_nll, targets = 0.0, 0
    with torch.no_grad():
        for conversation in CONVERSATIONS:  # one at a time: no padding at all
            rendered = tokenizer.apply_chat_template(
                conversation["messages"], return_dict=True, return_assistant_tokens_mask=True
            )
            ids = torch.tensor([rendered["input_ids"]])
            log_probs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
            for position, in_reply in enumerate(rendered["assistant_masks"]):
                if in_reply:
                    total_nll -= log_probs[position - 1, ids[0, position]].item()
                    targets += 1
    replies = [conversation["messages"][-1]["content"] for conversation in CONVERSATIONS]
    metrics = results["metrics"]
    assert results["examples"] == len(CONVERSATIONS)
    assert metrics["tokens"] == targets
    assert metrics["perplexity"] == pytest.approx(math.exp(total_nll / targets), rel=1e-6)
    assert metrics["chars"] == sum(len(reply) for reply in replies)  # <|im_end|> spells nothing
    assert metrics["bits_per_character"] == pytest.approx(total_nll / math.log(2) / metrics["chars"], rel=1e-6)


class OracleModel(torch.nn.Module):
    """Stands in for a model that was forced to answer `What is a + b?` correctly (or off by one).

    Its `generate` reads the real prompt the evaluation built (left padding, chat template, generation
    prompt) and appends the answer's tokens, the end-of-turn token and padding, like a real model would.
    """

    def __init__(self, tokenizer, correct: bool):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id)
        self.tokenizer = tokenizer
        self.correct = correct

    def generate(self, input_ids, attention_mask, generation_config):
        rows = []
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist()):
            prompt = self.tokenizer.decode([token for token, keep in zip(ids, mask) if keep])
            assert mask[0] == 1 or mask == sorted(mask)  # left padding
            assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
            a, b = map(int, re.search(r"What is (\d+) \+ (\d+)\?", prompt).groups())
            answer = f" {a + b if self.correct else a + b + 1}\n"  # whitespace around it is stripped
            end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
            rows.append(ids + self.tokenizer(answer, add_special_tokens=False)["input_ids"] + [end])
        assert end in generation_config.eos_token_id and not generation_config.do_sample
        width = max(len(row) for row in rows)
        return torch.tensor([row + [generation_config.pad_token_id] * (width - len(row)) for row in rows])


@pytest.mark.parametrize("correct, expected", [(True, 1.0), (False, 0.0)])
def test_exact_match_on_the_generated_task(tokenizer, monkeypatch, tmp_path, correct, expected):
    oracle = OracleModel(tokenizer, correct)
    monkeypatch.setattr(evaluation, "load_model_and_tokenizer", lambda *args, **kwargs: (oracle, tokenizer))
    out = tmp_path / "results.json"
    results = run_evaluation(str(tmp_path), data="builtin:arithmetic", metrics=["exact_match"], batch_size=7, out=out)
    assert results["metrics"] == {"exact_match": expected, "matches": int(200 * expected), "examples": 200}
    assert json.loads(out.read_text())["metrics"] == results["metrics"]
    first = load_task("builtin:arithmetic")["test"][0]["messages"]
    assert results["samples"][0]["prompt"] == first[0]["content"]
    assert results["samples"][0]["expected"] == first[1]["content"]


def test_batched_greedy_answers_equal_one_at_a_time(base_dir, tokenizer):
    model = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    together = generate_answers(model, tokenizer, CONVERSATIONS, batch_size=5, max_new_tokens=8)
    alone = generate_answers(model, tokenizer, CONVERSATIONS, batch_size=1, max_new_tokens=8)
    assert together == alone and len(set(alone)) > 1
    scored = score_exact_match(model, tokenizer, CONVERSATIONS[:2], max_new_tokens=8)
    assert scored["examples"] == 2 and [s["answer"] for s in scored["samples"]] == alone[:2]


def test_adapter_evaluation_equals_the_merged_model(base_dir, adapter_dir, tmp_path):
    data = str(write_jsonl(tmp_path / "chat.jsonl", CONVERSATIONS))
    with_adapter = run_evaluation(str(base_dir), adapter=str(adapter_dir), data=data)["metrics"]
    merged = run_evaluation(str(adapter_dir / "merged"), data=data)["metrics"]
    adapter_only = run_evaluation(str(adapter_dir), data=data)["metrics"]  # base found in adapter_config.json
    base = run_evaluation(str(base_dir), data=data)["metrics"]
    assert with_adapter["perplexity"] == pytest.approx(merged["perplexity"], rel=1e-5)
    assert adapter_only["perplexity"] == pytest.approx(merged["perplexity"], rel=1e-5)
    assert abs(base["perplexity"] - merged["perplexity"]) > 1e-3


def test_eval_cli_prints_and_writes_json_and_reports_errors(base_dir, adapter_dir, tokenizer, tmp_path, capsys):
    out = tmp_path / "results.json"
    argv = ["eval", "--model", str(base_dir), "--adapter", str(adapter_dir), "--data", "builtin:reverse"]
    assert wren_main([*argv, "--metric", "perplexity", "exact_match", "--limit", "6", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed["examples"] == 6 and printed["metrics"]["examples"] == 6
    assert {"perplexity", "loss", "tokens", "exact_match"} <= set(printed["metrics"])
    # Without --model, the adapter's own base model (adapter_config.json) is evaluated.
    assert wren_main(["eval", "--adapter", str(adapter_dir), "--data", "builtin:reverse", "--limit", "6"]) == 0
    adapter_alone = json.loads(capsys.readouterr().out)
    assert adapter_alone["model"] == str(base_dir)
    assert adapter_alone["metrics"]["perplexity"] == pytest.approx(printed["metrics"]["perplexity"], rel=1e-5)

    def error_of(*args):
        assert wren_main(["eval", "--model", str(base_dir), *args]) == 1
        return capsys.readouterr().err

    assert "LoRA adapter folder" in error_of("--adapter", str(tmp_path / "nope"))
    wide = save_tiny_base(tokenizer, tmp_path / "wide", hidden_size=64)
    assert wren_main(["eval", "--model", str(wide), "--adapter", str(adapter_dir), "--data", "builtin:reverse"]) == 1
    assert "layer shapes differ" in capsys.readouterr().err.split("wren eval: error: ")[-1]
    text = tmp_path / "a.txt"
    text.write_text("Some text.\n")
    assert "exact_match needs chat data" in error_of("--data", str(text), "--metric", "exact_match")
    assert "--seq-len 256 exceeds the model's context (128" in error_of("--data", str(text))
    assert "Unknown built-in task" in error_of("--data", "builtin:nope")
    broken = write_jsonl(tmp_path / "broken.jsonl", [chat("a", "b"), "{oops"])
    assert "line 2: invalid JSON" in error_of("--data", str(broken))
