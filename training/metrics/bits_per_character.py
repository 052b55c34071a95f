"""Bits per character from summed negative log-likelihoods (a local `evaluate` metric)."""

import math

import datasets
import evaluate

from .likelihood import bits_per_character

_DESCRIPTION = """
Bits per character: the text's total negative log-likelihood in bits divided by its length in
characters. Unlike perplexity it does not depend on the tokenizer, so models with different
vocabularies compare directly. The caller counts the characters the scored tokens spell.
"""

_KWARGS_DESCRIPTION = """
Args:
    nll (`list` of `float`): summed negative log-likelihood (natural log) of the scored tokens of each sequence.
    num_chars (`list` of `int`): characters spelled by the scored tokens of each sequence.
Returns:
    bits_per_character (`float`): sum(nll) / (ln 2 * sum(num_chars)).
    chars (`int`): sum(num_chars).
Examples:
    >>> metric = evaluate.load("path/to/bits_per_character.py")
    >>> round(metric.compute(nll=[math.log(2) * 3], num_chars=[3])["bits_per_character"], 6)
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BitsPerCharacter(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"nll": datasets.Value("float64"), "num_chars": datasets.Value("int64")}),
        )

    def _compute(self, nll, num_chars):
        chars = sum(num_chars)
        return {"bits_per_character": bits_per_character(math.fsum(nll), chars), "chars": chars}
