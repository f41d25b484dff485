"""Shared offline fixtures: a tiny random BERT, toy datasets, recipe builder."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# Sets HF_ENDPOINT to a local Hub-protocol server before huggingface_hub is imported.
from hub_server import hub, local_hub  # noqa: E402,F401
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from toy import make_model_dir, make_rows, write_csv  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide random BERT with a 100-token WordPiece vocabulary."""
    return make_model_dir(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def blind_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT with every word embedding replaced by the same vector: its features depend
    only on length and position, so they carry no topic information (known answer for
    rank-models and strategy=auto: near chance, ranked below the original)."""
    import shutil

    import torch
    from transformers import BertModel

    out = tmp_path_factory.mktemp("blind")
    model = BertModel.from_pretrained(tiny_model)
    with torch.no_grad():
        w = model.embeddings.word_embeddings.weight
        w[:] = w[0].clone()
    model.save_pretrained(out)
    for f in tiny_model.iterdir():
        if f.name.startswith(("vocab", "tokenizer", "special")):
            shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="session")
def toy_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """150 rows, 3 balanced topics a small model can learn."""
    return write_csv(tmp_path_factory.mktemp("toy") / "train.csv", make_rows(150))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NLP_TRANSFER_CACHE", str(tmp_path / "cache"))


def recipe_kwargs(model_dir: Path, data_path: Path, out_dir: Path, strategy_name: str = "frozen",
                  **sections: dict) -> dict:
    """Settings that make the toy task learnable in seconds on CPU."""
    kw = {
        "model": {"name": str(model_dir), "max_length": 32, "pooling": "mean"},
        "data": {"name": str(data_path)},
        "strategy": {"name": strategy_name},
        "train": {"epochs": 6, "lr": 2e-3, "head_lr": 1e-2, "batch_size": 16, "seed": 0},
        "eval": {"patience": 50, "train_sample_size": 60},
        "output": {"dir": str(out_dir), "report_to": ["none"], "progress_bars": False},
    }
    for k, v in sections.items():
        kw[k] = {**kw.get(k, {}), **v} if isinstance(v, dict) else v
    return kw


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA
