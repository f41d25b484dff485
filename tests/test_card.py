"""Model cards: metadata the Hub accepts, a body that reports what metrics.json says, a plot,
no secrets or local paths, and loading snippets that really reproduce the predictions."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from nlp_transfer.publish.card import ModelCardInfo, render_model_card, write_model_card
from nlp_transfer.errors import ModelError

# huggingface_hub's own LFS PUT passes a file object as `data=`; httpx2 deprecates that spelling.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

REPO = "alice/bbc-lora"
HISTORY = [
    {"epoch": 1.0, "step": 10, "train_loss": 1.2, "gap": 0.05,
     "held_out": {"accuracy": 0.70, "f1": 0.65, "loss": 0.9, "n": 40},
     "train_sample": {"accuracy": 0.75, "f1": 0.70, "loss": 0.8, "n": 40}},
    {"epoch": 2.0, "step": 20, "train_loss": 0.6, "gap": 0.0625,
     "held_out": {"accuracy": 0.8125, "f1": 0.7931, "loss": 0.5, "n": 40},
     "train_sample": {"accuracy": 0.875, "f1": 0.8612, "loss": 0.3, "n": 40}},
    {"epoch": 3.0, "step": 30, "train_loss": 0.3, "gap": 0.1375,
     "held_out": {"accuracy": 0.8, "f1": 0.78, "loss": 0.55, "n": 40},
     "train_sample": {"accuracy": 0.9375, "f1": 0.93, "loss": 0.1, "n": 40}},
]


def fake_output(path: Path, *, meta: dict | None = None, metrics: dict | None = None,
                recipe: dict | None = None) -> Path:
    """An output folder shaped like the ones the recipe writes (values chosen to be recognisable)."""
    path.mkdir(parents=True, exist_ok=True)
    m = {"format_version": 1, "task": "sequence_classification", "strategy": "lora",
         "base_model": {"name": "sentence-transformers/all-MiniLM-L6-v2", "sha256": "ab" * 32},
         "pooling": "mean", "max_length": 128, "label_names": ["business", "sport", "tech"], "text_pair": False,
         "head": {"type": "linear", "num_outputs": 3, "dropout": 0.1},
         "lora": {"r": 8, "alpha": 16, "target_modules": ["query", "value"], "unfreeze_top_k": 0}}
    mt: dict[str, Any] = {
        "held_out": {"accuracy": 0.8125, "f1": 0.7931, "loss": 0.5},
        "train_sample": {"accuracy": 0.875, "f1": 0.8612, "loss": 0.3},
        "gap": 0.0625, "gap_metric": "accuracy", "best_epoch": 2.0, "best_step": 20, "epochs_run": 3.0,
        "stopped_early": True, "trainable_params": 75_653, "total_params": 22_790_794, "wall_s": 93.7,
        "strategy": "lora", "task": "sequence_classification", "history": HISTORY,
        "hyperparameters": {"epochs": 4, "lr": 0.0005, "head_lr": 0.001, "patience": 1},
        "data": {"dataset": "SetFit/bbc-news", "train_size": 1234, "held_out_size": 40, "duplicates_dropped": 7,
                 "leaked_dropped": 2, "held_out_source": "carved 20% stratified (seed 42)",
                 "train_sample_size": 40, "test_size": 0},
        "auto": {"decision": "lora", "reasons": ["1,234 training examples: enough for adapters"]},
    }
    r = {"model": {"name": "minilm", "revision": None, "max_length": 128},
         "data": {"name": "SetFit/bbc-news"}, "task": "sequence_classification",
         "strategy": {"name": "lora", "lora_r": 8, "lora_alpha": 16},
         "train": {"epochs": None, "batch_size": 16, "lr": None, "weight_decay": 0.01, "warmup_ratio": 0.1,
                   "seed": 42},
         "eval": {"metric_for_best": None, "patience": None, "min_delta": 0.0, "train_sample_size": 40},
         "output": {"dir": "/home/someone/outputs/bbc"}, "hub": {"push": False, "repo_id": None}}
    for target, extra in ((m, meta), (mt, metrics), (r, recipe)):
        target.update(extra or {})
    (path / "nlp_transfer.json").write_text(json.dumps(m))
    (path / "metrics.json").write_text(json.dumps(mt))
    (path / "recipe.yaml").write_text(yaml.safe_dump(r, sort_keys=False))
    (path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 384}))
    return path


def test_metadata_parses_with_huggingface_hub_and_passes_hub_validation(tmp_path: Path) -> None:
    readme = write_model_card(fake_output(tmp_path / "out"), repo_id=REPO)
    content = readme.read_text(encoding="utf-8")
    card = ModelCard(content)  # raises on malformed metadata / model-index
    data = card.data
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert data.library_name == "nlp_transfer"
    assert data.pipeline_tag == "text-classification"
    assert data.license == "apache-2.0"
    assert data.datasets == ["SetFit/bbc-news"]
    assert {"nlp_transfer", "lora", "peft"} <= set(data.tags)
    assert data.get("base_model_relation") == "adapter"

    name, results = model_index_to_eval_results(data.to_dict()["model-index"])
    assert name == "bbc-lora"
    scores = {r.metric_type: r.metric_value for r in results}
    assert scores == {"accuracy": 0.8125, "f1": 0.7931}  # held-out, loss excluded
    assert {(r.task_type, r.dataset_type, r.dataset_split) for r in results} == \
        {("text-classification", "SetFit/bbc-news", "held-out")}

    from hub_server import validate_card_metadata  # the rules tests/hub_server.py's /api/validate-yaml applies
    assert validate_card_metadata(content) == []


def test_body_reports_what_metrics_json_says(tmp_path: Path) -> None:
    text = write_model_card(fake_output(tmp_path / "out"), repo_id=REPO).read_text(encoding="utf-8")
    body = text.split("\n---\n", 1)[1]
    # strategy and share of trainable parameters
    assert "**LoRA**" in body and "r=8, alpha=16" in body and "`query`, `value`" in body
    assert "75.7K of 22.8M (0.33%)" in body
    assert "`strategy=auto`): **lora**" in body and "enough for adapters" in body
    # data and splits
    assert "| Training examples | 1,234 |" in body
    assert "| Held-out examples | 40 — carved 20% stratified (seed 42) |" in body
    assert "7 duplicates, 2 leaked" in body
    # hyper-parameters: resolved values replace the recipe's empty ones
    assert "| `lr` | 0.0005 |" in body and "| `epochs` | 4 |" in body and "| `batch_size` | 16 |" in body
    assert "| `eval.patience` | 1 |" in body
    # final table with the gap; per-evaluation table with one row per evaluation, best marked
    assert "| accuracy (selection metric) | 0.8125 | 0.8750 | +0.0625 |" in body
    rows = re.findall(r"^\| (\d+)( ★)? \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([+\-][\d.]+) \|$", body, re.M)
    assert [(r[0], r[1], r[2], r[4], r[5], r[6]) for r in rows] == [
        ("1", "", "10", "0.7000", "0.7500", "+0.0500"),
        ("2", " ★", "20", "0.8125", "0.8750", "+0.0625"),
        ("3", "", "30", "0.8000", "0.9375", "+0.1375")]
    # best epoch, why, early stopping
    assert "**epoch 2**, step 20" in body and "highest held-out accuracy (0.8125) among 3 evaluations" in body
    assert "**Training stopped early** after 3 epoch(s) (of 4 planned)" in body
    assert "not improved for 1 consecutive evaluations (patience)" in body
    # exact loading snippets
    assert f'predict = load("{REPO}")' in body and "from nlp_transfer import load" in body
    assert f'snapshot_download("{REPO}")' in body and "PeftModel.from_pretrained(Wrapper(), folder)" in body
    assert "torch.nn.Linear(384, 3)" in body
    # limitations mention the small held-out set and the uncertainty
    assert "The held-out set has 40 examples" in body and "±0.121" in body
    # no local paths from recipe.yaml
    assert "/home/someone" not in text


def test_plot_is_written_and_embedded(tmp_path: Path) -> None:
    out = fake_output(tmp_path / "out")
    text = write_model_card(out).read_text(encoding="utf-8")
    png = out / "training_curves.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    assert "![Held-out and train-sample accuracy per evaluation](training_curves.png)" in text
    assert 'predict = load("out")' in text  # no repo id yet: the folder name


def test_no_token_in_card_even_when_one_is_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "hf_" + "Q7x" * 11 + "z"
    monkeypatch.setenv("HF_TOKEN", token)
    # even a token pasted into the recipe must not reach the card
    out = fake_output(tmp_path / "out", recipe={"train": {"batch_size": 16, "note": f"pushed with {token}"}})
    text = write_model_card(out, repo_id=REPO).read_text(encoding="utf-8")
    assert token not in text and "Q7xQ7x" not in text
    assert "hf_" not in text


def test_regression_without_history_or_labels(tmp_path: Path) -> None:
    out = fake_output(tmp_path / "out",
                      meta={"task": "regression", "strategy": "frozen", "label_names": None, "text_pair": True,
                            "head": {"type": "linear", "num_outputs": 1, "dropout": 0.0}},
                      metrics={"held_out": {"pearsonr": 0.81, "spearmanr": 0.8}, "train_sample": {},
                               "gap": None, "gap_metric": "pearsonr", "history": [], "stopped_early": False,
                               "strategy": "frozen", "auto": None})
    text = write_model_card(out, repo_id="alice/stsb").read_text(encoding="utf-8")
    card = ModelCard(text)
    assert card.data.pipeline_tag == "text-classification" and "frozen" in card.data.tags
    _, results = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert {r.metric_type: r.metric_value for r in results} == {"pearsonr": 0.81, "spearmanr": 0.8}
    assert not (out / "training_curves.png").exists() and "![" not in text
    assert "No per-evaluation history was recorded." in text
    assert 'text_pairs=["Someone plays music."]' in text  # pair input in the snippet
    assert "print(logits.squeeze(-1).tolist())" in text
    assert "Training did **not** stop early" in text


def test_local_paths_stay_out_of_metadata_and_body(tmp_path: Path) -> None:
    out = fake_output(tmp_path / "out", meta={"base_model": {"name": "/home/someone/models/my-bert"}},
                      metrics={"data": {"dataset": "/home/someone/data/train.csv", "train_size": 10,
                                        "held_out_size": 5}})
    text = write_model_card(out, repo_id=REPO).read_text(encoding="utf-8")
    data = ModelCard(text).data
    assert data.base_model is None and data.datasets is None and data.get("base_model_relation") is None
    assert "/home/someone" not in text and "`my-bert`" in text and "`train.csv`" in text


def test_overrides_and_render_from_dataclass(tmp_path: Path) -> None:
    info = ModelCardInfo.from_output_dir(fake_output(tmp_path / "out"), repo_id=REPO, license="mit",
                                         merged=True, library_name="transformers", extra_tags=["bbc"])
    text = render_model_card(info, plot_name=None)
    data = ModelCard(text).data
    assert (data.license, data.library_name) == ("mit", "transformers")
    assert {"merged", "bbc"} <= set(data.tags) and data.get("base_model_relation") == "finetune"
    assert "merged into the encoder weights" in text and "PeftModel" not in text
    assert 'AutoModel.from_pretrained(folder, subfolder="encoder")' in text  # a pooled head keeps it in encoder/


def test_not_an_output_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "nlp_transfer.json").write_text("{}")
    with pytest.raises(ModelError) as e:
        write_model_card(tmp_path)
    assert "expected a finished nlp_transfer output folder" in str(e.value)
    assert "found no metrics.json" in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "README.md").exists()


@pytest.mark.parametrize("strategy,pooling", [("full", "mean"), ("frozen", "mean"), ("lora", "mean"),
                                              ("contrastive", "mean+normalize")])
def test_plain_loading_snippet_reproduces_nlp_transfer_predictions(
        strategy: str, pooling: str, hub, tiny_model: Path, toy_csv: Path, tmp_path: Path) -> None:
    """Train a tiny run, push it to the local Hub, run the card's transformers/peft snippet."""
    from huggingface_hub import HfApi

    from conftest import recipe_kwargs
    from nlp_transfer import Recipe, load, train

    kw = recipe_kwargs(tiny_model, toy_csv, tmp_path / "out", strategy, train={"epochs": 1},
                       model={"name": str(tiny_model), "max_length": 32, "pooling": pooling},
                       strategy={"name": strategy, "pair_rounds": 2})
    result = train(Recipe(**kw))
    base_id = hub.new_repo_id("tiny-base")
    hub.seed_repo(base_id, tiny_model)  # the base model, reachable by id for the snippet
    repo_id = hub.new_repo_id(f"toy-{strategy}")
    readme = write_model_card(result.output_dir, repo_id=repo_id, base_model=base_id)
    HfApi().create_repo(repo_id)
    HfApi().upload_folder(repo_id=repo_id, folder_path=result.output_dir, commit_message="card test")

    code = re.findall(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)[-1]
    assert "from nlp_transfer" not in code
    namespace: dict[str, Any] = {}
    exec(compile(code, f"<card snippet {strategy}>", "exec"), namespace)  # noqa: S102 - our own generated code
    text = "The first text to classify."
    expected = load(result.output_dir)([text])[0]
    probs = namespace["logits"].softmax(-1)[0]
    assert namespace["labels"][int(probs.argmax())] == expected["label"]
    assert float(probs.max()) == pytest.approx(expected["score"], abs=1e-5)


@pytest.mark.parametrize("strategy,settings,says,not_says", [
    ("lora", {"lora_r": 4, "lora_alpha": 32, "unfreeze_top_k": 1},
     ["r=8, alpha=16", "top 1 layers were fully trained"], []),  # nlp_transfer.json's lora section wins
    ("partial", {"unfreeze_top_k": 3}, ["the top 3 encoder layers"], []),
    ("contrastive", {"pair_rounds": 30, "pair_batch_size": 8, "pair_epochs": 1, "pair_loss": "margin",
                     "pair_margin": 0.25, "pair_adapter": "lora", "lora_r": 4},
     ["Pairs: 30 rounds", "8 pairs a step", "margin loss (margin 0.25)", "LoRA adapters, merged"], ["r=4"]),
    ("contrastive", {"pair_rounds": 20, "pair_batch_size": 16, "pair_loss": "cosine", "pair_margin": 0.5,
                     "pair_adapter": "none"},
     ["Pairs: 20 rounds", "16 pairs a step", "`CosineSimilarityLoss`", "trained every encoder weight"], ["margin"]),
    ("contrastive", {"pair_rounds": 20, "pair_batch_size": 16, "pair_loss": "cosent", "pair_margin": 0.5},
     ["`CoSENTLoss`, scale 20"], ["margin", "CosineSimilarityLoss"]),
    ("full", {"lora_r": 4, "unfreeze_top_k": 2}, ["every weight of the encoder"], ["r=4", "top 2"]),
])
def test_strategy_paragraph_reads_the_settings_its_strategy_names(
        tmp_path: Path, strategy: str, settings: dict, says: list[str], not_says: list[str]) -> None:
    """The card asks the strategy which recipe settings its paragraph reads (no strategy names in the card)."""
    meta = {"strategy": strategy, "lora": {"r": 8, "alpha": 16, "target_modules": ["query", "value"]}} \
        if strategy == "lora" else {"strategy": strategy, "lora": None}
    out = fake_output(tmp_path / strategy, meta=meta, metrics={"strategy": strategy},
                      recipe={"strategy": {"name": strategy, **settings}})
    info = ModelCardInfo.from_output_dir(out)
    paragraph = info.strategy_class.describe(info.strategy_details, info.merged)
    text = write_model_card(out).read_text(encoding="utf-8")
    for words in says:
        assert words in paragraph and words in text
    for words in not_says:
        assert words not in paragraph
    # only what the strategy names (or its own section of nlp_transfer.json) reaches the paragraph
    named = {"lora": {"r", "alpha", "target_modules", "unfreeze_top_k"}, "partial": {"unfreeze_top_k"},
             "contrastive": {"pair_rounds", "pair_batch_size", "pair_epochs", "pair_loss", "pair_margin",
                             "pair_adapter"}, "full": set()}[strategy]
    assert set(info.strategy_details) <= named
