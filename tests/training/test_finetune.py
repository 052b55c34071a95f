"""`wren finetune`: data validation, assistant-only labels, LoRA training through the shared loop, outputs, resume."""

import json
import re

import pytest
import torch
from peft import AutoPeftModelForCausalLM, PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from wren_testing.finetune import chat, copy_digits_records, save_tiny_base, write_jsonl
from wren_testing.training import launch_two_cpu_processes, read_metrics, train_losses
from wrenlm.cli import main as wren_main
from wrenlm.training.callbacks import TrainerCallback
from wrenlm.training.config import apply_overrides
from wrenlm.training.evaluation import run_evaluation
from wrenlm.training.finetune import FinetuneConfig, run_finetuning
from wrenlm.training.finetune_data import ChatDataError, ChatEncoder, read_chat_jsonl

IDS = torch.tensor([[5, 9, 17, 33, 2, 64, 70, 11]])


# A frozen base with the default 0.02 init has near-uniform logits that a rank-4 update cannot sharpen
# (the final norm fixes the hidden state's size); wider initial weights give LoRA something to steer.
BASE_INIT = {"initializer_range": 0.2}


@pytest.fixture(scope="module")
def base_dir(tokenizer, tmp_path_factory):
    return save_tiny_base(tokenizer, tmp_path_factory.mktemp("base"), **BASE_INIT)


@pytest.fixture(scope="module")
def copy_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("copy")
    return write_jsonl(root / "train.jsonl", copy_digits_records(96)), write_jsonl(
        root / "eval.jsonl", copy_digits_records(16, seed=1)
    )


def settings(base_dir, output_dir, data, **overrides) -> dict:
    values = {
        "base_model": str(base_dir),
        "output_dir": str(output_dir),
        "data": str(data),
        "max_steps": 6,
        "per_device_batch_size": 8,
        "eval_batch_size": 8,
        "learning_rate": 1e-2,
        "warmup_steps": 1,
        "eval_every": 3,
        "save_every": 3,
        "log_every": 1,
        "lora_r": 4,
        "lora_alpha": 8,
        "exact_match_examples": 4,
        "max_new_tokens": 6,
        "progress_bar": False,
        "report_to": "none",
        "seed": 5,
    }
    values.update(overrides)
    return values


def finetune(values: dict, **kwargs) -> dict:
    return run_finetuning(apply_overrides(FinetuneConfig(), values), **kwargs)


def _reset_accelerate():
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def _logits(model):
    with torch.no_grad():
        return model.eval()(input_ids=IDS).logits


# ----------------------------------------------------------------------------------------------
BROKEN_LINES = {
    2: "{bad json",
    3: json.dumps({"msgs": []}),
    4: json.dumps({"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "x"}]}),
    5: json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
    6: json.dumps({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "ok"}]}),
    8: "[1, 2]",
    9: json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 7}]}),
    10: json.dumps({"messages": []}),
}
EXPECTED_PROBLEMS = {
    2: "invalid JSON",
    3: "missing 'messages'",
    4: "role 'wizard'",
    5: "no assistant message",
    6: "message 0 (user) has empty content",
    8: "expected a JSON object",
    9: "message 1 has no string 'content'",
    10: "'messages' must be a non-empty list",
}


def _broken_file(path):
    lines = [BROKEN_LINES.get(number, json.dumps(chat("Copy: 1", "1"))) for number in range(1, 12)]
    lines[6] = ""  # line 7: blank lines are allowed
    return write_jsonl(path, lines)


def test_malformed_jsonl_reports_every_bad_line_and_nothing_is_trained(base_dir, tmp_path, capsys):
    data = _broken_file(tmp_path / "broken.jsonl")
    with pytest.raises(ChatDataError) as caught:
        read_chat_jsonl(data)
    assert [line for line, _ in caught.value.problems] == sorted(EXPECTED_PROBLEMS)
    for line, message in caught.value.problems:
        assert EXPECTED_PROBLEMS[line] in message
        assert f"line {line}: {message}" in str(caught.value)

    out = tmp_path / "run"
    with pytest.raises(ChatDataError, match="8 bad line"):
        finetune(settings(base_dir, out, data))
    assert not out.exists()  # no checkpoint, metrics or adapter: training never started

    code = wren_main(["finetune", "--model", str(base_dir), "--data", str(data), "--output-dir", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "wren finetune: error: " in err and "line 4: message 0 has role 'wizard'" in err
    assert not out.exists()


def test_chat_jsonl_with_a_byte_order_mark_is_read(tmp_path):
    record = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(record) + "\r\n").encode() * 2)
    assert read_chat_jsonl(path) == [{**record, "line": 1}, {**record, "line": 2}]


def test_non_utf8_chat_jsonl_names_the_file_and_offset(base_dir, tmp_path, capsys):
    path = tmp_path / "latin1.jsonl"
    body = b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "b"}]}\n'
    path.write_bytes(body)
    expected = f"latin1.jsonl is not UTF-8 text (invalid byte at offset {body.index(0xE9)})"
    with pytest.raises(ValueError, match=re.escape(expected)):
        read_chat_jsonl(path)
    for argv in (
        ["finetune", "--model", str(base_dir), "--data", str(path), "--output-dir", str(tmp_path / "run")],
        ["eval", "--model", str(base_dir), "--data", str(path)],
    ):
        assert wren_main(argv) == 1
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_labels_cover_only_the_assistant_replies(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Copy: 1 2"},
        {"role": "assistant", "content": "1 2"},
        {"role": "user", "content": "Again, café"},
        {"role": "assistant", "content": "naïve café"},
    ]
    row = ChatEncoder(tokenizer, max_length=512).encode(messages)
    assert row["input_ids"] == tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    spans, current = [], []
    for token, label in zip(row["input_ids"], row["labels"]):
        assert label in (token, -100)
        if label == -100 and current:
            spans.append(current)
            current = []
        elif label != -100:
            current.append(label)
    assert [tokenizer.decode(span) for span in spans] == ["1 2<|im_end|>", "naïve café<|im_end|>"]
    assert row["num_chars"] == len("1 2") + len("naïve café")  # <|im_end|> spells no characters


def test_token_ids_outside_the_model_vocabulary_are_listed_before_training(tokenizer):
    # The model skips its own id check in training steps (a device sync per step): the data is checked here.
    conversations = [{"messages": chat("Copy: 1", "1")["messages"], "line": 1}, chat("Copy: 2", "2")]
    rows = ChatEncoder(tokenizer, max_length=512, vocab_size=len(tokenizer)).encode_all(conversations)
    assert len(rows) == 2
    small_vocab = max(rows[1]["input_ids"])  # the largest id of the second conversation is out of range
    with pytest.raises(ValueError, match=rf"example 1: token id {small_vocab} is outside the model's vocabulary"):
        ChatEncoder(tokenizer, max_length=512, vocab_size=small_vocab).encode_all(conversations)


def test_conversations_longer_than_max_length_are_listed_before_training(base_dir, tmp_path):
    data = write_jsonl(
        tmp_path / "long.jsonl", [chat("Copy: 1", "1"), chat("Copy: " + "7 " * 40, "7"), chat("a", "b")]
    )
    out = tmp_path / "run"
    with pytest.raises(
        ValueError, match=r"1 conversation\(s\) cannot be used:\n  line 2: \d+ tokens, more than --max"
    ):
        finetune(settings(base_dir, out, data, max_length=30, val_fraction=0.0))
    assert not out.exists()


def test_cli_finetune_lowers_loss_and_writes_adapter_and_merged_model(base_dir, copy_data, tmp_path):
    train_file, eval_file = copy_data
    out = tmp_path / "lora"
    argv = ["finetune", "--model", str(base_dir), "--data", str(train_file), "--eval-data", str(eval_file)]
    argv += ["--output-dir", str(out), "--merge", "--max-steps", "16", "--per-device-batch-size", "8"]
    argv += ["--learning-rate", "1e-2", "--warmup-steps", "2", "--eval-every", "8", "--save-every", "8"]
    argv += ["--lora-r", "4", "--exact-match-examples", "4", "--max-new-tokens", "6", "--no-progress-bar"]
    argv += ["--report-to", "none", "--log-every", "1"]
    assert wren_main(argv) == 0

    before = run_evaluation(str(base_dir), data=str(eval_file), metrics=["perplexity"])["metrics"]
    after = run_evaluation(str(base_dir), adapter=str(out), data=str(eval_file), metrics=["perplexity"])["metrics"]
    results = json.loads((out / "finetune_results.json").read_text())
    assert after["loss"] < before["loss"] - 1.0
    # The loop's evaluation and `wren eval` (evaluate metric modules) agree on the same conversations.
    assert results["eval_loss"] == pytest.approx(after["loss"], rel=1e-5)
    assert results["eval_perplexity"] == pytest.approx(after["perplexity"], rel=1e-5)
    assert 0.0 <= results["eval_exact_match"] <= 1.0 and results["eval_exact_match_examples"] == 4
    losses = train_losses(out)
    assert list(losses) == list(range(1, 17)) and losses[16] < losses[1]
    assert [r["step"] for r in read_metrics(out) if "eval/exact_match" in r] == [8, 16]

    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), out)
    auto = AutoPeftModelForCausalLM.from_pretrained(out)
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert type(merged).__name__ == "WrenForCausalLM"
    assert (out / "tokenizer.json").is_file() and (out / "merged" / "tokenizer.json").is_file()
    expected = _logits(adapter)
    assert (expected - _logits(AutoModelForCausalLM.from_pretrained(base_dir))).abs().max() > 1e-3
    torch.testing.assert_close(_logits(auto), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_logits(merged), expected, rtol=1e-5, atol=1e-5)


def test_moe_finetune_trains_the_expert_tensors_and_merges(tokenizer, copy_data, tmp_path):
    base = save_tiny_base(tokenizer, tmp_path / "moe", moe=True, **BASE_INIT)
    out = tmp_path / "lora"
    results = finetune(settings(base, out, copy_data[0], max_steps=3, eval_data="none", merge=True))
    assert results["global_step"] == 3 and "eval_loss" not in results
    saved = load_file(out / "adapter_model.safetensors")
    assert any("mlp.experts.lora_A" in key for key in saved) and any(
        "experts.base_layer.lora_B" in key for key in saved
    )
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out)
    torch.testing.assert_close(
        _logits(AutoModelForCausalLM.from_pretrained(out / "merged")), _logits(adapter), rtol=1e-5, atol=1e-5
    )


class _FailingFinalEvaluation(TrainerCallback):
    def on_evaluate(self, trainer, step, metrics):
        if any(key.startswith("eval_full/") for key in metrics):
            raise RuntimeError("out of memory in the final evaluation")


def test_a_failing_final_evaluation_keeps_the_adapter_and_writes_the_results(base_dir, copy_data, tmp_path):
    out = tmp_path / "lora"
    values = settings(base_dir, out, copy_data[0], max_steps=2, eval_every=0, exact_match_examples=0, merge=True)
    with pytest.raises(RuntimeError, match="out of memory"):
        finetune(values, callbacks=[_FailingFinalEvaluation()])
    results = json.loads((out / "finetune_results.json").read_text())
    assert results["global_step"] == 2 and "eval_loss" not in results
    assert results["error"] == "final evaluation failed: RuntimeError: out of memory in the final evaluation"
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), out)
    torch.testing.assert_close(_logits(AutoModelForCausalLM.from_pretrained(out / "merged")), _logits(adapter))


class _CrashAfter(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, step, logs):
        if step == self.step:
            raise KeyboardInterrupt


class _StartStep(TrainerCallback):
    def on_train_begin(self, trainer):
        self.step = trainer.state.global_step


def test_resume_after_a_crash_gives_the_same_adapter(base_dir, copy_data, tmp_path):
    straight = settings(base_dir, tmp_path / "straight", copy_data[0], eval_every=0, exact_match_examples=0)
    finetune(straight)
    _reset_accelerate()
    crashed = dict(straight, output_dir=str(tmp_path / "crashed"))
    with pytest.raises(KeyboardInterrupt):
        finetune(crashed, callbacks=[_CrashAfter(4)])  # after the step-3 checkpoint
    _reset_accelerate()
    start = _StartStep()
    finetune(crashed, callbacks=[start])
    assert start.step == 3
    assert train_losses(tmp_path / "crashed") == pytest.approx(train_losses(tmp_path / "straight"), rel=1e-5)
    a = load_file(tmp_path / "straight" / "adapter_model.safetensors")
    b = load_file(tmp_path / "crashed" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-6)


@pytest.mark.timeout(180)
def test_two_processes_match_one_process(base_dir, copy_data, tmp_path):
    # Copy-digit conversations all have the same length, so a per-process mean loss equals the global one.
    train_file, eval_file = copy_data
    common = ["--model", str(base_dir), "--data", str(train_file), "--eval-data", str(eval_file), "--max-steps", "4"]
    common += ["--learning-rate", "1e-2", "--warmup-steps", "1", "--eval-every", "0", "--save-every", "0"]
    common += ["--lora-r", "4", "--exact-match-examples", "0", "--no-progress-bar", "--report-to", "none"]
    common += ["--log-every", "1", "--eval-batch-size", "8"]
    assert wren_main(["finetune", *common, "--output-dir", str(tmp_path / "one"), "--per-device-batch-size", "8"]) == 0

    launched = launch_two_cpu_processes(
        ["-m", "wrenlm.training.finetune_cli", *common, "--output-dir", str(tmp_path / "two")]
        + ["--per-device-batch-size", "4"]
    )
    assert launched.returncode == 0, launched.stderr[-4000:]

    one = json.loads((tmp_path / "one" / "finetune_results.json").read_text())
    two = json.loads((tmp_path / "two" / "finetune_results.json").read_text())
    assert (one["num_processes"], two["num_processes"]) == (1, 2)
    assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-5)
    losses_one, losses_two = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert list(losses_two) == [1, 2, 3, 4]
    assert [losses_two[s] for s in losses_two] == pytest.approx([losses_one[s] for s in losses_one], rel=1e-5)
    a = load_file(tmp_path / "one" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter_model.safetensors")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)
