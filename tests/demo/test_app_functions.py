"""The demo's callbacks called directly: streaming, stopping, truncation notices, loading models and adapters."""

from pathlib import Path

import gradio as gr
import pytest
import torch
from peft import LoraConfig, get_peft_model

from wren_testing.demo import REPLY, SHOWN_REPLY, generation_threads, scripted_model, wait_until
from wrenlm.cli import main as wren
from wrenlm.conversion.packaged import SMOLLM2_OUTPUT_DIR
from wrenlm.demo import ChatApp, SamplingSettings, default_model, fit_to_context, load_chat_model, stream_generate
from wrenlm.demo.app import NOTICE_TITLE
from wrenlm.demo.rendering import reply_html, reply_text
from wrenlm.tokenization import WrenTokenizer
from wrenlm.tokenization.special_tokens import stop_token_ids
from wrenlm.training.defaults import DEFAULT_OUTPUT_DIR


def _chat(app, message="Hail!", history=(), system="", temperature=0.0, max_new_tokens=64):
    return list(app.respond(message, list(history), system, temperature, 0.95, 50, max_new_tokens))


def test_reply_streams_cumulative_text_to_the_scripted_answer(reply_model, chat_tokenizer):
    outputs = _chat(ChatApp(reply_model, chat_tokenizer))
    assert outputs[-1] == SHOWN_REPLY and "&lt;img src=x" in SHOWN_REPLY  # the model's HTML as characters
    assert len(outputs) > 3  # streamed, not one final message
    texts = [reply_text(output) for output in outputs]
    assert texts[-1] == REPLY
    assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:], strict=False))
    assert not generation_threads()


def test_sampling_settings_reach_generate(reply_model, chat_tokenizer):
    # The scripted logits are so peaked that sampling at any temperature gives the same reply.
    assert _chat(ChatApp(reply_model, chat_tokenizer), temperature=0.7)[-1] == SHOWN_REPLY
    assert SamplingSettings(0.0, 0.9, 5, 7).generate_kwargs() == {"do_sample": False, "max_new_tokens": 7}
    assert SamplingSettings(0.5, 0.9, 5, 7).generate_kwargs() == {
        "do_sample": True,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 5,
        "max_new_tokens": 7,
    }


def test_prompt_uses_the_chat_template_history_and_system_prompt(reply_model, chat_tokenizer):
    app = ChatApp(reply_model, chat_tokenizer)
    history = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "notice text", "metadata": {"title": NOTICE_TITLE}},
        {"role": "assistant", "content": [{"type": "text", "text": reply_html("an <b>**answer**</b> &amp;")}]},
    ]
    messages = app._messages("second", history, "Be brief.")
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "an <b>**answer**</b> &amp;"},  # exactly what the model wrote
        {"role": "user", "content": "second"},
    ]
    prompt = chat_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>user\nsecond<|im_end|>\n<|im_start|>assistant\n")


def test_closing_the_stream_stops_the_generation_thread(endless_model, chat_tokenizer, streamers):
    ids = chat_tokenizer("Hail")["input_ids"]
    stream = stream_generate(endless_model, chat_tokenizer, ids, SamplingSettings(0.0, max_new_tokens=4000))
    for _ in range(3):
        next(stream)
    assert generation_threads()
    stream.close()  # what Gradio does on Stop or when the browser goes away
    assert not generation_threads()
    (streamer,) = streamers
    assert 3 <= streamer.generated < 1000  # cut short: without the stop it runs to 4000


def test_generation_errors_reach_the_caller(reply_model, chat_tokenizer):
    bad_ids = [len(chat_tokenizer) + 5]  # out of the vocabulary: the model refuses it
    with pytest.raises(Exception, match="(?i)vocab|range|index"):
        list(stream_generate(reply_model, chat_tokenizer, bad_ids, SamplingSettings(0.0, max_new_tokens=4)))
    assert not generation_threads()


def test_long_prompts_are_cut_from_the_left_with_a_visible_notice(chat_tokenizer):
    model = scripted_model(chat_tokenizer, ["Good", " morrow"], context=48)
    app = ChatApp(model, chat_tokenizer)
    outputs = _chat(app, message="word " * 60, max_new_tokens=8)
    notice, reply = outputs[-1]
    assert isinstance(notice, gr.ChatMessage) and notice.metadata["title"] == NOTICE_TITLE
    assert "48-token context" in notice.content and "oldest" in notice.content
    assert reply == reply_html("Good morrow")
    # A short conversation gets no notice.
    assert _chat(app, message="hi", max_new_tokens=8)[-1] == reply_html("Good morrow")


def test_fit_to_context_keeps_the_newest_tokens():
    ids = list(range(100))
    kept, max_new, notice = fit_to_context(ids, context=64, max_new_tokens=14)
    assert kept == list(range(50, 100)) and max_new == 14 and "oldest 50 tokens" in notice
    assert fit_to_context(ids[:10], 64, 14) == (ids[:10], 14, None)
    kept, max_new, _ = fit_to_context(ids, context=64, max_new_tokens=500)  # new tokens alone overflow
    assert max_new == 63 and kept == [99]


def test_raw_completion_streams_with_and_without_notice(chat_tokenizer):
    model = scripted_model(chat_tokenizer, ["Good", " morrow"], context=32)
    app = ChatApp(model, chat_tokenizer)
    outputs = list(app.complete("Once upon a time", 0.0, 0.95, 50, 8))
    assert outputs[-1] == ("Good morrow", "")
    text, notice = list(app.complete("x " * 40, 0.0, 0.95, 50, 8))[-1]
    assert text == "Good morrow" and notice.startswith(f"**{NOTICE_TITLE}.**") and "32-token context" in notice


def test_chat_without_template_points_to_raw_completion(reply_model):
    app = ChatApp(reply_model, WrenTokenizer(chat_template=None))
    with pytest.raises(gr.Error, match="Raw completion"):
        _chat(app)


def test_stop_tokens_include_the_turn_end(reply_model, chat_tokenizer):
    ids = stop_token_ids(chat_tokenizer, reply_model.generation_config)
    assert chat_tokenizer.convert_tokens_to_ids("<|im_end|>") in ids and chat_tokenizer.eos_token_id in ids


def test_default_model_is_the_main_jobs_checkpoint_with_a_clear_message_when_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert default_model() == DEFAULT_OUTPUT_DIR
    assert wren(["chat"]) == 1
    error = capsys.readouterr().err
    assert DEFAULT_OUTPUT_DIR in error and "wren pretrain" in error and "wren import smollm2" in error


def test_default_model_prefers_the_imported_smollm2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path(SMOLLM2_OUTPUT_DIR).mkdir(parents=True)
    assert default_model() == DEFAULT_OUTPUT_DIR  # an empty folder is not a model
    (Path(SMOLLM2_OUTPUT_DIR) / "config.json").write_text("{}")
    assert default_model() == SMOLLM2_OUTPUT_DIR


def test_loads_a_saved_folder_and_a_base_plus_lora_adapter(reply_model, chat_tokenizer, tmp_path):
    reply_model.save_pretrained(tmp_path / "base")
    chat_tokenizer.save_pretrained(tmp_path / "base")
    model, tokenizer, label = load_chat_model(str(tmp_path / "base"))
    assert _chat(ChatApp(model, tokenizer))[-1] == SHOWN_REPLY and label == str(tmp_path / "base")

    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["v_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():  # a recognisable adapter: it zeroes the attention values (no effect on the script)
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.25)
    peft_model.save_pretrained(tmp_path / "adapter")
    expected = peft_model.get_base_model().model.layers[0].self_attn.v_proj.lora_B["default"].weight.clone()

    for args in ((str(tmp_path / "base"), str(tmp_path / "adapter")), (str(tmp_path / "adapter"), None)):
        loaded, tokenizer, label = load_chat_model(*args)
        assert "adapter" in label
        lora_b = loaded.get_base_model().model.layers[0].self_attn.v_proj.lora_B["default"].weight
        assert torch.equal(lora_b, expected)
        assert _chat(ChatApp(loaded, tokenizer))[-1] == SHOWN_REPLY
    assert wait_until(lambda: not generation_threads())
