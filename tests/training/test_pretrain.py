"""End-to-end pretraining on a tiny corpus: outputs, exact bits per character, accumulation, MoE logging."""

import json
import math
from pathlib import Path

import pytest
import torch

import wrenlm  # noqa: F401
from wren_testing.training import read_metrics, train_losses
from wrenlm.training.config import PretrainConfig, apply_overrides
from wrenlm.training.pretrain import run_pretraining


def pretrain(settings: dict, **kwargs) -> dict:
    return run_pretraining(apply_overrides(PretrainConfig(), settings), **kwargs)


def test_final_save_loads_with_auto_classes_and_bpc_is_exact(tiny_settings, corpus_dir, tokenizer_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    settings = tiny_settings(max_steps=6, eval_every=3)
    results = pretrain(settings)
    out = Path(settings["output_dir"])

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "WrenForCausalLM" and len(tok) == model.config.vocab_size
    assert GenerationConfig.from_pretrained(out).eos_token_id == tok.eos_token_id
    generated = model.generate(**tok("KING.", return_tensors="pt"), max_new_tokens=5, do_sample=False)
    assert generated.shape[1] > 1

    # Independent bits per character: rebuild the validation stream from the raw text, score it with
    # plain logits + log_softmax, divide by the raw character count.
    from wrenlm.training.data import load_documents, split_documents

    splits = split_documents(load_documents([str(corpus_dir)]), val_fraction=settings["val_fraction"], mode="tail")
    texts = splits["validation"]["text"]
    eos = tok.eos_token_id
    stream = [eos]
    for text in texts:
        stream += tok(text, add_special_tokens=False)["input_ids"] + [eos]
    block = settings["seq_len"]
    total_nll, total_targets = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(stream) - 1, block - 1):
            ids = torch.tensor([stream[start : start + block]])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
            targets = ids[0, 1:]
            total_nll -= logp[torch.arange(len(targets)), targets].sum().item()
            total_targets += len(targets)
    chars = sum(len(t) for t in texts)
    assert total_targets == len(stream) - 1
    assert results["validation_chars"] == chars
    assert results["validation_loss"] == pytest.approx(total_nll / total_targets, rel=1e-5)
    assert results["validation_bits_per_char"] == pytest.approx(total_nll / (math.log(2) * chars), rel=1e-5)
    assert results["validation_perplexity"] == pytest.approx(math.exp(total_nll / total_targets), rel=1e-5)

    metrics = read_metrics(out)
    assert [r["step"] for r in metrics if "eval/bits_per_char" in r] == [3, 6]
    assert any(r.get("samples/0", "").startswith("KING.") for r in metrics)
    assert json.loads((out / "train_results.json").read_text())["global_step"] == 6


def test_gradient_accumulation_matches_a_bigger_batch(tiny_settings, tmp_path):
    big = tiny_settings(output_dir=tmp_path / "big", per_device_batch_size=8, max_steps=4, eval_every=0)
    acc = tiny_settings(
        output_dir=tmp_path / "acc", per_device_batch_size=4, gradient_accumulation_steps=2, max_steps=4, eval_every=0
    )
    pretrain(big)
    pretrain(acc)
    a, b = train_losses(big["output_dir"]), train_losses(acc["output_dir"])
    assert list(a) == [1, 2, 3, 4]
    assert [a[s] for s in a] == pytest.approx([b[s] for s in a], rel=1e-5)


def test_gradient_checkpointing_gives_the_same_losses(tiny_settings, tmp_path):
    plain = tiny_settings(output_dir=tmp_path / "plain", max_steps=3, eval_every=0, final_eval=False)
    ckpt = tiny_settings(
        output_dir=tmp_path / "ckpt", max_steps=3, eval_every=0, final_eval=False, gradient_checkpointing=True
    )
    pretrain(plain)
    pretrain(ckpt)
    a, b = train_losses(plain["output_dir"]), train_losses(ckpt["output_dir"])
    assert [a[s] for s in a] == pytest.approx([b[s] for s in a], rel=1e-5)


def test_moe_router_losses_are_logged_separately_and_bias_updates(tiny_settings):
    settings = tiny_settings(
        max_steps=3,
        eval_every=0,
        model={
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "router_bias_update_rate": 0.01,
        },
    )
    pretrain(settings)
    logs = [r for r in read_metrics(settings["output_dir"]) if "train/loss" in r]
    for record in logs:
        assert record["train/aux_loss"] > 0 and record["train/z_loss"] > 0
        assert record["train/lm_loss"] < record["train/loss"]
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(settings["output_dir"])
    assert any(router.expert_bias.abs().sum() > 0 for router in model.routers())


def test_tensorboard_tracking(tiny_settings):
    settings = tiny_settings(max_steps=2, eval_every=2, report_to="tensorboard")
    pretrain(settings)
    assert list((Path(settings["output_dir"]) / "logs").rglob("events.out.tfevents.*"))


def test_tracking_is_optional_without_tensorboard(monkeypatch):
    import builtins

    from wrenlm.training.accelerator import resolve_trackers

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith("tensorboard."):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    assert resolve_trackers("auto") == []
    assert resolve_trackers("none") == []
    assert resolve_trackers("tensorboard,trackio") == ["tensorboard", "trackio"]


def test_tokenizer_is_trained_first_then_reused(tiny_settings, tmp_path):
    pytest.importorskip("wrenlm.tokenization", reason="needs the Wren tokenizer trainer")
    from wrenlm.tokenization import train_tokenizer  # noqa: F401

    settings = tiny_settings(max_steps=1, eval_every=0, final_eval=False, tokenizer=None, vocab_size=320)
    pretrain(settings)
    out = Path(settings["output_dir"])
    first = (out / "tokenizer.json").read_text()
    from transformers import AutoTokenizer

    assert len(AutoTokenizer.from_pretrained(out)) == 320
    pretrain({**settings, "resume": "never", "vocab_size": 400})  # reused: the saved one wins
    assert (out / "tokenizer.json").read_text() == first


@pytest.mark.parametrize(
    "model, message",
    [
        ({"num_attention_heads": 7}, "not divisible by `num_attention_heads`"),
        ({"hidden_size": "big"}, "Field 'hidden_size' expected int"),
        ({"max_position_embeddings": 16}, "seq_len 32 exceeds the model's max_position_embeddings 16"),
    ],
)
def test_bad_model_settings_fail_before_the_tokenizer_is_trained(tiny_settings, model, message):
    settings = tiny_settings(tokenizer=None, vocab_size=320, model=model)
    with pytest.raises(ValueError, match=message):
        pretrain(settings)
    assert not Path(settings["output_dir"]).exists()  # no tokenizer left for the next run to reuse


def test_rerun_of_a_finished_run_resumes_without_training(tiny_settings):
    settings = tiny_settings(max_steps=4, eval_every=0)
    first = pretrain(settings)
    second = pretrain(settings)
    assert second["global_step"] == first["global_step"] == 4
    assert second["validation_loss"] == first["validation_loss"]
    assert sorted(train_losses(settings["output_dir"])) == [1, 2, 3, 4]


def test_resuming_into_a_different_model_is_a_clear_error(tiny_settings):
    settings = tiny_settings(max_steps=2, eval_every=0, final_eval=False)
    pretrain(settings)
    with pytest.raises(ValueError, match="(?s)Cannot resume from .*--resume never"):
        pretrain({**settings, "max_steps": 3, "model": {**settings["model"], "hidden_size": 48}})


def test_resume_never_deletes_only_what_wrenlm_wrote(tiny_settings):
    settings = tiny_settings(max_steps=2, eval_every=0, final_eval=False, save_every=1, keep_last=0)
    pretrain(settings)
    out = Path(settings["output_dir"])
    (out / "checkpoints" / "notes.txt").write_text("mine")
    (out / "checkpoints" / "step-00000007").mkdir()  # named like a checkpoint, but no trainer_state.json
    (out / "checkpoints" / "step-00000007" / "mine.txt").write_text("mine")
    pretrain({**settings, "resume": "never", "max_steps": 1})
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["notes.txt", "step-00000001", "step-00000007"]
    assert (out / "checkpoints" / "step-00000007" / "mine.txt").read_text() == "mine"
    assert list(train_losses(out)) == [1]  # the metrics of the first run are gone with it


def test_a_folder_wrenlm_did_not_write_needs_force_and_keeps_its_other_files(tiny_settings, tmp_path):
    from wrenlm.output_dir import OutputFolderError

    out = tmp_path / "o"
    out.mkdir()
    theirs = {"config.json": "{}", "metrics.jsonl": "their log\n", "notes.txt": "mine"}
    for name, text in theirs.items():
        (out / name).write_text(text)
    settings = tiny_settings(output_dir=out, max_steps=2, eval_every=0, final_eval=False)
    with pytest.raises(OutputFolderError, match="was not written by `wren pretrain`"):
        pretrain(settings)
    assert {p.name: p.read_text() for p in out.iterdir()} == theirs
    pretrain(settings, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "config.json").read_text())["model_type"] == "wren"  # wrenlm's files replace theirs
    assert list(train_losses(out)) == [1, 2]  # a fresh metrics file, not appended to theirs
    assert pretrain({**settings, "max_steps": 3})["global_step"] == 3  # now it is a wren run: continued


def test_a_failing_final_evaluation_keeps_the_model_and_writes_the_results(tiny_settings, monkeypatch):
    from transformers import AutoModelForCausalLM

    from wrenlm.training.trainer import Trainer

    periodic_evaluate = Trainer.evaluate

    def evaluate(self, step=None, periodic=False, samples=True):
        if not periodic:
            raise RuntimeError("out of memory in the final evaluation")
        return periodic_evaluate(self, step, periodic, samples)

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    settings = tiny_settings(max_steps=2, eval_every=1)
    with pytest.raises(RuntimeError, match="out of memory"):
        pretrain(settings)
    out = Path(settings["output_dir"])
    results = json.loads((out / "train_results.json").read_text())
    assert results["global_step"] == 2 and "validation_loss" not in results
    assert results["error"] == "final evaluation failed: RuntimeError: out of memory in the final evaluation"
    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == "wren"


def test_sample_prompts_are_checked_against_the_context_before_training(tiny_settings):
    settings = tiny_settings(max_steps=2, eval_every=1, model={"max_position_embeddings": 32})
    too_long = "KING. " * 40
    with pytest.raises(ValueError, match="Sample prompt 'KING. KING. .*fills the model's context window of 32"):
        pretrain({**settings, "sample_prompts": ["KING.", too_long]})
    out = Path(settings["output_dir"])
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()  # nothing was trained
    # A prompt that fits gets a sample cut at the context window (the model refuses to run past it), at every
    # evaluation and at the end.
    results = pretrain({**settings, "sample_prompts": ["KING."], "sample_max_new_tokens": 100})
    assert results["samples"][0].startswith("KING.")
    assert [r["step"] for r in read_metrics(out) if "samples/0" in r] == [1, 2]
