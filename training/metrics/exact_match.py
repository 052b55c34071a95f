"""Exact match of generated answers against references (a local `evaluate` metric)."""

import datasets
import evaluate

_DESCRIPTION = """
Exact match: the share of predictions equal to their reference after stripping leading and
trailing whitespace on both (no other normalisation: case and inner spacing count).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): generated answers.
    references (`list` of `str`): expected answers.
Returns:
    exact_match (`float`): matches / examples, in [0, 1].
    matches (`int`), examples (`int`).
Examples:
    >>> metric = evaluate.load("path/to/exact_match.py")
    >>> metric.compute(predictions=["85 ", "12"], references=["85", "13"])["exact_match"]
    0.5
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        if not references:
            raise ValueError("Exact match needs at least one example.")
        matches = sum(p.strip() == r.strip() for p, r in zip(predictions, references))
        return {"exact_match": matches / len(references), "matches": matches, "examples": len(references)}
