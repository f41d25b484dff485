"""Toy data for the task tests (NER, multi-label, imbalance, multi-task), learnable by the
tiny random BERT of ``toy.py`` in seconds."""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from toy import FILLER, TOPICS

#: word -> entity tag sequence; "zq" is not in the tiny vocabulary (split into "z", "##q").
ENTITIES = {"coach": ["B-person"], "bank market": ["B-org", "I-org"], "zq": ["B-loc"]}
NER_PROBE = "the coach and bank market in zq today"
NER_PROBE_SPANS = [("person", "coach", 4, 9), ("org", "bank market", 14, 25), ("loc", "zq", 29, 31)]


def ner_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    toks: list[str] = []
    tags: list[str] = []
    for _ in range(rng.randint(3, 8)):
        r = rng.random()
        if r < 0.15:
            words, t = ["coach"], ENTITIES["coach"]
        elif r < 0.3:
            words, t = ["bank", "market"], ENTITIES["bank market"]
        elif r < 0.38:
            words, t = ["zq"], ENTITIES["zq"]
        else:
            words, t = [rng.choice(FILLER)], ["O"]
        toks += words
        tags += t
    return toks, tags


def to_iob1(tags: list[str]) -> list[str]:
    """BIO -> IOB1 (B- only between two adjacent entities of the same type)."""
    out, prev = [], None
    for t in tags:
        if t.startswith("B-") and not (prev and prev != "O" and prev[2:] == t[2:]):
            out.append("I-" + t[2:])
        else:
            out.append(t)
        prev = t
    return out


def write_conll(folder: Path, sizes: dict[str, int] | None = None, seed: int = 0, iob1: bool = False,
                names: dict[str, str] | None = None) -> Path:
    """CoNLL files (``token<TAB>tag``, blank lines, a -DOCSTART- line) per split."""
    sizes = sizes or {"train": 200, "dev": 50, "test": 50}
    names = names or {"train": "train.conll", "dev": "dev.conll", "test": "test.conll"}
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        with open(folder / names[split], "w", encoding="utf-8") as f:
            f.write("-DOCSTART- -X- O O\n\n")
            for _ in range(n):
                toks, tags = ner_sentence(rng)
                if iob1:
                    tags = to_iob1(tags)
                for a, b in zip(toks, tags):
                    f.write(f"{a}\t{b}\n")
                f.write("\n" if rng.random() < 0.5 else "   \n")  # whitespace-only separators too
    return folder


def multilabel_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Texts mixing the words of 1-2 topics; labels = the topics present ("a;b")."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    rows = []
    for i in range(n):
        labs = rng.sample(names, rng.choice([1, 1, 2]))
        words = [w for lab in labs for w in rng.sample(TOPICS[lab], 2)] + rng.sample(FILLER, 3)
        rng.shuffle(words)
        rows.append({"text": " ".join(words) + f" {i}", "labels": ";".join(labs)})
    return rows


def write_multilabel_csv(path: Path, n: int = 240, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, ["text", "labels"])
        w.writeheader()
        w.writerows(multilabel_rows(n, seed))
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
