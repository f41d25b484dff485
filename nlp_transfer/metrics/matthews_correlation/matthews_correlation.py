# Local copy of the Matthews correlation metric for ``evaluate.load(<this folder>)``.
# Self-contained on purpose: evaluate copies only this file into its modules cache.
"""Matthews correlation coefficient (scikit-learn), binary and multi-class."""
import datasets
import evaluate
from sklearn.metrics import matthews_corrcoef

_DESCRIPTION = """
The Matthews correlation coefficient (MCC) measures the quality of classifications using
all four cells of the confusion matrix; it is balanced even when classes have very
different sizes. +1 is a perfect prediction, 0 no better than random, -1 total
disagreement. The multi-class generalisation (R_K statistic) is used for K > 2 classes.
Computed with sklearn.metrics.matthews_corrcoef. It is the official metric of CoLA (GLUE).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): Predicted labels.
    references (`list` of `int`): Ground truth labels.
    sample_weight (`list` of `float`, *optional*): Sample weights.
    average, labels, pos_label, zero_division, normalize: accepted and ignored (so combined
        classification metrics share kwargs).
Returns:
    matthews_correlation (`float`): in [-1, 1]; 0.0 when all predictions (or references) are one class.
Examples:
    >>> mcc = evaluate.load("nlp_transfer/metrics/matthews_correlation")
    >>> mcc.compute(predictions=[1, 0, 1, 1], references=[1, 0, 0, 1])
    {'matthews_correlation': 0.5773502691896258}
"""

_CITATION = """
@article{matthews1975comparison,
  title={Comparison of the predicted and observed secondary structure of T4 phage lysozyme},
  author={Matthews, Brian W},
  journal={Biochimica et Biophysica Acta (BBA)-Protein Structure},
  volume={405},
  number={2},
  pages={442--451},
  year={1975}
}
@article{scikit-learn,
  title={Scikit-learn: Machine Learning in {P}ython},
  author={Pedregosa, F. and others},
  journal={Journal of Machine Learning Research},
  volume={12},
  pages={2825--2830},
  year={2011}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MatthewsCorrelation(evaluate.Metric):
    """Matthews correlation coefficient over integer class labels."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.matthews_corrcoef.html"],
            format="numpy",
        )

    def _compute(self, predictions, references, sample_weight=None, average=None, labels=None,
                 pos_label=None, zero_division=None, normalize=None):
        score = matthews_corrcoef(references, predictions, sample_weight=sample_weight)
        return {"matthews_correlation": float(score)}
