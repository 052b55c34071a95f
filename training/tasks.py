"""Built-in instruction tasks, generated on the fly (no download), in chat form with fixed splits.

    from wrenlm.training.tasks import load_task
    splits = load_task("builtin:arithmetic")           # {"train": [...], "test": [...]} of {"messages": [...]}

Each task enumerates a finite pool of distinct questions; a permutation seeded by `seed` (0 for
`wren finetune` and `wren eval`) puts the first `test_size` questions in the test split and training
questions only after the default test size, so no test split shares a question with a training split,
and both are the same on every machine and every call.

Answers are short and always formatted the same way (what a ~4M-parameter model can pick up from a
few minutes of LoRA):

* `arithmetic`: "What is 47 + 38?" -> "85" (two-digit addends, so sums need carries);
* `reverse`: "Reverse the words: crown night sword" -> "sword night crown" (3-4 common words).
"""

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass

BUILTIN_PREFIX = "builtin:"

_WORDS = [
    "blood",
    "brother",
    "crown",
    "daughter",
    "day",
    "death",
    "earth",
    "eyes",
    "father",
    "fire",
    "fool",
    "friend",
    "grace",
    "heart",
    "heaven",
    "honour",
    "king",
    "lady",
    "lord",
    "love",
    "mother",
    "night",
    "queen",
    "sister",
    "son",
    "sword",
    "water",
]


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    pool_size: int
    # index in [0, pool_size) -> (question, answer); indices stand for distinct questions
    make: Callable[[int], tuple[str, str]]
    default_train_size: int
    default_test_size: int


def _addition(index: int) -> tuple[str, str]:
    a, b = divmod(index, 90)
    a, b = a + 10, b + 10
    return f"What is {a} + {b}?", str(a + b)


_WORD_ORDERS = [order for length in (3, 4) for order in itertools.permutations(range(len(_WORDS)), length)]


def _reverse(index: int) -> tuple[str, str]:
    words = [_WORDS[i] for i in _WORD_ORDERS[index]]
    return f"Reverse the words: {' '.join(words)}", " ".join(reversed(words))


TASKS: dict[str, Task] = {
    "arithmetic": Task(
        "arithmetic",
        "add two two-digit numbers (10-99)",
        90 * 90,
        _addition,
        default_train_size=6000,
        default_test_size=200,
    ),
    "reverse": Task(
        "reverse",
        "reverse the order of 3-4 common words",
        len(_WORD_ORDERS),
        _reverse,
        default_train_size=6000,
        default_test_size=200,
    ),
}


def is_builtin(spec: str) -> bool:
    return isinstance(spec, str) and spec.startswith(BUILTIN_PREFIX)


def get_task(spec: str) -> Task:
    """`builtin:NAME` (or bare `NAME`) -> the Task; unknown names list the available ones."""
    name = spec[len(BUILTIN_PREFIX) :] if is_builtin(spec) else spec
    if name not in TASKS:
        known = ", ".join(BUILTIN_PREFIX + n for n in TASKS)
        raise ValueError(f"Unknown built-in task {spec!r}; available: {known}.")
    return TASKS[name]


def chat_example(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def load_task(spec: str, train_size: int | None = None, test_size: int | None = None, seed: int = 0) -> dict:
    """`{"train": [...], "test": [...]}` chat examples of a built-in task (disjoint, deterministic)."""
    task = get_task(spec)
    train_size = task.default_train_size if train_size is None else train_size
    test_size = task.default_test_size if test_size is None else test_size
    if train_size < 0 or test_size < 0:
        raise ValueError(f"Split sizes must be >= 0, got train {train_size} and test {test_size}.")
    # Training questions come after the default test split even when a smaller test split is asked for, so
    # no test split of this seed (up to the default size) ever shares a question with any training split.
    train_start = max(test_size, task.default_test_size)
    if train_start + train_size > task.pool_size:
        raise ValueError(
            f"Task {task.name!r} has {task.pool_size} distinct questions; cannot make {train_size} train + "
            f"{train_start} test examples."
        )
    order = list(range(task.pool_size))
    random.Random(f"{task.name}:{seed}").shuffle(order)
    picked = {"test": order[:test_size], "train": order[train_start : train_start + train_size]}
    return {split: [chat_example(*task.make(i)) for i in indices] for split, indices in picked.items()}


__all__ = ["BUILTIN_PREFIX", "TASKS", "Task", "chat_example", "get_task", "is_builtin", "load_task"]
