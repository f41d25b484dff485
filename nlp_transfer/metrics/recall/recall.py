# Local copy of the recall metric for ``evaluate.load(<this folder>)``.
# Self-contained on purpose: evaluate copies only this file into its modules cache.
"""Recall for classification (scikit-learn), macro-averaged by default."""
import datasets
import evaluate
import numpy as np
from sklearn.metrics import recall_score

_DESCRIPTION = """
Recall is the fraction of actual positives that are found: TP / (TP + FN).
Computed with sklearn.metrics.recall_score. Unlike sklearn (and the Hub metric), the default
average is "macro" (every class counts equally), which is the usual choice for
multi-class transfer-learning benchmarks; pass average="binary" for the positive class only.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): Predicted labels.
    references (`list` of `int`): Ground truth labels.
    average (`str` or `None`, defaults to `"macro"`): one of "macro", "micro", "weighted",
        "binary", "samples" (multilabel config) or None (one score per class, returned as a list).
    labels (`list` of `int`, *optional*): The set of labels to include (and their order
        when average=None).
    pos_label (`int`, defaults to 1): The positive class when average="binary".
    zero_division (`float` or `"warn"`, defaults to 0.0): Value returned when a division
        by zero occurs (e.g. a class never predicted). 0.0 gives sklearn's value without the warning.
    sample_weight (`list` of `float`, *optional*): Sample weights.
    normalize: accepted and ignored (so combined classification metrics share kwargs).
Returns:
    recall (`float`, or `list` of `float` when average=None).
Examples:
    >>> metric = evaluate.load("nlp_transfer/metrics/recall")
    >>> metric.compute(predictions=[0, 2, 1, 0], references=[0, 1, 2, 0])
    {'recall': 0.3333333333333333}
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
class Recall(evaluate.Metric):
    """Recall over integer class labels ("multilabel" config: indicator rows)."""

    def _info(self) -> evaluate.MetricInfo:
        value = datasets.Value("int32")
        if self.config_name == "multilabel":
            value = datasets.Sequence(datasets.Value("int32"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": value, "references": value}),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.recall_score.html"],
            format=None if self.config_name == "multilabel" else "numpy",
        )

    def _compute(self, predictions, references, average="macro", labels=None, pos_label=1,
                 zero_division=0.0, sample_weight=None, normalize=None):
        score = recall_score(
            references, predictions, labels=labels, pos_label=pos_label, average=average,
            sample_weight=sample_weight, zero_division=zero_division)
        return {"recall": float(score) if np.ndim(score) == 0 else np.asarray(score, dtype=float).tolist()}
