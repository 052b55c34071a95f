"""One home for the special-token rules: stop tokens (from the chat template) and the pad id, used everywhere."""

import ast
from pathlib import Path

import pytest
from transformers import GenerationConfig

from wrenlm.tokenization import WrenTokenizer
from wrenlm.tokenization.special_tokens import add_chat_stop_tokens, pad_token_id, stop_token_ids, turn_end_token_ids
from wrenlm.tokenization.tokenization_wren import EOS_TOKEN, IM_END_TOKEN, PAD_TOKEN

REPOSITORY = Path(__file__).resolve().parents[2]
PACKAGE_FOLDERS = ("wrenlm", "configuration", "modeling", "tokenization", "training", "conversion", "hub", "demo")


@pytest.fixture
def tokenizer():
    return WrenTokenizer()  # byte-level vocabulary, pad=0 bos=1 eos=2 <|im_start|>=3 <|im_end|>=4, ChatML template


def test_stop_tokens_are_eos_and_the_templates_turn_end(tokenizer):
    eos, im_end = tokenizer.convert_tokens_to_ids([EOS_TOKEN, IM_END_TOKEN])
    assert turn_end_token_ids(tokenizer) == [im_end]
    assert stop_token_ids(tokenizer) == [eos, im_end]
    # The generation config's own eos ids come first, and nothing is listed twice.
    assert stop_token_ids(tokenizer, GenerationConfig(eos_token_id=[7, im_end])) == [7, im_end, eos]
    assert stop_token_ids(tokenizer, GenerationConfig(eos_token_id=eos)) == [eos, im_end]


def test_the_turn_end_comes_from_the_template_not_a_fixed_token(tokenizer):
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|eot_id|>"]})
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}<|eot_id|>{% endfor %}"
    assert stop_token_ids(tokenizer) == [tokenizer.eos_token_id, eot]
    tokenizer.chat_template = None  # raw completion: eos only, although <|im_end|> is in the vocabulary
    assert stop_token_ids(tokenizer) == [tokenizer.eos_token_id]


def test_chat_stop_tokens_extend_a_generation_config_once(tokenizer):
    im_end = tokenizer.convert_tokens_to_ids(IM_END_TOKEN)
    config = GenerationConfig(eos_token_id=9)
    add_chat_stop_tokens(config, tokenizer)
    add_chat_stop_tokens(config, tokenizer)
    assert config.eos_token_id == [9, im_end]


def test_pad_id_is_the_pad_token_else_eos_else_a_clear_error(tokenizer):
    assert pad_token_id(tokenizer) == tokenizer.convert_tokens_to_ids(PAD_TOKEN) == 0
    tokenizer.pad_token = None
    assert pad_token_id(tokenizer) == tokenizer.eos_token_id == 2
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="neither a pad nor an eos token"):
        pad_token_id(tokenizer)


def test_evaluation_demo_and_training_use_these_rules():
    from wrenlm.demo import generation
    from wrenlm.training import evaluation, finetune, pretrain  # noqa: F401  (finetune imports it in its function)

    assert generation.stop_token_ids is evaluation.stop_token_ids is stop_token_ids
    assert generation.pad_token_id is evaluation.pad_token_id is pretrain.pad_token_id is pad_token_id


def test_im_end_is_spelled_once_in_the_package_code():
    """`<|im_end|>` as a value of its own is `IM_END_TOKEN` only (chat templates may write it inside their text)."""
    spelled = []
    for folder in PACKAGE_FOLDERS:
        for path in sorted((REPOSITORY / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and node.value == IM_END_TOKEN:
                    spelled.append(str(path.relative_to(REPOSITORY)))
    assert spelled == ["tokenization/tokenization_wren.py"]
