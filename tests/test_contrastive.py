"""strategy=contrastive (SetFit's method on our loop), eval.select_best=false and train.min_steps.

Pairs are balanced, SetFit-shaped and seeded; the encoder moves in the pair phase and not in the
head phase; the saved folder reloads and predicts the same; bad inputs fail in one line naming
the fix. (Resume after SIGKILL: tests/test_resume.py; the SetFit comparison: benchmarks/fewshot.py.)"""
from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel

from conftest import recipe_kwargs
from nlp_transfer import Recipe, load, train
from nlp_transfer.errors import ConfigError
from nlp_transfer.strategies.contrastive import COSENT_SCALE, length_grouped, pair_loss, sample_pairs
from toy import make_rows, write_csv

LABELS = [0, 0, 0, 1, 1, 2, 2, 2, 2]


def test_pairs_are_balanced_seeded_and_setfit_shaped():
    pairs = sample_pairs(LABELS, rounds=5, seed=3)
    assert len(pairs) == 2 * 5 * len(LABELS)
    assert Counter(t for *_, t in pairs) == {1.0: 5 * len(LABELS), 0.0: 5 * len(LABELS)}
    assert all((LABELS[i] == LABELS[j]) == (t == 1.0) for i, j, t in pairs)
    assert pairs[0::2] == [p for p in pairs if p[2] == 1.0]  # interleaved positive / negative, as SetFit
    # every unordered pair (self-pairs included, as SetFit's combinations with replacement) is used
    pos = {(i, j) for i, j, t in pairs if t == 1.0}
    assert pos == {(i, j) for i in range(9) for j in range(i, 9) if LABELS[i] == LABELS[j]}
    assert sample_pairs(LABELS, 5, 3) == pairs and sample_pairs(LABELS, 5, 4) != pairs


def test_large_training_sets_sample_partners_instead_of_listing_every_pair(monkeypatch):
    from nlp_transfer.strategies import contrastive
    monkeypatch.setattr(contrastive, "MAX_ENUMERATED_PAIRS", 10)
    pairs = sample_pairs(LABELS, rounds=4, seed=1)
    assert len(pairs) == 2 * 4 * len(LABELS) and sum(t for *_, t in pairs) == 4 * len(LABELS)
    assert all((LABELS[i] == LABELS[j]) == (t == 1.0) for i, j, t in pairs)
    assert sample_pairs(LABELS, 4, 1) == pairs


def test_length_grouped_batches_cover_every_pair_once_and_pad_less():
    pairs = sample_pairs(LABELS * 20, rounds=4, seed=0)
    lengths = [(i * 7) % 50 + 1 for i in range(len(LABELS) * 20)]
    import random
    batches = length_grouped(pairs, lengths, 16, random.Random(0), group=10)
    assert sorted(p for b in batches for p in b) == sorted(pairs) and all(len(b) <= 16 for b in batches)

    def padded(bs: list) -> int:
        return sum(len(b) * 2 * max(max(lengths[i], lengths[j]) for i, j, _ in b) for b in bs)
    plain = [pairs[k:k + 16] for k in range(0, len(pairs), 16)]
    assert padded(batches) < 0.8 * padded(plain)


def _kw(tiny_model, data, out, **sections):
    return recipe_kwargs(tiny_model, data, out, "contrastive",
                         strategy={"name": "contrastive", "pair_rounds": 3, **sections.pop("strategy", {})},
                         train={"epochs": 3, **sections.pop("train", {})}, **sections)


def test_cosent_ranks_every_same_label_pair_above_every_other_label_pair():
    torch.manual_seed(0)
    u, v = torch.randn(6, 4), torch.randn(6, 4)
    target = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    cos = torch.nn.functional.cosine_similarity(u, v)
    terms = [COSENT_SCALE * (cos[n] - cos[p]) for n in range(6) for p in range(6) if target[n] == 0 and target[p] == 1]
    expected = torch.log(1 + torch.stack(terms).exp().sum())  # Su 2022, eq. of CoSENTLoss
    assert torch.allclose(pair_loss(u, v, target, "cosent", 0.5), expected)
    # only the order of the scores counts: a batch of one kind has nothing to rank
    assert pair_loss(u, v, torch.ones(6), "cosent", 0.5).item() == 0.0
    # ranked right by a wide margin, the loss vanishes; ranked wrong, it grows with the gap
    same = torch.cat([u[:1]] * 6)
    apart = torch.where(target[:, None] == 1, same, -same)
    assert pair_loss(same, apart, target, "cosent", 0.5).item() < 1e-12
    assert pair_loss(same, -apart, target, "cosent", 0.5).item() > 2 * COSENT_SCALE


def test_pair_phase_moves_the_encoder_head_phase_does_not_and_reload_predicts_the_same(tiny_model, toy_csv,
                                                                                       tmp_path):
    r = train(Recipe(**_kw(tiny_model, toy_csv, tmp_path / "out")))
    base = AutoModel.from_pretrained(str(tiny_model)).state_dict()
    tuned = load_file(str(r.output_dir / "encoder" / "model.safetensors"))
    phase1 = load_file(str(r.output_dir / "checkpoints" / "contrastive" / "encoder.safetensors"))
    moved = [k for k in tuned if "pooler" not in k and not torch.equal(tuned[k], base[k])]
    assert len(moved) > len(tuned) // 2, "the pair phase did not train the encoder"
    assert all(torch.equal(tuned[k], phase1[k]) for k in tuned), "the head phase changed the encoder"
    meta = json.loads((r.output_dir / "nlp_transfer.json").read_text())
    assert meta["strategy"] == "contrastive" and meta["pooling"] == "mean"
    # trainable_params (metrics, compare, card) counts the encoder of the pair phase, not only the head
    encoder_params = sum(v.numel() for k, v in base.items() if not k.startswith("pooler."))
    head_params = sum(p.numel() for n, p in r.model.named_parameters() if n.startswith("head."))
    assert head_params and r.metrics["trainable_params"] == encoder_params + head_params
    predictor = load(r.output_dir)
    probe = ["alpha beta gamma", "stock market shares", "football goal match"]
    assert (predictor.logits(probe) == load(r.output_dir).logits(probe)).all()
    m = r.model.eval()
    enc = predictor.tokenizer(probe, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        expected = m(**{k: v for k, v in enc.items()})["logits"]
    assert torch.allclose(torch.tensor(predictor.logits(probe)), expected, atol=1e-5)


def test_each_pair_loss_tunes_the_encoder_its_own_way(tiny_model, toy_csv, tmp_path):
    """strategy.pair_loss reaches the pair phase: same rows and seed, another loss, another encoder."""
    tuned = {}
    for loss in ("cosine", "cosent"):
        r = train(Recipe(**_kw(tiny_model, toy_csv, tmp_path / loss, strategy={"pair_loss": loss},
                               train={"epochs": 1})))
        tuned[loss] = load_file(str(r.output_dir / "encoder" / "model.safetensors"))
    base = AutoModel.from_pretrained(str(tiny_model)).state_dict()
    weights = [k for k in tuned["cosent"] if "pooler" not in k]
    assert sum(not torch.equal(tuned["cosent"][k], base[k]) for k in weights) > len(weights) // 2
    assert any(not torch.equal(tuned["cosent"][k], tuned["cosine"][k]) for k in weights)


def test_the_tuned_features_get_their_own_cache_entry(tiny_model, toy_csv, tmp_path):
    """Features of the tuned encoder are never served from the base model's cache (or vice versa)."""
    train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "f", "frozen", train={"epochs": 1})))
    train(Recipe(**_kw(tiny_model, toy_csv, tmp_path / "c", train={"epochs": 1})))
    caches = list((tmp_path / "cache").rglob("*.npy"))
    assert len(caches) == 4  # train + held-out of the base encoder, and of the tuned one


def test_a_class_with_one_example_is_named(tiny_model, tmp_path):
    rows = make_rows(30) + [{"text": "lonely words here", "label": "poetry"}]
    data = write_csv(tmp_path / "d" / "train.csv", rows)
    kw = _kw(tiny_model, data, tmp_path / "o")
    kw["data"] = {"name": str(data), "held_out_fraction": 0.2}
    with pytest.raises(ConfigError, match=r"at least 2 training examples of every class.*'poetry'"):
        train(Recipe(**kw))


def test_contrastive_refuses_tasks_without_classes_naming_the_supported_ones(tiny_model, toy_csv, tmp_path):
    with pytest.raises(ConfigError, match=r"strategy=contrastive.*sequence_classification.*task=regression"):
        Recipe(model=str(tiny_model), data=str(toy_csv), task="regression", strategy="contrastive")
    with pytest.raises(ConfigError, match="task=token_classification"):
        Recipe(model=str(tiny_model), data=str(toy_csv), task="token_classification", strategy="contrastive")


@pytest.mark.parametrize("key", ["pair_rounds", "pair_batch_size", "pair_epochs"])
def test_an_empty_pair_budget_is_refused(key):
    with pytest.raises(ConfigError, match=rf"strategy.{key}.*integer >= 1.*found 0"):
        Recipe(strategy={"name": "contrastive", key: 0})
    with pytest.raises(ConfigError, match="strategy.pair_loss"):
        Recipe(strategy={"name": "contrastive", "pair_loss": "triplet"})


# --------------------------------------------------------------------------- select_best / min_steps

def test_select_best_false_keeps_the_last_weights_and_never_stops_early(tiny_model, toy_csv, tmp_path):
    kw = recipe_kwargs(tiny_model, toy_csv, tmp_path / "o", "frozen", train={"epochs": 4},
                       eval={"patience": 1, "select_best": False, "min_delta": 1.0})
    r = train(Recipe(**kw))
    assert len(r.history) == 4 and not r.metrics["stopped_early"]
    last = {k: v for k, v in r.history[-1]["held_out"].items() if k != "n"}
    assert r.metrics["best_epoch"] == 4.0 and {k: r.metrics["held_out"][k] for k in last} == last
    alias = Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "a", eval={"load_best_model_at_end": False}))
    assert alias.eval.select_best is False


def test_min_steps_stretches_short_runs_and_keeps_the_evaluations(tiny_model, toy_csv, tmp_path):
    kw = recipe_kwargs(tiny_model, toy_csv, tmp_path / "o", "full", train={"min_steps": 40, "max_steps": None})
    kw["train"].pop("epochs")  # left to the strategy: the budget applies

    saves: list[int] = []

    class Saves:
        def on_save(self, state, path):
            saves.append(state.step)

    r = train(Recipe(**kw), callbacks=[Saves()])
    # 120 train rows / batch 16 = 8 steps an epoch: 5 epochs for 40 steps instead of full's 3, and
    # an evaluation every ceil(5 / 3) = 2 epochs (plus the last): as many as the 3 default epochs.
    assert [(h["epoch"], h["step"]) for h in r.history] == [(2.0, 16), (4.0, 32), (5.0, 40)]
    assert saves == [16, 32]  # the per-epoch checkpoints follow the evaluations (none at the end)
    explicit = recipe_kwargs(tiny_model, toy_csv, tmp_path / "e", "full", train={"epochs": 1, "min_steps": 40})
    assert train(Recipe(**explicit)).metrics["epochs_run"] == 1  # an explicit train.epochs wins
    frozen = recipe_kwargs(tiny_model, toy_csv, tmp_path / "f", "frozen", train={"min_steps": 400})
    frozen["train"].pop("epochs")
    assert train(Recipe(**frozen)).metrics["epochs_run"] == 30  # frozen has no step budget
    few = recipe_kwargs(tiny_model, toy_csv, tmp_path / "c", "contrastive", train={"min_steps": 4000},
                        data={"max_train_samples": 12}, strategy={"name": "contrastive", "pair_rounds": 1})
    few["train"].pop("epochs")
    assert train(Recipe(**few)).metrics["epochs_run"] == 100  # nor has contrastive's head phase


# --------------------------------------------------------------------------- auto knows it

def _few(**kw):
    from nlp_transfer.selection.decide import Signals
    base = dict(n_train=48, n_classes=6, min_per_class=8, probe_score=0.4, probe_chance=0.17,
                model_params=22_700_000, device="cpu", pairable=True)
    return Signals(**{**base, **kw})


def test_auto_picks_contrastive_for_few_shot_and_says_why():
    from nlp_transfer.selection.decide import decide_strategy
    d = decide_strategy(_few())
    assert d.strategy == "contrastive"
    assert "few-shot: rarest class has 8 examples <= few_shot_per_class=32" in d.reasons[0]
    # not pairable (e.g. multi-label), or past the few-shot sizes: lora under the step budget
    assert decide_strategy(_few(pairable=False)).strategy == "lora"
    assert decide_strategy(_few(min_per_class=40, n_train=240)).strategy == "lora"
    assert decide_strategy(_few(n_train=600, min_per_class=20, n_classes=30)).strategy == "lora"
    big = decide_strategy(_few(model_params=110_000_000))  # BERT-base on CPU: no encoder fine-tuning
    assert big.preferred == "contrastive" and big.strategy == "frozen"
    assert any("contrastive excluded: on CPU" in r for r in big.reasons)
    assert "contrastive" not in decide_strategy(_few(n_train=5000, min_per_class=2500)).excluded


def test_auto_recipe_chooses_contrastive_on_eight_examples_per_class(tiny_model, tmp_path):
    data = write_csv(tmp_path / "d" / "train.csv", make_rows(30))
    kw = recipe_kwargs(tiny_model, data, tmp_path / "o", "auto", strategy={"name": "auto", "pair_rounds": 2},
                       train={"epochs": 2})
    r = train(Recipe(**kw))
    assert r.metrics["strategy"] == "contrastive" and r.metrics["auto"]["decision"] == "contrastive"
    assert (r.output_dir / "checkpoints" / "contrastive" / "encoder.safetensors").is_file()


# --------------------------------------------------------------------------- SetFit's head: normalised features, L2

def _declares_normalize(tiny_model, folder):
    """The tiny BERT declaring all-MiniLM-L6-v2's sentence embedding: mean pooling, then Normalize."""
    import shutil
    shutil.copytree(tiny_model, folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                                  "pooling_mode_mean_tokens": True}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    return folder


def test_a_declared_normalize_reaches_the_head_the_reload_and_the_onnx_graph(tiny_model, toy_csv, tmp_path):
    model = _declares_normalize(tiny_model, tmp_path / "st_model")
    kw = _kw(model, toy_csv, tmp_path / "o")
    kw["model"] = {**kw["model"], "pooling": "auto"}
    r = train(Recipe(**kw))
    assert r.metrics["pooling"] == "mean+normalize"
    probe = ["alpha beta gamma", "stock market shares", "football goal match"]
    predictor = load(r.output_dir)
    assert json.loads((r.output_dir / "nlp_transfer.json").read_text())["pooling"] == "mean+normalize"
    enc = predictor.tokenizer(probe, padding=True, return_tensors="pt")
    with torch.no_grad():
        vec = predictor.model.encode(enc["input_ids"], enc["attention_mask"])
    assert torch.allclose(vec.norm(dim=-1), torch.ones(3), atol=1e-5)
    out = tmp_path / "onnx"
    r.export(out=out)
    assert abs(load(out).predict_proba(probe) - predictor.predict_proba(probe)).max() <= 1e-4
    # frozen keeps the declared pooling without the normalisation (its head and defaults are tuned on it)
    fz = recipe_kwargs(model, toy_csv, tmp_path / "f", "frozen", model={"name": str(model), "pooling": "auto"},
                       train={"epochs": 1})
    assert train(Recipe(**fz)).metrics["pooling"] == "mean"


def test_the_head_is_penalised_as_scikit_learns_logistic_regression(tiny_model, toy_csv, tmp_path):
    def head_norm(c, name):
        r = train(Recipe(**_kw(tiny_model, toy_csv, tmp_path / name, strategy={"head_c": c},
                               train={"epochs": 20})))
        return r, float(r.model.head.out.weight.detach().norm())
    strong, strong_norm = head_norm(0.01, "strong")
    none, none_norm = head_norm(None, "none")
    n = strong.metrics["data"]["train_size"]
    assert strong.model.head_l2 == pytest.approx(1 / (2 * 0.01 * n))  # sklearn's C*sum(CE) + |W|^2/2, over C*n
    assert none.model.head_l2 == 0.0
    assert strong_norm < 0.7 * none_norm, "the penalty did not shrink the head"
    with pytest.raises(ConfigError, match=r"strategy.head_c.*> 0.*found 0"):
        Recipe(strategy={"name": "contrastive", "head_c": 0})


def test_lora_pair_phase_folds_its_adapters_into_a_plain_encoder(tiny_model, toy_csv, tmp_path):
    r = train(Recipe(**_kw(tiny_model, toy_csv, tmp_path / "o", strategy={"pair_adapter": "lora", "lora_r": 4},
                           train={"lr": 1e-3})))
    base = AutoModel.from_pretrained(str(tiny_model)).state_dict()
    tuned = load_file(str(r.output_dir / "encoder" / "model.safetensors"))
    assert set(tuned) == set(base), "adapter keys reached the saved encoder"
    moved = {k.split(".")[-2] for k in tuned if not torch.equal(tuned[k], base[k])}
    assert moved == {"query", "value"}, f"only the adapted projections change, got {moved}"
    adapters = sum(4 * (v.shape[0] + v.shape[1]) for k, v in base.items()  # LoRA A and B: r x (in + out)
                   if k.split(".")[-2] in ("query", "value") and k.endswith("weight"))
    assert r.metrics["trainable_params"] - sum(p.numel() for n, p in r.model.named_parameters()
                                               if n.startswith("head.")) == adapters
    probe = ["alpha beta gamma", "stock market shares"]
    predictor = load(r.output_dir)
    enc = predictor.tokenizer(probe, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = r.model.eval()(**dict(enc))["logits"]
    assert torch.allclose(torch.tensor(predictor.logits(probe)), expected, atol=1e-5)  # the run's own model
    with pytest.raises(ConfigError, match="strategy.pair_adapter"):
        Recipe(strategy={"name": "contrastive", "pair_adapter": "ia3"})


def test_pair_phase_trains_only_the_seen_embedding_rows_to_the_same_encoder(tiny_model, toy_csv, tmp_path,
                                                                            monkeypatch):
    """train.skip_unseen_embeddings reaches the pair phase: only the rows of the training sentences'
    tokens are a parameter, and the tuned encoder is the one a full table gives (the other rows
    decayed as AdamW decays them), saved as a plain table."""
    from nlp_transfer.model import embedding_rows
    swapped = []
    real = embedding_rows.train_seen_rows

    def spy(encoder, groups, seen):
        module = real(encoder, groups, seen)
        optimised = {id(p) for g in groups for p in g["params"]}
        swapped.append((len(module.seen), module.num_embeddings, id(module.rows) in optimised,
                        id(module.weight) in optimised))
        return module
    monkeypatch.setattr(embedding_rows, "train_seen_rows", spy)  # the engine's head phase: encoder frozen
    tuned = {}
    for skip in (False, True):
        settings = {"epochs": 1, "lr": 1e-3, "weight_decay": 0.1, "skip_unseen_embeddings": skip}  # decay shows
        r = train(Recipe(**_kw(tiny_model, toy_csv, tmp_path / str(skip), train=settings)))
        tuned[skip] = load_file(str(r.output_dir / "checkpoints" / "contrastive" / "encoder.safetensors"))
    (seen, vocab, rows_train, table_trains), = swapped  # once: the skip=True run
    assert 0 < seen < vocab and rows_train and not table_trains
    assert tuned[True].keys() == tuned[False].keys()
    for k in tuned[True]:
        assert torch.allclose(tuned[True][k], tuned[False][k], atol=1e-6), k
    table = "embeddings.word_embeddings.weight"
    base = AutoModel.from_pretrained(str(tiny_model)).state_dict()[table]
    assert not torch.equal(tuned[True][table], base)
