"""Corpora generated in-process (no downloads) and a small trained tokenizer shared by the tokenizer tests."""

import random

import pytest

from wrenlm.tokenization import train_tokenizer


def _prose(rng: random.Random) -> str:
    words = [
        "the",
        "of",
        "and",
        "to",
        "a",
        "in",
        "that",
        "is",
        "was",
        "he",
        "for",
        "it",
        "with",
        "as",
        "his",
        "on",
        "be",
        "at",
        "by",
        "I",
        "had",
        "not",
        "are",
        "but",
        "from",
        "or",
        "have",
        "an",
        "they",
        "which",
        "one",
        "you",
        "were",
        "her",
        "all",
        "she",
        "there",
        "would",
        "their",
        "we",
        "him",
        "been",
        "has",
        "when",
        "who",
        "will",
        "more",
        "no",
        "if",
        "out",
        "so",
        "said",
        "what",
        "up",
        "its",
        "about",
        "into",
        "than",
        "them",
        "can",
        "only",
        "other",
        "new",
        "some",
        "could",
        "time",
        "these",
        "two",
        "may",
        "then",
        "do",
        "first",
        "any",
        "my",
        "now",
        "such",
        "like",
        "our",
        "over",
        "man",
        "me",
        "even",
        "most",
        "made",
        "after",
        "also",
        "did",
        "many",
        "before",
        "must",
        "through",
        "back",
        "years",
        "where",
    ]
    lines = []
    for _ in range(900):
        sentence = [rng.choice(words) for _ in range(rng.randint(4, 16))]
        sentence[0] = sentence[0].capitalize()
        if rng.random() < 0.2:
            sentence.insert(rng.randrange(len(sentence)), f"{rng.randint(0, 99999)}")
        if rng.random() < 0.15:
            sentence.append(rng.choice(["don't", "it's", "they'll", "I'VE", "we're"]))
        lines.append(" ".join(sentence) + rng.choice([".", "!", "?", ",", ";", " --"]))
    return "\n".join(lines) + "\n"


def _code(rng: random.Random) -> str:
    blocks = []
    for i in range(300):
        name = rng.choice(["load", "parse", "merge", "encode", "train"]) + f"_{rng.randint(0, 50)}"
        blocks.append(
            f"def {name}(self, x, y={i}):\n"
            f'    """Return {name} of x."""\n'
            f"    if x is None or y != {rng.randint(0, 9)}:\n"
            f"        raise ValueError(f'bad {{x!r}}')\n"
            f"\tfor k in range(len(x)):  # tab-indented\n"
            f"        self.cache[k] = x[k] ** 2 + y * 0x{rng.randint(0, 4095):03x}\n"
            f"    return {{'a': [1, 2, 3], \"b\": (x, y)}}\n\n"
        )
    return "".join(blocks)


def _non_english(rng: random.Random) -> str:
    words = [
        "привет",
        "мир",
        "Москва",
        "слово",
        "язык",
        "данные",  # Cyrillic
        "مرحبا",
        "بالعالم",
        "كتاب",
        "لغة",  # Arabic
        "日本語",
        "のテキスト",
        "東京",
        "中文字符串",
        "机器学习",
        "한국어",
        "문장입니다",  # CJK
        "Ελληνικά",
        "שלום",
        "हिन्दी",
        "ภาษาไทย",
        "Tiếng",
        "Việt",
        "straße",
        "naïve",
        "café",  # others
    ]
    lines = []
    for _ in range(700):
        lines.append(rng.choice([" ", "", "、", "，"]).join(rng.choice(words) for _ in range(rng.randint(2, 10))))
    return "\n".join(lines) + "。\n"


def _emoji(rng: random.Random) -> str:
    pieces = ["😀", "👍🏽", "🇫🇷", "👨‍👩‍👧", "❤️", "🎉🎉", "abc😀", "🤖", "✨ok✨", "🙂\u200d", "🏳️‍🌈", "1️⃣"]
    return " ".join(rng.choice(pieces) for _ in range(4000)) + "\n"


def _whitespace(rng: random.Random) -> str:
    pieces = [
        " ",
        "  ",
        "\n",
        "\n\n",
        "\n\n\n",
        "\t",
        "\t\t",
        "\r\n",
        "   x",
        "y  \n",
        "\u00a0",
        "\u3000z",
        " \n ",
        "w",
    ]
    return "".join(rng.choice(pieces) for _ in range(12000))


def _runs(rng: random.Random) -> str:
    # Tie-heavy: few symbols, many pairs with equal counts, long runs (overlapping pairs like "aaa").
    words = [rng.choice("ab") * rng.randint(1, 30) for _ in range(2500)]
    words += ["".join(rng.choice("abc") for _ in range(rng.randint(2, 8))) for _ in range(2500)]
    return " ".join(words) + "\n" + "a" * 3000 + " " + "ab" * 1500 + " " + "aab" * 500 + "\n"


CORPUS_BUILDERS = {
    "prose": _prose,
    "code": _code,
    "non_english": _non_english,
    "emoji": _emoji,
    "whitespace": _whitespace,
    "runs": _runs,
}


def make_corpus(name: str, seed: int = 0) -> str:
    return CORPUS_BUILDERS[name](random.Random(f"{name}-{seed}"))


def write_text(path, text: str):
    """Write UTF-8 text byte for byte (no newline translation) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="")
    return path


@pytest.fixture
def write_file(tmp_path):
    """`write_file(text, name="corpus.txt")` -> a file with that text in the test's tmp_path."""
    return lambda text, name="corpus.txt": write_text(tmp_path / name, text)


@pytest.fixture(scope="session")
def corpora() -> dict[str, str]:
    return {name: make_corpus(name) for name in CORPUS_BUILDERS}


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory, corpora):
    directory = tmp_path_factory.mktemp("corpus")
    for name, text in corpora.items():
        write_text(directory / f"{name}.txt", text)
    return directory


@pytest.fixture(scope="session")
def trained_tokenizer(corpus_dir):
    """A 1000-token WrenTokenizer trained on all the generated corpora (Rust backend)."""
    return train_tokenizer([corpus_dir], vocab_size=1000, show_progress=False)
