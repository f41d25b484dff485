# Local copy of the Spearman correlation metric for ``evaluate.load(<this folder>)``.
# Self-contained on purpose: evaluate copies only this file into its modules cache.
"""Spearman correlation between float predictions and references (scipy)."""
import warnings

import datasets
import evaluate
import numpy as np
from scipy import stats

_DESCRIPTION = """
Spearman's rho is Pearson's r computed on ranks: it measures how well the relationship
between two variables is described by a monotonic function. Robust to outliers and scale.
Computed with scipy.stats.spearmanr. If predictions or references are constant (e.g. a
regression head that has not started learning) the coefficient is undefined and NaN
is returned (scipy's ConstantInputWarning is silenced).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): Predicted scores.
    references (`list` of `float`): Ground truth scores.
    return_pvalue (`bool`, defaults to `False`): Also return the two-sided p-value
        under the key "spearmanr_pvalue".
Returns:
    spearmanr (`float`): in [-1, 1] (NaN for constant input).
    spearmanr_pvalue (`float`): only when return_pvalue=True.
Examples:
    >>> metric = evaluate.load("nlp_transfer/metrics/spearmanr")
    >>> metric.compute(predictions=[1.0, 2.0, 3.0, 5.0], references=[1.0, 2.0, 3.0, 4.0])
    {'spearmanr': 1.0}
"""

_CITATION = """
@article{2020SciPy-NMeth,
  author  = {Virtanen, Pauli and Gommers, Ralf and Oliphant, Travis E. and others},
  title   = {{SciPy} 1.0: Fundamental Algorithms for Scientific Computing in Python},
  journal = {Nature Methods},
  year    = {2020},
  volume  = {17},
  pages   = {261--272},
  doi     = {10.1038/s41592-019-0686-2}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Spearmanr(evaluate.Metric):
    """Spearman correlation over float predictions and references."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}),
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.spearmanr.html"],
            # no "numpy" format: datasets' numpy formatter would downcast to float32
        )

    def _compute(self, predictions, references, return_pvalue=False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.ConstantInputWarning)
            result = stats.spearmanr(np.asarray(references, dtype=np.float64),
                                    np.asarray(predictions, dtype=np.float64))
        out = {"spearmanr": float(result.statistic)}
        if return_pvalue:
            out["spearmanr_pvalue"] = float(result.pvalue)
        return out
