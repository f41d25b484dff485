# Local multi-label classification metric for ``evaluate.load(<this folder>)``.
# Self-contained on purpose: evaluate copies only this file into its modules cache.
"""Multi-label classification scores over binary indicator matrices (scikit-learn)."""
import datasets
import evaluate
import numpy as np
from sklearn.metrics import accuracy_score, f1_score

_DESCRIPTION = """
Scores for multi-label classification, where every example may carry any subset of L
labels. Predictions and references are binary indicator rows of length L (1 = label
present), i.e. arrays of shape (n_examples, L); threshold probabilities before scoring.

- micro_f1: F1 over all (example, label) decisions pooled; dominated by frequent labels.
- macro_f1: unweighted mean of the per-label F1; rare labels count as much as common ones.
- samples_f1: F1 computed per example and averaged.
- subset_accuracy: fraction of examples whose whole label set is exactly right (strict).
- per_label_f1: F1 of every label, keyed by label name.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `int`): Predicted indicator rows, shape (n, L).
    references (`list` of `list` of `int`): Gold indicator rows, shape (n, L).
    label_names (`list` of `str`, *optional*): Names of the L labels, used as keys of
        per_label_f1 (defaults to "0", "1", ...).
    zero_division (`float`, defaults to 0.0): Value for undefined scores (a label that is
        neither present nor predicted).
Returns:
    micro_f1, macro_f1, samples_f1, subset_accuracy (`float`), per_label_f1 (`dict` of `str` to `float`).
Examples:
    >>> metric = evaluate.load("nlp_transfer/metrics/multilabel")
    >>> metric.compute(predictions=[[1, 0, 1], [0, 1, 0]], references=[[1, 0, 0], [0, 1, 0]],
    ...                label_names=["joy", "anger", "fear"])["per_label_f1"]
    {'joy': 1.0, 'anger': 1.0, 'fear': 0.0}
"""

_CITATION = """
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and others},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
@article{tsoumakas2007multi,
  title={Multi-label classification: An overview},
  author={Tsoumakas, Grigorios and Katakis, Ioannis},
  journal={International Journal of Data Warehousing and Mining},
  volume={3},
  number={3},
  pages={1--13},
  year={2007}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Multilabel(evaluate.Metric):
    """Micro / macro / samples / per-label F1 and subset accuracy for indicator matrices."""

    def _info(self) -> evaluate.MetricInfo:
        row = datasets.Sequence(datasets.Value("int32"))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": row, "references": row}),
            reference_urls=["https://scikit-learn.org/stable/modules/model_evaluation.html#multilabel-ranking-metrics"],

        )

    def _compute(self, predictions, references, label_names=None, zero_division=0.0):
        try:
            y_pred = np.asarray(predictions)
            y_true = np.asarray(references)
        except ValueError as e:  # ragged rows
            raise ValueError(f"multilabel: every row must have the same number of labels ({e})") from None
        if y_pred.ndim != 2 or y_pred.shape != y_true.shape:
            raise ValueError(
                f"multilabel: predictions and references must be indicator arrays of the same shape "
                f"(n, L); got {y_pred.shape} and {y_true.shape}")
        for name, arr in (("predictions", y_pred), ("references", y_true)):
            if arr.dtype == object or not np.isin(arr, (0, 1)).all():
                raise ValueError(f"multilabel: {name} must contain only 0/1 (threshold probabilities first)")
        y_pred, y_true = y_pred.astype(np.int64), y_true.astype(np.int64)
        n_labels = y_true.shape[1]
        if label_names is None:
            label_names = [str(i) for i in range(n_labels)]
        if len(label_names) != n_labels:
            raise ValueError(f"multilabel: {len(label_names)} label_names for {n_labels} label columns")

        def f1(average):
            return f1_score(y_true, y_pred, average=average, zero_division=zero_division)

        per_label = f1(None)
        return {
            "micro_f1": float(f1("micro")),
            "macro_f1": float(f1("macro")),
            "samples_f1": float(f1("samples")),
            "subset_accuracy": float(accuracy_score(y_true, y_pred)),
            "per_label_f1": {str(n): float(s) for n, s in zip(label_names, per_label)},
        }
