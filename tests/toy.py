"""Tiny offline fixtures: a WordPiece vocabulary, a random 2-layer BERT and a learnable
toy dataset. Built from a config in a second, so tests never touch the network."""
from __future__ import annotations

import csv
import random
from pathlib import Path

TOPICS = {
    "sport": ["goal", "match", "team", "win", "score", "coach", "league", "player"],
    "tech": ["computer", "software", "chip", "phone", "data", "internet", "robot", "code"],
    "finance": ["bank", "stock", "market", "money", "price", "profit", "trade", "tax"],
}
FILLER = ["the", "a", "of", "and", "to", "in", "was", "new", "big", "today", "report", "says", "it", "is"]


def vocab() -> list[str]:
    words = sorted({w for ws in TOPICS.values() for w in ws} | set(FILLER))
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'")
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars[:26]] + words


def make_model_dir(path: Path, seed: int = 0, layers: int = 2, hidden: int = 32) -> Path:
    """Save a random BertModel + BertTokenizerFast in ``path`` (what from_pretrained reads)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(vocab()) + "\n")
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab())}, do_lower_case=True)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=len(vocab()), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    labels = sorted(TOPICS)
    for i in range(n):
        label = labels[i % len(labels)]
        words = rng.sample(TOPICS[label], 3) + rng.sample(FILLER, rng.randint(2, 8))
        rng.shuffle(words)
        rows.append({"text": " ".join(words) + f" {i}", "label": label})
    return rows


def write_csv(path: Path, rows: list[dict], fields: list[str] | None = None, delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = fields or list(rows[0])
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, delimiter=delimiter)
        w.writeheader()
        w.writerows(rows)
    return path
