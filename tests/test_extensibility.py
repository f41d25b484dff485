"""Strategies and tasks are plug-ins: registered from this file alone (no library edit), they go
through config validation, training, saving, ``nlp_transfer.load``, the Hub push and the model card.

(a) ``bias_only`` (BitFit: only the encoder's bias vectors and the head train) with its own saved
    file, reload, push files, commit message and card words;
(b) ``ordinal`` (ordinal classification with K-1 cumulative logits and a BCE loss) with its own
    head size, loss, predictions, data preparation, pipeline tag, card words and config check.

Every registration is undone after its test (fixtures below).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from conftest import recipe_kwargs
from hub_server import LocalHub
from nlp_transfer import ConfigError, Recipe, load, train
from nlp_transfer.model import TASKS, TaskSpec, auto_pooling, register_task, unregister_task
from nlp_transfer.predict import Predictor
from nlp_transfer.registry import STRATEGIES
from nlp_transfer.strategies import Strategy, register_strategy, save_head, unregister_strategy

# huggingface_hub's own LFS PUT passes a file object as `data=`; httpx2 deprecates that spelling.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

TEXTS = ["goal match team win today", "the bank says stock price is big", "robot code chip phone", "x"]


# --------------------------------------------------------------------------- (a) a strategy: BitFit

def _is_trained_bias(name: str) -> bool:
    """Encoder biases (BERT's own pooler is never used by our pooling: it gets no gradient)."""
    return name.endswith(".bias") and not name.startswith("pooler.")


class BiasOnly(Strategy):
    """BitFit (Ben Zaken et al., 2022): only the bias terms of the encoder and the head train."""
    name = "bias_only"
    defaults = {"epochs": 5, "lr": 1e-2, "head_lr": 1e-2, "patience": 3}
    card_tags = ("bitfit",)

    def apply(self, model: Any) -> Any:
        for n, p in model.named_parameters():
            p.requires_grad = n.startswith("head.") or (n.startswith("encoder.") and _is_trained_bias(n[8:]))
        return model

    def save(self, model: Any, out_dir: Path) -> dict[str, Any]:
        m = self.base(model)
        m.encoder.config.save_pretrained(out_dir)
        biases = {n: p.detach().cpu().contiguous() for n, p in m.encoder.named_parameters() if _is_trained_bias(n)}
        save_file(biases, str(Path(out_dir) / "bias.safetensors"))
        save_head(m, out_dir)
        return {"weights": {"bias": "bias.safetensors", "head": "head.safetensors"},
                "bias_only": {"bias_tensors": len(biases)}}

    @classmethod
    def load_trained(cls, model: Any, out: Path, meta: dict[str, Any], *, merge: bool = True) -> Any:
        missing, unexpected = model.encoder.load_state_dict(load_file(str(Path(out) / "bias.safetensors")),
                                                            strict=False)
        assert not unexpected
        cls.load_head(model, out)
        return model

    @classmethod
    def weight_files(cls, out: Path) -> list[str]:
        return ["bias.safetensors", "head.safetensors"]

    @classmethod
    def push_description(cls, merged: bool) -> str:
        return "BitFit model (biases merged into the encoder)" if merged else "BitFit biases + head"

    @classmethod
    def describe(cls, details: dict[str, Any], merged: bool = False) -> str:
        return (f"**BitFit**: only the {details.get('bias_tensors', '?')} bias vectors of the encoder and the task "
                "head were trained; every weight matrix is the base model's.")


@pytest.fixture
def bias_only():
    cls = register_strategy(BiasOnly)
    yield cls
    unregister_strategy("bias_only")


@pytest.fixture(autouse=True)
def _private_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads go to this test's folder: nothing is read from or left in ~/.cache/huggingface."""
    import huggingface_hub.constants as constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))


def _logits(model: Any, predictor: Predictor) -> Any:
    """The in-memory model's logits through the same batching/tokenisation as the loaded predictor."""
    return Predictor(model.eval(), predictor.tokenizer, predictor.meta, predictor.path).logits(TEXTS)


def test_registered_strategy_is_validated_and_configured_from_its_class(bias_only, tiny_model):
    cfg = Recipe(strategy="bias_only")
    assert cfg.resolved_train() == {"epochs": 5, "lr": 1e-2, "head_lr": 1e-2, "patience": 3}
    with pytest.raises(ConfigError) as e:
        Recipe(strategy="bogus")
    assert "'bias_only'" in str(e.value) and "'lora'" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="only with strategy=partial or strategy=lora"):
        Recipe(strategy={"name": "bias_only", "unfreeze_top_k": 2})
    assert auto_pooling(str(tiny_model), "bias_only") == "cls"  # trains_encoder: CLS when fine-tuning


def test_registration_is_undone():
    assert "bias_only" not in STRATEGIES and "ordinal" not in TASKS
    with pytest.raises(ConfigError, match="strategy.name: expected one of"):
        Recipe(strategy="bias_only")
    with pytest.raises(ConfigError, match="recipe.task: expected one of"):
        Recipe(task="ordinal")
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("lora", BiasOnly)


def test_bias_only_trains_saves_loads_pushes_and_describes_itself(
        bias_only, tiny_model: Path, toy_csv: Path, tmp_path: Path, hub: LocalHub) -> None:
    from nlp_transfer.publish.hub import push_to_hub

    out = tmp_path / "bitfit"
    r = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, out, "bias_only", train={"epochs": 3})))

    # trainability: the encoder's biases and the head, nothing else
    trained = {n for n, p in r.model.named_parameters() if p.requires_grad}
    assert trained and all(n.startswith("head.") or n.endswith(".bias") for n in trained)
    base = load_file(str(tiny_model / "model.safetensors"))
    after = r.model.encoder.state_dict()
    changed = {k for k, v in base.items() if not torch.equal(v, after[k])}
    assert changed and all(k.endswith(".bias") for k in changed)

    # save: its own files and metadata
    files = {p.name for p in out.iterdir()}
    assert {"bias.safetensors", "head.safetensors"} <= files and "model.safetensors" not in files
    meta = json.loads((out / "nlp_transfer.json").read_text())
    assert meta["strategy"] == "bias_only" and meta["bias_only"]["bias_tensors"] > 0

    # reload: identical predictions to the in-memory model
    predictor = load(out)
    assert torch.allclose(torch.from_numpy(predictor.logits(TEXTS)), torch.from_numpy(_logits(r.model, predictor)),
                          atol=1e-5)

    # push: the strategy's files + a base reference; load by repo id predicts the same
    base_id = hub.new_repo_id("tiny-bert", user="testorg")
    hub.seed_repo(base_id, tiny_model)
    repo_id = hub.new_repo_id("toy-bitfit")
    result = push_to_hub(out, repo_id, base_model_id=base_id)
    pushed = hub.files(repo_id)
    assert {"bias.safetensors", "head.safetensors", "README.md", "nlp_transfer.json"} <= set(pushed)
    assert "model.safetensors" not in pushed and result.base_model["name"] == base_id
    assert hub.repos[("model", repo_id)].commits[result.commit].title.startswith("Upload BitFit biases + head")
    remote = load(repo_id)
    assert torch.allclose(torch.from_numpy(remote.logits(TEXTS)), torch.from_numpy(predictor.logits(TEXTS)),
                          atol=1e-5)

    # the model card speaks for the strategy
    readme = pushed["README.md"].decode()
    card = yaml.safe_load(readme.split("---")[1])
    assert "bitfit" in card["tags"] and "bias_only" in card["tags"] and card["base_model_relation"] == "adapter"
    assert "**BitFit**: only the" in readme and "bias vectors" in readme

    # merged: encoder (base + trained biases) + head; loads without the base model, same predictions
    merged_id = hub.new_repo_id("toy-bitfit-merged")
    push_to_hub(out, merged_id, merge=True, base_model_id=base_id)
    assert {"encoder/model.safetensors", "head.safetensors"} <= set(hub.files(merged_id))
    assert "bias.safetensors" not in hub.files(merged_id)
    merged = load(merged_id)
    assert torch.allclose(torch.from_numpy(merged.logits(TEXTS)), torch.from_numpy(predictor.logits(TEXTS)),
                          atol=1e-4)


# --------------------------------------------------------------------------- (b) a task: ordinal

def ordinal_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """K-1 cumulative binary problems "label > k" (Frank & Hall / CORAL style)."""
    k = torch.arange(logits.shape[-1], device=logits.device)
    target = (labels.long().unsqueeze(-1) > k).float()
    return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target)


def ordinal_rank(z: torch.Tensor) -> torch.Tensor:
    return (torch.sigmoid(z.float()) > 0.5).sum(-1)


def prepare_ordinal(data_cfg: Any) -> Any:
    from nlp_transfer.data import prepare_data
    return prepare_data(data_cfg, "sequence_classification")  # ordered class names -> ids 0..K-1


def predict_ordinal(predictor: Any, texts: list[str], text_pairs: list[str] | None, batch_size: int) -> list[dict]:
    ranks = ordinal_rank(torch.from_numpy(predictor.logits(texts, text_pairs, batch_size))).tolist()
    return [{"label": predictor.label_names[r], "rank": int(r)} for r in ranks]


def check_ordinal(cfg: Any) -> None:
    if cfg.train.class_weights not in (None, "none"):
        raise ConfigError("train.class_weights", expected="none with task=ordinal",
                          found=repr(cfg.train.class_weights), fix="remove train.class_weights")


ORDINAL = TaskSpec(
    name="ordinal", head="linear", token_level=False, num_outputs=lambda n: int(n or 2) - 1, loss=ordinal_loss,
    predictions=ordinal_rank, default_metrics=["accuracy"], metric_for_best="accuracy",
    pipeline_tag="text-ranking", prepare=prepare_ordinal, predict=predict_ordinal,
    card_words="ordinal text rating", check_config=check_ordinal,
    card_decode=lambda labels: f"labels = {labels}\nprint([labels[int(r)] for r in (logits.sigmoid() > 0.5).sum(-1)])")


@pytest.fixture
def ordinal():
    spec = register_task(ORDINAL)
    yield spec
    unregister_task("ordinal")


def test_ordinal_task_trains_saves_loads_predicts_and_describes_itself(
        ordinal, tiny_model: Path, toy_csv: Path, tmp_path: Path) -> None:
    from nlp_transfer.publish.card import write_model_card
    from nlp_transfer.predict import evaluate_output

    with pytest.raises(ConfigError, match="train.class_weights: expected none with task=ordinal"):
        Recipe(task="ordinal", train={"class_weights": "auto"})
    out = tmp_path / "ordinal"
    r = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, out, "full", task="ordinal", train={"epochs": 4})))
    assert r.metrics["task"] == "ordinal" and r.metrics["held_out"]["accuracy"] > 0.5

    meta = json.loads((out / "nlp_transfer.json").read_text())
    assert meta["task"] == "ordinal" and meta["head"]["num_outputs"] == 2  # 3 ordered classes: 2 thresholds

    predictor = load(out)
    got = predictor(TEXTS)
    assert all(set(g) == {"label", "rank"} and g["label"] == predictor.label_names[g["rank"]] for g in got)
    expected = ordinal_rank(torch.from_numpy(_logits(r.model, predictor))).tolist()
    assert [g["rank"] for g in got] == expected

    scores = evaluate_output(out, str(toy_csv), split="train")
    assert scores["n"] > 0 and 0.0 <= scores["accuracy"] <= 1.0

    readme = write_model_card(out).read_text()
    card = yaml.safe_load(readme.split("---")[1])
    assert card["pipeline_tag"] == "text-ranking"
    assert card["model-index"][0]["results"][0]["task"]["name"] == "ordinal text rating"
    assert "ordinal text rating model trained with" in readme
    assert "(logits.sigmoid() > 0.5).sum(-1)" in readme
