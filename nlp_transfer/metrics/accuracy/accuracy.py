# Local copy of a classification accuracy metric for ``evaluate.load(<this folder>)``.
# Self-contained on purpose: evaluate copies only this file into its modules cache.
"""Accuracy: fraction of predictions equal to the references (scikit-learn)."""
import datasets
import evaluate
from sklearn.metrics import accuracy_score

_DESCRIPTION = """
Accuracy is the proportion of correct predictions among the total number of cases
processed: (TP + TN) / (TP + TN + FP + FN). Computed with sklearn.metrics.accuracy_score.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): Predicted labels.
    references (`list` of `int`): Ground truth labels.
    normalize (`bool`, defaults to `True`): If False, return the number of correctly
        classified samples instead of the fraction.
    sample_weight (`list` of `float`, *optional*): Sample weights.
    average, labels, pos_label, zero_division: accepted and ignored, so that
        `evaluate.combine(["accuracy", "f1", ...]).compute(..., average="weighted")`
        can forward the same keyword arguments to every classification metric.
Returns:
    accuracy (`float`): in [0, 1] (or a count when normalize=False).
Examples:
    >>> accuracy = evaluate.load("nlp_transfer/metrics/accuracy")
    >>> accuracy.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0])
    {'accuracy': 0.75}
"""

_CITATION = """
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and Varoquaux, G. and Gramfort, A. and Michel, V.
          and Thirion, B. and Grisel, O. and Blondel, M. and Prettenhofer, P.
          and Weiss, R. and Dubourg, V. and Vanderplas, J. and Passos, A. and
          Cournapeau, D. and Brucher, M. and Perrot, M. and Duchesnay, E.},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    """Accuracy over integer class labels ("multilabel" config: subset accuracy)."""

    def _info(self) -> evaluate.MetricInfo:
        value = datasets.Value("int32")
        if self.config_name == "multilabel":
            value = datasets.Sequence(datasets.Value("int32"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": value, "references": value}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.accuracy_score.html"],
            format=None if self.config_name == "multilabel" else "numpy",
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None,
                 average=None, labels=None, pos_label=None, zero_division=None):
        score = accuracy_score(references, predictions, normalize=normalize, sample_weight=sample_weight)
        return {"accuracy": float(score)}
