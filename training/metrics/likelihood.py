"""Perplexity and bits per character from summed negative log-likelihoods: the one place they are computed.

Training validation (`Trainer.evaluate`), `wren eval` and the `perplexity` / `bits_per_character` metric
modules all end here, so they agree on every edge case:

* inputs are totals over the whole set (NLL in nats summed over the scored tokens, the number of those
  tokens, the characters they spell): pooled figures, never a mean of per-batch ones;
* nothing scored (empty data, every label ignored) or no character is an error, never 1.0, 0 or NaN;
* a mean NLL too large for `exp` gives perplexity `inf`, not an overflow error or a clipped value.

Standard library only: `evaluate` copies this file next to the metric scripts that import it.
"""

import math


def mean_nll(total_nll: float, num_tokens: int) -> float:
    """Mean negative log-likelihood per scored token (the validation loss), in nats."""
    if num_tokens <= 0:
        raise ValueError("Perplexity needs at least one scored token (the data is empty or every label is ignored).")
    return float(total_nll) / num_tokens


def perplexity_from_loss(loss: float) -> float:
    """exp(mean NLL); `inf` once that overflows a float."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def perplexity(total_nll: float, num_tokens: int) -> float:
    return perplexity_from_loss(mean_nll(total_nll, num_tokens))


def bits_per_character(total_nll: float, num_chars: int) -> float:
    """Summed NLL in nats over the characters the scored tokens spell, in bits per character."""
    if num_chars <= 0:
        raise ValueError("Bits per character needs at least one scored character.")
    return float(total_nll) / (math.log(2.0) * num_chars)


__all__ = ["bits_per_character", "mean_nll", "perplexity", "perplexity_from_loss"]
