"""Model cards for trained output folders: a dataclass, a template, and a PNG of the curves.

    from nlp_transfer.publish.card import write_model_card
    write_model_card("outputs/bbc", repo_id="alice/bbc-frozen")   # -> outputs/bbc/README.md

:class:`ModelCardInfo` gathers everything the card says from the files a training run
writes (``nlp_transfer.json``, ``metrics.json``, ``recipe.yaml``); :func:`render_model_card`
fills ``templates/model_card.md`` (YAML metadata built with ``huggingface_hub.ModelCardData``
so the ``model-index`` follows the Hub schema); :func:`write_model_card` writes ``README.md``
and ``training_curves.png`` (held-out and train-sample metric per evaluation).

The card never contains access tokens: token-looking strings and the value of the active
Hugging Face token are masked, local absolute paths are reduced to their last component.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from nlp_transfer.errors import ModelError
from nlp_transfer.model import NORMALIZE
from nlp_transfer.registry import STRATEGIES, TASKS, TaskSpec
from nlp_transfer.strategies import Strategy

TEMPLATE_PATH = Path(__file__).parent / "templates" / "model_card.md"
PLOT_NAME = "training_curves.png"

#: Hub ``pipeline_tag`` of a task the registry does not know (a folder from an unregistered task).
DEFAULT_PIPELINE_TAG = "text-classification"
_DATA_FILE_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".txt", ".parquet", ".arrow", ".conll", ".xlsx")
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_TOKEN_RE = re.compile(r"\b(hf_|api_org_)[A-Za-z0-9]{20,}\b")


# ------------------------------------------------------------------------------ dataclass

@dataclass
class EvalPoint:
    """One held-out + train-sample evaluation during training."""

    epoch: float
    step: int
    train_loss: float | None
    held_out: dict[str, float]
    train_sample: dict[str, float]
    gap: float | None


def hyperparameters(recipe: dict[str, Any], metrics: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """``(hyperparameters, patience)`` of a run for its card: the recipe's ``train`` section with
    the values the strategy resolved (``metrics["hyperparameters"]``) over it, plus the ``eval``
    settings that shaped the result; patience is the resolved one, else the recipe's."""
    eval_cfg = recipe.get("eval") if isinstance(recipe.get("eval"), dict) else {}
    train_cfg = recipe.get("train") if isinstance(recipe.get("train"), dict) else {}
    resolved = metrics.get("hyperparameters") or {}
    hyper = {**train_cfg, **{k: v for k, v in resolved.items() if k != "patience"}}
    for key in ("metric_for_best", "train_sample_size", "every_steps", "min_delta"):
        if key in eval_cfg:
            hyper[f"eval.{key}"] = eval_cfg[key]
    return hyper, resolved.get("patience", eval_cfg.get("patience"))


def registered_strategy(name: str) -> type[Strategy]:
    """The strategy class registered as ``name``; the :class:`Strategy` interface itself for a name
    this version does not know (a card of a newer run still renders, with generic text)."""
    cls = STRATEGIES.get(name)
    return cls if isinstance(cls, type) and issubclass(cls, Strategy) else Strategy


@dataclass
class ModelCardInfo:
    """Everything the model card says, read from an output folder (see :meth:`from_output_dir`).

    Fields a push may want to change (``repo_id``, ``license``, ``library_name``, ``merged``,
    ``plain_loading``, ``extra_tags``, ``language``) can be set with :func:`dataclasses.replace`
    or as keyword arguments of :func:`write_model_card`.
    """

    model_name: str
    task: str
    strategy: str
    base_model: str
    pooling: str
    max_length: int
    label_names: list[str] | None
    text_pair: bool
    held_out: dict[str, float]
    train_sample: dict[str, float]
    gap: float | None
    gap_metric: str
    best_epoch: float
    stopped_early: bool
    trainable_params: int
    total_params: int
    history: list[EvalPoint] = field(default_factory=list)
    repo_id: str | None = None
    base_model_revision: str | None = None
    best_step: int | None = None
    epochs_run: float | None = None
    patience: int | None = None
    min_delta: float | None = None
    wall_s: float | None = None
    test: dict[str, float] | None = None
    dataset: str | None = None
    dataset_hub_id: str | None = None
    data_stats: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    strategy_details: dict[str, Any] = field(default_factory=dict)
    auto: dict[str, Any] | None = None
    head_outputs: int | None = None
    head_dropout: float | None = None
    hidden_size: int | None = None
    license: str = "apache-2.0"
    language: str | list[str] | None = None
    #: None: follows the loader of what is pushed (transformers for a native folder, peft for a native
    #: adapter, nlp_transfer for pooling + our head).
    library_name: str | None = None
    #: Trained through the architecture's own task head (a plain transformers / PEFT folder).
    native: bool = False
    #: Tuned per-label decision thresholds of a multi-label model.
    thresholds: Any = None
    #: Library versions the model was trained with (``nlp_transfer.json`` ``versions``).
    versions: dict[str, str] = field(default_factory=dict)
    extra_tags: list[str] = field(default_factory=list)
    merged: bool = False
    plain_loading: str | None = None
    nlp_transfer_version: str | None = None

    # -------------------------------------------------------------------- construction
    @classmethod
    def from_output_dir(cls, path: str | Path, repo_id: str | None = None, **overrides: Any) -> "ModelCardInfo":
        """Read ``nlp_transfer.json``, ``metrics.json`` and (if present) ``recipe.yaml`` of a run.

        Raises :class:`~nlp_transfer.errors.ModelError` when the folder is not a finished
        nlp_transfer output (one of the two JSON files is missing or unreadable).
        """
        out = Path(path).expanduser()
        missing = [n for n in ("nlp_transfer.json", "metrics.json") if not (out / n).is_file()]
        if not out.is_dir() or missing:
            found = "no such folder" if not out.is_dir() else f"no {' and no '.join(missing)}"
            raise ModelError(f"output folder {out.name or out}", expected="a finished nlp_transfer output folder "
                             "(nlp_transfer.json, metrics.json, recipe.yaml)", found=found,
                             fix="pass the output.dir of a training run that completed")
        meta = _read_json(out / "nlp_transfer.json")
        metrics = _read_json(out / "metrics.json")
        recipe = _read_yaml(out / "recipe.yaml") if (out / "recipe.yaml").is_file() else {}
        config = _read_json(out / "config.json") if (out / "config.json").is_file() else {}

        base = meta.get("base_model") or metrics.get("base_model") or "unknown"
        base_name = base.get("name") if isinstance(base, dict) else str(base)
        model_cfg = recipe.get("model") if isinstance(recipe.get("model"), dict) else {}
        strategy = str(meta.get("strategy") or metrics.get("strategy") or "unknown")
        strategy_cfg = recipe.get("strategy") if isinstance(recipe.get("strategy"), dict) else {}
        details: dict[str, Any] = {}
        if isinstance(meta.get(strategy), dict):  # the strategy's own section of nlp_transfer.json
            details.update(meta[strategy])
        for key, value in registered_strategy(strategy).card_settings(strategy_cfg).items():
            details.setdefault(key, value)
        eval_cfg = recipe.get("eval") if isinstance(recipe.get("eval"), dict) else {}
        hyper, patience = hyperparameters(recipe, metrics)
        data = dict(metrics.get("data") or {})
        data_cfg = recipe.get("data") if isinstance(recipe.get("data"), dict) else {}
        dataset = data.get("dataset") or data_cfg.get("name")
        head = meta.get("head") if isinstance(meta.get("head"), dict) else {}
        from nlp_transfer.version import __version__ as version

        info = cls(
            model_name=(repo_id.split("/")[-1] if repo_id else out.resolve().name),
            task=str(meta.get("task") or metrics.get("task") or "sequence_classification"),
            strategy=strategy,
            base_model=str(base_name),
            base_model_revision=model_cfg.get("revision"),
            pooling=str(meta.get("pooling") or metrics.get("pooling") or "mean"),
            max_length=int(meta.get("max_length") or model_cfg.get("max_length") or 0),
            label_names=list(meta["label_names"]) if meta.get("label_names") else None,
            text_pair=bool(meta.get("text_pair", False)),
            held_out=_clean_scores(metrics.get("held_out")),
            train_sample=_clean_scores(metrics.get("train_sample")),
            gap=_float_or_none(metrics.get("gap")),
            gap_metric=str(metrics.get("gap_metric") or "accuracy"),
            best_epoch=float(metrics.get("best_epoch") or 0),
            best_step=metrics.get("best_step"),
            epochs_run=_float_or_none(metrics.get("epochs_run")),
            stopped_early=bool(metrics.get("stopped_early", False)),
            patience=int(patience) if patience is not None else None,
            min_delta=_float_or_none(eval_cfg.get("min_delta")),
            trainable_params=int(metrics.get("trainable_params") or 0),
            total_params=int(metrics.get("total_params") or 0),
            wall_s=_float_or_none(metrics.get("wall_s")),
            history=[_eval_point(h) for h in metrics.get("history") or [] if isinstance(h, dict)],
            test=_clean_scores(metrics["test"]) if isinstance(metrics.get("test"), dict) else None,
            repo_id=repo_id,
            dataset=_display_name(dataset) if dataset else None,
            dataset_hub_id=str(dataset) if dataset and _is_hub_dataset(str(dataset)) else None,
            data_stats=data,
            hyperparameters=hyper,
            strategy_details=details,
            auto=metrics.get("auto") if isinstance(metrics.get("auto"), dict) else None,
            head_outputs=head.get("num_outputs"),
            native=head.get("type") == "native",
            thresholds=meta.get("thresholds"),
            versions=dict(meta.get("versions") or {}),
            head_dropout=head.get("dropout"),
            hidden_size=config.get("hidden_size") or config.get("dim") or config.get("d_model"),
            nlp_transfer_version=version,
        )
        return dataclasses.replace(info, **overrides) if overrides else info

    # -------------------------------------------------------------------- derived values
    @property
    def task_spec(self) -> TaskSpec | None:
        """The registered task (None for a folder of a task not registered in this process)."""
        return TASKS.get(self.task)

    @property
    def strategy_class(self) -> type[Strategy]:
        """The registered strategy (the :class:`Strategy` interface itself for an unknown one)."""
        return registered_strategy(self.strategy)

    @property
    def task_words(self) -> str:
        return self.task_spec.words if self.task_spec else self.task

    @property
    def library(self) -> str:
        """``library_name`` of the card: the library whose loader reads what is pushed."""
        if self.library_name:
            return self.library_name
        if not self.native:
            return "nlp_transfer"
        return "transformers" if self.merged or self.strategy_class.stores_encoder else "peft"

    @property
    def pipeline_tag(self) -> str:
        return self.task_spec.pipeline_tag if self.task_spec else DEFAULT_PIPELINE_TAG

    @property
    def lower_is_better(self) -> bool:
        return self.gap_metric in ("loss", "mse", "rmse", "mae")

    @property
    def trainable_share(self) -> float:
        return self.trainable_params / self.total_params if self.total_params else float("nan")

    @property
    def base_model_is_hub_id(self) -> bool:
        return bool(_HUB_ID_RE.match(self.base_model)) and not Path(self.base_model).expanduser().exists()

    @property
    def tags(self) -> list[str]:
        tags = ["nlp_transfer", self.strategy, self.pipeline_tag, "safetensors"] + list(self.strategy_class.card_tags)
        if self.merged:
            tags.append("merged")
        return list(dict.fromkeys(tags + list(self.extra_tags)))

    @property
    def base_model_relation(self) -> str:
        return "finetune" if self.merged or self.strategy_class.stores_encoder else "adapter"


# ------------------------------------------------------------------------------ rendering

def render_model_card(info: ModelCardInfo, plot_name: str | None = PLOT_NAME) -> str:
    """The README.md text for ``info`` (metadata + body), with any token masked.

    ``plot_name``: file name of the curves PNG to embed (None: no image).
    """
    values = {
        "metadata": _metadata_yaml(info).rstrip("\n"),
        "title": info.model_name,
        "summary": _summary(info),
        "strategy_section": _strategy_section(info),
        "data_section": _data_section(info),
        "hyperparameters_section": _hyperparameters_section(info),
        "results_section": _results_section(info),
        "gap_metric": info.gap_metric,
        "history_section": _history_section(info, plot_name),
        "best_epoch_section": _best_epoch_section(info),
        "usage_section": _usage_section(info),
        "limitations_section": _limitations_section(info),
        "versions_section": _versions_section(info),
        "footer": _footer(info),
    }
    text = Template(TEMPLATE_PATH.read_text(encoding="utf-8")).substitute(values)
    return scrub_secrets(text)


def write_model_card(output_dir: str | Path, repo_id: str | None = None, **overrides: Any) -> Path:
    """Write ``README.md`` (and ``training_curves.png``) into an output folder; return the README path.

    ``overrides`` set :class:`ModelCardInfo` fields (``license="mit"``, ``merged=True``, ...).
    """
    out = Path(output_dir).expanduser()
    info = ModelCardInfo.from_output_dir(out, repo_id=repo_id, **overrides)
    plot = plot_training_curves(info, out / PLOT_NAME)
    readme = out / "README.md"
    readme.write_text(render_model_card(info, plot.name if plot else None), encoding="utf-8")
    return readme


def plot_training_curves(info: ModelCardInfo, path: str | Path) -> Path | None:
    """Small PNG: held-out and train-sample ``gap_metric`` per evaluation (None if no history)."""
    points = [h for h in info.history if info.gap_metric in h.held_out]
    if not points:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    x = [h.epoch for h in points]
    ax.plot(x, [h.held_out[info.gap_metric] for h in points], marker="o", label="held-out")
    train = [(h.epoch, h.train_sample[info.gap_metric]) for h in points if info.gap_metric in h.train_sample]
    if train:
        ax.plot([t[0] for t in train], [t[1] for t in train], marker="s", linestyle="--", label="train sample")
    ax.axvline(info.best_epoch, color="grey", linestyle=":", linewidth=1, label=f"best (epoch {_num(info.best_epoch)})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(info.gap_metric)
    ax.set_title(f"{info.gap_metric}: held-out vs train sample ({info.strategy})")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def scrub_secrets(text: str) -> str:
    """Mask Hugging Face tokens: the active token's value and anything shaped like one."""
    for token in _active_tokens():
        text = text.replace(token, "***")
    return _TOKEN_RE.sub(lambda m: m.group(1) + "***", text)


# ------------------------------------------------------------------------------ sections

def _metadata_yaml(info: ModelCardInfo) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    dataset_type = info.dataset_hub_id or info.dataset or "custom"
    dataset_name = info.dataset or "custom"
    results = []
    for split, scores in (("held-out", info.held_out), ("test", info.test or {})):
        for metric, value in scores.items():
            if metric in ("loss", "n") or not _finite(value):
                continue
            results.append(EvalResult(
                task_type=info.pipeline_tag, task_name=info.task_words,
                dataset_type=dataset_type, dataset_name=dataset_name, dataset_split=split,
                metric_type=metric, metric_name=f"{split} {metric}", metric_value=round(float(value), 4)))
    kwargs: dict[str, Any] = {"base_model_relation": info.base_model_relation}
    data = ModelCardData(
        base_model=info.base_model if info.base_model_is_hub_id else None,
        datasets=[info.dataset_hub_id] if info.dataset_hub_id else None,
        language=info.language,
        library_name=info.library,
        license=info.license,
        pipeline_tag=info.pipeline_tag,
        tags=info.tags,
        model_name=info.model_name if results else None,
        eval_results=results or None,
        **(kwargs if info.base_model_is_hub_id else {}),
    )
    return data.to_yaml()


def _summary(info: ModelCardInfo) -> str:
    task = info.task_words
    base = f"[{info.base_model}](https://huggingface.co/{info.base_model})" if info.base_model_is_hub_id \
        else f"`{_display_name(info.base_model)}`"
    labels = ""
    if info.label_names:
        shown = ", ".join(f"`{n}`" for n in info.label_names[:20])
        more = f" and {len(info.label_names) - 20} more" if len(info.label_names) > 20 else ""
        labels = f" It predicts {len(info.label_names)} labels: {shown}{more}."
    best = info.held_out.get(info.gap_metric)
    score = f" Held-out {info.gap_metric}: **{_fmt(best)}**." if best is not None else ""
    return (f"A {task} model trained with [nlp_transfer](https://pypi.org/project/nlp_transfer/) using the "
            f"**{info.strategy}** strategy on top of {base}.{labels}{score}")


def _strategy_section(info: ModelCardInfo) -> str:
    lines = [info.strategy_class.describe(info.strategy_details, info.merged)
             if info.strategy_class is not Strategy else f"Strategy **{info.strategy}**."]
    share = info.trainable_share
    lines += ["", "| | |", "|---|---|",
              f"| Trainable parameters | {_count(info.trainable_params)} of {_count(info.total_params)} "
              f"({_pct(share)}) |",
              f"| Base model | {_display_name(info.base_model)}"
              + (f" (revision `{info.base_model_revision}`)" if info.base_model_revision else "") + " |",
              f"| Pooling | {info.pooling} |",
              f"| Max sequence length | {info.max_length} tokens |",
              f"| Input | {'pairs of texts' if info.text_pair else 'single texts'} |"]
    if info.head_outputs is not None:
        lines.append(f"| Head | linear, {info.head_outputs} output(s)"
                     + (f", dropout {info.head_dropout}" if info.head_dropout is not None else "") + " |")
    if info.auto:
        lines += ["", f"The strategy was chosen automatically (`strategy=auto`): **{info.auto.get('decision')}**."]
        lines += [f"- {r}" for r in info.auto.get("reasons") or []]
    return "\n".join(lines)


def _data_section(info: ModelCardInfo) -> str:
    s = info.data_stats
    rows = [("Dataset", f"`{info.dataset}`" if info.dataset else "not recorded")]
    if "train_size" in s:
        rows.append(("Training examples", _count_exact(s["train_size"]) + (" (rows streamed into training)"
                                                                         if s.get("streamed") else "")))
    if s.get("label_example_rows"):
        rows.append(("Class-name examples", f"{_count_exact(s['label_example_rows'])} of the training examples are "
                     f"`{s.get('label_template', '{}')}` filled with a class name (`data.label_examples`)"))
    if "held_out_size" in s:
        src = f" — {s['held_out_source']}" if s.get("held_out_source") else ""
        rows.append(("Held-out examples", f"{_count_exact(s['held_out_size'])}{src}"))
    if s.get("train_sample_size"):
        rows.append(("Train sample (for the gap)", f"{_count_exact(s['train_sample_size'])} training examples "
                     "scored like the held-out set"))
    if s.get("test_size"):
        rows.append(("Test examples", _count_exact(s["test_size"])))
    dropped = [f"{s[k]} {k.replace('_dropped', '').replace('_', ' ')}"
               for k in ("duplicates_dropped", "leaked_dropped", "empty_dropped") if s.get(k)]
    rows.append(("Removed before training", "streamed: empty texts and rows whose text is held out, as they passed"
                 if s.get("streamed") else ", ".join(dropped) if dropped else "nothing"))
    if info.label_names:
        rows.append(("Labels", ", ".join(f"`{n}`" for n in info.label_names[:50])
                     + (f" … ({len(info.label_names)} in all)" if len(info.label_names) > 50 else "")))
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "The held-out examples were never trained on" + (
        "; \"leaked\" rows are training rows whose text also appears in the held-out or test split, removed so "
        "the held-out scores are honest." if s.get("leaked_dropped") else ".")]
    return "\n".join(lines)


def _hyperparameters_section(info: ModelCardInfo) -> str:
    hp = dict(info.hyperparameters)
    if info.patience is not None:
        hp["eval.patience"] = info.patience
    if not hp:
        return "Not recorded."
    lines = ["| Name | Value |", "|---|---|"]
    for key, value in hp.items():
        lines.append(f"| `{key}` | {_value(value)} |")
    lines += ["", "`epochs`, `lr`, `head_lr` and `eval.patience` show the values used (the strategy's defaults "
              "where the recipe left them empty). The full recipe is in `recipe.yaml`."]
    return "\n".join(lines)


def _results_section(info: ModelCardInfo) -> str:
    names = [m for m in info.held_out if m not in ("loss", "n")] or list(info.held_out)
    header = "| Metric | Held-out | Train sample | Gap |" + (" Test |" if info.test else "")
    sep = "|---|---:|---:|---:|" + ("---:|" if info.test else "")
    lines = [f"Scores of the saved weights (epoch {_num(info.best_epoch)}). Gap = train sample − held-out"
             + (" (for a lower-is-better metric, held-out − train sample)." if info.lower_is_better else "."),
             "", header, sep]
    for m in names:
        ho, tr = info.held_out.get(m), info.train_sample.get(m)
        gap = (tr - ho) if _finite(tr) and _finite(ho) else None
        if gap is not None and m in ("loss",):
            gap = -gap
        row = f"| {m}{' (selection metric)' if m == info.gap_metric else ''} | {_fmt(ho)} | {_fmt(tr)} | {_fmt(gap, sign=True)} |"
        if info.test:
            row += f" {_fmt(info.test.get(m))} |"
        lines.append(row)
    if info.gap is not None and _finite(info.gap) and info.gap > 0.05:
        lines += ["", f"⚠️ The train sample scores {_fmt(info.gap)} {info.gap_metric} above the held-out set: "
                  "the model fits its training data noticeably better than unseen data."]
    return "\n".join(lines)


def _history_section(info: ModelCardInfo, plot_name: str | None) -> str:
    if not info.history:
        return "No per-evaluation history was recorded."
    m = info.gap_metric
    lines = [f"| Epoch | Step | Train loss | Held-out {m} | Train-sample {m} | Gap |", "|---:|---:|---:|---:|---:|---:|"]
    for h in info.history:
        best = h.epoch == info.best_epoch and (info.best_step is None or h.step == info.best_step)
        mark = " ★" if best else ""
        lines.append(f"| {_num(h.epoch)}{mark} | {h.step} | {_fmt(h.train_loss)} | {_fmt(h.held_out.get(m))} | "
                     f"{_fmt(h.train_sample.get(m))} | {_fmt(h.gap, sign=True)} |")
    lines += ["", "★ = the evaluation whose weights were saved."]
    if plot_name:
        lines += ["", f"![Held-out and train-sample {m} per evaluation]({plot_name})"]
    return "\n".join(lines)


def _best_epoch_section(info: ModelCardInfo) -> str:
    m = info.gap_metric
    direction = "lowest" if info.lower_is_better else "highest"
    n = len(info.history)
    best = info.held_out.get(m)
    step = f", step {info.best_step}" if info.best_step is not None else ""
    parts = [f"The saved weights are those of **epoch {_num(info.best_epoch)}**{step}: the evaluation with the "
             f"{direction} held-out {m} ({_fmt(best)})" + (f" among {n} evaluations" if n else "")
             + ", not necessarily the last one."]
    if info.min_delta:
        parts.append(f"An evaluation counted as an improvement only if it beat the best so far by more than "
                     f"{info.min_delta}.")
    ran = f"{_num(info.epochs_run)} epoch(s)" if info.epochs_run is not None else "the planned epochs"
    planned = info.hyperparameters.get("epochs")
    if info.stopped_early:
        parts.append(f"**Training stopped early** after {ran}"
                     + (f" (of {planned} planned)" if planned else "")
                     + (f": held-out {m} had not improved for {info.patience} consecutive evaluations (patience)."
                        if info.patience is not None else ": held-out performance had stopped improving."))
    else:
        parts.append(f"Training did **not** stop early: it ran {ran}"
                     + (f" of {planned} planned" if planned else "")
                     + (f" without exhausting the patience of {info.patience} evaluations." if info.patience
                        is not None else "."))
    return " ".join(parts)


def _usage_section(info: ModelCardInfo) -> str:
    ref = info.repo_id or info.model_name
    if info.text_pair:
        call = 'predict(["A man is playing a guitar."], text_pairs=["Someone plays music."])'
    else:
        call = 'predict(["The first text to classify.", "Another one."])'
    lines = ["With nlp_transfer (`pip install nlp_transfer`), predictions identical to the training run's:", "",
             "```python", "from nlp_transfer import load", "", f'predict = load("{ref}")', f"print({call})",
             "```", "", "From the command line:", "", "```bash",
             f'nlp-transfer predict {ref} --text "The first text to classify."', "```", ""]
    plain = info.plain_loading if info.plain_loading is not None else \
        ("" if info.native else _plain_snippet(info, ref))
    if plain:
        lines += [plain]
    if info.native:
        lines = _native_snippet(info, ref) + ["Or with nlp_transfer" + lines[0][len("With nlp_transfer"):]] + lines[1:]
    return "\n".join(lines).rstrip()


def _native_snippet(info: ModelCardInfo, ref: str) -> list[str]:
    """The standard loaders first: ``pipeline`` for a transformers folder, ``AutoPeftModelFor<Task>``
    for an adapter (which needs the label count: the adapter folder does not carry the base config)."""
    spec = info.task_spec
    text = ('{"text": "A man is playing a guitar.", "text_pair": "Someone plays music."}' if info.text_pair
            else '"The first text to classify."')
    extra = ", function_to_apply=\"none\"" if info.task == "regression" else \
        ", top_k=None" if info.task == "multi_label" else ""
    if info.library == "transformers":
        code = ["from transformers import pipeline", "",
                f'pipe = pipeline("{info.pipeline_tag}", model="{ref}"{extra})', f"print(pipe({text}))"]
        intro = "With transformers (`pip install transformers`):"
    else:
        auto = (spec.auto_class if spec is not None and spec.auto_class else "AutoModelForSequenceClassification")
        peft_cls = "AutoPeft" + auto[len("Auto"):]
        code = [f"from peft import {peft_cls}", "from transformers import AutoTokenizer", "",
                f'model = {peft_cls}.from_pretrained("{ref}", num_labels={info.head_outputs}).eval()',
                f'tokenizer = AutoTokenizer.from_pretrained("{ref}")',
                f"logits = model(**tokenizer([{text if not info.text_pair else chr(34) + 'A man is playing a guitar.' + chr(34)}], "
                "padding=True, return_tensors=\"pt\")).logits"]
        intro = (f"With peft (`pip install peft`): the LoRA adapter and the trained head on `{info.base_model}` "
                 "(`merge_and_unload()` gives a plain transformers model):")
    lines = [intro, "", "```python"] + code + ["```", ""]
    thresholds = info.thresholds
    if info.task == "multi_label":
        lines += ["A label is predicted when its score reaches its tuned threshold (0.5 when none was tuned; the "
                  "thresholds are in `nlp_transfer.json`, and `nlp_transfer.load` applies them)." if not thresholds
                  else f"Apply the tuned per-label thresholds: {thresholds}.", ""]
    return lines


def _plain_snippet(info: ModelCardInfo, ref: str) -> str:
    """Loading without nlp_transfer: transformers (+ peft for adapters), the head done by hand. The
    strategy writes the loading lines (None: no snippet), the task the decoding of the logits."""
    spec = info.task_spec
    if spec is not None and spec.token_level:
        pooled = "features = hidden                                  # one vector per token"
    elif info.pooling.startswith("cls"):
        pooled = "features = hidden[:, 0]                            # CLS pooling"
    else:
        pooled = ("mask = enc[\"attention_mask\"].unsqueeze(-1).to(hidden.dtype)\n"
                  "    features = (hidden * mask).sum(1) / mask.sum(1)   # mean pooling")
    if info.pooling.endswith(NORMALIZE):
        pooled += "\n    features = torch.nn.functional.normalize(features, dim=-1)  # unit length"
    labels = repr(info.label_names) if info.label_names else None
    if spec is not None and spec.card_decode is not None:
        post = spec.card_decode(labels)
    else:
        post = (f"labels = {labels}\nprint([labels[i] for i in logits.argmax(-1).tolist()])" if labels
                else "print(logits.softmax(-1).argmax(-1).tolist())")
    text_args = ('["A man is playing a guitar."], ["Someone plays music."]' if info.text_pair
                 else '["The first text to classify."]')
    revision = f', revision="{info.base_model_revision}"' if info.base_model_revision else ""
    base = info.base_model if info.base_model_is_hub_id else _display_name(info.base_model)
    if info.merged:  # a merged export is encoder + head.safetensors, whatever trained it
        loading = Strategy.head_loading(ref, 'folder, subfolder="encoder"', stored=True)
    else:
        loading = info.strategy_class.card_loading(info, ref, base, revision)
    if loading is None:
        return ""
    intro, code = loading
    code = list(code) + [
        "tokenizer = AutoTokenizer.from_pretrained(folder)",
        "",
        f"enc = tokenizer({text_args}, truncation=True, max_length={info.max_length}, padding=True, "
        "return_tensors=\"pt\")",
        "with torch.no_grad():",
        "    hidden = encoder(**enc).last_hidden_state",
        f"    {pooled}",
        "    logits = head(features)",
        post,
    ]
    return "\n".join([intro, "", "```python"] + code + ["```"])


def _limitations_section(info: ModelCardInfo) -> str:
    items = []
    n = info.data_stats.get("held_out_size")
    acc = info.held_out.get("accuracy")
    if n and _finite(acc) and 0 <= acc <= 1:
        half = 1.96 * math.sqrt(max(acc * (1 - acc), 1e-12) / n)
        items.append(f"The held-out set has {_count_exact(n)} examples: the held-out accuracy of {_fmt(acc)} is "
                     f"uncertain by about ±{half:.3f} (95% normal interval).")
    if info.gap is not None and _finite(info.gap) and info.gap > 0.05:
        items.append(f"Train-sample {info.gap_metric} exceeds held-out by {_fmt(info.gap)}: expect scores on new "
                     "data closer to the held-out figures, or lower if that data differs from the training data.")
    if not info.test:
        items.append("No separate test split was scored; the held-out split also chose the best epoch, so its "
                     "scores are slightly optimistic.")
    items.append(f"Inputs longer than {info.max_length} tokens are truncated.")
    if info.label_names:
        items.append("It can only predict the labels it was trained on, and inherits the label noise and "
                     "topic/domain coverage of its training data.")
    items.append(f"It inherits the biases and language coverage of the base model "
                 f"({_display_name(info.base_model)}) and of the training data; check it on your own data before "
                 "relying on it.")
    return "\n".join(f"- {i}" for i in items)


def _versions_section(info: ModelCardInfo) -> str:
    """What the model was trained with (recorded at training time; folders from before that record
    say so)."""
    if not info.versions:
        return "- not recorded (trained before nlp_transfer recorded versions)"
    return "\n".join(f"- {name} {version}" for name, version in info.versions.items())


def _footer(info: ModelCardInfo) -> str:
    parts = ["Card generated by nlp_transfer" + (f" {info.nlp_transfer_version}" if info.nlp_transfer_version else "")]
    if info.wall_s is not None:
        parts.append(f"training took {info.wall_s:.1f} s")
    return "*" + "; ".join(parts) + ". Files: `nlp_transfer.json` (how to rebuild the model), `recipe.yaml` " \
        "(the resolved recipe), `metrics.json` (all scores and the per-evaluation history).*"


# ------------------------------------------------------------------------------ helpers

def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path.name} in {path.parent.name}", expected="a readable JSON file",
                         found=f"{type(e).__name__}: {str(e)[:120]}",
                         fix="re-run training or restore the file") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path.name} in {path.parent.name}", expected="a JSON object",
                         found=type(data).__name__, fix="re-run training or restore the file")
    return data


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ModelError(f"{path.name} in {path.parent.name}", expected="a readable YAML file",
                         found=f"{type(e).__name__}", fix="re-run training or restore the file") from None
    return data if isinstance(data, dict) else {}


def _eval_point(h: dict[str, Any]) -> EvalPoint:
    return EvalPoint(epoch=float(h.get("epoch") or 0), step=int(h.get("step") or 0),
                     train_loss=_float_or_none(h.get("train_loss")), held_out=_clean_scores(h.get("held_out")),
                     train_sample=_clean_scores(h.get("train_sample")), gap=_float_or_none(h.get("gap")))


def _clean_scores(d: Any) -> dict[str, float]:
    if not isinstance(d, dict):
        return {}
    return {str(k): float(v) for k, v in d.items() if k != "n" and isinstance(v, (int, float))}


def _float_or_none(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _fmt(v: Any, sign: bool = False) -> str:
    if not _finite(v):
        return "n/a"
    return f"{v:+.4f}" if sign else f"{v:.4f}"


def _num(v: Any) -> str:
    if v is None:
        return "?"
    f = float(v)
    return str(int(f)) if f.is_integer() else f"{f:g}"


def _count(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}K"
    return str(n)


def _count_exact(n: Any) -> str:
    try:
        return f"{int(n):,}"
    except (TypeError, ValueError):
        return str(n)


def _pct(share: float) -> str:
    if not _finite(share):
        return "n/a"
    return f"{100 * share:.2f}%" if share < 0.1 else f"{100 * share:.1f}%"


def _value(v: Any) -> str:
    if v is None:
        return "not set"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(str(x) for x in v) or "[]"
    return str(v)


def _display_name(name: str) -> str:
    """Hub ids as they are; local paths reduced to their last component (no home folders in cards)."""
    s = str(name)
    if s.startswith(("/", "~", ".", "\\")) or re.match(r"^[A-Za-z]:[\\/]", s) or s.count("/") > 1:
        return Path(s).name or s
    return s


def _is_hub_dataset(name: str) -> bool:
    if name.lower().endswith(_DATA_FILE_SUFFIXES) or name.startswith(("/", "~", ".")):
        return False
    if Path(name).expanduser().exists():
        return False
    return bool(_HUB_ID_RE.match(name))


def _active_tokens() -> list[str]:
    tokens = []
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(var):
            tokens.append(os.environ[var])
    try:
        from huggingface_hub import get_token

        t = get_token()
        if t:
            tokens.append(t)
    except Exception:  # noqa: BLE001 - no token store is fine
        pass
    return [t for t in dict.fromkeys(tokens) if len(t) >= 8]
