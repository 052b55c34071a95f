"""llama.cpp itself runs what `wren export gguf` writes (through llama-cpp-python, built from its sdist).

Slow (`make test-llama-cpp` builds the wheel once into the ignored `.whl/` folder, about 35 minutes on 2 busy
cores, then installs it): tiny Wrens of every exported layout give their logits in llama.cpp from an F32 file
(llama.cpp keeps an F16 KV cache by default; these runs ask for F32 so only the weights' storage differs),
llama.cpp tokenizes text and chat prompts exactly as the Wren tokenizer for each pre-tokenizer the exporter
names, a Wren that `wren pretrain` trains with its own tokenizer tokenizes and generates alike in llama.cpp,
and the real SmolLM2-135M-Instruct, exported as F32, F16 and Q8_0, answers chat prompts with the Wren's greedy
tokens.
"""

import ctypes
import os

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from wren_testing.gguf_export import ARCHITECTURES, CHATS, SAMPLE_TEXTS, save_tiny_wren
from wrenlm.conversion.gguf_export import export_gguf
from wrenlm.conversion.packaged import SMOLLM2_OUTPUT_DIR, import_packaged_model

pytestmark = pytest.mark.slow

try:
    import llama_cpp
except ImportError:  # a failure, not a skip: the slow suite must not pass without llama.cpp
    llama_cpp = None

REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_F32_KV_CACHE = {"type_k": 0, "type_v": 0}  # GGML_TYPE_F32
SMOLLM2_CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write a haiku about autumn leaves."}],
    [
        {"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "Why is the sky blue?"},
    ],
]
NEW_TOKENS = 48


@pytest.fixture(scope="module", autouse=True)
def llama_cpp_installed():
    if llama_cpp is None:
        pytest.fail("llama-cpp-python is not installed: `make test-llama-cpp` builds it from its sdist", False)


def _llama(path, **options):
    return llama_cpp.Llama(str(path), verbose=False, n_threads=os.cpu_count() or 1, **options)


def _llama_cpp_greedy(llm, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy decoding read off llama.cpp's logits, ending at a token llama.cpp itself calls end-of-generation."""
    llm.reset()
    llm.eval(prompt)
    tokens = []
    for _ in range(new_tokens):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        tokens.append(token)
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
            break
        llm.eval([token])
    return tokens


@pytest.mark.parametrize("layout", ARCHITECTURES)
@torch.no_grad()
def test_llama_cpp_gives_the_wren_logits_for_every_layout(tmp_path, layout):
    folder = save_tiny_wren(tmp_path / "wren", layout)
    export_gguf(folder, tmp_path / "model.gguf", outtype="f32")
    wren = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template(CHATS[1], add_generation_prompt=True)["input_ids"]
    llm = _llama(tmp_path / "model.gguf", n_ctx=256, n_batch=256, logits_all=True, **_F32_KV_CACHE)
    try:
        llm.eval(prompt)
        logits = np.array(llm.scores[: len(prompt)])
    finally:
        llm.close()
    expected = wren(torch.tensor([prompt])).logits[0].numpy()
    np.testing.assert_allclose(logits, expected, atol=2e-4, rtol=1e-4)


@torch.no_grad()
def test_llama_cpp_applies_linear_rope_scaling(tmp_path):
    rope = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}
    folder = save_tiny_wren(tmp_path / "wren", "dense", rope_parameters=rope)
    export_gguf(folder, tmp_path / "model.gguf", outtype="f32")
    wren = AutoModelForCausalLM.from_pretrained(folder).eval()
    prompt = list(range(5, 69))
    llm = _llama(tmp_path / "model.gguf", n_ctx=256, n_batch=256, logits_all=True, **_F32_KV_CACHE)
    try:
        llm.eval(prompt)
        logits = np.array(llm.scores[: len(prompt)])
    finally:
        llm.close()
    np.testing.assert_allclose(logits, wren(torch.tensor([prompt])).logits[0].numpy(), atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("pre", ["gpt-2", "llama-bpe", "qwen2", "smaug-bpe", "smollm"])
def test_llama_cpp_tokenizes_like_the_wren_tokenizer(tmp_path, pre):
    folder = save_tiny_wren(tmp_path / "wren", "dense", pre=pre)
    export_gguf(folder, tmp_path / "model.gguf", outtype="f16")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    llm = _llama(tmp_path / "model.gguf", vocab_only=True)
    try:
        for text in SAMPLE_TEXTS:
            expected = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == expected, text
            assert llm.detokenize(expected, special=True).decode() == tokenizer.decode(expected)
        for messages in CHATS:
            prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
            assert llm.tokenize(prompt.encode(), add_bos=False, special=True) == expected
    finally:
        llm.close()


# Text that tells pre-tokenizers apart: digit runs, contractions in capitals, "'ſ" (a contraction only to a
# case-folding regex), punctuation before line breaks, whitespace runs, tabs, other scripts, combining marks, emoji.
TOKENIZER_PROBES = [
    "In 1599, 12345678 men paid £3.50 (or 07:45) — 2025!",
    "DON'T! I'M sure WE'LL, THEY'RE, YOU'VE, HE'D; don't 'tis 'TWAS x'ſy O'Neill",
    "Stay!\n\nO, speak.\n  Exit.   \n\t\tEnter KING.\r\nLine\rend\n\n\n",
    "Ünïcödé café naïve résumé Cafe\u0301 Ελληνικά Привет مرحبا 日本語のテキスト 한국어 हिन्दी",
    "emoji 🙂👍🏽🇫🇷👨‍👩‍👧 and    spaces  ,  x\u00a0y\u3000z \u2028 end  ",
    "<|im_start|>user\nHi! 42?<|im_end|>\n<|im_start|>assistant\n",
]


def _llama_cpp_text(llm, tokens: list[int]) -> str:
    """llama.cpp's own text for `tokens` (llama-cpp-python's `detokenize` drops pieces longer than 32 bytes)."""
    pieces = b""
    for token in tokens:
        size = 32
        while True:
            buffer = (ctypes.c_char * size)()
            length = llama_cpp.llama_token_to_piece(llm._model.vocab, token, buffer, size, 0, True)
            if length >= 0:
                break
            size = -length  # llama.cpp asks for a bigger buffer
        pieces += bytes(buffer[:length])
    return pieces.decode()


@pytest.fixture
def pretrained_wren(tmp_path):
    """A tiny Wren that `wren pretrain` trains from scratch, tokenizer included (as with the default corpus)."""
    from accelerate.state import AcceleratorState, GradientState

    from wren_testing.training import make_document, tiny_pretrain_settings
    from wrenlm.training.config import PretrainConfig, apply_overrides
    from wrenlm.training.pretrain import run_pretraining

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for index in range(4):
        (corpus / f"work_{index}.txt").write_text(make_document(index), encoding="utf-8")
    (corpus / "probes.txt").write_text("\n".join(TOKENIZER_PROBES[:-1] * 5), encoding="utf-8")
    settings = tiny_pretrain_settings(corpus, None, tmp_path / "run", tokenizer=None, vocab_size=2048, max_steps=40)
    try:
        run_pretraining(apply_overrides(PretrainConfig(), settings))
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    return tmp_path / "run"


@torch.no_grad()
def test_a_wren_pretrain_model_with_its_own_tokenizer_runs_in_llama_cpp(pretrained_wren, tmp_path):
    result = export_gguf(pretrained_wren, tmp_path / "model.gguf", outtype="f32")
    assert result.pre_tokenizer == "smaug-bpe"
    wren = AutoModelForCausalLM.from_pretrained(pretrained_wren).eval()
    tokenizer = AutoTokenizer.from_pretrained(pretrained_wren)
    llm = _llama(result.path, n_ctx=256, n_batch=256, logits_all=True, **_F32_KV_CACHE)
    try:
        for text in TOKENIZER_PROBES:
            expected = tokenizer(text, add_special_tokens=False)["input_ids"]
            assert llm.tokenize(text.encode(), add_bos=False, special=True) == expected, text
            assert _llama_cpp_text(llm, expected) == tokenizer.decode(expected) == text
        for prompt_text in ("KING.\n", "Stay, 1599! DON'T", "FOOL. O, speak"):
            prompt = tokenizer(prompt_text)["input_ids"]
            expected = wren.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False)[0, len(prompt) :]
            assert _llama_cpp_greedy(llm, prompt, 24) == expected.tolist(), prompt_text
        prompt = tokenizer(TOKENIZER_PROBES[2])["input_ids"]
        llm.reset()
        llm.eval(prompt)
        logits = np.array(llm.scores[: len(prompt)])
        np.testing.assert_allclose(logits, wren(torch.tensor([prompt])).logits[0].numpy(), atol=2e-4, rtol=1e-4)
    finally:
        llm.close()


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)  # the suite's conftest pins 1 thread for the fast parallel tests
    folder = os.path.join(REPOSITORY, SMOLLM2_OUTPUT_DIR)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        folder = import_packaged_model("smollm2", tmp_path_factory.mktemp("import") / "smollm2")
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    yield folder, model, AutoTokenizer.from_pretrained(folder)
    torch.set_num_threads(threads)


def _export_smollm2(smollm2, tmp_path, outtype):
    folder, _, _ = smollm2
    result = export_gguf(folder, tmp_path / f"smollm2.{outtype}.gguf", outtype=outtype)
    assert (result.architecture, result.pre_tokenizer) == ("llama", "gpt-2")
    return _llama(result.path, n_ctx=512, logits_all=True, **_F32_KV_CACHE)


def _chat_prompt(tokenizer, llm, messages) -> list[int]:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == prompt
    return prompt


@pytest.mark.parametrize("outtype", ["f32", "f16"])
@torch.no_grad()
def test_smollm2_answers_chat_prompts_in_llama_cpp_with_the_wren_greedy_tokens(smollm2, tmp_path, outtype):
    _, wren, tokenizer = smollm2
    llm = _export_smollm2(smollm2, tmp_path, outtype)
    stopped = 0
    try:
        for messages in SMOLLM2_CHATS:
            prompt = _chat_prompt(tokenizer, llm, messages)
            expected = wren.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False)
            expected = expected[0, len(prompt) :].tolist()
            actual = _llama_cpp_greedy(llm, prompt, NEW_TOKENS)
            assert actual == expected, (tokenizer.decode(expected), tokenizer.decode(actual))
            stopped += len(actual) < NEW_TOKENS  # both ended the turn at the same <|im_end|>
    finally:
        llm.close()
    assert stopped > 0


# Q8_0 rounds the weights to 8 bits and llama.cpp's Q8_0 kernels round the activations too, so a greedy choice
# the Wren makes by a hair can flip (its first answer token to "What is the capital of France?" leads by 0.08
# logits). So, teacher-forced on the Wren's greedy answers: the logits stay close (RMS error; measured 0.29-0.37
# on 2 Dec 2026) and llama.cpp's choice is always one the Wren rates within Q8_0_REGRET of its best (measured at
# most 0.52), which also means the same token wherever the Wren's choice leads by more than that; overall the
# choices agree at 97% of the answer positions.
Q8_0_RMS_ERROR = 0.5
Q8_0_REGRET = 1.0


@torch.no_grad()
def test_smollm2_q8_0_in_llama_cpp_makes_the_wren_choices_up_to_near_ties(smollm2, tmp_path):
    _, wren, tokenizer = smollm2
    llm = _export_smollm2(smollm2, tmp_path, "q8_0")
    agreements = []
    try:
        for messages in SMOLLM2_CHATS:
            prompt = _chat_prompt(tokenizer, llm, messages)
            answer = wren.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False)[0]
            expected = wren(answer[None]).logits[0].numpy()
            llm.reset()
            llm.eval(answer.tolist())
            actual = np.array(llm.scores[: len(answer)])
            assert np.sqrt(np.mean((actual - expected) ** 2)) < Q8_0_RMS_ERROR
            positions = np.arange(len(prompt) - 1, len(answer) - 1)  # the logits that chose each answer token
            chosen = actual[positions].argmax(-1)
            regret = expected[positions].max(-1) - expected[positions, chosen]
            assert regret.max() < Q8_0_REGRET, regret
            agreements += list(chosen == expected[positions].argmax(-1))
    finally:
        llm.close()
    assert np.mean(agreements) > 0.9
