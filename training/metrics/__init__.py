"""Wren's `evaluate` metric modules, shipped as files so `evaluate.load` works offline.

    import evaluate
    from wrenlm.training.metrics import metric_path
    perplexity = evaluate.load(metric_path("perplexity"))   # not evaluate.load("perplexity"): that asks the Hub

Each module is a plain `evaluate.Metric` script (it imports only `evaluate`, `datasets` and the
standard library, because `evaluate` copies it into its own module cache before importing it):

* `perplexity`: inputs `nll` (summed negative log-likelihood in nats, per sequence) and `num_tokens`
  (targets scored in it) -> `perplexity` = exp(sum nll / sum tokens), `loss`, `tokens`;
* `bits_per_character`: inputs `nll` and `num_chars` -> `bits_per_character` = sum nll / (ln 2 * sum chars);
* `exact_match`: `predictions` and `references` (strings) -> the share equal after stripping whitespace.

The arithmetic of the first two lives in `likelihood.py` (a relative import, which `evaluate` copies along),
where training validation and `wren eval` take it from as well.
"""

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("perplexity", "bits_per_character", "exact_match")


def metric_path(name: str) -> str:
    """Path of a shipped metric script, for `evaluate.load`."""
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; available: {', '.join(METRIC_NAMES)}.")
    return str(METRICS_DIR / f"{name}.py")


def load_metric(name: str):
    """`evaluate.load` of a shipped metric, kept in memory (no cache files written next to the data)."""
    import evaluate

    return evaluate.load(metric_path(name), keep_in_memory=True)


__all__ = ["METRICS_DIR", "METRIC_NAMES", "load_metric", "metric_path"]
