"""The naive BPE trainer the benchmark compares against: recount every pair after every merge.

This is the textbook algorithm (Sennrich et al., 2016) on the same distinct-word table our trainer uses:
each step counts all adjacent pairs of all words from scratch, takes the most frequent (ties: smallest
`(left id, right id)`, as ours and `tokenizers` do), and rewrites every word. It is kept deliberately
plain; only the benchmark uses it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from wrenlm.tokenization.bpe_trainer import BPEModel, check_vocab_size, initial_vocab


def naive_state(word_counts: Mapping[str, int], special_tokens: Sequence[str]):
    """(token_to_id, id_to_token, words as id lists, counts) before any merge."""
    token_to_id = initial_vocab(word_counts, special_tokens)
    words = [[token_to_id[char] for char in word] for word in word_counts]
    return token_to_id, list(token_to_id), words, list(word_counts.values())


def naive_step(words: list[list[int]], counts: list[int], threshold: int) -> tuple[int, int] | None:
    """Count all pairs, return the best one (or None when nothing reaches `threshold`)."""
    stats: defaultdict[tuple[int, int], int] = defaultdict(int)
    for symbols, count in zip(words, counts):
        for pair in zip(symbols, symbols[1:]):
            stats[pair] += count
    if not stats:
        return None
    best = min(stats, key=lambda pair: (-stats[pair], pair))
    return best if stats[best] >= threshold else None


def naive_apply(words: list[list[int]], pair: tuple[int, int], new_id: int) -> None:
    """Rewrite every word, merging `pair` left to right without overlaps."""
    left, right = pair
    for index, symbols in enumerate(words):
        merged = []
        position = 0
        while position < len(symbols):
            if position + 1 < len(symbols) and symbols[position] == left and symbols[position + 1] == right:
                merged.append(new_id)
                position += 2
            else:
                merged.append(symbols[position])
                position += 1
        words[index] = merged


def train_naive(
    word_counts: Mapping[str, int],
    vocab_size: int,
    special_tokens: Sequence[str] = (),
    min_frequency: int = 2,
) -> BPEModel:
    special_tokens = list(dict.fromkeys(special_tokens))
    check_vocab_size(vocab_size, special_tokens)
    token_to_id, id_to_token, words, counts = naive_state(word_counts, special_tokens)
    merges = []
    while len(token_to_id) < vocab_size:
        pair = naive_step(words, counts, max(1, min_frequency))
        if pair is None:
            break
        token = id_to_token[pair[0]] + id_to_token[pair[1]]
        if token not in token_to_id:
            token_to_id[token] = len(id_to_token)
            id_to_token.append(token)
        merges.append((id_to_token[pair[0]], id_to_token[pair[1]]))
        naive_apply(words, pair, token_to_id[token])
    return BPEModel(vocab=token_to_id, merges=merges, special_tokens=special_tokens)
