"""Contract tests per strategy: which weights move, what is saved, what reloads."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import recipe_kwargs
from nlp_transfer import Recipe, load, train

PROBE = ["goal match team today", "bank stock money price", "software chip robot code", "the coach says win"]


def _initial_encoder(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def _encoder_state(result) -> dict[str, torch.Tensor]:
    m = result.model
    base = m.get_base_model() if hasattr(m, "get_base_model") else m
    return {k: v.detach().clone() for k, v in base.encoder.state_dict().items()}


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k, v in before.items() if k in after and not torch.equal(v, after[k])}


def test_frozen_leaves_encoder_bitwise_unchanged(tiny_model, toy_csv, tmp_path, capsys):
    r = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "out", "frozen")))
    before = _initial_encoder(tiny_model)
    after = _encoder_state(r)
    assert _changed(before, after) == set()
    assert "trainable 99 " in capsys.readouterr().out or r.metrics["trainable_params"] == 99  # 32*3+3
    assert r.metrics["trainable_params"] == 32 * 3 + 3
    # only the head is written; the encoder is referenced, with its sha256
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert "head.safetensors" in files and "model.safetensors" not in files
    meta = json.loads((tmp_path / "out" / "nlp_transfer.json").read_text())
    assert meta["base_model"]["sha256"] and meta["strategy"] == "frozen"


def test_full_changes_every_encoder_weight(tiny_model, toy_csv, tmp_path):
    r = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "out", "full", train={"epochs": 2})))
    before = _initial_encoder(tiny_model)
    after = _encoder_state(r)
    unchanged = set(before) - _changed(before, after)
    # BERT's pooler is not used by mean pooling, so it gets no gradient; everything else moves.
    assert {k for k in unchanged if not k.startswith("pooler.")} == set()
    pooler = sum(v.numel() for k, v in before.items() if k.startswith("pooler."))
    assert r.metrics["trainable_params"] == r.metrics["total_params"] - pooler


def test_lora_changes_only_adapters_and_head(tiny_model, toy_csv, tmp_path):
    r = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "out", "lora", train={"epochs": 2})))
    peft_model = r.model
    before = _initial_encoder(tiny_model)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_" in n) or (".head." in n) for n in trainable)
    # base weights untouched
    base_state = peft_model.get_base_model().encoder.state_dict()
    base_only = {k.replace(".base_layer", ""): v for k, v in base_state.items() if "lora_" not in k}
    assert _changed(before, base_only) == set()
    # adapters moved (lora_B starts at zero)
    assert any(p.abs().sum() > 0 for n, p in peft_model.named_parameters() if "lora_B" in n)
    saved = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    assert any("head" in k for k in saved), "the head must be saved with the adapter"
    assert any("lora_A" in k for k in saved)


def test_partial_trains_only_top_layers_and_head(tiny_model, toy_csv, tmp_path):
    r = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "out", "partial",
                                     strategy={"name": "partial", "unfreeze_top_k": 1}, train={"epochs": 2})))
    before = _initial_encoder(tiny_model)
    changed = _changed(before, _encoder_state(r))
    assert changed and all(k.startswith("encoder.layer.1.") for k in changed)


def test_hybrid_lora_plus_top_layer(tiny_model, toy_csv, tmp_path):
    r = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "out", "lora",
                                     strategy={"name": "lora", "unfreeze_top_k": 1}, train={"epochs": 2})))
    trainable = {n for n, p in r.model.named_parameters() if p.requires_grad}
    assert any("lora_" in n and "layer.0." in n for n in trainable)
    assert not any("lora_" in n and "layer.1." in n for n in trainable)
    assert any("layer.1." in n and "modules_to_save" in n for n in trainable)
    saved = load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    assert any("layer.1." in k for k in saved), "unfrozen top layer must be saved"


@pytest.mark.parametrize("strategy,extra", [("frozen", {}), ("full", {}), ("lora", {}), ("partial", {}),
                                            ("lora", {"unfreeze_top_k": 1})])
def test_save_load_identical_predictions(tiny_model, toy_csv, tmp_path, strategy, extra):
    r = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "out", strategy,
                                     strategy={"name": strategy, **extra}, train={"epochs": 2})))
    m = r.model.merge_and_unload() if hasattr(r.model, "merge_and_unload") else r.model
    m.eval()
    tok = load(r.output_dir).tokenizer
    enc = tok(PROBE, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        expected = torch.softmax(m(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                   token_type_ids=enc["token_type_ids"])["logits"], -1)
    predictor = load(r.output_dir)
    got = predictor(PROBE)
    assert [g["label"] for g in got] == [predictor.label_names[i] for i in expected.argmax(-1).tolist()]
    assert torch.allclose(torch.tensor([g["score"] for g in got]), expected.max(-1).values, atol=1e-5)
    # label names survive end to end, never LABEL_0
    cfg = json.loads((r.output_dir / "config.json").read_text())
    assert set(cfg["id2label"].values()) == {"finance", "sport", "tech"}
    assert cfg["label2id"]["sport"] == 1
    # a second load gives bitwise the same logits
    assert (load(r.output_dir).logits(PROBE) == predictor.logits(PROBE)).all()
