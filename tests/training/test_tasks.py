"""Built-in generated tasks: correct answers, deterministic disjoint splits, clear errors."""

import re

import pytest

from wrenlm.training.finetune_data import message_problems
from wrenlm.training.tasks import TASKS, get_task, load_task


def _question(example):
    return example["messages"][0]["content"]


def _answer(example):
    return example["messages"][1]["content"]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_splits_are_deterministic_disjoint_and_well_formed(name):
    first = load_task(f"builtin:{name}", train_size=300, test_size=50, seed=3)
    again = load_task(f"builtin:{name}", train_size=300, test_size=50, seed=3)
    assert first == again
    assert len(first["train"]) == 300 and len(first["test"]) == 50
    train_questions = {_question(ex) for ex in first["train"]}
    test_questions = {_question(ex) for ex in first["test"]}
    assert len(train_questions) == 300 and len(test_questions) == 50
    assert not train_questions & test_questions
    assert all(message_problems(ex) == [] for ex in first["train"] + first["test"])
    # More training data leaves the test split alone; another seed gives another test split.
    assert load_task(f"builtin:{name}", train_size=600, test_size=50, seed=3)["test"] == first["test"]
    # A smaller test split is a prefix of the default one, and no training split reaches into the default one.
    default_test = {_question(ex) for ex in load_task(f"builtin:{name}", train_size=0, seed=3)["test"]}
    assert test_questions <= default_test and not train_questions & default_test
    assert load_task(f"builtin:{name}", train_size=300, test_size=50, seed=4)["test"] != first["test"]


def test_arithmetic_answers_are_the_sums():
    examples = load_task("builtin:arithmetic", train_size=200, test_size=20)
    for example in examples["train"] + examples["test"]:
        a, b = map(int, re.fullmatch(r"What is (\d+) \+ (\d+)\?", _question(example)).groups())
        assert 10 <= a <= 99 and 10 <= b <= 99
        assert _answer(example) == str(a + b)


def test_reverse_answers_reverse_the_words():
    for example in load_task("reverse", train_size=100, test_size=10)["train"]:
        words = _question(example).removeprefix("Reverse the words: ").split(" ")
        assert 3 <= len(words) <= 4
        assert _answer(example).split(" ") == words[::-1]


def test_unknown_task_and_oversized_splits_are_clear_errors():
    with pytest.raises(ValueError, match=r"Unknown built-in task 'builtin:nope'.*builtin:arithmetic"):
        get_task("builtin:nope")
    pool = TASKS["arithmetic"].pool_size
    with pytest.raises(ValueError, match=f"has {pool} distinct questions"):
        load_task("builtin:arithmetic", train_size=pool - 199, test_size=1)  # the default 200 stay reserved


def test_finetune_holds_out_what_wren_eval_scores_whatever_the_training_seed():
    from wrenlm.training.finetune_data import load_chat_examples, load_chat_splits

    splits = load_chat_splits("builtin:reverse", seed=99, task_sizes=(500, None))
    assert splits["eval"] == load_chat_examples("builtin:reverse")
    assert not {_question(ex) for ex in splits["train"]} & {_question(ex) for ex in splits["eval"]}
