# Local copy of an entity-level sequence labelling metric for ``evaluate.load(<this folder>)``.
# Self-contained on purpose: evaluate copies only this file into its modules cache.
"""Entity-level precision / recall / F1 for NER-style tagging (seqeval), per entity type."""
import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report

_SCHEMES = ("IOB1", "IOE1", "IOB2", "IOE2", "IOBES", "BILOU")

_DESCRIPTION = """
seqeval scores sequence labelling (named-entity recognition, chunking, ...) at the
entity level, like the CoNLL-2000 conlleval script: an entity counts as correct only
when its type and its full span match. It reports overall micro-averaged precision,
recall and F1 over entities, token-level accuracy, and precision / recall / F1 / support
for every entity type. Tags follow IOB1, IOB2, IOE1, IOE2, IOBES or BILOU ("B-PER",
"I-PER", "O", ...).

Two modes:
- default (mode=None): lenient, conlleval-compatible; e.g. an "I-PER" after "O" starts
  a new entity.
- strict (mode="strict"): entities must be well-formed under `scheme` (IOB2 unless given);
  ill-formed spans are not entities.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `str`): Predicted tag sequences, one per sentence.
    references (`list` of `list` of `str`): Gold tag sequences, same lengths as predictions.
    suffix (`bool`, defaults to `False`): Tags are "PER-B" instead of "B-PER".
    scheme (`str`, *optional*): One of "IOB1", "IOE1", "IOB2", "IOE2", "IOBES", "BILOU".
        Only used in strict mode (IOB2 when omitted there).
    mode (`str`, *optional*): None (conlleval-compatible) or "strict".
    sample_weight (`list` of `float`, *optional*): Per-sentence weights.
    zero_division (`float` or `"warn"`, defaults to 0.0): Value for undefined scores.
Returns:
    One dict per entity type, e.g. "PER": {"precision", "recall", "f1", "number"}
    ("number" is the gold support), and
    overall_precision, overall_recall, overall_f1 (micro over entities),
    overall_accuracy (token-level).
Examples:
    >>> seqeval = evaluate.load("nlp_transfer/metrics/seqeval")
    >>> seqeval.compute(predictions=[["B-PER", "I-PER", "O", "B-LOC"]],
    ...                 references=[["B-PER", "I-PER", "O", "B-ORG"]])["overall_f1"]
    0.5
"""

_CITATION = """
@inproceedings{ramshaw-marcus-1995-text,
    title = "Text Chunking using Transformation-Based Learning",
    author = "Ramshaw, Lance and Marcus, Mitch",
    booktitle = "Third Workshop on Very Large Corpora",
    year = "1995",
    url = "https://www.aclweb.org/anthology/W95-0107",
}
@misc{seqeval,
  title={{seqeval}: A Python framework for sequence labeling evaluation},
  url={https://github.com/chakki-works/seqeval},
  note={Software available from https://github.com/chakki-works/seqeval},
  author={Hiroki Nakayama},
  year={2018},
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Seqeval(evaluate.Metric):
    """Entity-level scores over lists of tag sequences."""

    def _info(self) -> evaluate.MetricInfo:
        tags = datasets.Sequence(datasets.Value("string", id="label"), id="sequence")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": tags, "references": tags}),
            codebase_urls=["https://github.com/chakki-works/seqeval"],
            reference_urls=["https://github.com/chakki-works/seqeval"],
        )

    def _compute(self, predictions, references, suffix=False, scheme=None, mode=None,
                 sample_weight=None, zero_division=0.0):
        predictions = [list(p) for p in predictions]
        references = [list(r) for r in references]
        for i, (p, r) in enumerate(zip(predictions, references)):
            if len(p) != len(r):
                raise ValueError(
                    f"seqeval: sequence {i} has {len(p)} predicted tags but {len(r)} reference tags; "
                    "drop the tags of ignored positions (label -100) from both before scoring")
        if mode not in (None, "strict"):
            raise ValueError(f"seqeval: mode must be None or 'strict', got {mode!r}")
        scheme_cls = None
        if mode == "strict" or scheme is not None:
            import seqeval.scheme as seqeval_scheme

            name = (scheme or "IOB2").upper()
            if name not in _SCHEMES:
                raise ValueError(f"seqeval: scheme must be one of {list(_SCHEMES)}, got {scheme!r}")
            scheme_cls = getattr(seqeval_scheme, name)

        scores = {}
        overall = {"precision": 0.0, "recall": 0.0, "f1-score": 0.0}
        if any(len(r) for r in references):
            report = classification_report(
                y_true=references, y_pred=predictions, suffix=suffix, output_dict=True,
                scheme=scheme_cls, mode=mode, sample_weight=sample_weight, zero_division=zero_division)
            report.pop("macro avg", None)
            report.pop("weighted avg", None)
            overall = report.pop("micro avg", overall)
            scores = {
                type_name: {
                    "precision": float(score["precision"]),
                    "recall": float(score["recall"]),
                    "f1": float(score["f1-score"]),
                    "number": int(score["support"]),
                }
                for type_name, score in report.items()
            }
            accuracy = float(accuracy_score(y_true=references, y_pred=predictions))
        else:
            accuracy = 0.0
        scores["overall_precision"] = float(overall["precision"])
        scores["overall_recall"] = float(overall["recall"])
        scores["overall_f1"] = float(overall["f1-score"])
        scores["overall_accuracy"] = accuracy
        return scores
