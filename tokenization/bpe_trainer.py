"""Wren's pure-Python byte-level BPE trainer: incremental pair counts, a lazy max-heap, merges by delta.

The input is the corpus already reduced to distinct pre-tokens ("words", as byte-level strings) with
their counts (see `pretokenization.count_pretokens`). Training then never looks at the corpus again:

1. Vocabulary: the special tokens first (ids 0..k-1, in the given order), then every character of the
   alphabet (the 256 byte characters plus anything else the words contain) sorted by code point.
2. Each word becomes a list of integer symbol ids, stored once with its count.
3. One pass counts every adjacent pair (weighted by word count) and records which words contain it.
4. A max-heap holds entries `(-count, pair, seq, words)`. Popping gives the most frequent pair; ties go
   to the smallest pair `(left id, right id)` (`pair` is packed as `left << 32 | right`, so comparing
   the ints compares the id tuples). `seq` only keeps the heap from comparing the word sets.
5. Lazy invalidation: counts change without touching the heap; a popped entry whose count is stale is
   pushed back with the current count and popping continues.
6. The winning pair `(a, b)` becomes token `a + b` (reusing the id if that string already exists) and is
   merged, left to right without overlaps, only in the entry's words. Each merge at position i changes
   the counts of its neighbours by the word's count: `(prev, a)` and `(b, next)` lose one occurrence,
   `(prev, new)` and `(new, next)` gain one. Pairs that gained occurrences are pushed as new entries
   carrying exactly the words where they appeared.
7. Stop when the vocabulary reaches `vocab_size`, the heap is empty, or the best count is below
   `max(1, min_frequency)`.

This is, step for step, the algorithm of the `tokenizers` (Rust) `BpeTrainer`, including its corners, so
both give the same merges in the same order and the same ids: the merged pair's own count is only
lowered through overlaps (e.g. "aaa" for ("a", "a")), and a pair can have several heap entries with
different word sets; when a merge re-creates a token string that already exists (e.g. "a"+"bc" after
"ab"+"c"), a pair may then be merged twice, and, as in `tokenizers`, its rank is its last merge.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from .tokenization_wren import bytes_to_unicode

_SHIFT = 32
_MASK = (1 << _SHIFT) - 1


@dataclass
class BPEModel:
    """A trained byte-level BPE: `vocab` token -> id and `merges` as (left, right) token pairs in rank order."""

    vocab: dict[str, int]
    merges: list[tuple[str, str]]
    special_tokens: list[str] = field(default_factory=list)


def initial_vocab(words: Mapping[str, int], special_tokens: Sequence[str]) -> dict[str, int]:
    """Special tokens, then the byte alphabet and any other character in `words`, sorted by code point."""
    vocab: dict[str, int] = {}
    for token in special_tokens:
        vocab.setdefault(token, len(vocab))
    alphabet = set(bytes_to_unicode().values())
    for word in words:
        alphabet.update(word)
    for char in sorted(alphabet):
        vocab.setdefault(char, len(vocab))
    return vocab


def check_vocab_size(vocab_size: int, special_tokens: Sequence[str]) -> None:
    minimum = 256 + len(set(special_tokens))
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level vocabulary needs at least 256 byte tokens "
            f"+ {len(set(special_tokens))} special tokens = {minimum}"
        )


def train_bpe_from_counts(
    word_counts: Mapping[str, int],
    vocab_size: int,
    special_tokens: Sequence[str] = (),
    min_frequency: int = 2,
    show_progress: bool = True,
) -> BPEModel:
    """Learn merges from distinct words (byte-level strings) and their counts; see the module docstring."""
    special_tokens = list(dict.fromkeys(special_tokens))
    check_vocab_size(vocab_size, special_tokens)
    token_to_id = initial_vocab(word_counts, special_tokens)
    id_to_token = list(token_to_id)

    words: list[list[int]] = []
    counts: list[int] = []
    for word, count in word_counts.items():
        if count > 0 and word:
            words.append([token_to_id[char] for char in word])
            counts.append(count)

    # Pair statistics: count of every adjacent pair and the words it occurs in.
    pair_counts: defaultdict[int, int] = defaultdict(int)
    pair_words: defaultdict[int, set[int]] = defaultdict(set)
    for index, symbols in enumerate(words):
        count = counts[index]
        for left, right in zip(symbols, symbols[1:]):
            key = left << _SHIFT | right
            pair_counts[key] += count
            pair_words[key].add(index)

    seq = 0
    heap = []
    for key, where in pair_words.items():
        heap.append((-pair_counts[key], key, seq, where))
        seq += 1
    heapq.heapify(heap)
    del pair_words

    threshold = max(1, min_frequency)
    merges: list[tuple[int, int]] = []
    progress = tqdm(total=max(0, vocab_size - len(token_to_id)), desc="Computing merges", disable=not show_progress)
    while len(token_to_id) < vocab_size and heap:
        negative_count, key, _, where = heapq.heappop(heap)
        count = pair_counts[key]
        if -negative_count != count:
            heapq.heappush(heap, (-count, key, seq, where))
            seq += 1
            continue
        if count < threshold:
            break

        left, right = key >> _SHIFT, key & _MASK
        new_token = id_to_token[left] + id_to_token[right]
        new_id = token_to_id.get(new_token)
        if new_id is None:
            new_id = len(id_to_token)
            token_to_id[new_token] = new_id
            id_to_token.append(new_token)
            progress.update(1)
        merges.append((left, right))

        # Merge in the entry's words; collect the pairs that gained occurrences and where.
        gained: defaultdict[int, set[int]] = defaultdict(set)
        new_high = new_id << _SHIFT
        for index in where:
            symbols = words[index]
            word_count = counts[index]
            position = 0
            while True:
                try:
                    position = symbols.index(left, position)
                except ValueError:
                    break
                if position + 1 < len(symbols) and symbols[position + 1] == right:
                    if position > 0:
                        previous = symbols[position - 1]
                        pair_counts[previous << _SHIFT | left] -= word_count
                        gained_key = previous << _SHIFT | new_id
                        pair_counts[gained_key] += word_count
                        gained[gained_key].add(index)
                    symbols[position] = new_id
                    del symbols[position + 1]
                    if position + 1 < len(symbols):
                        following = symbols[position + 1]
                        pair_counts[right << _SHIFT | following] -= word_count
                        gained_key = new_high | following
                        pair_counts[gained_key] += word_count
                        gained[gained_key].add(index)
                position += 1
        for gained_key, gained_words in gained.items():
            gained_count = pair_counts[gained_key]
            if gained_count > 0:
                heapq.heappush(heap, (-gained_count, gained_key, seq, gained_words))
                seq += 1
    progress.close()

    # A pair merged twice keeps its last rank (as `tokenizers` does when it builds its merges map).
    last_rank = {pair: rank for rank, pair in enumerate(merges)}
    ordered = sorted(last_rank, key=last_rank.__getitem__)
    return BPEModel(
        vocab=token_to_id,
        merges=[(id_to_token[left], id_to_token[right]) for left, right in ordered],
        special_tokens=special_tokens,
    )
