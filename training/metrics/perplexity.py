"""Perplexity from summed per-sequence negative log-likelihoods (a local `evaluate` metric)."""

import math

import datasets
import evaluate

from .likelihood import mean_nll, perplexity_from_loss

_DESCRIPTION = """
Perplexity of a causal language model: exp of the mean negative log-likelihood per predicted token.
The model is run by the caller; this metric pools per-sequence sums, so batches of any size and
padding give the token-weighted figure over the whole dataset (not a mean of per-batch perplexities).
"""

_KWARGS_DESCRIPTION = """
Args:
    nll (`list` of `float`): summed negative log-likelihood (natural log) of the scored tokens of each sequence.
    num_tokens (`list` of `int`): how many tokens were scored in each sequence.
Returns:
    perplexity (`float`): exp(sum(nll) / sum(num_tokens)).
    loss (`float`): sum(nll) / sum(num_tokens), in nats per token.
    tokens (`int`): sum(num_tokens).
Examples:
    >>> metric = evaluate.load("path/to/perplexity.py")
    >>> metric.compute(nll=[2.0, 4.0], num_tokens=[1, 2])["loss"]
    2.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Perplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"nll": datasets.Value("float64"), "num_tokens": datasets.Value("int64")}),
        )

    def _compute(self, nll, num_tokens):
        tokens = sum(num_tokens)
        loss = mean_nll(math.fsum(nll), tokens)
        return {"perplexity": perplexity_from_loss(loss), "loss": loss, "tokens": tokens}
