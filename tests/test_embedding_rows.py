"""train.skip_unseen_embeddings (issue 16): only the word-embedding rows of tokens in the training
data train. It must be the same update where it applies (weight decay 0), refuse silently-wrong
cases (weight decay, tied output layer), and leave standard, reloadable files behind."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from conftest import recipe_kwargs
from nlp_transfer import Recipe, load, train
from nlp_transfer.model.embedding_rows import (SeenRowsEmbedding, merge_seen_rows, token_ids_in, train_seen_rows,
                                               train_seen_rows_if_exact, unseen_decay, why_not_seen_rows)

PROBE = ["stocks fell on the market", "the team won the match", "a new phone chip", "zebra quantum"]


def test_seen_rows_embedding_reads_and_differentiates_like_the_table() -> None:
    torch.manual_seed(0)
    table = nn.Embedding(20, 4, padding_idx=0)
    seen = torch.tensor([0, 3, 5, 5, 7, 11])  # the padding row and a repeat are dropped
    module = SeenRowsEmbedding(nn.Embedding.from_pretrained(table.weight.detach().clone(), freeze=False,
                                                            padding_idx=0), seen)
    assert module.seen.tolist() == [3, 5, 7, 11] and module.rows.shape == (4, 4)
    assert not module.weight.requires_grad and module.rows.requires_grad
    ids = torch.tensor([[0, 3, 5, 7], [11, 3, 0, 0]])  # training ids: seen rows and padding
    held = torch.tensor([[1, 2, 3, 19]])  # held-out text: ids outside the training data
    for x in (ids, held):
        assert torch.equal(module(x), table(x))
    module.unseen_scale.fill_(0.5)  # weight decay so far: only the rows outside the training data
    assert torch.equal(module(held)[0, [0, 1, 3]], table(held)[0, [0, 1, 3]] * 0.5)
    assert torch.equal(module(held)[0, 2], table(held)[0, 2]) and torch.equal(module(ids), table(ids))
    module.unseen_scale.fill_(1.0)
    grad = torch.randn(2, 4, 4)
    (module(ids) * grad).sum().backward()
    (table(ids) * grad).sum().backward()
    assert torch.allclose(module.rows.grad, table.weight.grad[module.seen])
    assert not table.weight.grad[[1, 2, 4, 6]].any()  # what the skipped rows would have received
    with torch.no_grad():
        module.rows += 1.0
    merged = module.merged()
    assert type(merged) is nn.Embedding and merged.weight.requires_grad
    assert torch.equal(merged.weight[module.seen], table.weight[module.seen] + 1.0)
    others = [i for i in range(20) if i not in (3, 5, 7, 11)]
    assert torch.equal(merged.weight[others], table.weight[others])


def test_token_ids_in_collects_distinct_ids_within_the_vocabulary() -> None:
    ids = token_ids_in([np.array([5, 1, 5], np.int32), np.array([], np.int64), np.array([9, 200, -1])], 10)
    assert ids.tolist() == [1, 5, 9] and ids.dtype == torch.long


def _bert(tiny_model: Path):
    from transformers import AutoModel
    return AutoModel.from_pretrained(str(tiny_model))


def test_it_applies_only_where_the_update_is_the_same(tiny_model) -> None:
    enc = _bert(tiny_model)
    weight = enc.get_input_embeddings().weight
    groups = [{"params": [weight], "weight_decay": 0.0}]
    assert why_not_seen_rows(enc, groups) is None
    decayed = [{"params": [weight], "weight_decay": 0.01}]
    assert why_not_seen_rows(enc, decayed) is None  # the other rows shrink by a known factor per step
    assert "fp16" in why_not_seen_rows(enc, decayed, skipped_steps=True)  # ... unless steps may be skipped
    assert why_not_seen_rows(enc, groups, skipped_steps=True) is None  # without decay, skipping is harmless
    assert "in no optimizer group" in why_not_seen_rows(enc, [])
    weight.requires_grad_(False)
    assert "does not train" in why_not_seen_rows(enc, groups)
    weight.requires_grad_(True)
    enc.get_output_embeddings = lambda: enc.get_input_embeddings()  # an LM head sharing the table
    assert "tied" in why_not_seen_rows(enc, groups)
    del enc.get_output_embeddings
    module = train_seen_rows(enc, groups, torch.tensor([4, 5]))
    assert enc.get_input_embeddings() is module and groups[0]["params"] == [module.rows]
    assert merge_seen_rows(enc) and type(enc.get_input_embeddings()) is nn.Embedding
    assert not merge_seen_rows(enc)  # nothing left to merge


def test_both_loops_entry_reads_the_ids_only_where_it_applies(tiny_model) -> None:
    """The engine's loop and contrastive's pair phase share this entry: a refusal leaves the table
    (and its optimizer group) as it was without reading the training ids; otherwise only their rows train."""
    enc = _bert(tiny_model)
    table = enc.get_input_embeddings()
    decayed = [{"params": [table.weight], "weight_decay": 0.01}]

    def ids():
        raise AssertionError("the training ids were read although every row trains")
        yield  # a generator

    module, line = train_seen_rows_if_exact(enc, decayed, ids(), skipped_steps=True)
    assert module is None and line.startswith("every word-embedding row trains:") and "fp16" in line
    assert enc.get_input_embeddings() is table and decayed[0]["params"] == [table.weight]
    module, line = train_seen_rows_if_exact(enc, decayed, [np.array([7, 3, 7]), np.array([5])])
    assert module is enc.get_input_embeddings() and module.seen.tolist() == [3, 5, 7]
    assert decayed[0]["params"] == [module.rows]
    assert line.startswith(f"3 of {table.num_embeddings:,} word-embedding rows occur in the training data and train")


def test_unseen_decay_is_what_adamw_does_to_a_row_without_gradient() -> None:
    """Decoupled weight decay under a warm-up + linear schedule: AdamW (fused, as the engine runs it)
    on a row whose gradient is always zero, against the factor computed from the schedule."""
    from transformers import get_scheduler

    rows = nn.Parameter(torch.randn(3, 4))
    idle = nn.Parameter(torch.randn(5, 4))
    start = idle.detach().clone()
    opt = torch.optim.AdamW([{"params": [idle, rows], "weight_decay": 0.1, "lr": 0.05}], fused=True)
    sched = get_scheduler("linear", opt, num_warmup_steps=3, num_training_steps=20)
    at = unseen_decay(opt, sched, rows)
    for t in range(1, 21):
        idle.grad, rows.grad = torch.zeros_like(idle), torch.randn_like(rows)
        opt.step()
        sched.step()
        assert torch.allclose(idle.detach(), start * at(t), rtol=1e-6, atol=0), t
    assert at(0) == 1.0 and at(20) < at(3) < 1.0
    no_decay = torch.optim.AdamW([rows], lr=0.05, weight_decay=0.0)
    assert unseen_decay(no_decay, get_scheduler("linear", no_decay, 0, 5), rows)(5) == 1.0


def _saved(out: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for f in sorted(out.rglob("*.safetensors")):  # the model folder; checkpoints/ is resume state
        if "checkpoints" in f.parts:
            continue
        tensors.update({f"{f.relative_to(out)}:{k}": v for k, v in load_file(str(f)).items()})
    return tensors


@pytest.mark.parametrize("native,decay", [(False, 0.0), (True, 0.0), (False, 0.05)])
def test_full_trains_the_same_model_and_saves_the_plain_table(tiny_model, toy_csv, tmp_path, capsys, monkeypatch,
                                                              native, decay):
    """On and off train the same weights; the rows the data never uses keep their pretrained values
    (weight decay 0, Trainer's default: bit for bit) or shrink as AdamW's decay would have shrunk
    them; the folder has the plain table and reloads to the same predictions. The run keeps the best
    epoch's weights (select_best), so the snapshot and restore of the rows count too."""
    base = _bert(tiny_model).get_input_embeddings().weight.detach().clone()
    kw = dict(train={"epochs": 3, "weight_decay": decay, "max_grad_norm": 1.0}, eval={"patience": 50})
    if native:
        kw["model"] = {"head": "native", "pooling": "auto"}
    scales = []  # the decay factor each held-out pass reads the untrained rows with
    forward = SeenRowsEmbedding.forward

    def spy(self, input_ids):
        if not self.training:
            scales.append(float(self.unseen_scale))
        return forward(self, input_ids)
    monkeypatch.setattr(SeenRowsEmbedding, "forward", spy)
    on = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "on", "full", **kw)))
    assert "rows occur in the training data and train" in capsys.readouterr().out
    assert scales and (all(x == 1.0 for x in scales) if not decay else scales[-1] < scales[0] < 1.0)
    kw["train"] = {**kw["train"], "skip_unseen_embeddings": False}
    off = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "off", "full", **kw)))
    a, b = _saved(on.output_dir), _saved(off.output_dir)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)
    key = next(k for k in a if k.endswith("word_embeddings.weight"))  # the plain name, no ".rows"
    emb, ref = a[key], b[key]
    ids = _text_ids(tiny_model, toy_csv)
    unseen = torch.ones(len(base), dtype=torch.bool)
    unseen[ids] = False
    unseen[0] = True  # [PAD]: padding_idx, never trained
    assert 0 < unseen.sum() < len(base)
    if decay:  # shrunk by the same factor as the whole-table run shrank them
        nz = unseen & (base != 0).all(dim=1)  # the [PAD] row is zero
        factor = (ref[nz] / base[nz]).median()
        assert factor < 1.0 and torch.allclose(emb[unseen], base[unseen] * factor, rtol=1e-5, atol=0)
    else:  # the pretrained values, bit for bit
        assert torch.equal(emb[unseen], base[unseen]) and torch.equal(ref[unseen], base[unseen])
    assert type(on.model.encoder.get_input_embeddings()) is nn.Embedding  # merged in the returned model
    assert np.allclose(load(on.output_dir).logits(PROBE), load(off.output_dir).logits(PROBE), atol=1e-5)
    # held-out scores during training read the untrained rows as decayed so far: the same history
    for h_on, h_off in zip(on.history, off.history):
        assert h_on["held_out"]["accuracy"] == h_off["held_out"]["accuracy"]


def _text_ids(tiny_model: Path, toy_csv: Path) -> torch.Tensor:
    """Token ids of every text in the CSV (training and held-out rows): a superset of the ids the run
    trained, so a row outside it surely did not train."""
    from nlp_transfer.model import load_tokenizer
    import pandas as pd

    tok = load_tokenizer(str(tiny_model))
    texts = pd.read_csv(toy_csv)["text"].tolist()
    return torch.tensor(sorted({i for t in texts for i in tok(t)["input_ids"]}))


def test_the_switch_keeps_every_row_training(tiny_model, toy_csv, tmp_path, capsys) -> None:
    train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "off", "full",
                                 train={"epochs": 1, "skip_unseen_embeddings": False})))
    assert "rows occur in the training data" not in capsys.readouterr().out
